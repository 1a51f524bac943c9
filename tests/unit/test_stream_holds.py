"""Stitching on a backlog: a customer waits for a linked device's handover (the *hold*,
stream.stages.envelopes) before settling anything from the link's time on, and the alert
stage's watermark waits with it."""

from __future__ import annotations

from typing import Any

from journeys.definitions import parse_definitions
from stream.engine.dropoff import DropoffEvaluator
from stream.engine.outputs import StepReached, retraction
from stream.stages.customer_state import (
    HANDOVER_RECORDS,
    PEER_RECORDS,
    RECORDS,
    CustomerValue,
)
from stream.stages.customers import HOLD_MAX_WAIT_MS, CustomerStage
from stream.stages.envelopes import FORMAT, EnvelopeBuilder, decode, encode, partition_for
from tests.unit.stream_harness import Pipeline

BASE = 1_772_323_200_000
M = 60_000
H = 60 * M
DEFS = parse_definitions({
    "journeys": [{"name": "buy", "steps": ["view", "cart", "pay", "done"],
                  "abandon_after": "1h", "conversion_window": "1d"}],
    "sessions": {"gap": "30m"},
})
PARTS = 3
DEV, CUST = "dev1", "cust2"  # in different partitions (asserted below)


def ev(i: int, t: int, typ: str, cust: str | None = None,
       anon: str | None = None) -> dict[str, Any]:
    return {"event_id": f"e{i:03d}", "type": typ, "channel": "web", "occurred_at": BASE + t,
            "customer_id": cust, "anonymous_id": anon}


def test_backlog_in_one_batch_keeps_the_stitched_journey_whole() -> None:
    assert partition_for(DEV, PARTS) != partition_for(CUST, PARTS)
    pipe = Pipeline(DEFS, partitions=PARTS, lateness_ms=5 * M, seed=1, bulk=True)
    story = [ev(1, 0, "view", anon=DEV), ev(2, M, "cart", anon=DEV),
             ev(3, 2 * M, "identify", cust=CUST, anon=DEV),
             ev(4, 3 * M, "pay", cust=CUST), ev(5, 4 * M, "done", anon=DEV)]
    later = [ev(10 + k, 5 * H + k, "page", cust=f"other{k}") for k in range(PARTS * 3)]
    pipe.feed_raw([*story, *later], BASE + 5 * H)  # hours of event time: one batch each
    pipe.drain()
    assert pipe.late == 0
    [row] = pipe.instances.values()
    assert (row.customer_id, row.status, row.path_types) == (
        CUST, "converted", ["view", "cart", "identify", "pay", "done"])
    # the device's settled steps come again from the customer's replay, under the same
    # name (the opening event), so the evaluator counts one journey, not two
    assert {(o.instance_id, o.step_index, o.reached_at_ms) for o in pipe.reached} == {
        ("e001", 0, BASE), ("e001", 1, BASE + M), ("e001", 2, BASE + 3 * M),
        ("e001", 3, BASE + 4 * M)}
    assert not any(CustomerValue.unpack(v).journeys.waiting for k, v in pipe.states.items()
                   if not k.startswith(b"\x00"))


_pos = iter(range(10**6))
_offsets = iter(range(10**6))  # by-customer offsets: increasing, as in a log


def envelope(watermark: int | None = None, **items: list[Any]) -> bytes:
    """A by-customer envelope: events get positions, `watermark` becomes the identity
    stage's claim (one upstream partition)."""
    events = [[*e, 0, next(_pos), 0] for e in items.pop("e", [])]
    body: dict[str, Any] = {"v": FORMAT, "e": events, **items}
    if watermark is not None:
        body["w"] = [1, [[0, watermark, 0]]]
    return encode(body)


def journeys_of(states: dict[bytes, bytes], key: str) -> Any:
    return CustomerValue.unpack(states[key.encode()]).journeys


