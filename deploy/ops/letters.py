"""Dead letters as records, filters over them, and the redrive log: pure logic of
`journeys dlq` (the Kafka side is deploy.ops.dlq_io; docs/operations.md).

A dead letter is `{"reason", "stage", "event_id", "received_at", "original"}` (journeys.
events.Rejection.to_dead_letter; `original_base64` when the bytes were not UTF-8). Only
stages whose original is a raw touchpoint message can be redriven: the ingest side's
(`collector`, `import`, `generate`) and the validate stage's. The others hold internal
envelopes or alert bodies, which are not events.

The redrive log is a compacted topic keyed by the dead letter's coordinates
(`<topic>/<partition>/<offset>`). Before an event is produced its key gets a `sending`
mark, after the broker acknowledged it a `sent` mark: a later redrive skips both, so
each dead letter is sent at most once; a `sending` mark without `sent` (the redrive died
in between) is reported as in doubt and not sent again unless asked to.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import orjson

from journeys.events import EventValidator, Touchpoint
from journeys.timeutil import datetime_to_ms

REDRIVABLE = frozenset({"collector", "import", "generate", "validate"})


@dataclass(frozen=True, slots=True)
class Letter:
    """One record of a dead-letter topic, decoded (never raises: see `parse`)."""

    topic: str
    partition: int
    offset: int
    stage: str
    reason: str
    event_id: str | None
    received_at_ms: int | None
    original: bytes

    @property
    def key(self) -> bytes:
        """Its key in the redrive log."""
        return f"{self.topic}/{self.partition}/{self.offset}".encode()

    @property
    def ref(self) -> str:
        """How the commands name it: PARTITION:OFFSET."""
        return f"{self.partition}:{self.offset}"


def _received(body: Mapping[str, object], timestamp_ms: int | None) -> int | None:
    text = body.get("received_at")
    if isinstance(text, str):
        try:
            return datetime_to_ms(datetime.fromisoformat(text.replace("Z", "+00:00")))
        except ValueError:
            pass
    return timestamp_ms


def _original(body: Mapping[str, object]) -> bytes:
    encoded = body.get("original_base64")
    if isinstance(encoded, str):
        try:
            return base64.b64decode(encoded, validate=True)
        except ValueError:
            pass
    text = body.get("original")
    return text.encode() if isinstance(text, str) else b""


def parse(topic: str, partition: int, offset: int, timestamp_ms: int | None,
          value: bytes | None) -> Letter:
    """A dead-letter record; one that is not a dead letter at all becomes stage
    `unknown` with its bytes as the original (shown, never redriven)."""
    try:
        body = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        return Letter(topic, partition, offset, "unknown", "undecodable dead letter", None,
                      timestamp_ms, value or b"")
    event_id = body.get("event_id")
    return Letter(topic, partition, offset, str(body.get("stage") or "unknown"),
                  str(body.get("reason") or "unknown"),
                  event_id if isinstance(event_id, str) else None,
                  _received(body, timestamp_ms), _original(body))


@dataclass(frozen=True, slots=True)
class LetterFilter:
    """Which letters a command works on; every given condition must hold."""

    reason: str | None = None  # substring, any case
    stages: tuple[str, ...] = ()
    since_ms: int | None = None  # received at or after
    until_ms: int | None = None  # received before
    refs: tuple[tuple[int, int], ...] = ()  # (partition, offset)

    def matches(self, letter: Letter) -> bool:
        if self.refs and (letter.partition, letter.offset) not in self.refs:
            return False
        if self.stages and letter.stage not in self.stages:
            return False
        if self.reason and self.reason.lower() not in letter.reason.lower():
            return False
        at = letter.received_at_ms
        if self.since_ms is not None and (at is None or at < self.since_ms):
            return False
        return not (self.until_ms is not None and (at is None or at >= self.until_ms))


def parse_ref(text: str) -> tuple[int, int]:
    """PARTITION:OFFSET (ValueError otherwise)."""
    partition, sep, offset = text.partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise ValueError(f"{text!r}: expected PARTITION:OFFSET, e.g. 0:17")
    return int(partition), int(offset)


MarkState = Literal["sending", "sent"]


@dataclass(frozen=True, slots=True)
class Mark:
    """What the redrive log says about one dead letter."""

    state: MarkState
    at_ms: int
    event_id: str | None = None
    raw_partition: int | None = None
    raw_offset: int | None = None

    def encode(self) -> bytes:
        return orjson.dumps({"state": self.state, "at_ms": self.at_ms,
                             "event_id": self.event_id, "raw_partition": self.raw_partition,
                             "raw_offset": self.raw_offset})


def decode_mark(value: bytes | None) -> Mark | None:
    """A log record's mark; None for a tombstone or a foreign record."""
    try:
        body = orjson.loads(value or b"")
        state = body["state"]
        if state not in ("sending", "sent"):
            return None
        return Mark(state, int(body["at_ms"]), body.get("event_id"),
                    body.get("raw_partition"), body.get("raw_offset"))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def fold(records: Iterable[tuple[bytes | None, bytes | None]]) -> dict[bytes, Mark]:
    """The log's records in order -> each key's latest mark (a `sent` is never taken
    back by a later `sending`: a log written by two racing redrives stays `sent`)."""
    out: dict[bytes, Mark] = {}
    for key, value in records:
        mark = decode_mark(value)
        if key is None or mark is None:
            continue
        if out.get(key) is None or out[key].state != "sent":
            out[key] = mark
    return out


@dataclass
class RedrivePlan:
    """What a redrive will do with each selected letter."""

    send: list[tuple[Letter, Touchpoint | None]] = field(default_factory=list)
    done: list[tuple[Letter, Mark]] = field(default_factory=list)  # sent before
    in_doubt: list[tuple[Letter, Mark]] = field(default_factory=list)
    not_redrivable: list[Letter] = field(default_factory=list)  # not an event
    still_invalid: list[tuple[Letter, str]] = field(default_factory=list)


def plan(letters: Iterable[Letter], marks: Mapping[bytes, Mark], validator: EventValidator,
         *, force: bool = False, retry_in_doubt: bool = False) -> RedrivePlan:
    """Sort selected letters into send / already sent / in doubt / not an event / still
    invalid under today's rules (sending those would only dead-letter them again;
    `force` sends them anyway)."""
    out = RedrivePlan()
    for letter in letters:
        mark = marks.get(letter.key)
        if letter.stage not in REDRIVABLE:
            out.not_redrivable.append(letter)
        elif mark is not None and mark.state == "sent":
            out.done.append((letter, mark))
        elif mark is not None and not retry_in_doubt:
            out.in_doubt.append((letter, mark))
        else:
            parsed = validator.parse(letter.original)
            if isinstance(parsed, Touchpoint):
                out.send.append((letter, parsed))
            elif force:
                out.send.append((letter, None))
            else:
                out.still_invalid.append((letter, parsed.reason))
    return out


def raw_partition(key: bytes, partitions: int) -> int:
    """The raw partition a keyed record goes to (kafka-python's and Java's murmur2)."""
    from kafka.partitioner.default import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % partitions


def late_among(items: Iterable[tuple[Letter, Touchpoint | None]], newest: Mapping[int, int],
               partitions: int, lateness_ms: int) -> int:
    """How many events of a redrive the stream will call late: older than the newest
    event time already on their raw partition minus the allowed lateness."""
    late = 0
    for _letter, tp in items:
        if tp is None or partitions < 1:
            continue
        head = newest.get(raw_partition(tp.identity_key.encode(), partitions))
        late += head is not None and tp.occurred_at < head - lateness_ms
    return late
