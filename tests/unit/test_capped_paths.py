"""Bounds (docs/reliability.md "Bounded state"): capped journey paths keep every figure
exact, and a customer's value is stored in records of bounded size, restored whole.

The property compares a capped engine (cap 1..5) with the uncapped batch reference
(tests/reference/journeys_ref.py) over single-customer streams: statuses, opened and
closed times, furthest step (so funnel and abandonment), reached times, event counts,
detour counts per (kind, step, channel), step observations, and the kept path prefix.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from journeys.definitions import JourneyDefinition, parse_definitions
from stream.engine.journeys import CustomerJourneys, InstanceRow, JourneyEngine
from stream.engine.merge import merge_plan
from stream.engine.runs import Spec, decode_run, encode_run, feed, instance_id, path_events
from stream.stages.customer_state import (
    RECORD_BOUND,
    CustomerValue,
    read_value,
    value_records,
)
from stream.stages.parts import is_part, store_order
from tests.profiles import examples
from tests.reference.journeys_ref import all_journeys
from tests.unit.stream_harness import Pipeline
from tests.unit.test_journeys_engine import BASE, CHANNELS, TYPES, E, Harness, defs

M = 60_000


def detour_counts(r: InstanceRow) -> Counter[tuple[str, str, str]]:
    """Detours per (kind, step, channel): the per-event arrays plus the capped counts,
    as the detours report adds them (warehouse.queries.detours)."""
    out = Counter(zip(r.detour_kinds, r.detour_steps, r.detour_channels, strict=True))
    for k, s, ch, n in zip(r.capped_detour_kinds, r.capped_detour_steps,
                           r.capped_detour_channels, r.capped_detour_counts, strict=True):
        out[(k, s, ch)] += n
    return out


def figures(rows: dict[str, InstanceRow]) -> dict[str, tuple[Any, ...]]:
    return {r.instance_id: (r.journey, r.status, r.opened_at_ms, r.closed_at_ms,
                            r.furthest_step, r.reached_times, r.events, r.last_event_at_ms,
                            detour_counts(r)) for r in rows.values()}


def ref_figures(insts: list[Any]) -> dict[str, tuple[Any, ...]]:
    return {i.instance_id: (i.journey, i.status, i.opened_at, i.closed_at or 0, i.furthest,
                            [i.reached[s][0] for s in range(i.furthest + 1)], len(i.path),
                            i.last_t, Counter((d.kind, d.step, d.channel) for d in i.detours))
            for i in insts}


@st.composite
def one_customer(draw: Any) -> Any:
    raw = draw(st.lists(st.tuples(st.integers(0, 400), st.sampled_from(TYPES),
                                  st.sampled_from(CHANNELS)), min_size=1, max_size=45))
    events = [E(f"e{i:03d}", "c0", ty, ch, BASE + t) for i, (t, ty, ch) in enumerate(raw)]
    lateness = draw(st.integers(0, 150))
    jitter = draw(st.lists(st.integers(0, max(lateness - 1, 0)), min_size=len(events),
                           max_size=len(events)))
    order = [e for _, _, e in sorted(((e.occurred_at + j, k, e) for k, (e, j) in
                                      enumerate(zip(events, jitter, strict=True))),
                                     key=lambda x: x[:2])]
    return (defs(draw(st.integers(1, 80)), draw(st.integers(1, 250)), draw(st.booleans())),
            lateness, order, draw(st.integers(1, 5)), draw(st.integers(0, 2**32 - 1)))


@settings(max_examples=examples(300), deadline=None)
@given(one_customer())
def test_capped_paths_keep_every_figure_of_the_reference(case: Any) -> None:
    definitions, lateness, order, cap, seed = case
    rnd = random.Random(seed)
    h = Harness(definitions, lateness, roundtrip=0.7, seed=seed, path_cap=cap)
    i = 0
    while i < len(order):
        n = rnd.randint(1, 6)
        h.batch(order[i:i + n])
        i += n
        if rnd.random() < 0.15:
            h.idle(rnd.randint(0, 60))
    h.idle(rnd.randint(0, 400))
    wm = h.clock.mark
    assert h.late + len(h.applied) == len(order)  # idle time can make some late
    insts = all_journeys(definitions, [e.ref() for e in h.applied], watermark=wm)
    assert figures(h.rows) == ref_figures(insts)
    for inst in insts:  # the path (and per-event detours) of the first `cap` events
        row = h.rows[inst.instance_id]
        assert row.path_times == [e.t for e in inst.path[:cap]]
        assert row.path_types == [e.type for e in inst.path[:cap]]
        assert row.path_truncated == int(len(inst.path) > cap)
        assert row.channels == list(dict.fromkeys(e.channel for e in inst.path))
        kept = {e.event_id for e in inst.path[:cap]}
        assert len(row.detour_kinds) == sum(d.event_id in kept for d in inst.detours)
    final = {i.instance_id for i in insts
             if (i.status == "converted" and i.closed_at < wm)
             or (i.status == "abandoned" and i.closed_at <= wm)}
    assert sorted(r.instance_id for r in h.closed) == sorted(final)
    want = sorted((i.journey, i.path[0].event_id, s, t, ch)
                  for i in insts for s, (t, ch) in i.reached.items() if t < wm)
    got = sorted((o.journey, o.instance_id, o.step_index, o.reached_at_ms, o.channel)
                 for o in h.reached)
    assert got == want


BUY = JourneyDefinition(name="buy", steps=("view", "cart", "pay", "done"),
                        abandon_after="1h", conversion_window="30d")


WALK = ("view", "cart", "help", "pay", "other", "cart", "view")  # never the goal


def _walk(n: int, cap: int) -> tuple[Spec, Any]:
    spec = Spec(BUY, cap)
    cur = None
    for i in range(n):
        ev = (BASE + i * M, f"e{i:05d}", WALK[(i * 3) % 7], CHANNELS[i % 3],
              {"campaign": "x"} if i == 0 else None)
        cur, _closed, _opened = feed(spec, "c1", cur, ev)
    return spec, cur


def test_a_capped_run_round_trips_without_a_replay_and_continues_alike() -> None:
    spec, run = _walk(400, 5)
    assert run is not None and run.truncated and len(run.path) == 5 and run.n == 400
    stored = orjson.loads(orjson.dumps(encode_run(run)))
    again = decode_run(stored, spec)
    assert again == run
    assert len(orjson.dumps(stored)) < 2048  # bounded however many events
    for i in range(400, 420):  # both go on the same way
        ev = (BASE + i * M, f"e{i:05d}", WALK[i % 7], CHANNELS[i % 2])
        feed(spec, "c1", run, ev)
        feed(spec, "c1", again, ev)
    assert again == run and again.digest() == run.digest()


def test_an_uncapped_stored_path_is_capped_on_decode() -> None:
    """A path stored under a larger cap (or before caps) is replayed under the current one."""
    _spec, run = _walk(30, 1000)
    assert run is not None and not run.truncated
    small = decode_run(orjson.loads(orjson.dumps(encode_run(run))), Spec(BUY, 4))
    _s, capped = _walk(30, 4)
    assert small == capped


def test_state_of_a_huge_journey_stays_small() -> None:
    """The measured failure: ~210k events in one journey made an 8 MiB state record."""
    eng = JourneyEngine([BUY], path_cap=50)
    state = CustomerJourneys()
    evs = [E(f"{i:08d}-1b4e-4c2a-9f3e-8d6a5c4b3a21", "c1", WALK[(i * 3) % 7],
             CHANNELS[i % 3], BASE + i * 1000) for i in range(20_000)]
    eng.apply("c1", state, evs, watermark=BASE + len(evs) * 1000)
    assert not state.tail and len(state.to_bytes()) < 16 * 1024
    [(_d, run)] = eng.current("c1", state)
    assert run.n == 20_000 and len(run.path) == 50


# ------------------------------------------------------------ bounded customer records
def _big_value(n: int) -> CustomerValue:
    v = CustomerValue()
    v.journeys.tail = [(BASE + i, f"e{i:06d}", "view", "web", None) for i in range(n)]
    v.positions = {0: (n, 0)}
    return v


def _apply(table: dict[bytes, bytes], records: dict[bytes, tuple[int, bytes | None]]) -> None:
    for key, (_p, value) in records.items():
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value


def test_a_value_over_the_bound_splits_into_records_within_it_and_restores_equal() -> None:
    big = _big_value(5000).pack(BASE)
    assert len(big) > 4 * 1024
    records, parts = value_records(b"c1", 3, big, (0, 0), bound=1024)
    assert parts[1] == len(records) - 1 >= 4
    assert all(len(v or b"") <= 1024 and p == 3 for p, v in records.values())
    table: dict[bytes, bytes] = {}
    _apply(table, records)
    data, stored = read_value(table.get, b"c1")
    assert (data, stored) == (big, parts)
    assert CustomerValue.unpack(data) == CustomerValue.unpack(big)
    small = _big_value(3).pack(None)  # back under the bound: one record, parts deleted
    records, parts = value_records(b"c1", 3, small, parts, bound=1024)
    _apply(table, records)
    assert parts == (0, 0) and table == {b"c1": small}
    assert RECORD_BOUND <= 1024 * 1024  # far below the 8 MiB message limit


def test_a_crash_between_part_records_and_head_restores_the_previous_value() -> None:
    old = _big_value(3000).pack(BASE)
    table: dict[bytes, bytes] = {}
    records, parts = value_records(b"c1", 0, old, (0, 0), bound=1024)
    _apply(table, records)
    new = _big_value(4000).pack(BASE + 1)
    records, _parts = value_records(b"c1", 0, new, parts, bound=1024)
    groups = store_order(records)
    assert [sorted({is_part(k) for k in g}) for g in groups] == [[True], [False], [True]]
    _apply(table, groups[0])  # the new parts, then the crash
    assert read_value(table.get, b"c1")[0] == old
    _apply(table, groups[1])  # the head: the new value; then the crash
    assert read_value(table.get, b"c1")[0] == new
    _apply(table, groups[2])  # the old parts' tombstones
    assert read_value(table.get, b"c1")[0] == new
    assert sum(is_part(k) for k in table) == _parts[1]


# ----------------------------------------------------------- stitching a capped run
STORY_DEFS = parse_definitions({
    "journeys": [{"name": "buy", "steps": ["view", "cart", "pay", "done"],
                  "abandon_after": "1h", "conversion_window": "1d", "off_path": ["help"]}],
    "sessions": {"gap": "30m"},
})


def test_a_device_with_a_capped_journey_hands_it_over_with_exact_figures() -> None:
    """A long anonymous journey (capped), then a login: the customer's events all come
    after the capped run's last event, so it is continued from its summary and every
    figure equals the reference over the customer's resolved events."""
    raw = []
    for i in range(60):
        typ = ("view", "cart", "help", "cart", "view")[i % 5]
        raw.append({"event_id": f"e{i:03d}", "type": typ, "channel": CHANNELS[i % 2],
                    "occurred_at": BASE + i * M, "anonymous_id": "dev1"})
    raw.append({"event_id": "e100", "type": "identify", "channel": "app",
                "occurred_at": BASE + 61 * M, "anonymous_id": "dev1", "customer_id": "c1"})
    raw += [{"event_id": f"e1{i:02d}", "type": typ, "channel": "store",
             "occurred_at": BASE + (62 + i) * M, "customer_id": "c1"}
            for i, typ in enumerate(["cart", "help", "pay", "done"], start=1)]
    pipe = Pipeline(STORY_DEFS, partitions=2, lateness_ms=5 * M, seed=3, path_cap=4,
                    record_bound=512)
    pipe.feed_raw(raw[:30], BASE + 30 * M)
    pipe.drain()
    pipe.feed_raw(raw[30:], raw[-1]["occurred_at"])
    pipe.finish(BASE + 5 * 60 * M)
    [row] = pipe.instances.values()
    evs = [E(e["event_id"], "c1", e["type"], e["channel"], e["occurred_at"]) for e in raw]
    [inst] = all_journeys(list(STORY_DEFS.journeys), [e.ref() for e in evs],
                          watermark=BASE + 5 * 60 * M)
    assert (row.customer_id, row.path_truncated, len(row.path_types)) == ("c1", 1, 4)
    assert figures({row.instance_id: row})[row.instance_id][1:] == (
        ref_figures([inst])[inst.instance_id][1:])
    assert all(len(v) <= 512 for v in pipe.states.values())


def test_merging_into_a_capped_run_continues_it_with_what_comes_after_its_last_event() -> None:
    """docs/semantics.md "Capped paths": the other side's events after the capped run's
    last event are fed to it (exact); those before it would interleave with dropped
    events and are left out of that instance."""
    _spec, run = _walk(10, 3)
    assert run is not None and run.truncated
    before = (BASE + 4 * M + 1, "x1", "cart", "app", None)  # inside the dropped part
    after = (BASE + 30 * M, "x2", "pay", "app", None)
    base, events = merge_plan("buy", "cust", None, run, [before, after, *path_events(run)])
    assert base is not None and events == [after]
    assert base.iid == instance_id("buy", "cust", run.path[0][1]) != run.iid
    assert (base.n, base.more) == (run.n, run.more)  # the summary, not a replay
    plain, replay = merge_plan("buy", "cust", None, None, [after, before])
    assert plain is None and replay == [before, after]  # uncapped: the exact replay
