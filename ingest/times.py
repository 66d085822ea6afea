"""Times in calls, read the same by the receiver (which refuses what can never be stored)
and the workers (normalize): ISO-8601 parsing, and Segment's clock-skew rule. Pure."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


class OutOfRange(ValueError):
    """The clock-skew rule lands outside the calendar (a client clock gone wild)."""


def parse_time(value: Any) -> datetime | None:
    """ISO-8601 (with `Z` or an offset; naive means UTC) or epoch seconds/milliseconds,
    always returned in UTC (so ISO strings of two times compare like the times)."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = value / 1000 if value > 1e11 else value
            return datetime.fromtimestamp(seconds, UTC)
        if isinstance(value, str):
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None


def corrected_timestamp(
    received_at: datetime, sent_at: datetime | None, original: datetime | None
) -> datetime:
    """Segment's clock-skew rule: `receivedAt - (sentAt - originalTimestamp)`."""
    if original is None:
        return received_at
    if sent_at is None:
        return original
    try:
        return received_at - (sent_at - original)
    except OverflowError:
        raise OutOfRange(f"timestamp {original} sent at {sent_at} is out of range") from None
