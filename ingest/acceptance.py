"""Koala's acceptance rule, per project (`accept`). Pure functions, no I/O.

Koala's destination page says: "by default, Koala will only accept Track and Identify calls
containing an email property in the properties or traits field of the call", and anonymous
visitors are tracked by sending the Koala pixel's `profile_id` in the properties. A project
chooses:

- `all` (the default, for every existing and new project: what koala-ingest always did):
  every well-formed call is taken;
- `identified` (Koala's default): a `track` or `identify` call carrying neither an email
  nor a Koala `profile_id` is refused with code `not_identified`, kept as a rejection with
  its payload and counted like every other one (never dropped silently).

What counts, read the way the workers' normalize reads identifiers (workers/normalize.py),
so a call taken as identified is stored with that identifier:

- an email: the key `email` in any letter case (`email`, `Email`, `EMAIL`) of `traits`,
  `context.traits` (where Segment's SDKs send a user's traits on calls other than
  identify), `properties`, the Koala format's item and request fields; it must look like an
  email (`ingest.identifiers.clean_email`): `"email": ""`, `"null"` or `"n/a"` is none;
- a `profile_id` in `properties`, `traits`, `context.traits` or the Koala request fields,
  not a blocked value (KOALA_BLOCKED_IDENTIFIERS: `"null"`, `"0"`, ...).

A `userId` or `anonymousId` alone is not enough: Koala matches visitors by email and by its
own profile_id, not by the sender's ids.

`page`, `screen`, `group` and `alias` are always taken, whatever `accept` says: Koala's rule
names only Track and Identify, and its destination accepts the other three. Page and screen
views of a visitor not identified yet are what Koala's anonymous-visitor tracking is (the
pixel records them by profile_id before anyone fills a form), and they join the person's
history once an identify or alias links the ids; a group call is about the account, not
the person; an alias is the very call that links an anonymous id to a known user, so
refusing it would keep that history anonymous forever.

Where: in the receiver (ingest/wire.py's per-call checks), which holds the project in
memory (ingest/keys.py): no query per call, and the sender's answer lists the refused item
(`rejected`, code `not_identified`) like any other per-call refusal. A changed setting
applies within KOALA_KEY_CACHE_SECONDS, to calls received from then on; calls already
stored, replayed dead letters and reprocessing are not judged again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ingest.identifiers import clean_email, clean_identifier

ACCEPT_ALL = "all"
ACCEPT_IDENTIFIED = "identified"
ACCEPT_MODES = (ACCEPT_ALL, ACCEPT_IDENTIFIED)
# the call types the rule judges; the others are always taken (see the module's docstring)
JUDGED_TYPES = frozenset({"track", "identify"})
NOT_IDENTIFIED = "not_identified"
NOT_IDENTIFIED_MESSAGE = (
    "this project takes track and identify calls only with an email (in properties or"
    " traits) or a Koala profile_id (accept = identified)"
)


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def email_field(fields: dict[str, Any]) -> Any:
    """The value of `fields`' key `email` in any letter case (`email` itself first)."""
    value = fields.get("email")
    if value is not None and value != "":
        return value
    for key, found in fields.items():
        if (
            isinstance(key, str)
            and len(key) == 5
            and key.lower() == "email"
            and found is not None
            and found != ""
        ):
            return found
    return None


@dataclass(frozen=True, slots=True)
class Acceptance:
    """The `identified` rule with the deployment's blocked identifiers."""

    blocked: frozenset[str]

    def identified(self, call: dict[str, Any], shared: dict[str, Any] | None = None) -> bool:
        """Whether the call carries an email or a Koala profile_id (see the docstring)."""
        properties = _obj(call.get("properties"))
        traits = _obj(call.get("traits"))
        context_traits = _obj(_obj(call.get("context")).get("traits"))
        places = [traits, context_traits, properties]
        if shared is not None:  # the Koala format: the item's and the request's fields
            places += [call, shared, _obj(shared.get("traits"))]
        for fields in places:
            if clean_email(email_field(fields), self.blocked) is not None:
                return True
        for fields in (shared or {}, properties, traits, context_traits):
            if clean_identifier(fields.get("profile_id"), self.blocked) is not None:
                return True
        return False

    def problem(
        self, call: dict[str, Any], shared: dict[str, Any] | None = None
    ) -> tuple[str, str] | None:
        """`not_identified` for a judged call without email or profile_id, else None."""
        if call.get("type") in JUDGED_TYPES and not self.identified(call, shared):
            return NOT_IDENTIFIED, NOT_IDENTIFIED_MESSAGE
        return None
