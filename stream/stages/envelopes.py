"""Message formats of the internal topics, and which partition a key goes to.

Faust costs ~300 us per *message* (measured: 3,200-3,500 msg/s per process however the
agent iterates), far more than the per-event work. So the internal topics carry
*envelopes*: one message holds many events bound for one partition, and Faust's
per-message cost is paid once per envelope. The wire format of the raw topic (one
event per message, DESIGN.md) is unchanged; envelopes are internal.

Wire format (docs/stream.md "Wire formats"): a MessagePack map, `{"v": 3, ...}`,
encoded with msgspec; the bodies below show its keys and values. Readers also accept the
JSON of format 2 (the same map as JSON text, `{"v": 2, ...}`): what workers before
format 3 left on the topics, and the forget control envelopes (journeys.control). The
first byte tells them apart: `{` (or JSON whitespace) is JSON, anything else is
MessagePack (a map starts with 0x80-0x8f or 0xde). Both decode to the same dict of
lists, strings and numbers.

    <prefix>.by-identity   partition = partition_for(anonymous_id, else customer_id)
        {"v": 3, "e": [[event_id, type, channel, occurred_at, customer_id, anonymous_id,
                        context-or-null, raw_partition, raw_offset(, value)], ...],
                 "w": claims}
    <prefix>.by-customer   partition = partition_for(resolved customer key)
        {"v": 3, "e": [[key, event_id, type, channel, occurred_at, context-or-null,
                        by_identity_partition, by_identity_offset, index(, value)], ...],
                 "p": [[customer_id, anonymous_id, linked_at], ...],  # holds
                 "m": [[anonymous_id, customer_id, linked_at], ...],  # links made
                 "h": [[from_key, into_key, journey_events, sessions_payload, linked_at,
                        [[journey, opening_event_id, furthest_step], ...]], ...],
                 "hp": [[from_key, into_key, digest, i, n, bytes]],  # a handover's piece
                 "f": [key, ...],  # keys to forget, after the events (journeys.control)
                 "w": claims}

A handover whose encoding is over MAX_HANDOVER_BYTES (a device's long open session
carries every event id) travels as `n` *pieces*, one per envelope: the bytes of its
MessagePack encoding cut in order, each with the first 16 hex digits of its BLAKE2b
digest. The customer keeps the pieces with its value until it has all `n` of one digest
(stream.stages.customer_state), so a piece read in another batch, or re-sent after the
device's crash, is neither lost nor mixed with another attempt's (docs/stream.md "Wire
formats"). No record a stage writes grows with a customer's history.

by-identity also carries `forget` control envelopes (journeys.control, JSON): `{"v": 2,
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

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

import msgspec
import orjson

from journeys.control import ENVELOPE_FORMAT, partition_for

__all__ = ["FORMAT", "JSON_FORMAT", "EnvelopeBuilder", "decode", "decode_body", "encode",
           "joined", "partition_for", "pieces"]

FORMAT = 3  # MessagePack, written by this code
JSON_FORMAT = ENVELOPE_FORMAT  # 2: JSON, read only (older workers, journeys.control)
_JSON_FIRST = frozenset(b"{ \t\r\n")  # JSON text; a MessagePack map never starts so
_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder()  # untyped: maps -> dict, arrays -> list, as orjson
MAX_ENVELOPE_EVENTS = 2000  # ~200-300 KB per message with compact events
MAX_HANDOVER_BYTES = 1 << 20  # handovers per envelope: up to ~1 MiB (the broker's limit is 8)
Piece = tuple[str, str, str, int, int, bytes]  # (from, into, digest, i, n, bytes)


class EnvelopeBuilder:
    """Collects items per partition and yields one or more envelopes per partition."""

    __slots__ = ("_claims", "_handover_bytes", "_parts")

    def __init__(self, handover_bytes: int = MAX_HANDOVER_BYTES) -> None:
        self._parts: dict[int, dict[str, list[Any]]] = {}
        self._claims: list[Any] | None = None
        self._handover_bytes = handover_bytes  # per envelope; a larger item in pieces

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
        to `handover_bytes` each; one larger than that as pieces, one per envelope."""
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
                yield partition, encode(body)
            for group in _by_size(part["h"], self._handover_bytes):
                yield partition, encode(group)


