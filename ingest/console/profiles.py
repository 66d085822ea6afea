"""Profiles: look a visitor up by any identifier; one profile with its identifiers, traits,
companies, merges and refused merges (the identity graph, drawn server-side as SVG), and
its events paged."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from ingest.api.endpoint import MAX_ID
from ingest.console.app import Console
from ingest.operations import paging, profiles, projects
from ingest.operations.context import Ops
from ingest.operations.errors import NotFound

EVENTS_PER_PAGE = 25
MAX_IDENTIFIER_NODES = 16
KINDS = (
    ("email", "Email"),
    ("profile_id", "Koala profile_id (ko_id)"),
    ("user_id", "userId"),
    ("anonymous_id", "anonymousId"),
)


def project_names(ops: Ops) -> list[str]:
    """The projects this actor may see, for the pages' project picker."""
    names: list[str] = []
    cursor = None
    while True:
        found = projects.list_projects(ops, paging.MAX_LIMIT, cursor)
        names += [p.name for p in found.items]
        if found.next is None:
            return names
        cursor = found.next


# --- the identity graph -------------------------------------------------------------


@dataclass
class Node:
    key: str
    kind: str  # profile (this one), identifier, merged, refused
    label: str
    title: str
    x: float = 0.0
    y: float = 0.0
    href: str | None = None


@dataclass
class Edge:
    a: Node
    b: Node
    kind: str  # identifier, merge, refused


WIDTH, HEIGHT = 760, 480
CENTER = (WIDTH / 2, HEIGHT / 2)


def graph(detail: profiles.ProfileDetail, project: str) -> dict[str, Any]:
    """The profile in the middle; its identifiers on an inner ring; the profiles merged
    into it (solid) and those the guard kept apart (dashed) on an outer ring."""
    me = detail.profile
    center = Node(f"p{me.id}", "profile", f"profile {me.id}", f"profile {me.id}")
    center.x, center.y = CENTER
    held = (
        [("email", v) for v in me.emails]
        + [("profile_id", v) for v in me.profile_ids]
        + [("user_id", v) for v in me.user_ids]
        + [("anonymous_id", v) for v in me.anonymous_ids]
    )
    shown = held[:MAX_IDENTIFIER_NODES]
    inner = [Node(f"i{i}", "identifier", _cut(v), f"{k}: {v}") for i, (k, v) in enumerate(shown)]
    if len(held) > len(shown):
        more = len(held) - len(shown)
        inner.append(Node("more", "identifier", f"+{more} more", f"{more} more identifiers"))
    _ring(inner, 130, -math.pi / 2)

    profiles_at: dict[int, Node] = {me.id: center}
    outer: list[Node] = []
    edges = [Edge(center, n, "identifier") for n in inner]

    def node_of(pid: int, kind: str) -> Node:
        if pid not in profiles_at:
            node = Node(
                f"p{pid}",
                kind,
                f"profile {pid}",
                f"profile {pid}" + (" (merged into this one)" if kind == "merged" else ""),
                href=f"/console/profiles/{pid}?project={project}",
            )
            profiles_at[pid] = node
            outer.append(node)
        return profiles_at[pid]

    for pid in detail.absorbed:
        node_of(pid, "merged")
    for m in detail.merges:
        a, b = node_of(m.from_profile, "merged"), node_of(m.into_profile, "merged")
        edges.append(Edge(a, b, "merge"))
    for m in detail.refused_merges:
        a, b = node_of(m.from_profile, "refused"), node_of(m.into_profile, "refused")
        edges.append(Edge(a, b, "refused"))
    _ring(outer, 205, -math.pi / 2 + math.pi / max(len(outer), 1) / 2)
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "nodes": [center, *inner, *outer],
        "edges": edges,
    }


def _ring(nodes: list[Node], radius: float, start: float) -> None:
    for i, node in enumerate(nodes):
        angle = start + 2 * math.pi * i / max(len(nodes), 1)
        node.x = round(CENTER[0] + radius * 1.45 * math.cos(angle), 1)
        node.y = round(CENTER[1] + radius * math.sin(angle), 1)


def _cut(text: str, n: int = 22) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# --- pages ---------------------------------------------------------------------------


def routes(console: Console) -> list[BaseRoute]:
    def lookup(request: Request) -> Any:
        q = request.query_params
        name, kind, value = q.get("project", ""), q.get("kind", "email"), q.get("value", "")

        def work(ops: Ops) -> dict[str, Any]:
            found = None
            if name:
                ops.project(name)  # 404 for a project this actor may not see
                if value:
                    found = profiles.find(ops, name, kind, value).profiles
            return {
                "projects": project_names(ops),
                "project": name,
                "kind": kind,
                "value": value,
                "kinds": KINDS,
                "found": found,
            }

        return work

    def profile(request: Request) -> Any:
        name = request.query_params.get("project", "")
        cursor = request.query_params.get("cursor") or None
        profile_id = int(request.path_params["id"])

        def work(ops: Ops) -> dict[str, Any]:
            if profile_id > MAX_ID:
                ops.project(name)
                raise NotFound("unknown_profile", f"no profile {profile_id} in {name}")
            detail = profiles.detail(ops, name, profile_id)
            events = profiles.events_of(ops, name, profile_id, EVENTS_PER_PAGE, cursor)
            return {
                "project": name,
                "detail": detail,
                "p": detail.profile,
                "graph": graph(detail, name),
                "events": events,
                "cursor": cursor,
            }

        return work

    return [
        Route("/console/profiles", console.page("profiles.html", lookup), methods=["GET"]),
        Route(
            "/console/profiles/{id:int}",
            console.page("profile.html", profile),
            methods=["GET"],
        ),
    ]
