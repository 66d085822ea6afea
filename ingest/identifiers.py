"""Identifier rules shared by the workers (normalize) and the operator surfaces (profile
lookups in the admin API, reports and the CLI): what counts as an identifier or an email,
and the rules a deployment configures. Pure functions.

They live in `ingest` so both packages import them and the dependency runs one way:
`workers` imports `ingest`, never the other way round (tests/test_import_graph.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ingest.signals import DEFAULT_RULES, SignalRule, parse_rules, rules_text

if TYPE_CHECKING:
    from ingest.config import Settings

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True, slots=True)
class CompanyDomains:
    """One project's exceptions to the company lists (`projects.company_free_domains`,
    `company_work_domains`): domains that stand for no company in that project (a
    regional ISP its visitors use), and domains that always stand for a company there."""

    free: frozenset[str] = frozenset()
    work: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Rules:
    """The normalization rules a deployment configures. A changed rule applies to new
    calls at once, and to history through `koala-ingest reprocess`."""

    blocked: frozenset[str]
    # `ann+news@acme.com` is the visitor `ann@acme.com` (sub-addressing, RFC 5233)
    strip_plus_tags: bool = False
    # calls naming a user deleted less than this many days ago are refused as `suppressed`
    # (workers/pipeline.py; 0: off). Not a normalization rule: reprocessing ignores it.
    suppress_days: int = 0
    # companies from work emails (ingest/companies.py): more free-mail domains, and
    # domains that are always a company's
    company_extra_free_domains: frozenset[str] = frozenset()
    company_work_domains: frozenset[str] = frozenset()
    # company activity's intent signals (ingest/signals.py)
    signals: tuple[SignalRule, ...] = DEFAULT_RULES
    # each project's own company exceptions, by project id (the workers load them,
    # workers/project_rules.py); `for_project` folds one in. Not compared: a job records
    # the rules folded for its project (ingest/reprocessing.py), not this map.
    projects: Mapping[int, CompanyDomains] = field(default_factory=dict, compare=False)

    def for_project(self, project_id: int) -> Rules:
        """The rules a project's calls are normalized with: the deployment's, with the
        project's company exceptions folded in (the same object when it has none)."""
        domains = self.projects.get(project_id)
        return self if domains is None else self.with_company_domains(domains)

    def with_company_domains(self, domains: CompanyDomains) -> Rules:
        """The project's exceptions win over the deployment's: its free domains are free
        even if KOALA_COMPANY_WORK_DOMAINS names them, its work domains a company even if a
        list or KOALA_COMPANY_EXTRA_FREE_DOMAINS names them (work domains win in
        ingest/companies.py)."""
        return replace(
            self,
            company_extra_free_domains=self.company_extra_free_domains | domains.free,
            company_work_domains=(self.company_work_domains - domains.free) | domains.work,
            projects={},
        )

    @classmethod
    def of(cls, settings: Settings) -> Rules:
        return cls(
            frozenset(settings.blocked_identifiers),
            settings.email_strip_plus_tags,
            suppress_days=settings.suppress_days,
            company_extra_free_domains=frozenset(settings.company_extra_free_domains),
            company_work_domains=frozenset(settings.company_work_domains),
            signals=parse_rules(settings.signal_rules),
        )

    def as_params(self) -> dict[str, Any]:
        """The rules as a job records them: a job runs with the rules it was started with,
        whichever process (CLI, worker) runs or resumes it."""
        return {
            "blocked": sorted(self.blocked),
            "strip_plus_tags": self.strip_plus_tags,
            "company_extra_free_domains": sorted(self.company_extra_free_domains),
            "company_work_domains": sorted(self.company_work_domains),
            "signal_rules": rules_text(self.signals),
        }

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Rules:
        # jobs recorded before the company rules existed have no such keys
        return cls(
            frozenset(params["blocked"]),
            bool(params["strip_plus_tags"]),
            company_extra_free_domains=frozenset(params.get("company_extra_free_domains", ())),
            company_work_domains=frozenset(params.get("company_work_domains", ())),
            # (and before the signal rules: the default ones)
            signals=parse_rules(params["signal_rules"])
            if "signal_rules" in params
            else DEFAULT_RULES,
        )


def clean_identifier(value: Any, blocked: frozenset[str]) -> str | None:
    """A usable identifier, or None for missing and blocked values (`null`, `0`, ...)."""
    if value is None or isinstance(value, bool | dict | list):
        return None
    text = str(value).strip()
    if text.lower() in blocked or not text:
        return None
    return text


def clean_email(value: Any, blocked: frozenset[str], strip_plus_tags: bool = False) -> str | None:
    """Trimmed, lower-cased, and only if it is an email (without its `+tag` if asked)."""
    text = clean_identifier(value, blocked)
    if text is None:
        return None
    text = text.lower()
    if not EMAIL_RE.match(text):
        return None
    if strip_plus_tags:
        local, _, domain = text.rpartition("@")
        local = local.split("+", 1)[0]
        if local:
            text = f"{local}@{domain}"
    return text
