"""Message formats of the two internal topics, and which partition a key goes to.

Faust costs ~300 us per *message* (measured: 3,200-3,500 msg/s per process however the
agent iterates), far more than the per-event work. So the internal topics carry
*envelopes*: one message holds many events bound for one partition, and Faust's
per-message cost is paid once per envelope. The wire format of the raw topic (one
event per message, DESIGN.md) is unchanged; envelopes are internal.

    <prefix>.by-identity   key: none, partition = partition_for(anonymous_id, else customer_id)
        {"v": 1, "e": [[event_id, type, channel, occurred_at, customer_id, anonymous_id,
                        context-or-null], ...]}
    <prefix>.by-customer   key: none, partition = partition_for(resolved customer key)
        {"v": 1, "e": [[key, event_id, type, channel, occurred_at, context-or-null], ...],
                "p": [[customer_id, anonymous_id, linked_at], ...],  # hold for a handover
                "m": [[anonymous_id, customer_id, linked_at], ...],  # links made (merge these)
                "h": [[from_key, into_key, journey_events, sessions_payload, linked_at,
                       [[journey, opening_event_id, furthest_step], ...]], ...]}

A new link goes two ways: the *link* to the device's partition (after the device's
earlier events: it settles them up to `linked_at`, then hands them over) and a *hold*
to the customer's partition (before the customer's events from `linked_at` on: the
customer settles nothing at or after it until the handover arrives). Without the hold,
a backlog processed in one batch settles the customer's later steps before the device's
earlier ones arrive, and the stitched journey splits in two (measured on the demo
sample: 2,086 conversions became 710). `linked_at` is absent in format-1 messages
written before holds existed; they are read as "no hold".

All events of a key land in one partition, in the order they were forwarded. Contexts
travel only with events whose type is some definition's entry step (report breakdowns
by the opening event's context); other events do not need them downstream.

Partition choice is ours (CRC-32 of the key's UTF-8 bytes), used the same way for the
envelopes and for the tables' changelog records (written with explicit partitions), so
a key's state always lives in the changelog partition of its source partition.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

import orjson

FORMAT = 1
MAX_ENVELOPE_EVENTS = 2000  # ~200-300 KB per message with compact events


def partition_for(key: str | bytes, partitions: int) -> int:
    """The internal partition of a key (anonymous id, customer id, table key)."""
    data = key.encode() if isinstance(key, str) else key
    return zlib.crc32(data) % partitions


class EnvelopeBuilder:
    """Collects items per partition and yields one or more envelopes per partition."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: dict[int, dict[str, list[Any]]] = {}

    def _part(self, partition: int) -> dict[str, list[Any]]:
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = {"e": [], "p": [], "m": [], "h": []}
        return part

    def event(self, partition: int, item: list[Any]) -> None:
        self._part(partition)["e"].append(item)

    def link(self, partition: int, anonymous_id: str, customer_id: str, at: int) -> None:
        self._part(partition)["m"].append([anonymous_id, customer_id, at])

    def hold(self, partition: int, customer_id: str, anonymous_id: str, at: int) -> None:
        self._part(partition)["p"].append([customer_id, anonymous_id, at])

    def handover(self, partition: int, item: list[Any]) -> None:
        self._part(partition)["h"].append(item)

    def sort_events(self, time_index: int) -> None:
        """Order each partition's events by event time (stable): a batch gathers
        envelopes of several upstream partitions, and forwarding them merged by time
        keeps the downstream partition's watermark from running ahead of them."""
        for part in self._parts.values():
            part["e"].sort(key=lambda item: item[time_index])

    def __bool__(self) -> bool:
        return bool(self._parts)

    def messages(self) -> Iterator[tuple[int, bytes]]:
        """(partition, value) per envelope; events split every MAX_ENVELOPE_EVENTS; holds
        ride with the first envelope of their partition (before the customer's events),
        links and handovers with the last (after the device's)."""
        for partition, part in sorted(self._parts.items()):
            events = part["e"]
            chunks = [events[i:i + MAX_ENVELOPE_EVENTS]
                      for i in range(0, len(events), MAX_ENVELOPE_EVENTS)] or [[]]
            for n, chunk in enumerate(chunks):
                body: dict[str, Any] = {"v": FORMAT, "e": chunk}
                if n == 0 and part["p"]:
                    body["p"] = part["p"]
                if n == len(chunks) - 1:
                    if part["m"]:
                        body["m"] = part["m"]
                    if part["h"]:
                        body["h"] = part["h"]
                yield partition, orjson.dumps(body)


def decode(value: bytes | None) -> dict[str, Any] | None:
    """An envelope, or None when the bytes are not one (counted by the caller)."""
    if not value:
        return None
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict) or body.get("v") != FORMAT:
        return None
    return body
