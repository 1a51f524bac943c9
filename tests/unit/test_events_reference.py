"""The fast validation path (orjson + hand-checked rules, no pydantic model per event)
agrees with the rules stated as a pydantic model (tests/reference/events_ref.py): the
same verdict, the same reason code naming the same field, the same values."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from journeys.events import EventValidator, Rejection, Touchpoint
from tests.reference.events_ref import ReferenceTouchpoint, reference_verdict

GOOD: dict[str, Any] = {
    "event_id": "e-1", "type": "product_view", "channel": "web",
    "occurred_at": "2026-03-01T10:00:00+01:00", "customer_id": "c-1",
    "anonymous_id": "anon-1", "source": "web-sdk",
    "properties": {"sku": "A1"}, "context": {"device": "mobile"},
}
V = EventValidator()
DROP = object()

scalars = (st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.just("")
           | st.just("   ") | st.text(max_size=12) | st.text(min_size=60, max_size=140)
           | st.floats(allow_nan=False, allow_infinity=False))
# strings at and around every length limit (32, 64, 128)
limits = st.sampled_from([31, 32, 33, 63, 64, 65, 127, 128, 129]).map(lambda n: "x" * n)
json_values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=3)
                           | st.dictionaries(st.text(max_size=4), kids, max_size=3),
                           max_leaves=12)
times = (st.integers(0, 5 * 10**12) | st.integers(-10**19, 10**19)
         | st.datetimes().map(lambda d: d.isoformat())
         | st.datetimes().map(lambda d: d.isoformat() + "Z")
         | st.datetimes().map(lambda d: d.isoformat() + "+05:30")
         | st.integers(946_684_800_000, 4_102_444_799_999).map(str)
         | st.sampled_from([946_684_799_999, 946_684_800_000, 4_102_444_799_999,
                          4_102_444_800_000])  # the ends of 2000..2100
         | st.just("2026-03-01T10:00:00z") | st.just(" 1772355600000 ") | st.just("²"))


def deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def deep_list(levels: int) -> dict[str, Any]:
    value: Any = 1
    for _ in range(levels - 1):
        value = [value]
    return {"a": value}


objects = (st.none() | json_values | st.integers(1, 20).map(deep)
           | st.integers(12, 20).map(deep_list)
           | st.integers(8_000, 34_000).map(lambda n: {"blob": "x" * n}))


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """A good event with one to three fields dropped or replaced by odd values (few, so
    each rule gets to decide often)."""
    out = dict(GOOD)
    pool = {"occurred_at": times, "properties": objects, "context": objects,
            "channel": st.sampled_from(["web", "app", "fax", ""]) | scalars}
    for name in draw(st.lists(st.sampled_from(list(GOOD)), min_size=1, max_size=3,
                              unique=True)):
        if draw(st.integers(0, 3)) == 0:
            out[name] = DROP
        else:
            odd = st.integers(0, 2).flatmap(  # a third of the odd values at a limit
                lambda k: limits if k == 0 else scalars | json_values)
            out[name] = draw(pool.get(name, odd))
    if draw(st.booleans()):
        out[draw(st.text(max_size=6))] = draw(json_values)
    return {k: v for k, v in out.items() if v is not DROP}


def _agree(raw: bytes) -> None:
    fast = V.parse(raw)
    ref = reference_verdict(raw)
    if isinstance(ref, ReferenceTouchpoint):
        assert isinstance(fast, Touchpoint), (fast, raw)
        assert (fast.event_id, fast.type, fast.channel, fast.occurred_at, fast.customer_id,
                fast.anonymous_id, fast.source, fast.properties, fast.context) == (
            ref.event_id, ref.type, ref.channel, ref.occurred_at, ref.customer_id,
            ref.anonymous_id, ref.source, ref.properties, ref.context)
        return
    code, field = ref
    assert isinstance(fast, Rejection), (ref, fast, raw)
    assert fast.code == code, (fast.reason, ref, raw)
    if field and code not in ("unknown_channel", "missing_identity"):
        assert fast.reason.split(":", 1)[1].strip().startswith(field), (fast.reason, ref)


@settings(max_examples=1000, deadline=None)
@given(events())
@example({**GOOD, "anonymous_id": None, "customer_id": ""})
@example({**GOOD, "occurred_at": "2026-03-01T10:00:00"})
@example({**GOOD, "context": deep(17)})
@example({**GOOD, "properties": {"blob": "x" * 40_000}})
def test_fast_path_agrees_with_the_pydantic_rules(event: dict[str, Any]) -> None:
    _agree(json.dumps(event).encode())  # stdlib: big ints too (orjson refuses them)


@given(st.binary(max_size=40) | json_values.map(lambda v: json.dumps(v).encode()))
def test_agree_on_what_is_not_an_event(raw: bytes) -> None:
    _agree(raw)
