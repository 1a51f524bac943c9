"""A handed-over session with a copy taken out (stream.engine.sessions `OpenSession.
without`, `Sessionizer.absorb(left_out=...)`; docs/semantics.md "Ordering and
duplicates", the handover route): it must be exactly the sessions of its other events,
whatever order the session was built in and whichever events are taken out, through the
stored format; format 1 (no times) is still read."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.engine.journey_state import CustomerJourneys
from stream.engine.session_state import (
    CustomerState,
    OpenSession,
    SessionRow,
    decode_sessions,
    encode_sessions,
    session_id,
)
from stream.engine.sessions import Sessionizer
from tests.profiles import examples
from tests.unit.test_sessions import BASE, CHANNELS, Ev

GAP = 30 * 60_000
NO_WM = -(2**62)


def _events(draw: st.DrawFn) -> list[Ev]:
    n = draw(st.integers(1, 12))
    times = draw(st.lists(st.integers(0, 4 * GAP), min_size=n, max_size=n))
    chans = draw(st.lists(st.sampled_from(CHANNELS), min_size=n, max_size=n))
    return [Ev(f"e{i:02d}", BASE + t, ch, "d1") for i, (t, ch) in enumerate(zip(times, chans,
                                                                               strict=True))]


def _shape(sessions: list[OpenSession]) -> list[tuple[object, ...]]:
    """What a row shows, plus the ids (their order aside)."""
    return sorted((s.start, s.first_id, s.end, s.count, s.row("c", 1).channels,
                   s.row("c", 1).first_channel, sorted(s.ids)) for s in sessions)


def _sessions_of(events: list[Ev]) -> list[OpenSession]:
    state = CustomerState()
    Sessionizer(GAP).apply("d1", state, events, watermark=NO_WM, versions=CustomerJourneys())
    return state.sessions


@settings(max_examples=examples(60), deadline=None)
@given(data=st.data())
def test_a_session_without_some_events_is_the_sessions_of_the_others(
        data: st.DataObject) -> None:
    events = data.draw(st.composite(_events)())
    order = data.draw(st.permutations(events))
    batches = data.draw(st.integers(1, 4))
    state, seq = CustomerState(), CustomerJourneys()
    sz = Sessionizer(GAP)
    for k in range(batches):  # built in any order and batching, round-tripped as stored
        sz.apply("d1", state, order[k::batches], watermark=NO_WM, versions=seq)
        state = CustomerState.loads(state.dumps())
    drop = set(data.draw(st.lists(st.sampled_from([e.event_id for e in events]))))
    got = [piece for s in decode_sessions(orjson.loads(orjson.dumps(
        encode_sessions(state.sessions)))) for piece in s.without(drop, GAP)]
    assert _shape(got) == _shape(_sessions_of([e for e in events if e.event_id not in drop]))
    again = [p for s in got for p in s.without(set(), GAP)]  # the pieces keep their times
    assert _shape(again) == _shape(got)


def test_a_left_out_bridge_splits_the_handed_over_session_before_it_joins() -> None:
    device = _sessions_of([Ev("a", BASE, "web", "d1"), Ev("x", BASE + 20 * 60_000, "app", "d1"),
                           Ev("b", BASE + 40 * 60_000, "app", "d1")])
    assert len(device) == 1
    customer = CustomerState()
    sz = Sessionizer(GAP)
    seq = CustomerJourneys()  # the customer's version counter
    sz.apply("c1", customer, [Ev("x", BASE + 3 * 3_600_000, "web", "c1")], watermark=NO_WM,
             versions=seq)
    delta = sz.absorb("c1", customer, encode_sessions(device), watermark=NO_WM, versions=seq)
    assert delta.duplicates == 1
    assert [(s.start, s.end, s.count, s.row("c1", 1).channels) for s in customer.sessions] == [
        (BASE, BASE, 1, ["web"]), (BASE + 40 * 60_000, BASE + 40 * 60_000, 1, ["app"]),
        (BASE + 3 * 3_600_000, BASE + 3 * 3_600_000, 1, ["web"])]
    # named by the stage (the customer has the id in a journey only): taken out alike
    other = CustomerState()
    sz.absorb("c2", other, encode_sessions(device), watermark=NO_WM, versions=CustomerJourneys(),
              left_out={"x"})
    assert [(s.start, s.count) for s in other.sessions] == [(BASE, 1), (BASE + 40 * 60_000, 1)]


def test_format_1_sessions_are_read_and_lose_only_the_id_and_count() -> None:
    old = {"f": 1, "w": NO_WM, "s": [[BASE, "a", BASE + 20 * 60_000, 2,
                                       [["web", BASE, "a"]], ["a", "x"]]]}
    state = CustomerState.from_obj(old)
    [s] = state.sessions
    assert s.times is None and s.cix is None
    [kept] = s.without({"x"}, GAP)
    assert (kept.start, kept.end, kept.count, kept.ids) == (BASE, BASE + 20 * 60_000, 1, ["a"])
    assert encode_sessions([s])[0] == old["s"][0]  # written back as it came (no times)
    # merged with a format-2 session: times unknown for the whole
    new = _sessions_of([Ev("b", BASE + 30 * 60_000, "app", "c1")])[0]
    new.absorb(s)
    assert new.times is None and new.count == 3
    assert CustomerState.loads(CustomerState(sessions=[new]).dumps()).sessions[0].ids == [
        "b", "a", "x"]


# ------------------------------------------- a customer's own copy taken out (taken_out)
# stream.stages.duplicates: a new copy that outranks an applied one replaces it; the
# sessionizer takes the applied copy out of the customer's open session first.

def _rows(delta_rows: list[SessionRow]) -> list[tuple[object, ...]]:
    return [(r.session_id, r.started_at_ms, r.ended_at_ms, r.events, r.channels, r.deleted)
            for r in delta_rows]


def test_a_replaced_copy_writes_its_session_even_when_its_count_is_unchanged() -> None:
    s, state, seq = Sessionizer(GAP), CustomerState(), CustomerJourneys()
    s.apply("c", state, [Ev("a", BASE, "web", "c"), Ev("b", BASE + 60_000, "web", "c")],
            watermark=NO_WM, versions=seq)
    d = s.apply("c", state, [Ev("b", BASE + 120_000, "app", "c")], watermark=NO_WM,
                versions=seq, taken_out={"b"})
    assert _rows(d.rows()) == [(session_id("c", "a"), BASE, BASE + 120_000, 2,
                                ["web", "app"], 0)]


def test_a_taken_out_bridge_splits_and_writes_the_old_and_the_new_id() -> None:
    s, state, seq = Sessionizer(GAP), CustomerState(), CustomerJourneys()
    s.apply("c", state, [Ev("a", BASE, "web", "c"), Ev("b", BASE + 20 * 60_000, "web", "c"),
                         Ev("x", BASE + 40 * 60_000, "app", "c")],
            watermark=NO_WM, versions=seq)
    d = s.apply("c", state, [], watermark=NO_WM, versions=seq, taken_out={"b"})
    assert sorted(_rows(d.rows())) == sorted([
        (session_id("c", "a"), BASE, BASE, 1, ["web"], 0),
        (session_id("c", "x"), BASE + 40 * 60_000, BASE + 40 * 60_000, 1, ["app"], 0)])


def test_taking_out_a_sessions_first_event_deletes_its_id() -> None:
    s, state, seq = Sessionizer(GAP), CustomerState(), CustomerJourneys()
    s.apply("c", state, [Ev("a", BASE, "web", "c"), Ev("b", BASE + 60_000, "web", "c")],
            watermark=NO_WM, versions=seq)
    d = s.apply("c", state, [Ev("a", BASE + 120_000, "web", "c")], watermark=NO_WM,
                versions=seq, taken_out={"a"})
    assert sorted((sid, n, deleted) for sid, _s, _e, n, _c, deleted in _rows(d.rows())) == \
        sorted([(session_id("c", "b"), 2, 0), (session_id("c", "a"), 2, 1)])


@settings(max_examples=examples(100), deadline=None)
@given(data=st.data())
def test_copies_taken_out_and_others_applied_are_as_if_only_those_came(
        data: st.DataObject) -> None:
    """Applying events, then replacing some with other copies (other time and channel)
    gives the state, and the live rows, of applying the survivors and the new copies
    at once."""
    events = data.draw(st.composite(_events)())
    ids = [e.event_id for e in events]
    drop = set(data.draw(st.lists(st.sampled_from(ids), max_size=4)))
    repl = [Ev(eid, BASE + data.draw(st.integers(0, 4 * GAP)),
               data.draw(st.sampled_from(CHANNELS)), "d1")
            for eid in sorted(drop) if data.draw(st.booleans())]
    s, seq = Sessionizer(GAP), CustomerJourneys()
    state, fresh = CustomerState(), CustomerState()
    written: dict[str, SessionRow] = {}
    for rows in (s.apply("d1", state, events, watermark=NO_WM, versions=seq).rows(),
                 s.apply("d1", state, repl, watermark=NO_WM, versions=seq,
                         taken_out=drop).rows()):
        for r in rows:
            if r.session_id not in written or r.version > written[r.session_id].version:
                written[r.session_id] = r
    want = s.apply("d1", fresh, [*(e for e in events if e.event_id not in drop), *repl],
                   watermark=NO_WM, versions=CustomerJourneys()).rows()
    assert _shape(state.sessions) == _shape(fresh.sessions)
    live = {sid: (r.started_at_ms, r.ended_at_ms, r.events, r.channels)
            for sid, r in written.items() if not r.deleted}
    assert live == {r.session_id: (r.started_at_ms, r.ended_at_ms, r.events, r.channels)
                    for r in want if not r.deleted}
