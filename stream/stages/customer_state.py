"""One customer's value in the customer stage's table, and its bytes.

`wake (8 bytes, big-endian) + orjson {"s": sessions, "j": journeys, "i": positions}`:
the wake time (when the key next needs a visit, stream.eventtime.timers) is readable
without decoding, which is how the timer index is rebuilt after recovery.

`linked` is set on a device linked to a customer whose handover is still to come:
(customer, link time); the device settles nothing at or after the link time and
hands its non-final state over once its event time reaches it (stream.stages.customers).

`pending` holds handovers that came before the customer's event time reached their
link time: a customer absorbs a device's handover exactly at the link's time, so both
sides are split at the same point whatever the timing.

`pieces` holds the pieces of a handover that travels in several records (one larger
than an envelope, stream.stages.envelopes), per source device: `[digest, n, {i: base64
of the piece}]`, until all `n` of one digest are here; then the joined item goes to
`pending` like any handover.

`positions` is, per by-identity partition, the position (offset, index) of the last
event of this customer applied from it. Events reach a customer in that order, so a
re-delivered event (the identity stage re-sent a record after a crash, or this stage
re-reads a batch it did not commit) is recognised exactly: its position is not above
the stored one. Holds, links and handovers are recognised by the offset of the
by-customer record they came in (`RECORDS`): read again after a rebalance, such a record
changes nothing, however long ago it was applied; handovers come on a topic of their
own and are recognised by their offset there (`HANDOVER_RECORDS`). The check and the
state change are one table value, so they are atomic without transactions.

A value over RECORD_BOUND bytes is stored as several records (stream.stages.parts):
a head `wake + b"P" + [generation, count]` (the wake stays readable) and the value's
bytes after the wake in parts of at most RECORD_BOUND bytes (`value_records`,
`read_value`). Journeys cap their paths (stream.engine.runs), but a customer's
unsettled tail and its open sessions' event ids still grow with a backlog (measured:
500k events of one customer in one batch).

`positions` also keeps the last by-customer and handovers record that touched the
customer at all (`TOUCHED`): a finished customer's value, which is all that recognises
a re-delivered input, is deleted only once every record that could bring one of its
inputs again is committed (`replayable`); see stream.stages.customers.FLOOR_RETENTION_MS.

`CustomerWork` is a value as the stage holds it while a batch is prepared and between
batches in its cache: decoded, with what its stored bytes imply (size, parts, expiry).
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from stream.engine.journey_state import CustomerJourneys
from stream.engine.session_state import CustomerState
from stream.eventtime.watermarks import END_OF_TIME
from stream.stages.envelopes import joined
from stream.stages.parts import Parts, next_parts, part_key, records

_WAKE = struct.Struct(">q")
RECORD_BOUND = 512 * 1024
"""Bytes of a customer's value per changelog record: far below the 8 MiB message limit
(a record also carries its key and headers)."""
_HEAD = b"P"  # after the wake: a head naming part records (a value starts with '{')

Position = tuple[int, int]
RECORDS = -1  # `positions` key: the last by-customer record applied (holds, links)
HANDOVER_RECORDS = -2  # `positions` key: the last handovers-topic record applied
# `positions` keys: the last record of each input lane that touched this customer
TOUCHED = {RECORDS: -3, HANDOVER_RECORDS: -4}
LANE_OF = {RECORDS: RECORDS, HANDOVER_RECORDS: HANDOVER_RECORDS,
           TOUCHED[RECORDS]: RECORDS, TOUCHED[HANDOVER_RECORDS]: HANDOVER_RECORDS}
PEER_RECORDS = -5
"""`Committed` lane: the group's commits of by-customer partition N, whoever owns it."""
PEER_BASE = -16
"""`positions` keys PEER_BASE - N: a device on by-customer partition N handed this
customer its state after reading that partition's record (offset - 1); until the group
has committed past that offset the device's release may not be stored, and the device
may send it again after a crash (stream.stages.customer_handover `_absorb_ready`)."""