def _apply(stage: CustomerStage, states: dict[bytes, bytes], records: list[bytes],
           wall: int, *, lane: int = RECORDS, tick: tuple[int, ...] = ()) -> Any:
    """One batch of the stage at offsets of one log, its table writes applied."""
    batch = stage.prepare([(0, next(_offsets), r) for r in records], states.get, wall,
                          lane=lane, tick=tick)
    for k, (_p, v) in batch.states.items():
        if v is None:
            states.pop(k, None)
        else:
            states[k] = v
    return batch


def test_alert_watermark_stays_below_a_pending_link_until_the_handover() -> None:
    stage = CustomerStage(DEFS, partitions=1)
    states: dict[bytes, bytes] = {}

    def run(records: list[bytes], wall: int) -> Any:
        return _apply(stage, states, records, wall)

    link_at = BASE + 10 * M
    batch = run([envelope(BASE + 3 * H - M, p=[[CUST, DEV, link_at]],
                          e=[[CUST, "e1", "view", "web", link_at, None],
                             [CUST, "e2", "cart", "web", link_at + M, None],
                             ["x", "e3", "page", "web", BASE + 3 * H, None]])], 1_000)
    assert batch.held == 1
    obs, (_p, wm, _idle) = batch.reached[0]
    assert stage.progress_for(0).watermark == BASE + 3 * H - M
    assert wm == link_at and obs == []  # the customer's steps wait for the device
    assert stage.progress_for(0).holds == {CUST: (link_at, 1_000)}

    handover = [DEV, CUST, [[BASE, "d1", "view", "web", None]], [], link_at, []]
    batch = run([envelope(h=[handover])], 2_000)
    obs, (_p, wm, _idle) = batch.reached[0]
    assert wm == BASE + 3 * H - M and stage.progress_for(0).holds == {}
    assert [(o.instance_id, o.step_index) for o in obs] == [("d1", 0), ("d1", 1)]
    journeys = journeys_of(states, CUST)
    assert not journeys.waiting and DEV in journeys.merged


def test_a_handover_is_absorbed_exactly_at_its_link_time() -> None:
    """A handover that comes before the customer's event time has reached the link waits
    (pending) and is absorbed once it does, with the customer settled exactly up to the
    link: the split at the link does not depend on timing."""
    stage = CustomerStage(DEFS, partitions=1)
    states: dict[bytes, bytes] = {}
    link = BASE + H
    handover = [DEV, CUST, [[BASE + 10 * M, "d1", "view", "web", None]], [], link, []]
    records = [[envelope(h=[handover])],  # no claim yet: frontier unknown
               [envelope(BASE + 30 * M, p=[[CUST, DEV, link]],
                         e=[[CUST, "e1", "cart", "web", BASE + 20 * M, None]])],
               [envelope(BASE + 2 * H, e=[[CUST, "e2", "pay", "web", BASE + 2 * H, None]])]]
    absorbed = []
    for i, recs in enumerate(records):
        batch = stage.prepare([(0, next(_offsets), r) for r in recs], states.get, 1_000)
        states.update({k: v for k, (_p, v) in batch.states.items() if v is not None})
        absorbed.append(batch.absorbed)
        if i < 2:
            assert CustomerValue.unpack(states[CUST.encode()]).pending  # still waiting
    assert absorbed == [0, 0, 1]
    v = CustomerValue.unpack(states[CUST.encode()])
    assert not v.pending and not v.journeys.waiting and DEV in v.journeys.merged
    rows = {r.instance_id: r for r in sorted(batch.instance_rows, key=lambda r: r.version)
            if r.customer_id == CUST}
    # the customer's cart (before the link, in no open journey of its own) is not part of
    # what is merged; the device's open view is; pay comes after the run's deadline
    assert [(r.path_types, r.status) for r in rows.values()] == [(["view"], "abandoned")]


