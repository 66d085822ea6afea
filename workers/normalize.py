"""Normalize: every call, from any source, into one canonical event. Pure functions.

Sources differ only in shape: the Segment API and the webhook carry Segment calls; the
Koala format carries items of one person plus request-level `profile_id`, `email`,
`traits` and `ip`. Everything downstream (dedupe, resolve, store) sees only `Event`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from ingest import times
from ingest.acceptance import email_field
from ingest.audiences import Computation, computation
from ingest.companies import company_domain, company_of_host
from ingest.identifiers import Rules, clean_email, clean_identifier
from ingest.times import parse_time


class NormalizeError(ValueError):
    """A call that cannot become an event (a permanent failure: dead letter, not retry)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(slots=True)
class Identifiers:
    email: str | None = None
    profile_id: str | None = None
    user_id: str | None = None
    anonymous_id: str | None = None

    def pairs(self) -> list[tuple[str, str]]:
        """(kind, value) of every identifier present, strongest first."""
        out = []
        for kind in ("email", "profile_id", "user_id", "anonymous_id"):
            value = getattr(self, kind)
            if value is not None:
                out.append((kind, value))
        return out


@dataclass(slots=True)
class Event:
    """The canonical event every stage after normalize works on."""

    project_id: int
    message_id: str
    type: str
    source: str
    timestamp: datetime
    received_at: datetime
    original_timestamp: datetime | None
    sent_at: datetime | None
    ids: Identifiers
    event: str | None = None
    name: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    traits: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    ip: str | None = None
    group_id: str | None = None
    previous_id: str | None = None
    account: dict[str, Any] | None = None
    company: str | None = None  # the company domain of the event's work email
    engage: Computation | None = None  # an Engage audience membership or computed trait
    payload: dict[str, Any] = field(default_factory=dict)
    content_hash: bytes = b""
    profile: int | None = None  # set by resolve
    replay_of: int | None = None  # the dead letter this call is a replay of


def corrected_timestamp(
    received_at: datetime, sent_at: datetime | None, original: datetime | None
) -> datetime:
    """Segment's clock-skew rule (ingest/times.py); out of the calendar: a dead letter."""
    try:
        return times.corrected_timestamp(received_at, sent_at, original)
    except times.OutOfRange as error:
        raise NormalizeError("invalid_timestamp", str(error)) from None


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _first(*values: Any) -> Any:
    for value in values:
        if value is not None and value != "":
            return value
    return None


def content_hash(call: dict[str, Any], shared: dict[str, Any] | None) -> bytes:
    """Hash of what the sender meant: stamps and retry-varying fields left out."""
    stable = {k: v for k, v in call.items() if k not in ("receivedAt", "sentAt", "writeKey")}
    if shared:
        stable["$shared"] = shared
    return hashlib.sha256(orjson.dumps(stable, option=orjson.OPT_SORT_KEYS)).digest()


def normalize(
    project_id: int,
    source: str,
    call: dict[str, Any],
    shared: dict[str, Any] | None,
    rules: Rules,
) -> Event:
    if source == "koala":
        event = _normalize_koala(project_id, call, shared or {}, rules)
    else:
        event = _normalize_segment(project_id, source, call, rules)
    # companies from work emails, and the company a group's domain or website stands for
    event.company = company_domain(event.ids.email, rules)
    if event.account is not None:
        event.account["company"] = company_of_host(event.account["domain"], rules)
    return event


def _received(call: dict[str, Any]) -> datetime:
    received = parse_time(call.get("receivedAt"))
    if received is None:
        raise NormalizeError("invalid_received_at", "call has no receivedAt stamp")
    return received


