"""A customer's journey state, the value the journey engine works on, and its bytes.

Everything in it is bounded for one customer except the tail (events at or after the
checkpoint, at most `allowed lateness` of them in steady state; a backlog held back by
a slow partition can make it large, which stream.stages.customer_state splits into
records of bounded size): open runs cap their paths (stream.engine.runs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from stream.engine.runs import Run, TailEvent, encode_run
from stream.eventtime.watermarks import NO_WATERMARK

_STATE_FORMAT = 1


@dataclass(slots=True)
class CustomerJourneys:
    """A customer's journey state (a Faust table value, as orjson bytes).

    `checkpoint`: watermark up to which events are folded into `open`; `tail`: sorted
    events at or after it; `open`: definition -> open run (encoded as stored until the
    engine decodes it); `emitted`: instance id -> [journey, fingerprint, opened_at] of
    the last live row of every non-final instance; `seq`: last version handed out;
    `merged`: keys whose handover was absorbed -> watermark after which a repeated
    handover can no longer arrive (see JourneyEngine.absorb); `waiting`: linked keys
    whose handover has not arrived yet -> [link time, wall ms the hold came]
    (stream.stages.envelopes "hold": nothing at or after the earliest link time is settled
    until they have all arrived, or `expire_holds` gave up on them); `closed_in`:
    definition -> ids of events of its closed instances that are still in another
    definition's open run (a release does not replay them for that definition:
    docs/semantics.md "Identity stitching"; bounded by the open runs' paths);
    `gave_up`: linked keys whose hold `expire_holds` gave up -> link time (their late
    handover is still absorbed, not taken for a repeat: stream.stages.customers).
    """

    checkpoint: int = NO_WATERMARK
    tail: list[TailEvent] = field(default_factory=list)
    open: dict[str, Any] = field(default_factory=dict)
    emitted: dict[str, list[Any]] = field(default_factory=dict)
    seq: int = 0
    # max event time of the partition when written (watermark recovery after restart)
    high_ms: int = NO_WATERMARK
    merged: dict[str, int] = field(default_factory=dict)
    waiting: dict[str, list[int]] = field(default_factory=dict)
    closed_in: dict[str, list[str]] = field(default_factory=dict)
    gave_up: dict[str, int] = field(default_factory=dict)

    def is_idle(self) -> bool:
        """Nothing can change without new events: the table entry may be deleted."""
        return (not self.tail and not self.open and not self.emitted and not self.merged
                and not self.waiting)

    def hold(self) -> int | None:
        """Event time the customer may not settle at or past (a handover is due)."""
        return min(at for at, _wall in self.waiting.values()) if self.waiting else None

    def wait_for(self, source: str, linked_at: int, wall_ms: int) -> bool:
        """A hold arrived: wait for `source`'s handover (False if it was absorbed
        already: the handover overtook its hold, or the hold was re-delivered)."""
        if source in self.merged:
            return False
        old = self.waiting.get(source)
        self.waiting[source] = [min(linked_at, old[0]) if old else linked_at, wall_ms]
        return True

    def expire_holds(self, wall_ms: int, max_wait_ms: int) -> int:
        """Stop waiting for handovers overdue by `max_wait_ms` of wall time (a lost
        handover must not freeze the customer); returns how many were given up."""
        late = [k for k, (_at, since) in self.waiting.items() if wall_ms - since > max_wait_ms]
        for k in late:
            self.gave_up[k] = self.waiting.pop(k)[0]
        return len(late)

    def to_obj(self) -> dict[str, Any]:
        obj = {
            "f": _STATE_FORMAT, "c": self.checkpoint, "h": self.high_ms, "q": self.seq,
            "t": self.tail,
            "o": {k: encode_run(r) if r.__class__ is Run else r for k, r in self.open.items()},
            "x": self.emitted, "m": self.merged,
        }
        if self.waiting:
            obj["w"] = self.waiting
        if self.closed_in:
            obj["k"] = self.closed_in
        if self.gave_up:
            obj["u"] = self.gave_up
        return obj

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.to_obj())

    @classmethod
    def from_obj(cls, o: dict[str, Any]) -> CustomerJourneys:
        if o.get("f") != _STATE_FORMAT:
            raise ValueError(f"unknown journey state format {o.get('f')!r}")
        # positional, in field order (checkpoint, tail, open, emitted, seq, high_ms,
        # merged, waiting, closed_in, gave_up): this runs for every touched customer per
        # batch
        return cls(o["c"], list(map(tuple, o["t"])), o["o"], o["x"], o["q"], o["h"],
                   o.get("m") or {}, o.get("w") or {}, o.get("k") or {}, o.get("u") or {})

    @classmethod
    def from_bytes(cls, data: bytes | None) -> CustomerJourneys:
        return cls.from_obj(orjson.loads(data)) if data else cls()