Committed = Callable[[int, int], "int | None"]
"""(lane, partition) -> the next offset to read after the last commit, None before the
first. Lanes: RECORDS (by-customer), HANDOVER_RECORDS (handovers), and a by-identity
partition number (>= 0) for the identity stage's input, whose records it re-sends
after a crash; PEER_RECORDS (by-customer, group-wide) for the devices' releases."""


def replayable(positions: dict[int, Position], partition: int, committed: Committed) -> bool:
    """Whether a record that brought a customer (by-customer `partition`) something can
    still come again, not being committed yet: by-customer and handovers records of
    its partition, by-identity records of any partition (the identity stage re-sends
    what it had not committed), and devices' releases (PEER_BASE)."""
    for key, (offset, _idx) in positions.items():
        if key >= 0:
            done = committed(key, key)
        elif key <= PEER_BASE:
            done = committed(PEER_RECORDS, PEER_BASE - key)
        else:
            done = committed(LANE_OF[key], partition)
        if done is None or offset >= done:
            return True
    return False


def read_value(get: Callable[[bytes], bytes | None], key: bytes) -> tuple[bytes | None,
                                                                        Parts]:
    """A customer's stored value, its parts joined, and which parts it was stored as."""
    head = get(key)
    if not head or head[_WAKE.size:_WAKE.size + 1] != _HEAD:
        return head, (0, 0)
    gen, n = orjson.loads(head[_WAKE.size + 1:])
    chunks = [get(part_key(key, gen, i)) for i in range(n)]
    if any(c is None for c in chunks):  # a head is stored only after its parts
        raise ValueError(f"customer state {key!r}: part records of generation {gen} missing")
    return head[:_WAKE.size] + b"".join(c for c in chunks if c is not None), (gen, n)


def value_records(key: bytes, partition: int, data: bytes | None, old: Parts,
                  bound: int = RECORD_BOUND) -> tuple[dict[bytes, tuple[int, bytes | None]],
                                                      Parts]:
    """The table records of a value (None: delete it) and the parts it is stored as:
    one record up to `bound` bytes, else a head and parts of at most `bound` bytes."""
    if data is None or len(data) <= bound:
        new = next_parts(old, 0)
        return records(key, partition, data, [], new, old), new
    body = data[_WAKE.size:]
    chunks = [body[i:i + bound] for i in range(0, len(body), bound)]
    new = next_parts(old, len(chunks))
    head = data[:_WAKE.size] + _HEAD + orjson.dumps(list(new))
    return records(key, partition, head, chunks, new, old), new


def wake_of(data: bytes) -> int | None:
    wake: int = _WAKE.unpack_from(data)[0]
    return None if wake == END_OF_TIME else wake


