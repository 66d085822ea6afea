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
from typing import Any

import orjson

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


class WireError(Exception):
    """A request that cannot be accepted as a whole: answered with `status`, `code`, `message`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


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
        return b"".join(self._parts)[:EVIDENCE_BYTES].decode("utf-8", "replace")


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

    A `delete` call erases a person's data: taken only where the sender proved who it is
    (`deletes`: a webhook signed with the project's secret). A write key alone is public
    (it ships in every browser using analytics.js) and must not be able to erase anyone.
    """
    if not isinstance(call, dict):
        return "not_an_object", "a call must be a JSON object"
    kind = call.get("type")
    if not kind:
        return "missing_type", "the call has no `type`"
    if kind == DELETE_TYPE:
        if not deletes:
            return (
                "delete_not_accepted",
                "a delete call is taken only from the webhook destination, signed with the"
                " project's webhook secret (in a batch, only as its first item: the one the"
                " signature covers)",
            )
        if not _text(call.get("userId")):
            return "missing_user_id", "a delete call needs the `userId` to erase"
    elif kind not in CALL_TYPES:
        return "unknown_type", f"unknown call type {kind!r}"
    for name in ("properties", "traits", "context", "integrations"):
        value = call.get(name)
        if value is not None and not isinstance(value, dict):
            return "invalid_field", f"`{name}` must be an object"
    if kind == "track" and not _text(call.get("event")):
        return "missing_event", "a track call needs a non-empty `event`"
    if kind == "group" and not _text(call.get("groupId")):
        return "missing_group_id", "a group call needs a `groupId`"
    if kind == "alias":
        if not _text(call.get("previousId")):
            return "missing_previous_id", "an alias call needs a `previousId`"
        if not _text(call.get("userId")):
            return "missing_user_id", "an alias call needs a `userId`"
    message_id = call.get("message_id" if koala else "messageId")
    if message_id is not None and (
        not isinstance(message_id, str | int)
        or len(str(message_id)) > MAX_MESSAGE_ID
        or "\x00" in str(message_id)
    ):
        return "invalid_message_id", f"messageId must be a string of at most {MAX_MESSAGE_ID}"
    if not koala and not (_text(call.get("userId")) or _text(call.get("anonymousId"))):
        return "missing_identity", "a call needs a `userId` or an `anonymousId`"
    return None


def _text(value: Any) -> bool:
    return isinstance(value, str | int) and not isinstance(value, bool) and str(value) != ""


def _stamp(
    call: dict[str, Any], received_at: str, id_key: str, shared: dict[str, Any] | None
) -> dict[str, Any]:
    call["receivedAt"] = received_at
    if call.get(id_key) in (None, ""):
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
    size: int | None = None,
    deletes: bool = False,
) -> None:
    """Take `item` as a call of `parsed`, or record why not. Koala items are identified by
    the request's shared fields (`parsed.shared`) too."""
    if size is None:
        size = len(orjson.dumps(item))
    if size > max_call_bytes:
        parsed.rejected.append(
            Rejection(
                index,
                "call_too_large",
                f"call is over {max_call_bytes} bytes",
                orjson.dumps(item).decode(),
            )
        )
        return
    problem = _problem(item, koala=koala, deletes=deletes)
    if problem is not None:
        parsed.rejected.append(Rejection(index, *problem, orjson.dumps(item).decode()))
        return
    id_key = "message_id" if koala else "messageId"
    parsed.calls.append(_stamp(item, received_at, id_key, parsed.shared))


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
    body_size: int,
    max_call_bytes: int,
    max_batch_calls: int,
    received_at: str,
) -> Parsed:
    """A Tracking API body: one call (`path_type` set: /v1/track, /v1/t, ...) or a batch."""
    if not isinstance(doc, dict):
        raise WireError(400, "invalid_envelope", "the body must be a JSON object")
    parsed = Parsed(write_key=_key(doc.get("writeKey")))
    if path_type is not None:
        # The path names the type; a single call over the limit is refused with 413.
        doc.pop("writeKey", None)
        doc["type"] = path_type
        _accept_item(parsed, None, doc, max_call_bytes, received_at, size=body_size)
        return parsed
    batch = doc.get("batch")
    if not isinstance(batch, list):
        raise WireError(400, "invalid_envelope", "a batch body needs a `batch` array")
    if len(batch) > max_batch_calls:
        raise WireError(413, "too_many_calls", f"a batch holds at most {max_batch_calls} calls")
    for index, item in enumerate(batch):
        if isinstance(item, dict):
            item.pop("writeKey", None)
            _merge_defaults(item, doc)
        _accept_item(parsed, index, item, max_call_bytes, received_at)
    return parsed


KOALA_LISTS = (("events", "track"), ("identifies", "identify"), ("page_views", "page"))
KOALA_SHARED = ("profile_id", "email", "traits", "ip")


def parse_koala(doc: Any, *, max_call_bytes: int, max_batch_calls: int, received_at: str) -> Parsed:
    """Koala's `/web/projects/{key}/batch`: `events`, `identifies`, `page_views` of one person."""
    if not isinstance(doc, dict):
        raise WireError(400, "invalid_envelope", "the body must be a JSON object")
    if not (_text(doc.get("profile_id")) or _text(doc.get("email"))):
        raise WireError(400, "missing_identity", "Missing required field: email or profile_id")
    shared = {name: doc[name] for name in KOALA_SHARED if doc.get(name) is not None}
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
            _accept_item(parsed, index, item, max_call_bytes, received_at, koala=True)
            index += 1
    return parsed


def parse_webhook(
    doc: Any,
    *,
    max_call_bytes: int,
    max_batch_calls: int,
    received_at: str,
    signed: bool = False,
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
        )
    return parsed


def _key(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


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
    except json.JSONDecodeError:
        return None
    return text[index:end].encode()
