"""Message formats of the internal topics, and which partition a key goes to.

Faust costs ~300 us per *message* (measured: 3,200-3,500 msg/s per process however the
agent iterates), far more than the per-event work. So the internal topics carry
*envelopes*: one message holds many events bound for one partition, and Faust's
per-message cost is paid once per envelope. The wire format of the raw topic (one
event per message, DESIGN.md) is unchanged; envelopes are internal.

    <prefix>.by-identity   partition = partition_for(anonymous_id, else customer_id)
        {"v": 2, "e": [[event_id, type, channel, occurred_at, customer_id, anonymous_id,
                        context-or-null, raw_partition, raw_offset(, value)], ...],
                 "w": claims}
    <prefix>.by-customer   partition = partition_for(resolved customer key)
        {"v": 2, "e": [[key, event_id, type, channel, occurred_at, context-or-null,
                        by_identity_partition, by_identity_offset, index(, value)], ...],
                 "p": [[customer_id, anonymous_id, linked_at], ...],  # holds
                 "m": [[anonymous_id, customer_id, linked_at], ...],  # links made
                 "h": [[from_key, into_key, journey_events, sessions_payload, linked_at,
                        [[journey, opening_event_id, furthest_step], ...]], ...],
                 "f": [key, ...],  # keys to forget, after the events (journeys.control)
                 "w": claims}

by-identity also carries `forget` control envelopes (journeys.control): `{"v": 2,
"e": [], "f": [[customer_id, [anonymous_id, ...]]]}`.

`claims` (stream.eventtime.watermarks.encode_claims) is the writer's event-time
progress per input partition it read, valid after everything before it in the same
partition: every envelope a stage writes after a batch carries the claims of the
partitions that batch read, and a stage sends claim-only envelopes to partitions that
got no data, so each consumer partition hears from every upstream partition.

Every event carries where it was read: (raw partition, raw offset) into by-identity,
(by-identity partition, offset, index in that record) into by-customer. A consumer
that keeps the last position it applied per upstream partition recognises a record
re-delivered after a crash or a rebalance exactly (docs/stream.md "Exactly once in
effect"), without keeping event ids.

A new link goes two ways: the *link* to the device's partition (after the device's
earlier events: it settles them up to `linked_at`, then hands them over) and a *hold*
to the customer's partition (before the customer's events from `linked_at` on: the
customer settles nothing at or after it until the handover arrives).

All events of a key land in one partition, in the order they were read upstream.
Contexts travel only with events whose type is some definition's entry step (report
breakdowns by the opening event's context); other events do not need them downstream.
An event's journey value (a usable numeric `properties.value`, journeys.events.
event_value) travels as an optional trailing element; the rest of the properties stay
in the raw table.

Partition choice is ours (CRC-32 of the key's UTF-8 bytes), used the same way for the
envelopes and for the tables' changelog records (written with explicit partitions), so
a key's state always lives in the changelog partition of its source partition.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from journeys.control import ENVELOPE_FORMAT, partition_for

__all__ = ["FORMAT", "EnvelopeBuilder", "decode", "partition_for"]

FORMAT = ENVELOPE_FORMAT
MAX_ENVELOPE_EVENTS = 2000  # ~200-300 KB per message with compact events
MAX_HANDOVER_BYTES = 1 << 20  # handovers per envelope: up to ~1 MiB (the broker's limit is 8)


class EnvelopeBuilder:
    """Collects items per partition and yields one or more envelopes per partition."""

    __slots__ = ("_claims", "_parts")

    def __init__(self) -> None:
        self._parts: dict[int, dict[str, list[Any]]] = {}
        self._claims: list[Any] | None = None

    def _part(self, partition: int) -> dict[str, list[Any]]:
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = {"e": [], "p": [], "m": [], "h": [], "f": []}
        return part

    def event(self, partition: int, item: list[Any]) -> None:
        self._part(partition)["e"].append(item)

    def link(self, partition: int, anonymous_id: str, customer_id: str, at: int) -> None:
        self._part(partition)["m"].append([anonymous_id, customer_id, at])

    def hold(self, partition: int, customer_id: str, anonymous_id: str, at: int) -> None:
        self._part(partition)["p"].append([customer_id, anonymous_id, at])

    def forget(self, partition: int, key: str) -> None:
        self._part(partition)["f"].append(key)

    def handover(self, partition: int, item: list[Any]) -> None:
        self._part(partition)["h"].append(item)

    def claims(self, partitions: Iterable[int], encoded: list[Any]) -> None:
        """Attach the writer's claims (encode_claims) to the last envelope of each of
        `partitions`, creating claim-only envelopes where there is no data."""
        self._claims = encoded
        for p in partitions:
            self._part(p)

    def __bool__(self) -> bool:
        return bool(self._parts)

    def messages(self) -> Iterator[tuple[int, bytes]]:
        """(partition, value) per envelope; events split every MAX_ENVELOPE_EVENTS; holds
        ride with the first envelope of their partition (before the customer's events),
        links and claims with the last (after everything they cover); handovers (only
        the customer stage writes them, with nothing else) in envelopes of their own, up
        to MAX_HANDOVER_BYTES each."""
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
                    if part["f"]:  # after every event of the batch (journeys.control)
                        body["f"] = part["f"]
                    if self._claims is not None:
                        body["w"] = self._claims
                yield partition, orjson.dumps(body)
            for group in _by_size(part["h"], MAX_HANDOVER_BYTES):
                yield partition, orjson.dumps({"v": FORMAT, "e": [], "h": group})


def _by_size(items: list[Any], limit: int) -> Iterator[list[Any]]:
    """Items in order, grouped so each group's JSON stays around `limit` bytes (one item
    larger than that is a group of its own)."""
    group: list[Any] = []
    size = 0
    for item in items:
        n = len(orjson.dumps(item))
        if group and size + n > limit:
            yield group
            group, size = [], 0
        group.append(item)
        size += n
    if group:
        yield group


def decode(value: bytes | None) -> dict[str, Any] | None:
    """An envelope, or None when the bytes are not one (counted by the caller)."""
    if not value:
        return None
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict) or body.get("v") != FORMAT or not isinstance(
            body.get("e", []), list):
        return None
    return body
