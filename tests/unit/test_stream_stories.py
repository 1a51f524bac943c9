"""Hand-written stories through the three stream stages: stitching, timers, floors."""

from __future__ import annotations

from typing import Any

from journeys.definitions import parse_definitions
from stream.stages.customer_state import CustomerValue
from tests.unit.stream_harness import Pipeline

BASE = 1_772_323_200_000
M = 60_000
H = 60 * M
DEFS = parse_definitions({
    "journeys": [{"name": "buy", "steps": ["view", "cart", "pay", "done"],
                  "abandon_after": "1h", "conversion_window": "1d", "off_path": ["help"]}],
    "sessions": {"gap": "30m"},
})


def ev(i: int, t: int, typ: str, ch: str = "web", cust: str | None = None,
       anon: str | None = None) -> dict[str, Any]:
    return {"event_id": f"e{i:03d}", "type": typ, "channel": ch, "occurred_at": BASE + t,
            "customer_id": cust, "anonymous_id": anon,
            "context": {"campaign": "spring"} if typ == "view" else {}}


def pipeline(lateness: int = 5 * M, partitions: int = 3) -> Pipeline:
    return Pipeline(DEFS, partitions=partitions, lateness_ms=lateness, seed=1)


def feed(pipe: Pipeline, events: list[dict[str, Any]]) -> None:
    pipe.feed_raw(events, max(e["occurred_at"] for e in events))
    pipe.drain()


def test_anonymous_browsing_then_login_is_one_customer_journey() -> None:
    pipe = pipeline()
    feed(pipe, [ev(1, 0, "view", anon="dev1"), ev(2, M, "cart", anon="dev1")])
    [anon_row] = pipe.instances.values()
    assert anon_row.customer_id == "dev1" and anon_row.entry_context == {"campaign": "spring"}
    feed(pipe, [ev(3, 2 * M, "identify", "app", cust="cust1", anon="dev1"),
                ev(4, 3 * M, "pay", "app", cust="cust1"), ev(5, 4 * M, "done", "app", anon="dev1")])
    pipe.finish(BASE + 2 * H)
    [row] = pipe.instances.values()  # the anonymous instance was retracted
    assert (row.customer_id, row.status, row.path_types) == (
        "cust1", "converted", ["view", "cart", "identify", "pay", "done"])
    assert row.entry_context == {"campaign": "spring"}
    assert ("channel_switch", "cart") in zip(row.detour_kinds, row.detour_steps, strict=True)
    assert [(m.anonymous_id, m.customer_id, m.event_id) for m in pipe.merges] == [
        ("dev1", "cust1", "e003")]
    assert pipe.live_sessions() == {("cust1", BASE, BASE + 4 * M, 5)}
    assert anon_row.instance_id in pipe.versions and anon_row.instance_id not in pipe.instances


def test_device_linked_after_its_events_settled_joins_the_open_journey() -> None:
    """The customer's journey is open and settled (behind its checkpoint) when the
    device's open journey arrives by handover: both are replayed into one instance."""
    pipe = pipeline(lateness=M, partitions=1)
    feed(pipe, [ev(1, 0, "view", "app", cust="cust1")])
    feed(pipe, [ev(2, 5 * M, "view", anon="dev1"), ev(3, 6 * M, "cart", anon="dev1")])
    feed(pipe, [ev(9, 30 * M, "page", "store", cust="other")])  # watermark -> 29m
    feed(pipe, [ev(4, 31 * M, "identify", cust="cust1", anon="dev1")])
    pipe.finish(BASE + 3 * H)
    rows = {r.customer_id: r for r in pipe.instances.values()}
    assert set(rows) == {"cust1"}
    assert rows["cust1"].path_types == ["view", "view", "cart", "identify"]
    assert (rows["cust1"].status, rows["cust1"].dropped_at) == ("abandoned", "cart")


def test_first_link_wins_and_placeholder_ids_never_merge() -> None:
    pipe = pipeline()
    feed(pipe, [ev(1, 0, "view", cust="alice", anon="guest"),
                ev(2, M, "view", cust="bob", anon="GUEST"),
                ev(3, 2 * M, "cart", anon="guest"),  # nobody's: raw table only
                ev(4, 3 * M, "identify", cust="alice", anon="dev9"),
                ev(5, 4 * M, "identify", cust="bob", anon="dev9")])  # dev9 stays alice's
    pipe.finish(BASE + 2 * H)
    assert [(m.anonymous_id, m.customer_id) for m in pipe.merges] == [("dev9", "alice")]
    assert sorted(r.customer_id for r in pipe.instances.values()) == ["alice", "bob"]


