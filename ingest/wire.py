"""Wire formats: turn a request body into the calls it carries. Pure functions, no I/O.

Three senders reach us (see shared/reference/wire-formats.md):
- the Segment HTTP Tracking API (every Segment SDK, analytics.js with a custom apiHost);
- the Koala format (`/web/projects/{key}/batch`, what the Koala (Cloud) destination sends);
- Segment's webhook destination (one raw call, or a JSON array of calls).

The receiver's job is only to split a request into self-contained calls, refuse what no
worker could ever store (with a per-item reason), stamp `receivedAt` and fill a missing
`messageId`. Turning calls into canonical events is the workers' normalize stage.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from ingest.acceptance import Acceptance
from ingest.times import OutOfRange, corrected_timestamp, parse_time

CALL_TYPES = frozenset({"track", "identify", "page", "screen", "group", "alias"})
# Segment's `{"type": "delete", "userId": ...}`: not an event but an order to erase a
# person (workers/apply.py `erase`); taken only from a signed webhook (see _problem).
DELETE_TYPE = "delete"
SHORT_PATHS = {
    "t": "track",
    "i": "identify",
    "p": "page",
    "s": "screen",
    "g": "group",
    "a": "alias",
}
MAX_MESSAGE_ID = 100
# A request refused as a whole keeps at most this much of its body as evidence.
EVIDENCE_BYTES = 4096
# Deepest nesting of objects and arrays a call may have. orjson decodes up to 1,024 levels
# but encodes at most 254, and every call is encoded again inside the queue's message
# (about 5 levels of envelope) and the workers' payloads: a call nested 1,000 deep passed
# the decoder and then failed `content_message_id` with a 500 (issue #13). 128 leaves the
# envelopes room, and no real SDK call comes near it.
MAX_DEPTH = 128
DEPTH_BYTES = 2 * MAX_DEPTH  # JSON nested past MAX_DEPTH is longer than this
# The only way orjson writes a NUL (which PostgreSQL's text and jsonb refuse) is this
# escape; a raw 0x00 byte is invalid inside a JSON string, so the decoder refuses it.
NUL_ESCAPE = b"\\u0000"
BACKSLASH = ord("\\")
# Call fields that are identifiers: a string or a number (an object, a list or a boolean
# was stored as its Python str(), or as no identifier at all).
ID_FIELDS = ("userId", "anonymousId", "previousId", "groupId")
# Call fields that must be objects when present.
OBJECT_FIELDS = ("properties", "traits", "context", "integrations")
# exact classes: JSON decodes to no subclass, and bool (a subclass of int) is left out
SCALARS = frozenset({str, int, float})
SEGMENT_TIMES = ("timestamp", "originalTimestamp", "sentAt")
KOALA_TIMES = ("sent_at", "timestamp")
# `receivedAt` is now: a clock skew shorter than this cannot move a time out of Python's
# calendar (years 1 to 9999), so only a longer one needs the exact rule
CENTURIES = timedelta(days=365 * 500)


class WireError(Exception):
    """A request that cannot be accepted as a whole: answered with `status`, `code`, `message`."""

    def __init__(
        self, status: int, code: str, message: str, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after  # seconds, when it is not the status's usual wait


@dataclass(frozen=True, slots=True)
class Rejection:
    """One call refused for its content, kept with its payload for an operator."""

    index: int | None
    code: str
    message: str
    payload: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "code": self.code, "message": self.message}


@dataclass(slots=True)
class Parsed:
    """The calls of one request, ready to queue, and the items refused."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    # Koala's request-level fields (profile_id, email, traits, ip), applied to every item.
    shared: dict[str, Any] | None = None
    write_key: str | None = None

    @property
    def received(self) -> int:
        return len(self.calls) + len(self.rejected)


# --- bodies ---------------------------------------------------------------------------


