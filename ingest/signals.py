"""Company activity (issue 16, item 2): what one stored event adds to its visitor's day.
Pure functions; the workers add it up per batch (workers/apply.py `apply_plan`, with
`ingest/store/activity.py` `tally`), the store keeps it (`profile_activity`).

An event counts on the UTC date of its (skew-corrected) timestamp, the time it happened,
not the time it arrived: a late batch lands on the day it belongs to, and a recount from
the `events` table finds the same day.

What it adds, as (metric, key) -> 1:
- `events`: every stored call (track, page, screen, identify, group, alias);
- `path`, key = a page call's path, normalized (`page_path`; '' when it has none): the
  most viewed paths, and, summed, the page views (screens are app views with no path: not
  counted). No separate page-view row: one row fewer to write for each page call's
  visitor and day (the batch path's cost, measured: README "Company activity");
- `signal`, key = a signal's name: once per event that matches any of the signal's rules
  (`KOALA_SIGNAL_RULES`, `parse_rules`).

Signal rules, one setting, rules separated by `;`: `name=path:GLOB` matches a page call
whose normalized path matches the glob (`fnmatch`, case-sensitive, `*` crosses `/`:
`/docs*` is `/docs`, `/docs/api/x`), `name=event:NAME` a track call of exactly that event
name. A name may have several rules (any of them counts, once per event). Event names may
hold commas and spaces, so `;` separates rules and only the first `=`/`:` split a rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from fnmatch import fnmatchcase
from typing import Any, Literal
from urllib.parse import urlsplit

DEFAULT_SIGNAL_RULES = "pricing=path:/pricing*; docs=path:/docs*; demo=event:Demo Requested"

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
MAX_PATH = 300  # characters of a path kept (a longer one is cut: one key, not unbounded)
MAX_RULES = 100

Metric = Literal["events", "path", "signal"]


@dataclass(frozen=True, slots=True)
class SignalRule:
    name: str
    kind: Literal["path", "event"]
    pattern: str

    def text(self) -> str:
        return f"{self.name}={self.kind}:{self.pattern}"


class SignalRuleError(ValueError):
    """A rule of KOALA_SIGNAL_RULES that cannot be read; its message names the rule."""


def parse_rules(text: str) -> tuple[SignalRule, ...]:
    """`KOALA_SIGNAL_RULES` -> rules; `SignalRuleError` with one line naming the bad rule.
    An empty setting means no signals."""
    rules: list[SignalRule] = []
    for raw in text.split(";"):
        part = raw.strip()
        if not part:
            continue
        name, eq, rest = part.partition("=")
        kind, colon, pattern = rest.partition(":")
        name, kind, pattern = name.strip(), kind.strip(), pattern.strip()
        if not eq or not colon:
            raise SignalRuleError(f"signal rule {part!r} is not name=path:GLOB or name=event:NAME")
        if not NAME_RE.match(name):
            raise SignalRuleError(
                f"signal rule {part!r}: the name must be 1-40 of a-z 0-9 _ - (starting a-z 0-9)"
            )
        if kind not in ("path", "event"):
            raise SignalRuleError(f"signal rule {part!r}: the kind must be path or event")
        if not pattern:
            raise SignalRuleError(f"signal rule {part!r}: empty pattern")
        if kind == "path" and not pattern.startswith(("/", "*")):
            raise SignalRuleError(f"signal rule {part!r}: a path glob starts with / or *")
        rules.append(SignalRule(name, kind, pattern))  # type: ignore[arg-type]
    if len(rules) > MAX_RULES:
        raise SignalRuleError(f"{len(rules)} signal rules: at most {MAX_RULES}")
    return tuple(rules)


def rules_text(rules: Iterable[SignalRule]) -> str:
    """The rules as the setting writes them (what a job records)."""
    return "; ".join(r.text() for r in rules)


DEFAULT_RULES = parse_rules(DEFAULT_SIGNAL_RULES)


def page_path(properties: dict[str, Any]) -> str | None:
    """The path of a page call: `properties.path` (normalize copies `context.page.path`
    there), else the path of `properties.url`. Normalized so that one page is one key:
    no query string or fragment (they carry campaign tags and ids, not another page), no
    trailing slash (`/pricing/` is `/pricing`; `/` stays), at most 300 characters. Letter
    case is kept: paths are case-sensitive (RFC 3986)."""
    raw = properties.get("path")
    if not isinstance(raw, str) or not raw.strip():
        url = properties.get("url")
        if not isinstance(url, str) or not url.strip():
            return None
        try:
            raw = urlsplit(url.strip()).path
        except ValueError:
            return None
    path = raw.strip().split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/"):
        path = "/" + path
    if len(path) > 1:
        path = path.rstrip("/") or "/"
    return path.replace("\x00", "")[:MAX_PATH]


def utc_day(timestamp: datetime) -> date:
    return timestamp.astimezone(UTC).date()


def contributions(
    type_: str,
    event: str | None,
    properties: dict[str, Any],
    rules: tuple[SignalRule, ...],
) -> list[tuple[Metric, str]]:
    """What one event adds to its visitor's day: (metric, key) pairs, each counting 1."""
    out: list[tuple[Metric, str]] = [("events", "")]
    signals: set[str] = set()
    if type_ == "page":
        path = page_path(properties)
        out.append(("path", path or ""))
        if path is not None:
            signals.update(
                r.name for r in rules if r.kind == "path" and fnmatchcase(path, r.pattern)
            )
    elif type_ == "track" and event is not None:
        signals.update(r.name for r in rules if r.kind == "event" and r.pattern == event)
    out += [("signal", name) for name in sorted(signals)]
    return out


def signal_names(rules: Iterable[SignalRule]) -> list[str]:
    return sorted({r.name for r in rules})
