"""Engage (Personas) computations: which audience a call says a person entered or left,
and which computed trait it sets. A pure rule, no I/O; workers/normalize.py applies it to
every call and the batch stores what it finds (ingest/store/audiences.py).

The payload shape, from Segment's Engage documentation (the destination page in
shared/reference's seeds quotes it for Koala: "an identify call is sent to the
destination for each user being added and removed. The property name is the snake_cased
version of the audience name, with a true/false value to indicate membership"):

    {"type": "identify", "userId": "u1",
     "traits": {"order_completed_last_30days": true},
     "context": {"personas": {"computation_class": "audience",
                              "computation_key": "order_completed_last_30days",
                              "computation_id": "aud_1x...", "space_id": "spa_9...",
                              "namespace": "spa_9..."}}}

- `computation_class` is `audience` (membership: the trait named by `computation_key` is
  true on entering, false on leaving) or `trait` (a computed trait: its value is the
  trait's value, whatever its type); Engage also sends the account-level classes
  (`account_audience`, ...), taken here like their user-level kind.
- Destinations set up for events get the same change as a track call instead:
  "Audience Entered" / "Audience Exited" (the audience key in `properties.audience_key`,
  and the membership as `properties[key]`) or "Trait Computed" (`properties.trait_key`,
  the value as `properties[key]`), with the same `context.personas`.

When Engage first computes an audience it sends a call for every member (entered), then
only changes; a re-sync may repeat a state. Every call is kept as a membership record;
the transitions (entered -> exited -> entered ...) are the records whose state differs
from the one before it in event time, so a repeated state adds none and a call that
arrives late lands where its timestamp puts it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["audience", "trait"]

# Engage's classes; account-level computations are memberships/traits of the same kind
CLASSES: dict[str, Kind] = {
    "audience": "audience",
    "account_audience": "audience",
    "trait": "trait",
    "account_trait": "trait",
}
ENTERED_EVENTS = {"Audience Entered": True, "Audience Exited": False}
TRAIT_EVENTS = {"Trait Computed"}
MAX_KEY = 500  # longer keys are not Engage's (its keys are snake_cased names)


@dataclass(frozen=True, slots=True)
class Computation:
    """What one Engage call says: an audience membership or a computed trait's value."""

    kind: Kind
    key: str
    value: Any  # the trait's value; for an audience, `entered`
    entered: bool | None  # audiences only: True entered, False exited
    computation_id: str | None
    space_id: str | None
    namespace: str | None


def _text(value: Any) -> str | None:
    if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
        return str(value).strip()[:MAX_KEY]
    return None


def _membership(value: Any) -> bool | None:
    """True/false, as Engage sends it; the strings a relay may have made of them too."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def computation(
    kind: str | None,
    event: str | None,
    traits: dict[str, Any],
    properties: dict[str, Any],
    context: dict[str, Any],
) -> Computation | None:
    """The Engage computation a call carries, or None (not an Engage call, or one whose
    membership cannot be told: an audience without a true/false value)."""
    personas = context.get("personas")
    if not isinstance(personas, dict):
        return None
    computed = CLASSES.get(str(personas.get("computation_class") or "").lower())
    if computed is None:
        return None
    if kind == "identify":
        key = _text(personas.get("computation_key"))
        values = traits
    elif kind == "track" and (event in ENTERED_EVENTS or event in TRAIT_EVENTS):
        key = _text(
            personas.get("computation_key")
            or properties.get("audience_key" if computed == "audience" else "trait_key")
        )
        values = properties
    else:
        return None
    if key is None:
        return None
    value = values.get(key)
    entered: bool | None = None
    if computed == "audience":
        entered = _membership(value)
        if entered is None and kind == "track":
            entered = ENTERED_EVENTS.get(str(event))
        if entered is None:
            return None
        value = entered
    elif key not in values:
        return None
    return Computation(
        kind=computed,
        key=key,
        value=value,
        entered=entered,
        computation_id=_text(personas.get("computation_id")),
        space_id=_text(personas.get("space_id")),
        namespace=_text(personas.get("namespace")),
    )
