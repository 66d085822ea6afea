"""Companies: which account is the one company of each domain a batch names. Pure rules,
no I/O; workers/apply.py loads the domains' holders and writes the outcome.

A batch names domains two ways: a visitor's work email (workers/resolve.py's
`company_links`) and a group call or `$account` with a domain or website (the account's
`company`). For each domain, in a stable order:

- nobody holds it yet: the batch's group account with that domain takes it (the first
  by account id if several), else a new account without a groupId is created for it;
- it is held by an account without a groupId (made for a work email) and a group
  account of the batch carries it: that account merges into the group account, which
  keeps the name and traits the group calls sent;
- it is held by a group account and another group account of the batch carries it: the
  newcomer merges into the holder (the domain's first company stays).

Merges chain within a batch (`final`), so every link ends on a surviving account.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ingest.store.accounts import AccountMerge, Holder


@dataclass(slots=True)
class Companies:
    owner: dict[str, int] = field(default_factory=dict)  # domain -> surviving account
    merges: list[AccountMerge] = field(default_factory=list)
    redirect: dict[int, int] = field(default_factory=dict)  # merged away -> survivor

    def final(self, account_id: int) -> int:
        while account_id in self.redirect:
            account_id = self.redirect[account_id]
        return account_id


def decide(
    carried: dict[str, list[tuple[int, str | None]]],
    held: dict[str, Holder],
    created: dict[str, int],
) -> Companies:
    """`carried`: domain -> the batch's group accounts carrying it, with the message that
    carried it; `held`: the domains' current holders; `created`: new accounts made for
    domains neither held nor carried. Returns each domain's company and the merges."""
    out = Companies()
    for domain in sorted(set(carried) | set(held) | set(created)):
        if domain in created:
            out.owner[domain] = created[domain]
            continue
        groups: dict[int, str | None] = {}
        for account_id, message_id in carried.get(domain, []):
            groups.setdefault(out.final(account_id), message_id)
        holder = held.get(domain)
        if holder is None:
            into = min(groups)
        else:
            current = out.final(holder.account_id)
            domain_only = holder.domain_only and current == holder.account_id
            into = min(groups) if domain_only and groups and current not in groups else current
            if current != into:
                _merge(out, current, into, domain, groups.get(into))
        for account_id, message_id in sorted(groups.items()):
            if account_id != into:
                _merge(out, account_id, into, domain, message_id)
        out.owner[domain] = into
    out.owner = {d: out.final(a) for d, a in out.owner.items()}
    out.merges = [
        AccountMerge(m.from_account, out.final(m.into_account), m.domain, m.message_id)
        for m in out.merges
    ]
    return out


def _merge(out: Companies, source: int, into: int, domain: str, message_id: str | None) -> None:
    out.redirect[source] = into
    out.merges.append(AccountMerge(source, into, domain, message_id))
