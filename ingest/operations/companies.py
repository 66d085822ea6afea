"""Company activity (issue 16, item 2): companies active in a window ranked by activity
or by one intent signal, and one company with its days, visitors, signals and recent page
views. Reads (a viewer of the project); the counts come from `profile_activity`
(ingest/store/activity.py), kept by the workers in each batch's transaction.

Windows are UTC days, `since` included and `until` excluded; by default the last 7 days
up to and including today.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ingest.operations import paging
from ingest.operations.context import Ops
from ingest.operations.errors import Invalid, NotFound
from ingest.operations.paging import Page
from ingest.signals import page_path, signal_names
from ingest.store import activity

DEFAULT_DAYS = 7
MAX_DAYS = 366
RANK_RE = r"^(activity|signal:[a-z0-9][a-z0-9_-]{0,39})$"


class Window(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: date | None = Field(
        default=None, description="First UTC day (default: 6 days before `until`'s eve)."
    )
    until: date | None = Field(
        default=None, description="The UTC day after the last (default: tomorrow)."
    )

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        since, until = self.days()
        if since >= until:
            raise ValueError("since must be before until")
        if (until - since).days > MAX_DAYS:
            raise ValueError(f"a window is at most {MAX_DAYS} days")
        return self

    def days(self) -> tuple[date, date]:
        until = self.until or (datetime.now(UTC).date() + timedelta(days=1))
        return self.since or (until - timedelta(days=DEFAULT_DAYS)), until


class Query(Window):
    rank: str = Field(
        default="activity",
        pattern=RANK_RE,
        description="`activity` (the visitors' events) or `signal:NAME` (that signal's"
        " count; only companies that showed it).",
    )
    limit: int = Field(default=50, ge=1, le=paging.MAX_LIMIT)
    cursor: str | None = Field(default=None, max_length=500)


class CompanyRef(BaseModel):
    id: int
    group_id: str | None = Field(description="The groupId of a group call (null: from emails).")
    name: str | None
    domain: str | None = Field(description="The company's (registrable) domain.")


class CompanyActivity(BaseModel):
    company: CompanyRef
    visitors: int = Field(description="Visitors active in the window.")
    identified: int = Field(description="Of them, those with an email now.")
    events: int
    page_views: int
    signals: dict[str, int] = Field(description="Signal name -> events that showed it.")
    last_active: date = Field(description="The last UTC day with activity in the window.")
    value: int = Field(description="What it is ranked by (events, or the signal's count).")


class Companies(Page[CompanyActivity]):
    since: date
    until: date
    rank: str
    signals: list[str] = Field(description="The signals the rules define (ranking choices).")


class PathViews(BaseModel):
    path: str
    views: int


class Day(BaseModel):
    day: date
    visitors: int
    identified: int
    events: int
    page_views: int
    signals: dict[str, int]
    top_paths: list[PathViews] = Field(description="The day's most viewed paths (top 5).")


class Visitor(BaseModel):
    profile_id: int
    email: str | None
    identified: bool
    events: int
    page_views: int
    signals: dict[str, int]
    first_day: date
    last_day: date


class PageView(BaseModel):
    profile_id: int
    timestamp: datetime
    path: str | None
    title: str | None
    url: str | None


class CompanyDetail(BaseModel):
    asked: int = Field(description="The id asked for.")
    merged_into: int | None = Field(
        description="When the id asked for was merged into another company: that one."
    )
    company: CompanyRef
    domains: list[str]
    since: date
    until: date
    totals: CompanyActivity | None = Field(description="The window's totals (null: none).")
    days: list[Day] = Field(description="Active days, newest first.")
    visitors: list[Visitor] = Field(description="Active visitors, most events first (100).")
    recent_page_views: list[PageView] = Field(description="The newest 20 page views.")


def _ref(row: dict[str, Any]) -> CompanyRef:
    return CompanyRef(
        id=row["account_id"] if "account_id" in row else row["id"],
        group_id=row["group_id"],
        name=row["name"],
        domain=row.get("domain") or (row.get("domains") or [None])[0] or row["group_domain"],
    )


def _activity(row: dict[str, Any]) -> CompanyActivity:
    return CompanyActivity(
        company=_ref(row),
        visitors=row["visitors"],
        identified=row["identified"],
        events=row["events"],
        page_views=row["page_views"],
        signals={k: int(v) for k, v in row["signals"].items()},
        last_active=row["last_day"],
        value=row["value"],
    )


def ranked(ops: Ops, name: str, query: Query) -> Companies:
    """Companies active in the window, most active first (by events or by a signal)."""
    project = ops.project(name)
    check_signal(ops, query.rank)
    since, until = query.days()
    signal = query.rank.removeprefix("signal:") if query.rank != "activity" else None
    after = paging.decode(f"companies:{query.rank}", query.cursor, 2)
    rows = activity.ranked(
        ops.conn,
        project.id,
        since,
        until,
        signal,
        query.limit + 1,
        (int(after[0]), int(after[1])) if after else None,
    )
    found = paging.page(
        f"companies:{query.rank}", rows, query.limit, lambda r: [r["value"], r["account_id"]]
    )
    return Companies(
        items=[_activity(r) for r in found.items],
        next=found.next,
        since=since,
        until=until,
        rank=query.rank,
        signals=signal_names(ops.rules.signals),
    )


def detail(ops: Ops, name: str, company_id: int, window: Window) -> CompanyDetail:
    """One company in the window; a merged-away company answers for its survivor."""
    project = ops.project(name)
    row = activity.account(ops.conn, project.id, company_id)
    if row is not None and row["merged_into"] is not None:
        row = activity.account(ops.conn, project.id, row["merged_into"])
    if row is None:
        raise NotFound("unknown_company", f"no company {company_id} in {project.name}")
    since, until = window.days()
    survivor = row["id"]
    days = activity.company_days(ops.conn, project.id, survivor, since, until)
    totals = activity.ranked(ops.conn, project.id, since, until, None, 1, None, survivor)
    views = activity.recent_page_views(ops.conn, project.id, survivor, 20)
    return CompanyDetail(
        asked=company_id,
        merged_into=survivor if survivor != company_id else None,
        company=_ref(row),
        domains=row["domains"],
        since=since,
        until=until,
        totals=_activity(totals[0]) if totals else None,
        days=[Day(**{**d, "signals": {k: int(v) for k, v in d["signals"].items()}}) for d in days],
        visitors=[
            Visitor(**{**v, "signals": {k: int(n) for k, n in v["signals"].items()}})
            for v in activity.company_visitors(ops.conn, project.id, survivor, since, until)
        ],
        recent_page_views=[
            PageView(
                profile_id=v["profile_id"],
                timestamp=v["timestamp"],
                path=page_path({"path": v["path"], "url": v["url"]}),
                title=v["name"],
                url=v["url"],
            )
            for v in views
        ],
    )


def check_signal(ops: Ops, rank: str) -> None:
    """A rank by a signal the rules do not define is refused (it could only be empty)."""
    if rank.startswith("signal:") and rank[7:] not in signal_names(ops.rules.signals):
        raise Invalid(
            "unknown_signal",
            f"no signal {rank[7:]!r}; the rules define: "
            + (", ".join(signal_names(ops.rules.signals)) or "none"),
        )