def test_finished_customer_keeps_its_floor_then_is_deleted() -> None:
    pipe = pipeline(lateness=M, partitions=1)
    feed(pipe, [ev(1, 0, "view", cust="c1"), ev(2, M, "done", cust="c1")])
    feed(pipe, [ev(3, 2 * H, "page", cust="c2")])  # c1's journey and session are final
    v = CustomerValue.unpack(pipe.states[b"c1"])
    assert v.sessions.is_empty() and v.journeys.is_idle() and v.journeys.checkpoint > BASE
    pipe.restart()  # the old events come again (new records): late, not applied twice
    feed(pipe, [ev(1, 0, "view", cust="c1"), ev(2, M, "done", cust="c1")])
    assert [r.status for r in pipe.instances.values()] == ["converted"]
    feed(pipe, [ev(4, 30 * H, "page", cust="c2")])  # 24h past c1's floor: deleted
    pipe.tick()
    assert b"c1" not in pipe.states


def test_a_device_event_delivered_before_and_after_the_link_counts_once() -> None:
    """Regression (found by the backlog property test): one copy of a device event went
    to the device (read before the link), the duplicate to the customer (read after);
    the device's handover must not count it again, in sessions or journeys."""
    pipe = Pipeline(DEFS, partitions=1, lateness_ms=2 * M, seed=0, bulk=True)
    view = ev(1, 35 * M, "view", anon="d2")
    pipe.feed_raw([view, ev(2, 36 * M, "view", cust="c2", anon="d2"), view], BASE + 36 * M)
    pipe.drain()
    pipe.finish(BASE + 3 * H)
    assert pipe.live_sessions() == {("c2", BASE + 35 * M, BASE + 36 * M, 2)}
    [row] = pipe.instances.values()
    assert (row.customer_id, row.path_types) == ("c2", ["view", "view"])


def test_where_a_raw_partition_read_order_puts_the_link_does_not_change_the_result() -> None:
    """Regression: with several raw partitions the stream reads a device's events and its
    link in an order that depends on the partitions' interleaving; while nothing of the
    device is final at the link, the customer gets the same journey either way."""
    story = [ev(1, 0, "view", anon="d1"), ev(2, M, "cart", anon="d1"),
             ev(3, 2 * M, "identify", cust="c1", anon="d1"), ev(4, 3 * M, "pay", cust="c1")]
    seen = set()
    for seed in range(12):
        pipe = Pipeline(DEFS, partitions=2, lateness_ms=10 * M, seed=seed, bulk=True,
                        sources=3, readers=2)
        pipe.feed_raw(story, BASE + 3 * M)
        pipe.drain()
        pipe.finish(BASE + 3 * H)
        assert pipe.late == 0
        [row] = pipe.instances.values()
        seen.add((row.customer_id, tuple(row.path_types), row.status))
    assert seen == {("c1", ("view", "cart", "identify", "pay"), "abandoned")}


def test_what_of_a_device_had_closed_before_its_link_stays_with_the_device() -> None:
    """The split falls at the link's event time, whatever order things are read in: a
    device session that ended (by the gap) and a journey that closed before the link
    stay under the device; what was open at the link moves to the customer."""
    for seed in range(6):
        pipe = Pipeline(DEFS, partitions=2, lateness_ms=3 * H, seed=seed, bulk=True,
                        sources=2, readers=2)
        story = [ev(1, 0, "view", anon="d1"), ev(2, 5 * M, "done", anon="d1"),  # closed
                 ev(3, 2 * H, "view", anon="d1"), ev(4, 2 * H + M, "cart", anon="d1"),
                 ev(5, 2 * H + 2 * M, "identify", cust="c1", anon="d1"),
                 ev(6, 2 * H + 3 * M, "pay", anon="d1")]  # after the link: the customer's
        pipe.feed_raw(story, BASE + 3 * H)
        pipe.drain()
        pipe.finish(BASE + 10 * H)
        rows = sorted((r.customer_id, r.status, tuple(r.path_types))
                      for r in pipe.instances.values())
        assert rows == [("c1", "abandoned", ("view", "cart", "identify", "pay")),
                        ("d1", "converted", ("view", "done"))], seed
        assert pipe.live_sessions() == {("d1", BASE, BASE + 5 * M, 2),
                                        ("c1", BASE + 2 * H, BASE + 2 * H + 3 * M, 4)}


