"""The rule for copies of one event id (stream.stages.duplicates), pure."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from stream.stages.duplicates import first_copies, handed_over

Ev = tuple[Any, ...]


def _ev(i: int, t: int, typ: str = "view", ch: str = "web", ctx: Any = None) -> Ev:
    return (t, f"e{i}", typ, ch, ctx)


def test_the_copy_of_smaller_rank_wins_and_differences_are_named() -> None:
    """Rank: time, then type, channel, context ("" first), value. e2's later copy
    ("app" < "web") wins in place; the dead letter names the copy read at offset 3."""
    events = [_ev(1, 10), _ev(1, 10), _ev(1, 11), _ev(2, 5), _ev(2, 5, ch="app"),
              _ev(1, 10, ctx={"c": 1})]
    out = first_copies("c", [], set(), events, [(0, i) for i in range(len(events))])
    assert out.kept == [_ev(1, 10), _ev(2, 5, ch="app")]
    assert out.duplicates == 1
    assert not out.replaced
    assert [(c.offset, c.reason()) for c in out.conflicts] == [
        (2, "conflicting_duplicate: event_id 'e1' first seen with other occurred_at"),
        (3, "conflicting_duplicate: event_id 'e2' first seen with other channel"),
        (5, "conflicting_duplicate: event_id 'e1' first seen with other context")]
    assert out.conflicts[1].copy == _ev(2, 5) and out.conflicts[1].first == _ev(2, 5, ch="app")
    body = orjson.loads(out.conflicts[0].original())
    assert body["occurred_at"] == 11 and body["first_copy"]["occurred_at"] == 10


def test_what_the_state_holds_counts_as_first() -> None:
    out = first_copies("c", [_ev(1, 10)], {"e2"}, [_ev(1, 12), _ev(2, 99), _ev(3, 1)],
                       [(0, 0), (0, 1), (0, 2)])
    assert out.kept == [_ev(3, 1)]
    assert out.duplicates == 1  # e2: only its id is known (an open session): no comparison
    assert [c.copy for c in out.conflicts] == [_ev(1, 12)]


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3), st.sampled_from("ab")),
                max_size=30))
def test_each_id_is_kept_once_and_every_other_copy_accounted(
        raw: list[tuple[int, int, str]]) -> None:
    events = [_ev(i, t, typ) for i, t, typ in raw]
    out = first_copies("c", [], set(), events, [(0, n) for n in range(len(events))])
    assert [e[1] for e in out.kept] == list(dict.fromkeys(e[1] for e in events))
    assert len(out.kept) + out.duplicates + len(out.conflicts) == len(events)


def test_a_handed_over_copy_loses_to_the_customers_and_is_compared_where_both_are_known(
) -> None:
    """docs/semantics.md "Ordering and duplicates", the handover route: tail and open
    paths compared (a path's context only where both copies carry one), session ids
    not; every copy the customer holds is left out."""
    tail = [_ev(1, 10, "cart"), _ev(2, 11, "view", ctx={"c": 1})]
    paths = [_ev(3, 5, "view"), _ev(4, 6, "pay")]  # a path keeps no context past its first
    handed = [_ev(1, 10, "help"), _ev(2, 11, "view", ctx={"c": 2}), _ev(3, 5, ctx={"c": 9}),
              _ev(4, 7, "pay"), _ev(5, 1), _ev(6, 12), _ev(1, 10, "cart")]
    out = handed_over("c1", "d1", 3, tail, paths, {"e5", "e1", "e2"}, handed)
    assert out.kept == [_ev(6, 12)]
    assert out.left_out == {"e1", "e2", "e3", "e4", "e5"}
    assert out.duplicates == 3  # e3 (context not compared), e5 (id only), e1 again
    assert [c.reason() for c in out.conflicts] == [
        "conflicting_duplicate: event_id 'e1' first seen with other type",
        "conflicting_duplicate: event_id 'e2' first seen with other context",
        "conflicting_duplicate: event_id 'e4' first seen with other occurred_at"]
    assert {c.where("t") for c in out.conflicts} == {
        "handed over by linked device 'd1' to customer partition 3"}
    body = orjson.loads(out.conflicts[0].original())
    assert (body["type"], body["first_copy"]["type"]) == ("help", "cart")


def test_a_new_copy_that_outranks_an_applied_one_replaces_it() -> None:
    """The tail's copy (view at 10) loses to a new one of smaller rank (cart at 10:
    "cart" < "view"): the caller takes it out; the dead letter names it."""
    applied = _ev(1, 10, "view")
    out = first_copies("c", [applied], set(), [_ev(1, 10, "cart"), _ev(1, 10, "help")],
                       [(2, 7), (2, 8)])
    assert out.kept == [_ev(1, 10, "cart")]
    assert out.replaced == [applied]
    assert [(c.first, c.copy, c.offset) for c in out.conflicts] == [
        (_ev(1, 10, "cart"), applied, -1), (_ev(1, 10, "cart"), _ev(1, 10, "help"), 8)]
    assert out.conflicts[0].where("t") == (
        "applied earlier at customer partition 2, taken out for a copy that ranks first")


@given(st.permutations([_ev(1, 10, "view"), _ev(1, 10, "cart"), _ev(1, 9, "pay"),
                        _ev(1, 10, "cart", ctx={"c": 1}), _ev(1, 10, "cart")]),
       st.integers(0, 5))
def test_the_winner_is_the_same_in_every_order_and_split_between_state_and_batch(
        copies: list[Ev], applied: int) -> None:
    """The first `applied` copies (deduplicated as the stage would) are in the state
    already; the rest come in a batch. The copy of smallest rank is what the state
    ends with, and the batch's dead letters name it as the winner (`first`)."""
    tail: list[Ev] = []
    for e in copies[:applied]:
        step = first_copies("c", tail, set(), [e], [(0, 0)])
        tail = [t for t in tail if t not in step.replaced] + step.kept
    out = first_copies("c", tail, set(), copies[applied:], [(0, 1)] * len(copies[applied:]))
    final = [t for t in tail if t not in out.replaced] + out.kept
    assert final == [_ev(1, 9, "pay")]
    assert {c.first for c in out.conflicts} <= {_ev(1, 9, "pay")}