class BodyReader:
    """Accumulates a request body, decompressing gzip, and enforces the size limit as it reads.

    The limit applies to the decompressed bytes and is checked per chunk, so neither a huge
    body nor a gzip bomb is ever held in memory beyond `limit` plus one chunk.
    """

    def __init__(self, limit: int, content_encoding: str | None) -> None:
        self.limit = limit
        self._parts: list[bytes] = []
        self._size = 0
        encoding = (content_encoding or "identity").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            self._inflate: Any = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._inflate = zlib.decompressobj()
        elif encoding in ("identity", ""):
            self._inflate = None
        else:
            raise WireError(415, "unsupported_encoding", f"Content-Encoding {encoding!r}")

    def feed(self, chunk: bytes) -> None:
        if self._inflate is None:
            self._add(chunk)
            return
        try:
            # Never let one chunk inflate past what the limit still allows (+1 to detect it).
            data = self._inflate.decompress(chunk, self.limit - self._size + 1)
            self._add(data)
            while self._inflate.unconsumed_tail:
                data = self._inflate.decompress(
                    self._inflate.unconsumed_tail, self.limit - self._size + 1
                )
                self._add(data)
        except zlib.error as error:
            raise WireError(400, "invalid_encoding", f"body is not valid gzip: {error}") from None

    def _add(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self.limit:
            raise WireError(413, "request_too_large", f"request body is over {self.limit} bytes")
        self._parts.append(data)

    def finish(self) -> bytes:
        if self._inflate is not None:
            self._add(self._inflate.flush())
            if not self._inflate.eof:
                raise WireError(400, "invalid_encoding", "gzip body is truncated")
        return b"".join(self._parts)

    @property
    def evidence(self) -> str:
        return evidence_text(b"".join(self._parts))


def evidence_text(body: bytes) -> str:
    """A refused body as the `rejections.payload` text keeps it: at most EVIDENCE_BYTES,
    decoded leniently, a NUL written as its JSON escape (PostgreSQL text refuses 0x00, and
    a raw body that is not JSON may hold one: the whole batch of rejections then failed)."""
    return body[:EVIDENCE_BYTES].decode("utf-8", "replace").replace("\x00", "\\u0000")


def decode_json(body: bytes) -> Any:
    if not body.strip():
        raise WireError(400, "invalid_json", "request body is empty")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise WireError(400, "invalid_json", f"request body is not valid JSON: {error}") from None


def basic_auth_key(header: str | None) -> str | None:
    """The write key from `Authorization: Basic base64(KEY:)`, or None when absent."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise WireError(401, "invalid_auth", "Authorization header is not valid Basic") from None
    return decoded.partition(":")[0] or None


# --- calls ----------------------------------------------------------------------------


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def content_message_id(call: dict[str, Any], shared: dict[str, Any] | None = None) -> str:
    """A messageId derived from the call's content, for calls sent without one.

    Fields a sender's retry changes (`sentAt`, `writeKey`) and server stamps (`receivedAt`)
    are left out, so the same call retried gets the same id and is deduplicated downstream.
    `shared`: the request-level fields of the Koala format (`profile_id`, `email`, ...) that
    say whose call it is: without them two visitors sending the same event collided and the
    second visitor's call was dropped as a duplicate (issue #13). Segment calls carry their
    identity inside, and their ids are unchanged by this.
    """
    stable = {k: v for k, v in call.items() if k not in ("sentAt", "receivedAt", "writeKey")}
    content = {"call": stable, "shared": shared} if shared else stable
    return "ki-" + hashlib.sha256(_dumps(content)).hexdigest()[:32]


def _problem(call: Any, *, koala: bool = False, deletes: bool = False) -> tuple[str, str] | None:
    """Why a call can never be stored, or None when it is acceptable.

    Everything here depends on the call alone: what would make the workers' normalize or
    store stage fail for the call's shape is refused here, with a code the sender sees,
    rather than dead-lettered later (dead letters are for failures that depend on state).
    A `delete` call erases a person's data: taken only where the sender proved who it is
    (`deletes`: a webhook signed with the project's secret). A write key alone is public
    (it ships in every browser using analytics.js) and must not be able to erase anyone.
    """
    if not isinstance(call, dict):
        return "not_an_object", "a call must be a JSON object"
    # Fast paths (a 100-call batch spent ~2.5 us a call in here: bench/README.md): exact
    # classes compared with `is` where isinstance and `_text` calls were, the rare cases
    # left to the exact rules below them, in the same order, so the same code comes out.
    get = call.get
    kind = get("type")
    if kind.__class__ is not str or kind not in CALL_TYPES:
        # not the usual call (its type checks would all pass): the rules, in their order
        if kind is None or kind == "":
            return "missing_type", "the call has no `type`"
        if not isinstance(kind, str):
            # a list or an object here raised `TypeError: unhashable` and sank the batch
            return "invalid_type", "`type` must be a string"
        if kind == DELETE_TYPE:
            if not deletes:
                return (
                    "delete_not_accepted",
                    "a delete call is taken only from the webhook destination, signed with"
                    " the project's webhook secret (in a batch, only as its first item: the"
                    " one the signature covers)",
                )
            if not _text(get("userId")):
                return "missing_user_id", "a delete call needs the `userId` to erase"
        elif kind not in CALL_TYPES:
            return "unknown_type", f"unknown call type {kind[:100]!r}"
    # the usual call: every field absent or of its class, looked at without a loop
    properties, traits, context, integrations = (
        get("properties"), get("traits"), get("context"), get("integrations"),
    )  # fmt: skip
    if not (
        (properties is None or properties.__class__ is dict)
        and (traits is None or traits.__class__ is dict)
        and (context is None or context.__class__ is dict)
        and (integrations is None or integrations.__class__ is dict)
    ):
        for name in OBJECT_FIELDS:
            value = get(name)
            if value is not None and not isinstance(value, dict):
                return "invalid_field", f"`{name}` must be an object"
    user, anonymous, previous, group = (
        get("userId"), get("anonymousId"), get("previousId"), get("groupId"),
    )  # fmt: skip
    if not (
        (user is None or user.__class__ in SCALARS)
        and (anonymous is None or anonymous.__class__ in SCALARS)
        and (previous is None or previous.__class__ in SCALARS)
        and (group is None or group.__class__ in SCALARS)
    ):
        for name in ID_FIELDS:
            value = get(name)
            if value is not None and value.__class__ not in SCALARS:
                return "invalid_id", f"`{name}` must be a string or a number"
    if kind == "track":
        event = get("event")
        if not (event.__class__ is str and event):  # the usual call: one comparison
            if event is None or event == "":
                return "missing_event", "a track call needs a non-empty `event`"
            if not isinstance(event, str):
                # stored in a text column: a number or an object failed the store stage
                return "invalid_event", "`event` must be a non-empty string"
    elif kind == "page" or kind == "screen":
        # normalize's `name`: the call's own, else Koala's `title` or `properties.name`
        title = call.get("name")
        if title is None or title == "":
            title = call.get("title") if koala else (call.get("properties") or {}).get("name")
        if title is not None and title != "" and not isinstance(title, str):
            return "invalid_name", "a page or screen `name` must be a string"
    elif kind == "group":
        if not _text(get("groupId")):
            return "missing_group_id", "a group call needs a `groupId`"
    elif kind == "alias":
        if not _text(call.get("previousId")):
            return "missing_previous_id", "an alias call needs a `previousId`"
        if not _text(call.get("userId")):
            return "missing_user_id", "an alias call needs a `userId`"
    message_id = get("message_id" if koala else "messageId")
    if message_id.__class__ is str:
        if len(message_id) > MAX_MESSAGE_ID or "\x00" in message_id:
            return "invalid_message_id", f"messageId must be a string of at most {MAX_MESSAGE_ID}"
    elif message_id is not None and (
        not isinstance(message_id, str | int)
        or isinstance(message_id, bool)
        or len(str(message_id)) > MAX_MESSAGE_ID
        or "\x00" in str(message_id)
    ):
        return "invalid_message_id", f"messageId must be a string of at most {MAX_MESSAGE_ID}"
    if koala:
        if "sent_at" in call or "timestamp" in call:
            return _time_problem(call, KOALA_TIMES, koala)
        return None
    if not ((user.__class__ is str and user) or _text(user) or _text(anonymous)):
        return "missing_identity", "a call needs a `userId` or an `anonymousId`"
    if "timestamp" in call or "sentAt" in call or "originalTimestamp" in call:
        return _time_problem(call, SEGMENT_TIMES, koala)
    return None


def _time_problem(
    call: dict[str, Any], names: tuple[str, ...], koala: bool
) -> tuple[str, str] | None:
    """Times are ISO-8601 strings (what normalize's `parse_time` reads) or absent.

    A number was read as epoch seconds: `timestamp: 123` was stored as 1970. And the
    clock-skew rule (`receivedAt - (sentAt - timestamp)`) must land inside the calendar,
    or normalize dead-lettered the call: both depend on the call alone.
    """
    found: dict[str, Any] = {}
    for name in names:
        value = call.get(name)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            return "invalid_timestamp", f"`{name}` must be an ISO-8601 string"
        parsed = _utc_time(value)
        if parsed is None:
            return "invalid_timestamp", f"`{name}` is not an ISO-8601 time"
        found[name] = parsed
    if koala or "sentAt" not in found or len(found) < 2:
        return None
    original = found.get("timestamp") or found.get("originalTimestamp")
    if abs(found["sentAt"] - original) < CENTURIES:
        return None
    received = parse_time(call.get("receivedAt"))
    if received is not None:
        try:
            corrected_timestamp(received, found["sentAt"], original)
        except OutOfRange:  # the skew rule leaves the calendar
            return "invalid_timestamp", "timestamp corrected by sentAt is out of range"
    return None


def _utc_time(value: str) -> datetime | None:
    """`parse_time` of an ISO string, with a fast path for what SDKs send (`...Z` or
    `+00:00`): `fromisoformat` alone takes those, and a UTC time needs no conversion. The
    full `parse_time` (strip, `Z`, conversion to UTC, which can leave the calendar) was a
    third of a batched call's receiver CPU (bench A/B of #14: 7.2 -> 16.0 us a call)."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return parse_time(value)
    offset = parsed.utcoffset()
    if offset is None or offset:
        return parse_time(value)  # naive or another zone: as normalize reads it
    return parsed


def _too_deep(value: Any) -> bool:
    """Nested deeper than MAX_DEPTH (iterative: a recursive walk would itself overflow)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))
    return False


def has_nul(value: Any) -> bool:
    """A NUL in any string or key (recursive: call it on values of bounded depth)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in k or has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_nul(v) for v in value)
    return False


def _content_problem(call: Any, encoded: bytes) -> tuple[str, str] | None:
    """Nesting and NULs of a call whose JSON (`encoded`: the call, or a body holding it)
    may hold them: the exact walks."""
    if _too_deep(call):
        return "too_deep", f"the call nests objects and arrays over {MAX_DEPTH} levels deep"
    if NUL_ESCAPE in encoded and has_nul(call):
        return "invalid_text", "a text value or key holds a NUL (\\u0000), which PostgreSQL refuses"
    return None


def _text(value: Any) -> bool:
    return isinstance(value, str | int) and not isinstance(value, bool) and str(value) != ""


def _stamp(
    call: dict[str, Any], received_at: str, id_key: str, shared: dict[str, Any] | None
) -> dict[str, Any]:
    call["receivedAt"] = received_at
    value = call.get(id_key)
    if value.__class__ is str and value:
        return call  # already the string it must be
    if value in (None, ""):
        call[id_key] = content_message_id(call, shared)
    else:
        call[id_key] = str(call[id_key])
    return call


def _accept_item(
    parsed: Parsed,
    index: int | None,
    item: Any,
    max_call_bytes: int,
    received_at: str,
    *,
    koala: bool = False,
    raw: bytes | None = None,
    deletes: bool = False,
    accept: Acceptance | None = None,
) -> None:
    """Take `item` as a call of `parsed`, or record why not. Koala items are identified by
    the request's shared fields (`parsed.shared`) too. `raw`: the request body when it is
    the call itself (single calls), searched instead of encoding the call again.
    `accept`: the project's `identified` rule (ingest/acceptance.py); None: `accept = all`."""
    if raw is None:
        try:
            raw = orjson.dumps(item)
        except orjson.JSONEncodeError:  # nested past orjson's encoder (254 levels)
            parsed.rejected.append(
                Rejection(
                    index,
                    "too_deep",
                    f"the call nests objects and arrays over {MAX_DEPTH} levels deep",
                    _evidence(item),
                )
            )
            return
    if len(raw) > max_call_bytes:
        parsed.rejected.append(
            Rejection(
                index, "call_too_large", f"call is over {max_call_bytes} bytes", _evidence(item)
            )
        )
        return
    if isinstance(item, dict):
        # before _problem, whose stamp ("receivedAt") the skew check reads
        item["receivedAt"] = received_at
    problem = _problem(item, koala=koala, deletes=deletes)
    if problem is None and (
        # cheapest first (single-call path, bench/README.md): a NUL escape needs a
        # backslash (a one-byte memchr), MAX_DEPTH levels need 2 * MAX_DEPTH bytes
        (BACKSLASH in raw and NUL_ESCAPE in raw)
        or (len(raw) > DEPTH_BYTES and raw.count(b"{") + raw.count(b"[") > MAX_DEPTH)
    ):  # the exact walks run only on a hit of these byte tests
        problem = _content_problem(item, raw)
    if problem is None and accept is not None:
        problem = accept.problem(item, parsed.shared if koala else None)
    if problem is not None:
        if isinstance(item, dict):
            item.pop("receivedAt", None)
        parsed.rejected.append(Rejection(index, *problem, _evidence(item)))
        return
    id_key = "message_id" if koala else "messageId"
    value = item.get(id_key)
    if value.__class__ is not str or not value:  # else stamped already: no call of _stamp
        _stamp(item, received_at, id_key, parsed.shared)
    parsed.calls.append(item)


def _evidence(item: Any) -> str:
    """A refused call as its rejection keeps it: its JSON, cut at 32 levels when it is
    nested too deep to encode."""
    try:
        return orjson.dumps(item).decode()
    except orjson.JSONEncodeError:
        return orjson.dumps(_clip(item, 32)).decode()


def _clip(value: Any, depth: int) -> Any:
    if isinstance(value, dict | list) and depth == 0:
        return "..."
    if isinstance(value, dict):
        return {k: _clip(v, depth - 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_clip(v, depth - 1) for v in value]
    return value


def _merge_defaults(item: dict[str, Any], batch: dict[str, Any]) -> None:
    """Batch-level `context` / `integrations` / `sentAt` apply to each item (item wins)."""
    for name in ("context", "integrations"):
        shared = batch.get(name)
        if isinstance(shared, dict) and shared:
            own = item.get(name)
            item[name] = {**shared, **own} if isinstance(own, dict) else dict(shared)
    if "sentAt" not in item and batch.get("sentAt") is not None:
        item["sentAt"] = batch["sentAt"]


def parse_segment(
    doc: Any,
    path_type: str | None,
    *,
    raw: bytes,
    max_call_bytes: int,
    max_batch_calls: int,
    received_at: str,
    accept: Acceptance | None = None,
) -> Parsed:
    """A Tracking API body: one call (`path_type` set: /v1/track, /v1/t, ...) or a batch.
    `raw`: the body `doc` was decoded from. `accept`: see `_accept_item`."""
    if not isinstance(doc, dict):
        raise WireError(400, "invalid_envelope", "the body must be a JSON object")
    parsed = Parsed(write_key=body_key(doc))
    if path_type is not None:
        # The path names the type; a single call over the limit is refused with 413.
        doc.pop("writeKey", None)
        doc["type"] = path_type
        _accept_item(parsed, None, doc, max_call_bytes, received_at, raw=raw, accept=accept)
        return parsed
    batch = doc.get("batch")
    if not isinstance(batch, list):
        raise WireError(400, "invalid_envelope", "a batch body needs a `batch` array")
    if len(batch) > max_batch_calls:
        raise WireError(413, "too_many_calls", f"a batch holds at most {max_batch_calls} calls")
    # whether the batch has defaults for its items, found once, not per item
    defaults = doc.get("sentAt") is not None or any(
        isinstance(doc.get(name), dict) and doc[name] for name in ("context", "integrations")
    )
    for index, item in enumerate(batch):
        if isinstance(item, dict):
            item.pop("writeKey", None)
            if defaults:
                _merge_defaults(item, doc)
        _accept_item(parsed, index, item, max_call_bytes, received_at, accept=accept)
    return parsed


KOALA_LISTS = (("events", "track"), ("identifies", "identify"), ("page_views", "page"))
KOALA_SHARED = ("profile_id", "email", "traits", "ip")


def parse_koala(
    doc: Any,
    *,
    max_call_bytes: int,
    max_batch_calls: int,
    received_at: str,
    accept: Acceptance | None = None,
) -> Parsed:
    """Koala's `/web/projects/{key}/batch`: `events`, `identifies`, `page_views` of one person."""
    if not isinstance(doc, dict):
        raise WireError(400, "invalid_envelope", "the body must be a JSON object")
    if not (_text(doc.get("profile_id")) or _text(doc.get("email"))):
        raise WireError(400, "missing_identity", "Missing required field: email or profile_id")
    shared = {name: doc[name] for name in KOALA_SHARED if doc.get(name) is not None}
    try:
        problem = _content_problem(shared, orjson.dumps(shared))
    except orjson.JSONEncodeError:
        problem = "too_deep", f"request fields nest over {MAX_DEPTH} levels deep"
    if problem is not None:
        # the request-level fields go with every item: none of them could be stored
        raise WireError(400, *problem)
    parsed = Parsed(shared=shared)
    index = 0
    total = 0
    for list_name, kind in KOALA_LISTS:
        items = doc.get(list_name) or []
        if not isinstance(items, list):
            raise WireError(400, "invalid_envelope", f"`{list_name}` must be an array")
        total += len(items)
        if total > max_batch_calls:
            raise WireError(413, "too_many_calls", f"at most {max_batch_calls} items")
        for item in items:
            if isinstance(item, dict):
                item.setdefault("type", kind)
            _accept_item(
                parsed, index, item, max_call_bytes, received_at, koala=True, accept=accept
            )
            index += 1
    return parsed


def parse_webhook(
    doc: Any,
    *,
    max_call_bytes: int,
    max_batch_calls: int,
    received_at: str,
    signed: bool = False,
    accept: Acceptance | None = None,
) -> Parsed:
    """Segment's webhook destination: one raw call, or a JSON array of calls. `signed`:
    the body's signature was checked with the project's secret (delete calls need it)."""
    items = doc if isinstance(doc, list) else [doc]
    if isinstance(doc, list) and len(doc) > max_batch_calls:
        raise WireError(413, "too_many_calls", f"at most {max_batch_calls} calls")
    if not isinstance(doc, list | dict):
        raise WireError(400, "invalid_envelope", "the body must be a call or an array of calls")
    parsed = Parsed()
    for index, item in enumerate(items):
        _accept_item(
            parsed,
            index if isinstance(doc, list) else None,
            item,
            max_call_bytes,
            received_at,
            # Segment signs a batch by its first item only: a delete anywhere else in it
            # is not covered by the signature
            deletes=signed and (not isinstance(doc, list) or index == 0),
            accept=accept,
        )
    return parsed


def _key(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def body_key(doc: dict[str, Any]) -> str | None:
    """The write key a Tracking API body carries (`writeKey`), if any."""
    return _key(doc.get("writeKey"))


def webhook_signature_ok(secret: str, body: bytes, signature: str | None) -> bool:
    """Check Segment's `X-Signature`: hex HMAC-SHA1 of the body, or for a batch of its first
    item as `JSON.stringify` wrote it (we take that item's exact bytes from the body)."""
    if not signature:
        return False
    signature = signature.strip().lower()
    candidates = [body]
    first = _first_array_item(body)
    if first is not None:
        candidates.append(first)
    key = secret.encode()
    return any(
        hmac.compare_digest(hmac.new(key, data, hashlib.sha1).hexdigest(), signature)
        for data in candidates
    )


def _first_array_item(body: bytes) -> bytes | None:
    text = body.decode("utf-8", "replace")
    start = len(text) - len(text.lstrip())
    if not text[start:].startswith("["):
        return None
    index = start + 1
    while index < len(text) and text[index].isspace():
        index += 1
    try:
        _, end = json.JSONDecoder().raw_decode(text, index)
    except (json.JSONDecodeError, RecursionError):
        # Python's decoder stops near 1,000 levels where orjson goes to 1,024: a deeper
        # first item is no call anyway (too_deep), and its signature cannot match
        return None
    return text[index:end].encode()
