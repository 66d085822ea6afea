"""Who is asking, and what they may do: enforced here, in the operations, not in a page.

Two roles: a `viewer` reads, an `operator` reads and acts. An actor may be limited to
some projects; it then sees nothing of the others (a project it may not see answers 404,
as one that does not exist, so names do not leak). The bootstrap `ADMIN_TOKEN` and the
CLI (whoever has a shell and the database URL already has everything) act as operators
of every project.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ingest.operations.errors import Forbidden, NotFound

Role = Literal["viewer", "operator"]
ROLES: tuple[Role, ...] = ("viewer", "operator")


@dataclass(frozen=True)
class Actor:
    name: str  # recorded in the audit log: "admin-token", "token:ann", "cli:root"
    role: Role
    projects: frozenset[int] | None = None  # None: every project

    @property
    def can_act(self) -> bool:
        return self.role == "operator"

    @property
    def everywhere(self) -> bool:
        return self.projects is None

    def sees(self, project_id: int) -> bool:
        return self.projects is None or project_id in self.projects

    def check_sees(self, project_id: int, name: str) -> None:
        if not self.sees(project_id):
            raise NotFound("unknown_project", f"no project named {name!r}")

    def check_acts(self, project_id: int | None = None) -> None:
        """May act (on this project, or on what spans projects when None)."""
        if not self.can_act:
            raise Forbidden("forbidden", f"{self.name} is a viewer: it reads, it does not act")
        if project_id is None and self.projects is not None:
            raise Forbidden("forbidden", f"{self.name} is limited to some projects")
        if project_id is not None and not self.sees(project_id):
            raise Forbidden("forbidden", f"{self.name} may not act on this project")


def cli_actor() -> Actor:
    import getpass

    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = "unknown"
    return Actor(f"cli:{who}", "operator")


ADMIN_TOKEN_ACTOR = Actor("admin-token", "operator")