def test_a_handed_over_copy_that_outranks_the_customers_tail_copy_replaces_it() -> None:
    """docs/semantics.md, the handover route: the device's copy of smaller rank wins
    over the customer's tail copy (taken out); over a settled path copy it does not
    (the remaining limit: docs/reliability.md "Not guaranteed yet")."""
    tail = [_ev(1, 10, "view")]
    paths = [_ev(2, 5, "view")]
    out = handed_over("c1", "d1", 3, tail, paths, {"e1", "e2"},
                      [_ev(1, 10, "cart"), _ev(2, 5, "cart")])
    assert out.kept == [_ev(1, 10, "cart")]
    assert out.replaced == [_ev(1, 10, "view")]
    assert out.left_out == {"e2"}
    assert [(c.first, c.copy) for c in out.conflicts] == [
        (_ev(1, 10, "cart"), _ev(1, 10, "view")), (_ev(2, 5, "view"), _ev(2, 5, "cart"))]
    assert out.conflicts[0].where("t") == (
        "applied earlier at customer partition 3, taken out for a copy that ranks first "
        "handed over by linked device 'd1'")


def test_a_device_copy_known_from_its_session_only_outranks_a_later_tail_copy() -> None:
    """A handed-over session's event in none of the device's journey events: settled
    at the device, so before the link and before any customer tail copy; it wins
    (its type unknown: None in the dead letter). One also in the journey events, or
    not earlier, is left to the comparison above."""
    tail = [_ev(1, 30, "cart"), _ev(2, 30, "cart")]
    out = handed_over("c1", "d1", 0, tail, [], {"e1", "e2"}, [_ev(2, 30, "cart")],
                      [(10, "e1", "app"), (30, "e2", "web"), (12, "e3", "web")])
    assert out.replaced == [_ev(1, 30, "cart")]
    assert out.duplicates == 1 and out.left_out == {"e2"}
    assert [(c.first, c.copy) for c in out.conflicts] == [
        ((10, "e1", None, "app", None), _ev(1, 30, "cart"))]
