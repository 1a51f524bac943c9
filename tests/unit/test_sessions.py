"""The incremental sessionizer must end with exactly the sessions a batch reference finds.

The reference is the DESIGN.md definition done the obvious way: sort a customer's
distinct events, split where the gap to the previous event is >= gap. The incremental
side is driven the way the stream drives it: per-partition clock, random batches, state
round-tripped through bytes after every batch, output rows folded like a
ReplacingMergeTree(version) with deletions applied. Row versions come from a counter per
customer stored with its state, which jumps by SEQ_EPOCH, and at least to the worker
generation's version_floor, when a worker first loads the customer (as
stream.stages.customers does); every row written for a session id must
outbid the ones written for it before, deletions included.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from journeys.versions import SEQ_EPOCH, version_floor
from stream.engine.session_state import CustomerState, SessionRow, session_id
from stream.engine.sessions import Sessionizer
from stream.eventtime.watermarks import SourceClock
from tests.profiles import examples

BASE = 1_700_000_000_000
CHANNELS = ("web", "app", "email", "store")


@dataclass(frozen=True)
class Ev:
    event_id: str
    occurred_at: int
    channel: str
    customer: str


def reference(events: list[Ev], gap: int) -> dict[str, tuple]:
    """session_id -> (customer, start, end, count, channels, first_channel)."""
    by_customer: dict[str, dict[str, Ev]] = defaultdict(dict)
    for e in events:
        by_customer[e.customer].setdefault(e.event_id, e)
    out: dict[str, tuple] = {}
    for cust, uniq in by_customer.items():
        ordered = sorted(uniq.values(), key=lambda e: (e.occurred_at, e.event_id))
        runs: list[list[Ev]] = []
        for e in ordered:
            if runs and e.occurred_at - runs[-1][-1].occurred_at < gap:
                runs[-1].append(e)
            else:
                runs.append([e])
        for run in runs:
            channels: list[str] = []
            for e in run:
                if e.channel not in channels:
                    channels.append(e.channel)
            sid = session_id(cust, run[0].event_id)
            out[sid] = (cust, run[0].occurred_at, run[-1].occurred_at, len(run),
                        channels, channels[0])
    return out


@dataclass
class Seq:
    """A customer's version counter (the stream's is CustomerJourneys.seq)."""

    seq: int = 0


@dataclass
class Store:
    """What outlives a worker: state bytes and counters, and the warehouse with every
    version written per session id (in write order)."""

    table: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    warehouse: dict[str, SessionRow] = field(default_factory=dict)
    written: dict[str, list[int]] = field(default_factory=dict)
    workers: int = 0  # workers started so far: one generation each, 1 s apart


class Harness:
    """One partition of the stream: clock, table of state bytes, warehouse fold.

    A restarted worker is a new Harness sharing `store` with the old one.
    """

    def __init__(self, gap: int, lateness: int, *, store: Store | None = None) -> None:
        self.sessionizer = Sessionizer(gap)
        self.clock = SourceClock(lateness)
        self.store = Store() if store is None else store
        self.warehouse = self.store.warehouse
        self.loaded: set[str] = set()  # customers this worker loaded (its generation)
        self.store.workers += 1
        self.floor = version_floor((BASE + self.store.workers * 1000) * 1_000_000)
        self.applied: list[Ev] = []
        self.late = 0

    def state(self, cust: str) -> CustomerState:
        stored = self.store.table.get(cust)
        return CustomerState.loads(stored[0] if stored else None)

    def batch(self, events: list[Ev], store: Callable[[str], bool] = lambda _: True) -> None:
        """Process a batch; rows are written, then states stored where `store` says so
        (a crash while storing states loses the rest)."""
        groups: dict[str, list[Ev]] = defaultdict(list)
        for e in events:
            if self.clock.observe(e.occurred_at, 0):
                self.late += 1
            else:
                groups[e.customer].append(e)
        new_states: dict[str, tuple[bytes, int]] = {}
        for cust, evs in groups.items():
            state = self.state(cust)
            seq = Seq(self.store.table.get(cust, (b"", 0))[1])
            if cust not in self.loaded:  # first load by this worker: past a crash's rows
                self.loaded.add(cust)
                seq.seq = max(seq.seq + SEQ_EPOCH, self.floor)
            floor = state.watermark
            delta = self.sessionizer.apply(cust, state, evs, watermark=self.clock.mark,
                                           versions=seq)
            self.late += delta.late
            self.applied.extend(e for e in evs if e.occurred_at >= floor)
            new_states[cust] = (state.dumps(), seq.seq)
            for row in delta.rows():
                self.fold(row)
        self.store.table.update((c, b) for c, b in new_states.items() if store(c))

    def fold(self, row: SessionRow) -> None:
        mine = self.store.written.setdefault(row.session_id, [])
        assert not mine or row.version > mine[-1], (row, mine)  # strictly growing
        mine.append(row.version)
        old = self.warehouse.get(row.session_id)
        if old is None or row.version > old.version:
            self.warehouse[row.session_id] = row

    def sessions(self) -> dict[str, tuple]:
        return {
            r.session_id: (r.customer_id, r.started_at_ms, r.ended_at_ms, r.events,
                           r.channels, r.first_channel)
            for r in self.warehouse.values() if not r.deleted
        }


def _events(draw, n_max: int = 40, span: int = 400) -> list[Ev]:
    raw = draw(st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, span), st.sampled_from(CHANNELS)),
        min_size=1, max_size=n_max,
    ))
    return [Ev(f"e{i:03d}", BASE + t, ch, f"c{c}") for i, (c, t, ch) in enumerate(raw)]


def _batches(order: list[Ev], rnd: random.Random) -> list[list[Ev]]:
    out: list[list[Ev]] = []
    i = 0
    while i < len(order):
        n = rnd.randint(1, 6)
        out.append(order[i:i + n])
        i += n
    return out


@st.composite
def within_lateness(draw):
    gap = draw(st.integers(1, 60))
    lateness = draw(st.integers(0, 150))
    events = _events(draw)
    dups = draw(st.lists(st.sampled_from(events), max_size=15))
    arrivals = [*events, *dups]
    jitter = draw(st.lists(st.integers(0, max(lateness - 1, 0)),
                           min_size=len(arrivals), max_size=len(arrivals)))
    # arrival key in [t, t + lateness): nothing arrives behind the watermark
    order = [e for _, _, e in sorted(
        ((e.occurred_at + j, k, e) for k, (e, j) in enumerate(zip(arrivals, jitter, strict=True))),
        key=lambda x: (x[0], x[1]),
    )]
    seed = draw(st.integers(0, 2**32 - 1))
    return gap, lateness, events, order, seed


@settings(max_examples=examples(400), deadline=None)
@given(within_lateness())
def test_incremental_equals_reference_within_lateness(case) -> None:
    gap, lateness, events, order, seed = case
    h = Harness(gap, lateness)
    for batch in _batches(order, random.Random(seed)):
        h.batch(batch)
    assert h.late == 0
    assert h.sessions() == reference(events, gap)


@settings(max_examples=examples(400), deadline=None)
@given(within_lateness(), st.data())
def test_restart_with_redelivery_ends_exact(case, data) -> None:
    """A worker crashes after `done` batches, having committed only the first `committed`
    and stored only some states of its last batch; a fresh worker (new clock, same
    table and warehouse) gets everything from the committed point again, batched
    differently. Already applied events must not count twice, none may be lost."""
    gap, lateness, events, order, seed = case
    rnd = random.Random(seed)
    batches = _batches(order, rnd)
    done = data.draw(st.integers(0, len(batches)))
    committed = data.draw(st.integers(0, done))
    kept = data.draw(st.sets(st.sampled_from(sorted({e.customer for e in events}))))
    old = Harness(gap, lateness)
    for i, batch in enumerate(batches[:done]):
        crashed_here = i == done - 1 and committed < done  # a committed batch was stored
        old.batch(batch, store=(lambda c: c in kept) if crashed_here else (lambda _: True))
    new = Harness(gap, lateness, store=old.store)
    for batch in _batches([e for b in batches[committed:] for e in b], rnd):
        new.batch(batch)
    assert new.sessions() == reference(events, gap)


@st.composite
def any_order(draw):
    gap = draw(st.integers(1, 60))
    lateness = draw(st.integers(0, 150))
    events = _events(draw)
    dups = draw(st.lists(st.sampled_from(events), max_size=15))
    order = draw(st.permutations([*events, *dups]))
    seed = draw(st.integers(0, 2**32 - 1))
    return gap, lateness, order, seed


@settings(max_examples=examples(400), deadline=None)
@given(any_order())
def test_late_events_are_skipped_and_the_rest_is_exact(case) -> None:
    """With late events, the result is the reference over exactly the applied events."""
    gap, lateness, order, seed = case
    h = Harness(gap, lateness)
    for batch in _batches(order, random.Random(seed)):
        h.batch(batch)
    assert h.sessions() == reference(h.applied, gap)
    assert h.late + len(h.applied) == len(order)


def test_state_is_dropped_once_the_watermark_passes() -> None:
    h = Harness(gap=10, lateness=5)
    h.batch([Ev("a", BASE, "web", "c"), Ev("b", BASE + 3, "app", "c")])
    assert h.state("c").sessions
    h.batch([Ev("z", BASE + 1000, "web", "c")])  # watermark BASE+995 > end + gap
    state = h.state("c")
    assert [s.first_id for s in state.sessions] == ["z"]
    assert state.seen() == {"z"}
    assert len(h.sessions()) == 2


def test_bridge_merges_and_deletes_the_later_session() -> None:
    h = Harness(gap=10, lateness=100)
    h.batch([Ev("a", BASE, "web", "c"), Ev("b", BASE + 15, "app", "c")])
    assert len(h.sessions()) == 2
    h.batch([Ev("m", BASE + 8, "email", "c")])
    only = h.sessions()
    assert list(only) == [session_id("c", "a")]
    assert only[session_id("c", "a")][3:] == (3, ["web", "email", "app"], "web")
    gone = h.warehouse[session_id("c", "b")]
    # a deletion at the customer's next counter value: above the row it replaces
    # (and above the merged session's row of the same batch), not at a fixed top
    assert gone.deleted == 1
    assert h.store.written[session_id("c", "b")] == [h.floor + 2, h.floor + 4]
    assert h.warehouse[session_id("c", "a")].version == h.floor + 3


def test_earlier_event_moves_the_start_and_renames_the_session() -> None:
    h = Harness(gap=10, lateness=100)
    h.batch([Ev("b", BASE + 20, "web", "c")])
    h.batch([Ev("a", BASE + 12, "app", "c"), Ev("b", BASE + 20, "web", "c")])
    assert h.sessions() == {session_id("c", "a"): ("c", BASE + 12, BASE + 20, 2,
                                                     ["app", "web"], "app")}
    assert h.warehouse[session_id("c", "b")].deleted == 1


def test_gap_exactly_equal_splits_and_ties_break_by_event_id() -> None:
    h = Harness(gap=10, lateness=0)
    h.batch([Ev("y", BASE, "web", "c"), Ev("x", BASE, "app", "c"), Ev("w", BASE + 10, "web", "c")])
    got = h.sessions()
    assert set(got) == {session_id("c", "x"), session_id("c", "w")}
    assert got[session_id("c", "x")][5] == "app"


def test_late_event_is_not_applied() -> None:
    h = Harness(gap=10, lateness=5)
    h.batch([Ev("a", BASE + 100, "web", "c")])
    h.batch([Ev("old", BASE + 50, "web", "c")])
    assert h.late == 1
    assert len(h.sessions()) == 1


def test_state_bytes_round_trip() -> None:
    state = CustomerState()
    Sessionizer(10).apply("c", state, [Ev("a", BASE, "web", "c"), Ev("b", BASE + 4, "app", "c")],
                          watermark=BASE - 1, versions=Seq())
    again = CustomerState.loads(state.dumps())
    assert again == state
    assert CustomerState.loads(None).is_empty()
    with pytest.raises(ValueError):
        CustomerState.loads(b'{"f": 99}')


def test_session_stays_open_until_watermark_reaches_end_plus_gap() -> None:
    h = Harness(gap=10, lateness=5)
    h.batch([Ev("a", BASE, "web", "c")])
    h.batch([Ev("b", BASE + 14, "web", "c")])  # watermark BASE+9: `a` may still grow
    h.batch([Ev("m", BASE + 9, "app", "c")])  # on the watermark: not late, bridges a-b
    assert h.late == 0
    assert h.sessions() == {session_id("c", "a"): ("c", BASE, BASE + 14, 3, ["web", "app"], "web")}
