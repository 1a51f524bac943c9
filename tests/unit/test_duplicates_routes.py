"""Conflicting copies of one event id sent with different identity fields (issue "Nothing
halts it"; docs/reliability.md "Not guaranteed yet").

Both tests fail today and are marked strict xfail: they state what the rule has to give
(one outcome, whatever the routes' timing; sessions and journeys agree; the left-out copy
dead-lettered) and fail loudly (XPASS) once it does, so the mark is removed with the fix.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.profiles import examples
from tests.unit.stream_harness import Pipeline
from tests.unit.test_stream_stories import BASE, DEFS, H, M, ev

ISSUE = "issue 'Nothing halts it': the winner of copies on two routes depends on timing"


def _run(story: list[dict[str, Any]], seed: int, *, bulk: bool, partitions: int = 2,
         sources: int = 3) -> tuple[Any, ...]:
    pipe = Pipeline(DEFS, partitions=partitions, lateness_ms=10 * M, seed=seed, bulk=bulk,
                    sources=sources, readers=min(2, sources))
    pipe.feed_raw(story, BASE + 5 * M)
    pipe.drain()
    pipe.finish(BASE + 3 * H)
    assert pipe.late == 0  # the stories stay within the allowed lateness
    return (sorted(pipe.live_sessions()), sorted(pipe.journey_view().values()),
            sorted((c.customer, c.first, c.copy) for c in pipe.conflicts))


def test_a_conflicting_copy_that_crossed_a_handover_counts_as_one_copy_everywhere() -> None:
    """One raw partition, so one order: the device's copy (anonymous id only, read
    before the link) reaches the customer in the device's handover, after the
    customer's own copy. Today the journey shows the customer's copy (cart at 2m), the
    merged session still ends at the device copy's time (3m), and nothing is
    dead-lettered: the handover's duplicate check (stream.engine.sessions.Sessionizer.
    absorb, stream.engine.journeys.JourneyEngine.absorb) drops an id, not its content."""
    story = [ev(1, 0, "view", anon="d1"), ev(5, 3 * M, "cart", anon="d1"),
             ev(2, M, "identify", cust="c1", anon="d1"),
             ev(5, 2 * M, "cart", cust="c1", anon="d1")]
    sessions, journeys, conflicts = _run(story, 0, bulk=False, partitions=1, sources=1)
    [(_iid_journey, _cust, _status, _opened, _closed, _furthest, times, *_rest)] = [
        j for j in journeys]
    [(_c, start, end, count)] = sessions
    assert (start, end, count) == (BASE, times[-1], 3)  # the session ends at the cart kept
    assert len(conflicts) == 1  # the copy left out is dead-lettered


@pytest.mark.xfail(strict=True, reason=ISSUE)
@settings(max_examples=examples(5), deadline=None)
@given(t_anon=st.integers(0, 4).map(lambda m: m * M), t_cust=st.integers(0, 4).map(lambda m: m * M),
       retype=st.booleans(), early_link=st.booleans())
@example(t_anon=3 * M, t_cust=2 * M, retype=False, early_link=True)
def test_copies_on_two_routes_give_one_outcome_whatever_the_interleaving(
        t_anon: int, t_cust: int, retype: bool, early_link: bool) -> None:
    """The same events, two copies of e005 with other content (one with the anonymous
    id only, one with the customer id too): every interleaving of the raw partitions
    and batchings gives the same sessions, instances and dead letters."""
    link = ev(1, 0, "view", cust="c1", anon="d1") if early_link else ev(1, 0, "view", anon="d1")
    anon_copy = ev(5, t_anon, "cart", anon="d1")
    cust_copy = ev(5, t_cust, "help" if retype else "cart", cust="c1", anon="d1")
    if anon_copy["occurred_at"] == cust_copy["occurred_at"] and not retype:
        cust_copy = {**cust_copy, "channel": "app"}  # the copies must differ
    story = [link, ev(2, M, "view", cust="c1", anon="d1"), anon_copy, cust_copy]
    outcomes = {repr(_run(story, seed, bulk=bulk)) for seed in range(6)
                for bulk in (False, True)}
    assert len(outcomes) == 1
