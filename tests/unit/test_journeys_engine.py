"""The incremental journey engine must end with exactly the reference's instances.

The engine is driven the way the stream drives it: a per-partition SourceClock, random
batches per customer, idle time advancing the watermark (timer path), state optionally
round-tripped through bytes; output rows are folded like a ReplacingMergeTree(version)
with retractions applied. The result is compared with the batch reference
(tests/reference/journeys_ref.py) over the events the engine applied.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from journeys.definitions import JourneyDefinition
from stream.engine.journeys import (
    CustomerJourneys,
    InstanceRow,
    JourneyDelta,
    JourneyEngine,
    fold_rows,
)
from stream.engine.outputs import StepReached
from stream.engine.runs import PATH_CAP
from stream.eventtime.watermarks import SourceClock
from tests.profiles import examples
from tests.reference.journeys_ref import Ev, all_journeys

BASE = 1_700_000_000_000
CHANNELS = ("web", "app", "store")
STEPS = ("view", "cart", "pay", "done")
TYPES = (*STEPS, "help", "other")


@dataclass(frozen=True)
class E:
    event_id: str
    customer: str
    type: str
    channel: str
    occurred_at: int
    value: float | None = None

    def ref(self) -> Ev:
        return Ev(self.event_id, self.customer, self.type, self.channel, self.occurred_at,
                  self.value)


def defs(abandon: int, window: int, listed: bool) -> list[JourneyDefinition]:
    return [
        JourneyDefinition(name="buy", steps=STEPS, abandon_after=f"{abandon}ms",
                          conversion_window=f"{window}ms",
                          off_path=("help",) if listed else None),
        JourneyDefinition(name="short", steps=("cart", "pay"), abandon_after=f"{abandon * 2}ms",
                          conversion_window=f"{window}ms"),
    ]


class Harness:
    """One partition: clock, table of state bytes, warehouse fold, emitted observations."""

    def __init__(self, definitions: list[JourneyDefinition], lateness: int,
                 roundtrip: float = 1.0, seed: int = 0, path_cap: int = PATH_CAP) -> None:
        self.engine = JourneyEngine(definitions, definitions_version="v1", path_cap=path_cap)
        self.clock = SourceClock(lateness)
        self.table: dict[str, bytes] = {}
        self.live: dict[str, CustomerJourneys] = {}
        self.rows: dict[str, InstanceRow] = {}
        self.versions: dict[str, int] = {}
        self.closed: list[InstanceRow] = []
        self.reached: list[StepReached] = []
        self.applied: list[E] = []
        self.late = 0
        self.rnd = random.Random(seed)
        self.roundtrip = roundtrip

    def _load(self, cust: str) -> CustomerJourneys:
        if cust in self.live:
            return self.live[cust]
        return CustomerJourneys.from_bytes(self.table.get(cust))

    def _store(self, cust: str, state: CustomerJourneys) -> None:
        if self.rnd.random() < self.roundtrip:
            self.live.pop(cust, None)
            self.table[cust] = state.to_bytes()
        else:
            self.live[cust] = state

    def _take(self, delta: JourneyDelta) -> None:
        for row in delta.upserts:
            old = self.rows.get(row.instance_id)
            assert old is None or old.version != row.version or old == row
        fold_rows(self.rows, delta, versions=self.versions)
        self.closed.extend(delta.closed)
        self.reached.extend(delta.reached)

    def batch(self, events: list[E]) -> None:
        groups: dict[str, list[E]] = defaultdict(list)
        for e in events:
            if self.clock.observe(e.occurred_at, 0):
                self.late += 1
            else:
                groups[e.customer].append(e)
                self.applied.append(e)
        for cust, evs in groups.items():
            state = self._load(cust)
            delta = self.engine.apply(cust, state, evs, watermark=self.clock.mark,
                                      high_ms=self.clock.max_seen)
            assert delta.late == 0
            self._store(cust, state)
            self._take(delta)

    def idle(self, ms: int) -> None:
        """Wall-clock time passes with no events: the timer advances every customer."""
        self.clock.observe(self.clock.max_seen + ms, 0)
        for cust in sorted({*self.table, *self.live}):
            state = self._load(cust)
            self._take(self.engine.advance(cust, state, watermark=self.clock.mark))
            self._store(cust, state)


def ref_view(insts) -> dict[str, tuple]:
    return {
        i.instance_id: (
            i.journey, i.customer, i.status, i.opened_at, i.closed_at or 0, i.furthest,
            [(e.t, e.type, e.channel) for e in i.path],
            [(d.kind, d.step, d.channel, d.t,
              next(k for k, p in enumerate(i.path) if p.event_id == d.event_id))
             for d in i.detours],
            i.value,
        )
        for i in insts
    }


def row_view(rows: dict[str, InstanceRow]) -> dict[str, tuple]:
    return {
        r.instance_id: (
            r.journey, r.customer_id, r.status, r.opened_at_ms, r.closed_at_ms,
            r.furthest_step,
            list(zip(r.path_times, r.path_types, r.path_channels, strict=True)),
            list(zip(r.detour_kinds, r.detour_steps, r.detour_channels, r.detour_times,
                     r.detour_positions, strict=True)),
            r.value,
        )
        for r in rows.values()
    }


def check(h: Harness, definitions: list[JourneyDefinition]) -> None:
    """Compare with the reference at the current watermark (after the timer ran)."""
    h.idle(0)  # customers not touched since the watermark moved are settled by the timer
    wm = h.clock.mark
    insts = all_journeys(definitions, [e.ref() for e in h.applied], watermark=wm)
    assert row_view(h.rows) == ref_view(insts)
    # dropped_at, as the reference reads it
    by_name = {d.name: d for d in definitions}
    for i in insts:
        row = h.rows[i.instance_id]
        assert row.dropped_at == (i.dropped_at(by_name[i.journey]) or "")
        assert row.reached_times == [i.reached[s][0] for s in range(i.furthest + 1)]
    # closes are reported once each, exactly when final
    final = {i.instance_id for i in insts
             if (i.status == "converted" and i.closed_at < wm)
             or (i.status == "abandoned" and i.closed_at <= wm)}
    closed_ids = [r.instance_id for r in h.closed]
    assert sorted(closed_ids) == sorted(final)
    for r in h.closed:
        assert r == h.rows[r.instance_id]
    # step observations: once each, exactly the settled ones, named by the opening event
    want = sorted(
        (i.journey, i.path[0].event_id, s, t, ch)
        for i in insts for s, (t, ch) in i.reached.items() if t < wm
    )
    got = sorted((o.journey, o.instance_id, o.step_index, o.reached_at_ms, o.channel)
                 for o in h.reached)
    assert got == want


def _events(draw, n_max: int = 45, span: int = 400) -> list[E]:
    raw = draw(st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, span), st.sampled_from(TYPES),
                  st.sampled_from(CHANNELS), st.one_of(st.none(), st.integers(-5, 500))),
        min_size=1, max_size=n_max,
    ))
    return [E(f"e{i:03d}", f"c{c}", ty, ch, BASE + t, None if v is None else float(v))
            for i, (c, t, ty, ch, v) in enumerate(raw)]


@st.composite
def scenario(draw, within: bool):
    abandon = draw(st.integers(1, 80))
    window = draw(st.integers(1, 250))
    listed = draw(st.booleans())
    lateness = draw(st.integers(0, 150))
    events = _events(draw)
    dups = draw(st.lists(st.sampled_from(events), max_size=15))
    arrivals = [*events, *dups]
    if within:
        jitter = draw(st.lists(st.integers(0, max(lateness - 1, 0)),
                               min_size=len(arrivals), max_size=len(arrivals)))
        order = [e for _, _, e in sorted(
            ((e.occurred_at + j, k, e)
             for k, (e, j) in enumerate(zip(arrivals, jitter, strict=True))),
            key=lambda x: (x[0], x[1]),
        )]
    else:
        order = draw(st.permutations(arrivals))
    seed = draw(st.integers(0, 2**32 - 1))
    return defs(abandon, window, listed), lateness, events, order, seed


def run(definitions, lateness, order, seed, *, roundtrip: float, idle: bool) -> Harness:
    rnd = random.Random(seed)
    h = Harness(definitions, lateness, roundtrip=roundtrip, seed=seed)
    i = 0
    while i < len(order):
        n = rnd.randint(1, 6)
        h.batch(order[i:i + n])
        i += n
        if idle and rnd.random() < 0.15:
            h.idle(rnd.randint(0, 60))
    if idle:
        h.idle(rnd.randint(0, 400))
    return h


@settings(max_examples=examples(300), deadline=None)
@given(scenario(within=True))
def test_incremental_equals_reference_within_lateness(case) -> None:
    definitions, lateness, events, order, seed = case
    h = run(definitions, lateness, order, seed, roundtrip=1.0, idle=False)
    assert h.late == 0
    assert {e.event_id for e in h.applied} == {e.event_id for e in events}
    check(h, definitions)


@settings(max_examples=examples(300), deadline=None)
@given(scenario(within=False))
def test_any_order_with_idle_time_equals_reference_over_applied(case) -> None:
    """Late events are skipped; idle time abandons via the timer; the rest is exact."""
    definitions, lateness, _, order, seed = case
    h = run(definitions, lateness, order, seed, roundtrip=0.5, idle=True)
    assert h.late + len(h.applied) == len(order)
    check(h, definitions)


@settings(max_examples=examples(150), deadline=None)
@given(scenario(within=True))
def test_serialization_at_random_points_changes_nothing(case) -> None:
    definitions, lateness, _, order, seed = case
    a = run(definitions, lateness, order, seed, roundtrip=0.0, idle=True)
    b = run(definitions, lateness, order, seed, roundtrip=0.3, idle=True)
    assert a.rows == b.rows and a.closed == b.closed and a.reached == b.reached


# ---- hand stories -------------------------------------------------------------------

M = 60_000
H = 60 * M
BUY = JourneyDefinition(name="buy", steps=STEPS, abandon_after="1h", conversion_window="1d")


def e(i: int, t: int, ty: str, ch: str = "web", c: str = "c1") -> E:
    return E(f"e{i:03d}", c, ty, ch, BASE + t)


def test_story_convert_with_detours_out_of_order() -> None:
    h = Harness([BUY], lateness=10 * M)
    h.batch([e(1, 0, "view"), e(3, 2 * M, "help", "chat"), e(2, M, "cart")])
    h.batch([e(5, 4 * M, "view"), e(4, 3 * M, "cart", "chat"), e(6, 5 * M, "pay")])
    [row] = h.rows.values()
    assert row.status == "open" and row.furthest_step_name == "pay"
    h.batch([e(7, 6 * M, "done", "store"), e(7, 6 * M, "done", "store")])
    [row] = h.rows.values()
    assert (row.status, row.closed_at_ms) == ("converted", BASE + 6 * M)
    assert list(zip(row.detour_kinds, row.detour_steps, strict=True)) == [
        ("channel_switch", "cart"), ("off_path", "cart"), ("loop", "cart"),
        ("channel_switch", "cart"), ("backtrack", "cart"), ("channel_switch", "pay"),
    ]
    assert h.closed == []  # not final: an event at 6m with a smaller id may still come
    h.idle(20 * M)
    assert [r.instance_id for r in h.closed] == [row.instance_id]
    check(h, [BUY])


def test_story_timer_abandons_idle_customer_at_deadline() -> None:
    h = Harness([BUY], lateness=5 * M)
    h.batch([e(1, 0, "view"), e(2, 10 * M, "cart", "app")])
    state = CustomerJourneys.from_bytes(h.table["c1"])
    assert h.engine.wake_at(state) == BASE + 10 * M + 1  # the cart event settles then
    h.idle(H)  # watermark = 10m + 1h - 5m: not yet
    assert h.closed == []
    state = CustomerJourneys.from_bytes(h.table["c1"])
    assert h.engine.wake_at(state) == BASE + 10 * M + H  # the deadline
    h.idle(5 * M)
    [row] = h.closed
    assert (row.status, row.closed_at_ms, row.dropped_at) == ("abandoned", BASE + 70 * M, "cart")
    assert CustomerJourneys.from_bytes(h.table["c1"]).is_idle()
    check(h, [BUY])


def test_story_late_earlier_entry_retracts_the_later_instance() -> None:
    h = Harness([BUY], lateness=30 * M)
    h.batch([e(5, 20 * M, "view", "app"), e(6, 21 * M, "cart", "app")])
    [first] = h.rows
    h.batch([e(1, 10 * M, "view")])  # opens earlier; the app events join it
    [row] = h.rows.values()
    assert row.instance_id != first and row.path_times[0] == BASE + 10 * M
    assert first in h.versions  # the vanished id was retracted with a higher version
    check(h, [BUY])


def test_story_step_reached_are_final_and_include_skipped_steps() -> None:
    h = Harness([BUY], lateness=M)
    h.batch([e(1, 0, "view"), e(2, 10 * M, "pay", "store")])
    assert [(o.step_index, o.reached_at_ms) for o in h.reached] == [(0, BASE)]
    h.idle(M + 1)
    assert [(o.step_index, o.reached_at_ms, o.channel) for o in h.reached] == [
        (0, BASE, "web"), (1, BASE + 10 * M, "store"), (2, BASE + 10 * M, "store")]


def test_event_behind_checkpoint_is_late_not_applied() -> None:
    eng = JourneyEngine([BUY])
    st_ = CustomerJourneys()
    eng.apply("c1", st_, [e(1, 10 * M, "view")], watermark=BASE + 10 * M)
    d = eng.apply("c1", st_, [e(2, 5 * M, "cart")], watermark=BASE + 10 * M)
    assert (d.late, d.applied) == (1, 0)


def test_state_bytes_round_trip_and_format() -> None:
    eng = JourneyEngine([BUY])
    state = CustomerJourneys()
    eng.apply("c1", state, [e(1, 0, "view"), e(2, M, "cart", "app"), e(3, 2 * M, "help")],
              watermark=BASE + M + 1)
    again = CustomerJourneys.from_bytes(state.to_bytes())
    assert again.to_bytes() == state.to_bytes()
    assert eng.current("c1", again) == eng.current("c1", state)  # runs replayed from paths
    assert again == state
    assert CustomerJourneys.from_bytes(None).is_idle()
    with pytest.raises(ValueError):
        CustomerJourneys.from_bytes(b'{"f": 99}')


def test_state_per_open_journey_stays_under_1_kib() -> None:
    """A 12-event journey with UUID event ids and detours on most events."""
    eng = JourneyEngine([BUY])
    state = CustomerJourneys()
    types = ["view", "cart", "help", "cart", "view", "cart", "other", "pay", "help", "pay",
             "cart", "pay"]
    evs = [E(f"{i:08d}-1b4e-4c2a-9f3e-8d6a5c4b3a21", "c1", ty, CHANNELS[i % 3], BASE + i * M)
           for i, ty in enumerate(types)]
    eng.apply("c1", state, evs, watermark=BASE + len(evs) * M)  # all settled
    assert not state.tail and len(state.open) == 1
    assert len(state.to_bytes()) <= 1024


def test_rows_fit_the_warehouse_writer() -> None:
    writer = pytest.importorskip("warehouse.writers_journeys")
    journey_instance_row = writer.journey_instance_row

    h = Harness([BUY], lateness=M)
    h.batch([e(1, 0, "view"), e(2, M, "cart", "app"), e(3, 2 * M, "done")])
    h.idle(H)
    for row in h.rows.values():
        assert journey_instance_row(row.as_record())[0] == row.instance_id


def test_rows_and_retractions_carry_their_definition_version() -> None:
    """Each journey's rows name its own definition's version; a retraction names the
    version of the rows it hides (the same warehouse key, migration 0009)."""
    buy, short = (d.model_copy(update={"version": v}) for d, v in
                  zip(defs(3_600_000, 86_400_000, False), ("b1", "s7"), strict=True))
    engine = JourneyEngine([buy, short], definitions_version="file")
    state = CustomerJourneys()
    ev = [(BASE + 20 * M, "e5", "view", "app", None), (BASE + 21 * M, "e6", "cart", "app", None)]
    first = engine.apply_tail("c", state, ev, watermark=BASE)
    assert {(r.journey, r.definition_version, r.definitions_version) for r in first.upserts} == {
        ("buy", "b1", "file"), ("short", "s7", "file")}
    later = engine.apply_tail("c", state, [(BASE + 10 * M, "e1", "view", "web", None)],
                              watermark=BASE)
    assert [(r.journey, r.definition_version) for r in later.retractions] == [("buy", "b1")]


def test_story_journey_value_is_the_latest_one() -> None:
    """docs/semantics.md "Journey value": the latest event carrying a value wins (a
    basket growing, then the order); events without one change nothing; an event of
    another type inside the instance counts; a capped path keeps it."""
    h = Harness([BUY], lateness=5 * M, path_cap=3)
    v = [E("e1", "c1", "view", "web", BASE), E("e2", "c1", "cart", "web", BASE + M, 20.0),
         E("e3", "c1", "cart", "web", BASE + 2 * M, 35.5),
         E("e4", "c1", "help", "chat", BASE + 3 * M, 40.0),  # beyond the cap of 3
         E("e5", "c1", "pay", "web", BASE + 4 * M)]
    h.batch(v)
    [row] = h.rows.values()
    assert (row.status, row.value, row.path_truncated) == ("open", 40.0, 1)
    h.batch([E("e6", "c1", "done", "web", BASE + 5 * M, 38.0)])  # the order total
    [row] = h.rows.values()
    assert (row.status, row.value) == ("converted", 38.0)
    h.batch([E("e7", "c2", "view", "app", BASE + 6 * M),
             E("e8", "c2", "cart", "app", BASE + 7 * M, 12.0),
             E("e9", "c2", "cart", "app", BASE + 8 * M)])  # no value: 12 stays
    h.idle(2 * H)
    gone = next(r for r in h.rows.values() if r.customer_id == "c2")
    assert (gone.status, gone.value) == ("abandoned", 12.0)
    nothing = Harness([BUY], lateness=5 * M)
    nothing.batch([e(1, 0, "view"), e(2, M, "cart")])
    assert [r.value for r in nothing.rows.values()] == [None]  # no value, not 0
