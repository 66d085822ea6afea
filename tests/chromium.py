"""Debian's Chromium for the browser tests, driven by Playwright: never a downloaded
browser. Without it the tests skip with a one-line reason (`.ci/run` installs it)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

FLAGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # this machine reaches no outside host: no background traffic, no update checks
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_or_skip() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Chromium is not installed (apt-get install chromium): no browser tests")
    return path


@contextmanager
def launched() -> Iterator[Any]:
    """A headless Chromium for a module's tests, closed after them."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=chromium_or_skip(), headless=True, args=FLAGS
        )
        try:
            yield browser
        finally:
            browser.close()