def _normalize_segment(project_id: int, source: str, call: dict[str, Any], rules: Rules) -> Event:
    blocked = rules.blocked
    kind = call.get("type")
    message_id = call.get("messageId")
    if not message_id:
        raise NormalizeError("missing_message_id", "call has no messageId")
    received_at = _received(call)
    original = parse_time(call.get("timestamp") or call.get("originalTimestamp"))
    sent_at = parse_time(call.get("sentAt"))
    properties = _obj(call.get("properties"))
    context = _obj(call.get("context"))
    traits = _obj(call.get("traits"))
    context_traits = _obj(context.get("traits"))
    if kind == "identify" and not traits:
        traits = dict(context_traits)  # rudder-sdk and some clients send them only here
    ids = Identifiers(
        email=clean_email(
            # `email` in any letter case, as the acceptance rule reads it (ingest/acceptance.py)
            _first(email_field(traits), email_field(context_traits), email_field(properties)),
            blocked,
            rules.strip_plus_tags,
        ),
        profile_id=clean_identifier(
            _first(
                properties.get("profile_id"),
                traits.get("profile_id"),
                context_traits.get("profile_id"),
            ),
            blocked,
        ),
        user_id=clean_identifier(call.get("userId"), blocked),
        anonymous_id=clean_identifier(call.get("anonymousId"), blocked),
    )
    page = _obj(context.get("page"))
    if kind in ("page", "screen"):
        properties = {
            **{k: page[k] for k in ("url", "path", "referrer", "title", "search") if k in page},
            **properties,
        }
    account = None
    if kind == "group":
        account = _account(str(call.get("groupId")), traits)
    return Event(
        project_id=project_id,
        message_id=str(message_id),
        type=str(kind),
        source=source,
        timestamp=corrected_timestamp(received_at, sent_at, original),
        received_at=received_at,
        original_timestamp=original,
        sent_at=sent_at,
        ids=ids,
        event=call.get("event") if kind == "track" else None,
        name=_first(call.get("name"), properties.get("name"))
        if kind in ("page", "screen")
        else None,
        properties=properties,
        traits=traits,
        context=context,
        ip=clean_identifier(context.get("ip"), blocked),
        group_id=str(call["groupId"]) if kind == "group" else None,
        previous_id=clean_identifier(call.get("previousId"), blocked),
        account=account,
        engage=computation(kind, call.get("event"), traits, properties, context),
        payload=call,
        content_hash=content_hash(call, None),
    )


def _account(group_id: str, traits: dict[str, Any]) -> dict[str, Any]:
    domain = _first(traits.get("domain"), traits.get("website"))
    return {
        "group_id": group_id,
        "domain": domain_of(domain) if domain else None,
        "name": traits.get("name") if isinstance(traits.get("name"), str) else None,
        "traits": traits,
    }


def domain_of(value: Any) -> str | None:
    """`https://www.Acme.com/pricing` -> `acme.com`."""
    text = str(value).strip().lower()
    text = re.sub(r"^[a-z]+://", "", text).split("/")[0].split(":")[0]
    text = text.removeprefix("www.")
    return text or None


def _normalize_koala(
    project_id: int, call: dict[str, Any], shared: dict[str, Any], rules: Rules
) -> Event:
    blocked = rules.blocked
    kind = call.get("type")
    message_id = call.get("message_id")
    if not message_id:
        raise NormalizeError("missing_message_id", "item has no message_id")
    received_at = _received(call)
    properties = _obj(call.get("properties"))
    context = _obj(call.get("context"))
    traits = {**_obj(shared.get("traits")), **_obj(call.get("traits"))}
    original = parse_time(_first(call.get("sent_at"), call.get("timestamp")))
    ids = Identifiers(
        email=clean_email(
            _first(
                email_field(call),
                email_field(shared),
                email_field(traits),
                email_field(properties),
            ),
            blocked,
            rules.strip_plus_tags,
        ),
        profile_id=clean_identifier(
            _first(
                shared.get("profile_id"), properties.get("profile_id"), traits.get("profile_id")
            ),
            blocked,
        ),
    )
    ip = clean_identifier(
        _first(call.get("device_ip"), shared.get("ip"), context.get("ip")), blocked
    )
    account_traits = _obj(traits.get("$account"))
    account = None
    if account_traits:
        group_id = _first(account_traits.get("group_id"), account_traits.get("domain"))
        if group_id:
            account = _account(str(group_id), account_traits)
    page_fields: dict[str, Any] = {
        k: call[k] for k in ("url", "path", "referrer", "title") if k in call
    }
    return Event(
        project_id=project_id,
        message_id=str(message_id),
        type=str(kind),
        source="koala",
        # Koala items carry the call's own timestamp as `sent_at`: no skew correction known.
        timestamp=original or received_at,
        received_at=received_at,
        original_timestamp=original,
        sent_at=None,
        ids=ids,
        event=call.get("event") if kind == "track" else None,
        name=_first(call.get("name"), call.get("title")) if kind == "page" else None,
        properties={**page_fields, **properties},
        traits=traits,
        context=context,
        ip=ip,
        account=account,
        payload={**call, "$shared": shared} if shared else call,
        content_hash=content_hash(call, shared),
    )