def _by_size(items: list[Any], limit: int) -> Iterator[dict[str, Any]]:
    """Handover envelope bodies: items in order, each encoded once, grouped so each
    group stays within `limit` bytes; an item larger than that as its pieces."""
    group: list[msgspec.Raw] = []
    size = 0
    for item in items:
        raw = _ENCODER.encode(item)
        n = len(raw)
        if group and size + n > limit:
            yield {"v": FORMAT, "e": [], "h": group}
            group, size = [], 0
        if n > limit:
            for piece in pieces(item[0], item[1], raw, limit):
                yield {"v": FORMAT, "e": [], "hp": [list(piece)]}
            continue
        group.append(msgspec.Raw(raw))
        size += n
    if group:
        yield {"v": FORMAT, "e": [], "h": group}


def digest(raw: bytes) -> str:
    """What names one encoding of a handover across its pieces."""
    return hashlib.blake2b(raw, digest_size=8).hexdigest()


def pieces(source: str, into: str, raw: bytes, size: int) -> list[Piece]:
    """One handover's encoding `raw` cut into pieces of `size` bytes, in order."""
    name = digest(raw)
    cuts = [raw[i:i + size] for i in range(0, len(raw), size)]
    return [(source, into, name, i, len(cuts), cut) for i, cut in enumerate(cuts)]


def joined(name: str, cuts: list[bytes]) -> list[Any]:
    """The handover item whose pieces are `cuts` (in order). ValueError when they do
    not make the encoding `name` names, or not a handover: the poison rule then
    dead-letters the record that completed them (docs/stream.md "Poison records")."""
    raw = b"".join(cuts)
    if digest(raw) != name:
        raise ValueError(f"handover pieces do not make the encoding {name}")
    item = _DECODER.decode(raw)
    if not isinstance(item, list) or len(item) < 6:
        raise ValueError(f"handover pieces {name} do not make a handover")
    return item


def encode(body: dict[str, Any]) -> bytes:
    """A message body (with `"v": FORMAT`) in the current wire format, MessagePack."""
    return _ENCODER.encode(body)


def decode_body(value: bytes | None) -> dict[str, Any] | None:
    """A message body of either wire format (MessagePack `"v": 3`, or JSON `"v": 2`, told
    apart by the first byte), or None when the bytes are neither."""
    if not value:
        return None
    try:
        if value[0] in _JSON_FIRST:
            body, version = orjson.loads(value), JSON_FORMAT
        else:
            body, version = _DECODER.decode(value), FORMAT
    except (orjson.JSONDecodeError, msgspec.DecodeError):
        return None
    if not isinstance(body, dict) or body.get("v") != version:
        return None
    return body


def readable(value: bytes) -> tuple[str, bool]:
    """(text, exact) of a record for a dead letter's `original`: UTF-8 text as it is
    (exact); a MessagePack body as its JSON rendering, other bytes with U+FFFD for what
    is not UTF-8 (not exact: the letter then also keeps the bytes in base64)."""
    try:
        return value.decode("utf-8"), True
    except UnicodeDecodeError:
        pass
    body = decode_body(value)
    if body is not None:
        try:
            return orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS, default=repr).decode(), \
                False
        except TypeError:
            pass
    return value.decode("utf-8", errors="replace"), False


def decode(value: bytes | None) -> dict[str, Any] | None:
    """An envelope, or None when the bytes are not one (counted by the caller)."""
    body = decode_body(value)
    if body is None or not isinstance(body.get("e", []), list):
        return None
    return body