def test_a_handover_that_never_comes_is_given_up_after_the_max_wait() -> None:
    stage = CustomerStage(DEFS, partitions=1)
    states: dict[bytes, bytes] = {}
    records = [envelope(BASE + 3 * H - M, p=[[CUST, DEV, BASE]],
                        e=[[CUST, "e1", "view", "web", BASE, None],
                           ["x", "e2", "page", "web", BASE + 3 * H, None]])]
    batch = stage.prepare([(0, 0, records[0])], states.get, 0)
    states.update({k: v for k, (_p, v) in batch.states.items() if v is not None})
    assert stage.progress_for(0).overdue(HOLD_MAX_WAIT_MS, HOLD_MAX_WAIT_MS) == []
    wall = HOLD_MAX_WAIT_MS + 1
    assert stage.progress_for(0).overdue(wall, HOLD_MAX_WAIT_MS) == [CUST]
    batch = stage.prepare((), states.get, wall, tick=[0])  # the timer visits it
    assert batch.holds_expired == 1 and stage.progress_for(0).holds == {}
    [row] = batch.instance_rows  # settled without the device: abandoned after 1h
    assert (row.status, row.customer_id) == ("abandoned", CUST)
    assert batch.reached[0][1].mark == BASE + 3 * H - M


def test_holds_ride_with_the_first_envelope_links_with_the_last() -> None:
    b = EnvelopeBuilder()
    for i in range(2500):
        b.event(0, [CUST, f"e{i}", "view", "web", BASE + i, None])
    b.hold(0, CUST, DEV, BASE)
    b.link(0, DEV, CUST, BASE)
    first, last = (decode(v) or {} for _p, v in b.messages())
    assert first["p"] == [[CUST, DEV, BASE]] and "m" not in first
    assert last["m"] == [[DEV, CUST, BASE]] and "p" not in last


def test_a_device_run_merged_into_an_earlier_customer_run_is_retracted_for_alerting() -> None:
    """The device's steps were observed under its own opening event; the customer's run
    that started earlier takes them in, so that entry must go (else it counts as a
    journey dropped at the device's furthest step)."""
    pipe = Pipeline(DEFS, partitions=PARTS, lateness_ms=M, seed=1, bulk=True)
    pipe.feed_raw([ev(1, 0, "view", cust=CUST), ev(2, M, "view", anon=DEV),
                   ev(3, 2 * M, "cart", anon=DEV),
                   ev(4, 3 * M, "identify", cust=CUST, anon=DEV),
                   *(ev(10 + k, 5 * H + k, "page", cust=f"other{k}") for k in range(9))],
                  BASE + 5 * H)
    pipe.drain()
    [row] = pipe.instances.values()
    assert (row.customer_id, row.path_types) == (CUST, ["view", "view", "cart", "identify"])
    device = [o for o in pipe.reached if o.instance_id == "e002"]
    assert device[:2] == [StepReached("buy", "e002", 0, BASE + M, "web"),
                          StepReached("buy", "e002", 1, BASE + 2 * M, "web")]
    # after them, on the same keys, as of the link time (docs/alerting.md)
    assert device[2:] == [retraction("buy", "e002", 1, as_of=BASE + 3 * M)]
    evaluator = DropoffEvaluator(DEFS.journeys)
    evaluator.observe_many(pipe.reached)
    for step in (0, 1):  # e002 only as a retraction mark
        entries = evaluator.state("buy", step).entries
        assert {iid for iid, e in entries.items() if e[0] is not None} == {"e001"}


def test_a_late_handover_after_a_given_up_hold_is_still_absorbed() -> None:
    """The hold was given up (the customer settled without the device); the handover
    that comes later is not taken for a repeat: the device's events reach the customer."""
    stage = CustomerStage(DEFS, partitions=1)
    states: dict[bytes, bytes] = {}
    _apply(stage, states, [envelope(BASE + 3 * H - M, p=[[CUST, DEV, BASE]],
                                    e=[[CUST, "e1", "view", "web", BASE, None],
                                       ["x", "e2", "page", "web", BASE + 3 * H, None]])], 0)
    wall = HOLD_MAX_WAIT_MS + 1
    assert _apply(stage, states, [], wall, tick=(0,)).holds_expired == 1
    assert journeys_of(states, CUST).gave_up == {DEV: BASE}
    handover = [DEV, CUST, [[BASE + M, "d1", "cart", "web", None]], [], BASE, []]
    batch = _apply(stage, states, [envelope(h=[handover])], wall + 1, lane=HANDOVER_RECORDS)
    assert batch.absorbed == 1 and batch.redelivered == 0
    v = CustomerValue.unpack(states[CUST.encode()])
    assert DEV in v.journeys.merged and not v.journeys.gave_up


