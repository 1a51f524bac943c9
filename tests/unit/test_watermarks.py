"""Event time (stream.eventtime): the source clock's lateness and idleness rules, the
frontier's minimum over upstream claims, and the timer index."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stream.eventtime.watermarks import (
    NO_WATERMARK,
    Claim,
    Frontier,
    SourceClock,
    decode_claims,
    encode_claims,
    source_claims,
)

BASE = 1_772_323_200_000


def test_an_event_is_late_only_behind_its_own_partitions_watermark() -> None:
    clock = SourceClock(1000)
    assert clock.mark == NO_WATERMARK
    assert not clock.observe(BASE, 0)
    assert clock.mark == BASE - 1000
    assert not clock.observe(BASE - 1000, 0)  # exactly at the watermark: on time
    assert clock.observe(BASE - 1001, 0)  # older: late
    assert clock.mark == BASE - 1000  # a late event moves nothing
    assert not clock.observe(BASE + 500, 0) and clock.mark == BASE - 500


def test_a_new_reader_judges_like_the_old_one_from_the_committed_state() -> None:
    old = SourceClock(1000)
    old.observe(BASE, 0)
    new = SourceClock.restore(1000, old.state(), 5)
    assert new.is_late(BASE - 1001) and not new.is_late(BASE - 1000)
    assert SourceClock.restore(1000, None).mark == NO_WATERMARK


def test_idle_partitions_follow_the_wall_clock_and_the_busy_ones() -> None:
    busy, quiet = SourceClock(1000), SourceClock(1000)
    empty = SourceClock(1000, wall_ms=10_000)  # assigned then, nothing read since
    busy.observe(BASE + 60_000, 10_000)
    quiet.observe(BASE, 10_000)
    clocks = {0: busy, 1: quiet, 2: empty}
    claims = source_claims(clocks, 12_000, caught_up={1, 2}, idle_after_ms=5_000)
    assert [c.idle for c in claims] == [False, False, False]  # not quiet long enough
    claims = source_claims(clocks, 16_000, caught_up={1, 2}, idle_after_ms=5_000)
    assert claims == [Claim(0, BASE + 59_000, False),  # busy: max seen - lateness
                      Claim(1, BASE + 59_000, True),  # idle: up to the busy partition
                      Claim(2, BASE + 59_000, True)]
    # nothing busy: idle partitions' watermarks move with the wall clock
    only = {1: SourceClock(1000)}
    only[1].observe(BASE, 10_000)
    [c] = source_claims(only, 40_000, caught_up={1}, idle_after_ms=5_000)
    assert c == Claim(1, BASE + 30_000 - 1000, True)
    assert only[1].is_late(BASE + 28_999)  # its own watermark: later events judged by it


def test_frontier_is_the_minimum_over_all_upstream_partitions() -> None:
    f = Frontier()
    assert not f.update(3, [Claim(0, 100), Claim(1, 200)])
    assert f.watermark == NO_WATERMARK and f.missing() == [2]  # partition 2 unheard
    assert f.update(3, [Claim(2, 150)]) and f.watermark == 100
    assert f.slowest() == (0, 100)
    assert not f.update(3, [Claim(0, 50)]) and f.watermark == 100  # never goes back
    assert f.update(3, [Claim(0, 300, idle=True)]) and f.watermark == 150  # idle: left out
    assert not f.idle
    f.update(3, [Claim(1, 400, True), Claim(2, 500, True)])
    assert f.idle and f.watermark == 300  # all idle: the least of them
    assert f.claim(7) == Claim(7, 300, True)


def test_claims_wire_form() -> None:
    claims = [Claim(0, BASE, False), Claim(3, NO_WATERMARK, True)]
    assert decode_claims(encode_claims(4, claims)) == (4, claims)


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(-5, 50), st.booleans()),
                max_size=40))
def test_frontier_never_goes_back_and_is_at_most_each_busy_claim(
        claims: list[tuple[int, int, bool]]) -> None:
    f, last = Frontier(4), NO_WATERMARK
    latest: dict[int, tuple[int, bool]] = {}
    for p, m, idle in claims:
        f.update(4, [Claim(p, m, idle)])
        if p not in latest or m >= latest[p][0]:
            latest[p] = (m, idle)
        assert f.watermark >= last
        last = f.watermark
        if len(latest) == 4 and f.watermark > NO_WATERMARK:
            busy = [m for m, i in latest.values() if not i]
            if busy:
                assert f.watermark <= max(busy) or f.watermark == last
