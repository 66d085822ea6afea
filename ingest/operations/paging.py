"""One cursor pagination for every list: `limit` and `cursor` in, `items` and `next` out.

The cursor is opaque to clients (base64 of the list's name and the last key seen), so a
cursor of one list given to another is refused instead of skipping rows, and a client
follows `next` until it is null: no silent cap, every row reachable.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Generic, TypeVar

import orjson
from pydantic import BaseModel, Field

from ingest.operations.errors import Invalid

T = TypeVar("T")

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


class Page(BaseModel, Generic[T]):
    items: list[T]
    next: str | None = Field(
        description="Give it as `cursor` for the next page; null on the last page."
    )


def encode(kind: str, key: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([kind, *key])).decode().rstrip("=")


def decode(kind: str, cursor: str | None, arity: int) -> list[Any] | None:
    if not cursor:
        return None
    try:
        raw = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raw = None
    if not isinstance(raw, list) or len(raw) != arity + 1 or raw[0] != kind:
        raise Invalid("invalid_cursor", "the cursor is not one this list gave")
    return raw[1:]


def page(kind: str, rows: list[T], limit: int, key: Any) -> Page[T]:
    """`rows` fetched with `limit + 1`: a page and, when more follow, the next cursor from
    `key(last row of the page)`."""
    more = len(rows) > limit
    items = rows[:limit]
    return Page[Any](items=items, next=encode(kind, key(items[-1])) if more else None)
