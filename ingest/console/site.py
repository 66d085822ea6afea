"""The whole console: its machinery's routes and every page group's, listed once."""

from __future__ import annotations

from starlette.routing import BaseRoute

from ingest.api.endpoint import AdminRuntime
from ingest.console import (
    audit,
    companies,
    dead_letters,
    debugger,
    jobs,
    lists,
    overview,
    profiles,
    projects,
)
from ingest.console.app import Console

# in the order of the navigation (ingest/console/app.py NAV)
PAGES = [overview, debugger, dead_letters, lists, profiles, companies, jobs, projects, audit]


def routes(runtime: AdminRuntime) -> list[BaseRoute]:
    console = Console(runtime)
    out = console.routes()
    for page in PAGES:
        out += page.routes(console)
    return out