def test_a_repeated_handover_after_the_merge_memory_is_ignored() -> None:
    """The device crashed after sending its handover, before its release was stored,
    and sends it again; meanwhile the customer's event time ran past the merge memory
    (a backlog). The repeat changes nothing (it replayed the device's events into a
    closed journey and counted its session again), and the customer's value stays until
    the device's partition has committed past its release."""
    stage = CustomerStage(DEFS, partitions=1, floor_retention_ms=0,
                          committed=lambda lane, p: committed.get(lane))
    committed: dict[int, int] = {}
    states: dict[bytes, bytes] = {}
    link = BASE + 10 * M
    _apply(stage, states, [envelope(link + M, p=[[CUST, DEV, link]],
                                    e=[[CUST, "e1", "cart", "web", link, None],
                                       [CUST, "e2", "pay", "web", link + M, None]])], 0)
    handover = [DEV, CUST, [[BASE, "d1", "view", "web", None]],
                [[BASE, "d1", BASE, 1, [["web", 0, "d1"]], ["d1"], [0], "0"]], link, [],
                None, None, [3, 40]]  # released after by-customer record 39 of partition 3
    batch = _apply(stage, states, [envelope(h=[handover])], 1, lane=HANDOVER_RECORDS)
    assert batch.absorbed == 1
    # days later in event time: journeys final, sessions closed, the merge memory gone
    batch = _apply(stage, states, [envelope(BASE + 10 * 24 * H, e=[
        [CUST, "e3", "done", "web", link + 2 * M, None]])], 2)
    v = CustomerValue.unpack(states[CUST.encode()])
    assert not v.journeys.merged and not v.journeys.open and v.sessions.is_empty()
    batch = _apply(stage, states, [envelope(h=[handover])], 3, lane=HANDOVER_RECORDS)
    assert (batch.absorbed, batch.redelivered) == (0, 1)
    assert batch.instance_rows == [] and batch.session_rows == []  # nothing rewritten
    # kept (a floor and positions) until partition 3 commits past offset 40
    for c in (None, 40, 41):
        if c is not None:
            committed[PEER_RECORDS] = c
        committed.update({0: 10**6, RECORDS: 10**6, HANDOVER_RECORDS: 10**6})
        _apply(stage, states, [envelope(BASE + 12 * 24 * H)], 4 + (c or 0),
               tick=(0,))
        assert (CUST.encode() in states) == (c != 41), c


def test_a_handover_that_overtook_its_hold_is_absorbed_at_the_link_time() -> None:
    """The customer's event time reached the link time exactly before either the hold
    or the handover came (a claim may equal an event's time that is not late); the
    handover then comes first. It is absorbed, not taken for a repeat (a repeat finds
    the customer settled strictly past the link time: stream.stages.customer_handover `_repeated`)."""
    stage = CustomerStage(DEFS, partitions=1)
    states: dict[bytes, bytes] = {}
    link = BASE + 10 * M
    _apply(stage, states, [envelope(link, e=[[CUST, "e1", "cart", "web", BASE + M, None]])],
           0)
    assert journeys_of(states, CUST).checkpoint == link
    handover = [DEV, CUST, [[BASE, "d1", "view", "web", None]], [], link, []]
    batch = _apply(stage, states, [envelope(h=[handover])], 1, lane=HANDOVER_RECORDS)
    assert (batch.absorbed, batch.redelivered) == (1, 0)
    assert DEV in journeys_of(states, CUST).merged