@dataclass(slots=True)
class CustomerValue:
    """A customer's sessions, journeys and applied input positions."""

    sessions: CustomerState = field(default_factory=CustomerState)
    journeys: CustomerJourneys = field(default_factory=CustomerJourneys)
    positions: dict[int, Position] = field(default_factory=dict)
    linked: tuple[str, int] | None = None  # (customer, link time): handover pending
    # handovers that arrived before this customer's event time reached their link time:
    # source device -> handover item (stream.stages.envelopes), absorbed at that time
    pending: dict[str, list[Any]] = field(default_factory=dict)
    # the stage generation (CustomerStage.generation) that last loaded this value: a
    # load in a newer one (after a restart or rebalance) moves the version counter on
    gen: int = 0
    # pieces of handovers sent in several records: source -> [digest, n, {i: base64}]
    pieces: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def floor(self) -> int:
        """The event time this customer was last settled to: an event older than this
        can no longer be applied (it is late for this customer)."""
        return max(self.journeys.checkpoint, self.sessions.watermark)

    def is_new_record(self, offset: int, lane: int = RECORDS) -> bool:
        """A record's holds, links or handovers for this customer are new (not a record
        read again): records of one partition of one topic (`lane`: RECORDS for
        by-customer, HANDOVER_RECORDS for handovers) come in offset order."""
        last = self.positions.get(lane)
        if last is not None and offset <= last[0]:
            return False
        self.positions[lane] = (offset, 0)
        return True

    def touch(self, offset: int, lane: int) -> None:
        """A record of `lane` at `offset` carried something for this customer."""
        key = TOUCHED[lane]
        last = self.positions.get(key)
        if last is None or offset > last[0]:
            self.positions[key] = (offset, 0)

    def replayable(self, partition: int, committed: Committed) -> bool:
        return replayable(self.positions, partition, committed)

    def is_new(self, partition: int, pos: Position) -> bool:
        """Record `pos` from by-identity `partition`; False if applied before."""
        last = self.positions.get(partition)
        if last is not None and pos <= last:
            return False
        self.positions[partition] = pos
        return True

    def link(self, customer: str, at: int) -> None:
        """A link item: hand over at `at` (the earliest link time of this customer)."""
        if self.linked is None or self.linked[0] != customer:
            self.linked = (customer, at)
        else:
            self.linked = (customer, min(at, self.linked[1]))

    def is_idle(self) -> bool:
        return (self.journeys.is_idle() and self.sessions.is_empty() and self.linked is None
                and not self.pending and not self.pieces)

    def piece(self, source: str, name: str, i: int, n: int, cut: bytes) -> list[Any] | None:
        """Keep piece `i` of `n` of the handover from `source` whose encoding `name`
        names; the whole item once every piece of that encoding is here (None before).
        Pieces of another encoding (an attempt the device's crash cut short) are
        dropped."""
        kept = self.pieces.get(source)
        if kept is None or kept[0] != name or kept[1] != n:
            kept = self.pieces[source] = [name, n, {}]
        kept[2][str(i)] = base64.b64encode(cut).decode("ascii")
        if len(kept[2]) < n:
            return None
        del self.pieces[source]
        return joined(name, [base64.b64decode(kept[2][str(k)]) for k in range(n)])

    def pack(self, wake: int | None) -> bytes:
        obj: dict[str, Any] = {"s": self.sessions.to_obj(), "j": self.journeys.to_obj(),
               "i": {str(p): list(v) for p, v in self.positions.items()}}
        if self.linked is not None:
            obj["l"] = list(self.linked)
        if self.pending:
            obj["h"] = self.pending
        if self.gen:
            obj["g"] = self.gen
        if self.pieces:
            obj["hp"] = self.pieces
        body = orjson.dumps(obj)
        return _WAKE.pack(END_OF_TIME if wake is None else wake) + body

    @classmethod
    def unpack(cls, data: bytes | None) -> CustomerValue:
        if not data:
            return cls()
        obj = orjson.loads(data[_WAKE.size:])
        positions = {int(p): (int(v[0]), int(v[1])) for p, v in (obj.get("i") or {}).items()}
        linked = obj.get("l")
        return cls(CustomerState.from_obj(obj["s"]), CustomerJourneys.from_obj(obj["j"]),
                   positions, (linked[0], int(linked[1])) if linked else None,
                   obj.get("h") or {}, int(obj.get("g") or 0), obj.get("hp") or {})


class CustomerWork:
    """A customer's state while a batch is prepared (loaded once, stored once), and
    between batches in the stage's cache (stream.stages.customer_cache): what loading
    the stored bytes again would give. `expire`: when it was loaded as a bare floor,
    the time that floor expires; `parts`: the part records it is stored as
    (stream.stages.parts); `gone`: the batch deleted the value; `size`: its stored
    bytes (what the cache weighs it by)."""

    __slots__ = ("expire", "gone", "partition", "parts", "size", "value")

    def __init__(self, partition: int, data: bytes | None, parts: Parts = (0, 0)) -> None:
        self.partition = partition
        self.parts = parts
        self.value = CustomerValue.unpack(data)
        self.gone = False
        self.stored(data)

    def stored(self, data: bytes | None) -> None:
        """The value is `data` in the table now (as loaded, or as just stored)."""
        self.size = len(data) if data else 0
        idle = data is not None and self.value.is_idle()
        self.expire = wake_of(data) if idle and data is not None else None
