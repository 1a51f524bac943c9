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