def test_a_handover_read_again_after_event_time_moved_far_on_changes_nothing() -> None:
    """Regression (matrix test, 2 workers, ~1 run in 5): on a backlog event time jumps
    days ahead in one batch, so the customer's memory of absorbed handovers (kept for the
    longest conversion window of event time) is gone when a rebalance delivers the
    handover record again; absorbing it twice rebuilt the journey from the device's
    events alone. Records are now recognised by their offset."""
    pipe = pipeline(lateness=5 * M, partitions=1)
    pipe.bulk = True
    pipe.feed_raw([ev(1, 0, "view", anon="d1"), ev(2, M, "cart", anon="d1"),
                   ev(3, 2 * M, "identify", cust="c1", anon="d1"),
                   ev(4, 3 * M, "pay", cust="c1"),
                   ev(5, 10 * 24 * H, "page", cust="other")], BASE + 10 * 24 * H)
    pipe.drain()
    want = pipe.journey_view()
    assert [r[7] for r in want.values() if r[1] == "c1"] == [["view", "cart", "identify", "pay"]]
    read_everything_again(pipe)
    assert pipe.journey_view() == want


def read_everything_again(pipe: Pipeline) -> None:
    """A crash before any commit: every stage reads all its input again, its table
    writes kept."""
    for log in [*pipe.by_identity, *pipe.by_customer, *pipe.handovers]:
        log.committed = 0
    pipe.restart(stored=True)
    pipe.drain()


def test_records_read_again_after_their_customers_were_finished_change_nothing() -> None:
    """Regression (matrix test, 3 workers on one partition, ~1 run in 15): a by-customer
    record was processed but not committed, event time then moved days on (the backlog's
    last events), so every customer it touched was finished and its value deleted; a
    rebalance delivered the record again, the devices were linked and handed their
    events over a second time, and 23 journeys lost events. A finished customer's value
    now stays until every record that touched it is committed."""
    pipe = pipeline(lateness=5 * M, partitions=1)
    pipe.bulk = True
    pipe.feed_raw([ev(1, 0, "view", anon="d1"), ev(2, M, "cart", anon="d1"),
                   ev(3, 2 * M, "identify", cust="c1", anon="d1"),
                   ev(4, 3 * M, "pay", cust="c1"), ev(5, 4 * M, "view", cust="c2"),
                   ev(6, 3 * 24 * H, "page", cust="other")], BASE + 3 * 24 * H)
    pipe.drain()
    want, sessions = pipe.journey_view(), pipe.live_sessions()
    assert [r[7] for r in want.values() if r[1] == "c1"] == [["view", "cart", "identify", "pay"]]
    read_everything_again(pipe)
    assert pipe.journey_view() == want and pipe.live_sessions() == sessions
    assert b"d1" in pipe.states  # finished at its link time, its records uncommitted
    pipe.tick()  # committed now: the device's value goes
    assert b"d1" not in pipe.states and {b"c1", b"c2"} <= set(pipe.states)


def test_a_copy_with_other_content_is_left_out_of_sessions_and_journeys_alike() -> None:
    """docs/semantics.md "Ordering and duplicates": the copy of smaller rank wins (here
    the first: the others are later, or of a type after "view"); a copy with other
    content is dead-lettered as conflicting_duplicate; an identical one is a plain
    duplicate. Sessions and journeys see the same single copy."""
    pipe = pipeline(partitions=1)
    first = ev(1, 0, "view", cust="c9")
    moved = {**first, "occurred_at": BASE + 40 * M}  # would open a second session
    retyped = {**first, "type": "wish"}  # ("cart" < "view" would win: rank)
    feed(pipe, [first, ev(2, M, "cart", cust="c9"), retyped, dict(first), moved])
    pipe.finish(BASE + 3 * H)
    assert pipe.live_sessions() == {("c9", BASE, BASE + M, 2)}
    [row] = pipe.instances.values()
    assert (row.path_types, row.path_times) == (["view", "cart"], [BASE, BASE + M])
    assert [c.reason() for c in pipe.conflicts] == [
        "conflicting_duplicate: event_id 'e001' first seen with other type, context",
        "conflicting_duplicate: event_id 'e001' first seen with other occurred_at"]
