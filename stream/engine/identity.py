"""Identity stitching (DESIGN.md "Touchpoint event"), pure: no Kafka, no warehouse.

An `identify` event with both ids, or any event carrying both, links its anonymous_id
to its customer_id. The first link of an anonymous id wins (in processing order): a
later, different customer_id for the same device is ignored rather than moving events
already attributed, so replays in the same order give the same keys. Placeholder ids
that clients send when they have none ("null", "guest", "0", ...) never link, or every
guest would become one giant customer; an event whose ids are all placeholders has no
customer key at all (`resolve` returns None: the caller counts it and keeps it only in
the raw table).

The alias map itself lives with the identity stage (stream.stages.identity).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

JUNK_IDS: frozenset[str] = frozenset(
    {"", "null", "undefined", "none", "guest", "anonymous", "0", "-"}
)


def is_junk_id(value: str | None) -> bool:
    """True for a missing id or a placeholder (case-insensitive, surrounding blanks ignored)."""
    return value is None or value.strip().lower() in JUNK_IDS


class IdentityEventLike(Protocol):
    """What stitching reads from an event (journeys.events.Touchpoint fits)."""

    @property
    def event_id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def channel(self) -> str: ...
    @property
    def occurred_at(self) -> int: ...
    @property
    def customer_id(self) -> str | None: ...
    @property
    def anonymous_id(self) -> str | None: ...


class MergeRecord(NamedTuple):
    """An anonymous id became a customer: who, when (event time), and from which event."""

    anonymous_id: str
    customer_id: str
    merged_at_ms: int
    event_id: str
    event_type: str
    channel: str

    def to_dict(self) -> dict[str, Any]:
        return self._asdict()


def link_of(event: IdentityEventLike) -> tuple[str, str] | None:
    """(anonymous_id, customer_id) when the event may link them, else None."""
    anon, cust = event.anonymous_id, event.customer_id
    if is_junk_id(anon) or is_junk_id(cust):
        return None
    assert anon is not None and cust is not None
    return anon, cust
