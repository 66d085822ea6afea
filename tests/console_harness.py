"""What the console's browser tests share: a receiver and a worker, headless Chromium
(Debian's, driven by Playwright; never a downloaded browser), an operator signed in, and
screenshots of every page visited, kept under tests/artifacts/console/ (CI keeps them;
README.md names the path).

Skipped with a one-line reason where Chromium is not installed (`.ci/run` installs it).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from chromium import chromium_or_skip, launched
from conftest import Proc, Receiver, Servers, start_receiver, start_worker

ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "console"
ADMIN = "console-browser-admin"


@dataclass
class ConsoleStack:
    receiver: Receiver
    worker: Proc
    servers: Servers

    @property
    def url(self) -> str:
        return self.receiver.url

    def api(self, method: str, path: str, token: str = ADMIN, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"}
        answer = httpx.request(method, self.url + path, headers=headers, timeout=30, **kw)
        answer.raise_for_status()
        return answer.json()

    def token(self, name: str, role: str, *projects: str) -> str:
        """A new API token (through the admin API, as an operator would make one)."""
        body = {"name": name, "role": role, "projects": list(projects) or None}
        return str(self.api("POST", "/admin/tokens", json=body)["token"])


@pytest.fixture(scope="module")
def console_stack(
    servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConsoleStack]:
    chromium_or_skip()
    tmp = tmp_path_factory.mktemp("console-browser")
    env = {"KOALA_KEY_CACHE_SECONDS": "1"}
    receiver = start_receiver(servers, tmp, ADMIN_TOKEN=ADMIN, **env)
    worker = start_worker(servers, tmp, name="console", **env)
    try:
        yield ConsoleStack(receiver, worker, servers)
    finally:
        worker.stop()
        receiver.proc.stop()


@pytest.fixture(scope="module")
def chromium(console_stack: ConsoleStack) -> Iterator[Any]:
    with launched() as browser:
        yield browser


@dataclass
class Operator:
    """One person in one browser context (own cookies), with a screenshot of each step."""

    page: Any
    stack: ConsoleStack
    folder: Path
    errors: list[str] = field(default_factory=list)
    shots: int = 0

    def goto(self, path: str) -> Any:
        self.page.goto(self.stack.url + path)
        return self.page

    def sign_in(self, token: str = ADMIN) -> Operator:
        self.goto("/console/login")
        self.page.fill("input[name=token]", token)
        self.page.click("form[action='/console/login'] button[type=submit]")
        self.page.wait_for_load_state()
        return self

    def forget_refusals(self) -> None:
        """Chromium logs a page answered 403/404 as a failed load: after a test has asked
        for a refusal on purpose, that message is not a page error."""
        self.errors = [e for e in self.errors if "responded with a status of 40" not in e]

    def shot(self, name: str) -> Path:
        """A full-page screenshot, numbered in the order the test took them."""
        self.shots += 1
        path = self.folder / f"{self.shots:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def operator(
    chromium: Any, console_stack: ConsoleStack, request: pytest.FixtureRequest
) -> Iterator[Operator]:
    """A fresh browser context, signed out; its screenshots under
    tests/artifacts/console/<test name>/."""
    folder = ARTIFACTS / re.sub(r"[^\w.-]+", "_", request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    person = Operator(page, console_stack, folder)
    page.on("pageerror", lambda e: person.errors.append(f"pageerror: {e}"))
    page.on(
        "console",
        lambda m: person.errors.append(f"{m.type}: {m.text}") if m.type == "error" else None,
    )
    try:
        yield person
    finally:
        context.close()
    # a page whose script failed, or that a CSP blocked, fails its test
    assert person.errors == [], person.errors
