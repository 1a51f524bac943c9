"""The touchpoint event (DESIGN.md wire format) and its validation.

Validation returns a reason instead of raising, because bad input is data: callers
dead-letter it with the reason and the original bytes. The fast path is orjson plus a
hand-written check of each rule, so the reasons are stable, precise strings that tests,
metrics and users can rely on; the result is a slotted dataclass, not a pydantic model
(one is built per event on every hot path; see docs/performance.md).
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from journeys.timeutil import datetime_to_ms, ms_to_iso

DEFAULT_CHANNELS: tuple[str, ...] = (
    "web", "app", "email", "store", "call_center", "chat", "ads", "social", "sms", "push",
)
IDENTIFY = "identify"

MAX_EVENT_ID = 128
MAX_TYPE = 64
MAX_CHANNEL = 32
MAX_ID = 128
MAX_SOURCE = 64
MAX_PROPERTIES_BYTES = 32 * 1024
MAX_CONTEXT_BYTES = 8 * 1024  # context travels with the event through every stage
MAX_NESTING = 16  # objects/arrays inside properties or context (orjson stops at 255)
# properties.value (docs/semantics.md "Journey value"): a finite JSON number within this
# bound; beyond it a Float64 sum of many values loses the cents, and it is a mistake.
MAX_VALUE = 1e15
# Event times outside this range are almost always unit mistakes (seconds vs ms).
MIN_TIME_MS = 946_684_800_000  # 2000-01-01
MAX_TIME_MS = 4_102_444_800_000  # 2100-01-01

KNOWN_FIELDS = frozenset(
    {"event_id", "type", "channel", "occurred_at", "customer_id", "anonymous_id",
     "source", "properties", "context"}
)


@dataclass(slots=True)
class Touchpoint:
    """A validated touchpoint. `occurred_at` is epoch milliseconds, UTC.

    A slotted dataclass, not a pydantic model: one is built per event on every hot path
    (import, collector, validate stage), and pydantic's `model_construct` alone cost
    ~3 µs of the ~25 µs an event took there (docs/performance.md). Not frozen for the
    same reason (a frozen dataclass's __init__ is ~4× slower): treat it as read-only.
    """

    event_id: str
    type: str
    channel: str
    occurred_at: int
    customer_id: str | None = None
    anonymous_id: str | None = None
    source: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def identity_key(self) -> str:
        """The id the event is keyed by before stitching: known customer first."""
        return self.customer_id or self.anonymous_id or ""

    def to_wire(self) -> dict[str, Any]:
        """The DESIGN.md JSON shape (ISO-8601 time), for producing to Kafka."""
        return {"event_id": self.event_id, "type": self.type, "channel": self.channel,
                "occurred_at": ms_to_iso(self.occurred_at),
                "customer_id": self.customer_id, "anonymous_id": self.anonymous_id,
                "source": self.source, "properties": self.properties,
                "context": self.context}

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_wire())


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an input was refused; `raw` is the original bytes, kept for the dead letter."""

    reason: str
    raw: bytes
    event_id: str | None = None

    @property
    def code(self) -> str:
        """The stable code of the reason ("missing_field: ..." -> "missing_field"), so
        metrics labels stay low-cardinality."""
        return self.reason.split(":", 1)[0].strip() or "unknown"

    def to_dead_letter(self, *, stage: str, received_at_ms: int) -> bytes:
        """The dead-letter topic's record. `original` is the input as text; bytes that
        are not UTF-8 are also kept exactly, as `original_base64` (`journeys dlq show`)."""
        letter = {"reason": self.reason, "stage": stage, "event_id": self.event_id,
                  "received_at": ms_to_iso(received_at_ms)}
        try:
            letter["original"] = self.raw.decode("utf-8")
        except UnicodeDecodeError:
            letter["original"] = self.raw.decode("utf-8", errors="replace")
            letter["original_base64"] = base64.b64encode(self.raw).decode()
        return orjson.dumps(letter)


class EventValidator:
    """Checks raw events against DESIGN.md; reusable and cheap (build once per role)."""

    def __init__(self, channels: Iterable[str] | None = DEFAULT_CHANNELS) -> None:
        self.channels = frozenset(channels) if channels is not None else None

    def parse(self, raw: bytes | str) -> Touchpoint | Rejection:
        """Parse one wire message (JSON bytes)."""
        data = raw.encode() if isinstance(raw, str) else raw
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            return Rejection(f"invalid_json: {exc.args[0] if exc.args else exc}", data)
        return self.validate(obj, data)

    def validate(self, obj: Any, raw: bytes | None = None) -> Touchpoint | Rejection:
        """Validate an already-decoded JSON object. `raw` is kept for a dead letter;
        without it, a rejected object is serialised (only then: most events pass)."""
        if type(obj) is not dict and not isinstance(obj, Mapping):  # dict: no ABC check
            return Rejection(f"not_an_object: got {type(obj).__name__}", _raw(obj, raw))
        event_id = obj.get("event_id")
        eid = event_id if isinstance(event_id, str) else None
        try:
            reason = _check(obj, self.channels)
        except Exception as exc:  # the poison rule (docs/ingest.md): an input never
            # raises; what a rule misses ends as a dead letter naming the exception
            return Rejection(f"unprocessable: {type(exc).__name__}", _raw(obj, raw), eid)
        if isinstance(reason, str):
            return Rejection(reason, _raw(obj, raw), eid)
        return reason


def _raw(obj: Any, raw: bytes | None) -> bytes:
    """The bytes a dead letter keeps of a decoded input."""
    if raw is not None:
        return raw
    try:
        return orjson.dumps(obj, default=str)
    except TypeError:
        return repr(obj).encode()


def event_value(properties: Mapping[str, Any]) -> tuple[float | None, str | None]:
    """An event's `properties.value` for journey value (docs/semantics.md "Journey
    value"): (the value, None), (None, None) when absent, or (None, why it is ignored).
    Properties are free-form (DESIGN.md), so an unusable value never rejects the event:
    the event counts in its journeys as usual and only its value is left out (counted
    by the validate stage, `journeys_values_ignored_total`)."""
    v = properties.get("value") if properties else None
    if v is None:
        return None, None
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None, "not_a_number"
    if isinstance(v, float) and not math.isfinite(v):
        return None, "not_finite"
    if not -MAX_VALUE <= v <= MAX_VALUE:
        return None, "out_of_range"
    return float(v), None


def _str_field(obj: Mapping[str, Any], name: str, limit: int, required: bool) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise _Reject(f"missing_field: {name} is required")
        return None
    if not isinstance(value, str):
        raise _Reject(f"wrong_type: {name} must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise _Reject(f"empty_field: {name} must not be empty")
    if len(value) > limit:
        raise _Reject(f"too_long: {name} has {len(value)} characters, limit {limit}")
    return value


class _Reject(Exception):
    pass


_EPOCH_MS = re.compile(r"-?[0-9]{1,19}")  # ASCII digits only: str.isdigit takes "²", "٣"


def parse_occurred_at(value: Any) -> int:
    """ISO-8601 with a zone, or epoch milliseconds; returns epoch ms. Anything else is a
    rejection with a reason, never an exception: one bad timestamp must not stop a
    batch (a "²" or "--1772323200000" used to raise ValueError and halt the worker)."""
    if isinstance(value, bool) or value is None:
        raise _Reject("missing_field: occurred_at is required" if value is None else
                      "bad_timestamp: occurred_at must be ISO-8601 or epoch milliseconds")
    if isinstance(value, float) and not math.isfinite(value):
        raise _Reject(f"bad_timestamp: occurred_at {value!r} is not a number of milliseconds")
    if isinstance(value, int | float):
        ms = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if _EPOCH_MS.fullmatch(text):
            ms = int(text)
        elif not text.isascii() or len(text) > 64:
            raise _Reject(f"bad_timestamp: occurred_at {value[:40]!r} is not ISO-8601 or "
                          "epoch milliseconds")
        else:
            try:
                dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            except ValueError:
                raise _Reject(f"bad_timestamp: occurred_at {value!r} is not ISO-8601") from None
            if dt.tzinfo is None:
                raise _Reject(f"bad_timestamp: occurred_at {value!r} has no time zone")
            ms = datetime_to_ms(dt)
    else:
        raise _Reject("bad_timestamp: occurred_at must be ISO-8601 or epoch milliseconds")
    if not MIN_TIME_MS <= ms < MAX_TIME_MS:
        raise _Reject(
            f"bad_timestamp: occurred_at {value!r} is outside 2000..2100 "
            "(epoch seconds instead of milliseconds?)"
        )
    return ms


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _depth(value: Any) -> int:
    """How deeply objects and arrays nest in `value` (0 for a scalar); iterative, so a
    hostile depth cannot exhaust the stack."""
    if type(value) is dict:  # the common case, a flat object: no walk
        for v in value.values():
            if type(v) not in _SCALARS:
                break
        else:
            return 1
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, Mapping):
            children: Iterable[Any] = v.values()
        elif isinstance(v, list | tuple):
            children = v
        else:
            continue
        deepest = max(deepest, d + 1)
        if deepest > MAX_NESTING:
            break
        stack.extend((c, d + 1) for c in children)
    return deepest


def _json_object(obj: Mapping[str, Any], name: str, limit: int) -> Mapping[str, Any]:
    """`properties` or `context`: a JSON object of at most MAX_NESTING levels and
    `limit` bytes, or {}. Measured: a context nested 300 levels passed validation, then
    orjson refused it in the worker and the collector (a 500, a worker stopped)."""
    value = obj.get(name)
    if value is None:
        return {}
    if type(value) is not dict and not isinstance(value, Mapping):
        raise _Reject(f"wrong_type: {name} must be a JSON object")
    if not value:
        return value
    if _depth(value) > MAX_NESTING:
        raise _Reject(f"too_deep: {name} nests more than {MAX_NESTING} levels")
    size = len(orjson.dumps(value))
    if size > limit:
        raise _Reject(f"too_large: {name} is {size} bytes, limit {limit}")
    return value


def _check(obj: Mapping[str, Any], channels: frozenset[str] | None) -> Touchpoint | str:
    try:
        event_id = _str_field(obj, "event_id", MAX_EVENT_ID, True)
        etype = _str_field(obj, "type", MAX_TYPE, True)
        channel = _str_field(obj, "channel", MAX_CHANNEL, True)
        if channels is not None and channel not in channels:
            raise _Reject(f"unknown_channel: {channel!r} is not one of {sorted(channels)}")
        occurred_at = parse_occurred_at(obj.get("occurred_at"))
        customer_id = _str_field(obj, "customer_id", MAX_ID, False) or None
        anonymous_id = _str_field(obj, "anonymous_id", MAX_ID, False) or None
        if customer_id is None and anonymous_id is None:
            raise _Reject("missing_identity: customer_id or anonymous_id is required")
        source = _str_field(obj, "source", MAX_SOURCE, False)
        properties = _json_object(obj, "properties", MAX_PROPERTIES_BYTES)
        context = _json_object(obj, "context", MAX_CONTEXT_BYTES)
    except _Reject as exc:
        return str(exc)
    except TypeError as exc:  # e.g. properties holding values orjson cannot encode
        return f"wrong_type: {exc}"
    return Touchpoint(event_id, etype, channel, occurred_at,  # type: ignore[arg-type]
                      customer_id, anonymous_id, source, dict(properties), dict(context))
