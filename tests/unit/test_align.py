"""Event-time alignment of raw partitions in the validate stage (stream.eventtime.align)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from stream.eventtime.align import Aligner


def test_holds_until_every_partition_behind_has_caught_up_in_time() -> None:
    a = Aligner(slack_ms=10)
    for off, t in enumerate((100, 200, 300)):
        a.add(0, off, t, ("p0", t))
    assert a.release(behind={0, 1}) == []  # partition 1 not read yet: hold everything
    a.add(1, 0, 150, ("p1", 150))
    assert a.release(behind={0, 1}) == [("p0", 100), ("p1", 150)]
    assert a.first_held(0) == 1 and a.first_held(1) is None
    assert a.ahead(behind={0, 1}) == {0}  # read beyond frontier + slack
    assert a.release(behind={0}) == [("p0", 200), ("p0", 300)]  # partition 1 caught up
    assert a.first_held(0) is None and len(a) == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 1000), max_size=30), min_size=1, max_size=4),
       st.integers(0, 2**32 - 1))
def test_released_order_has_skew_at_most_slack(parts: list[list[int]], seed: int) -> None:
    """Partitions read in random chunks: every release is sorted, and an event is
    never released after one more than `slack` later than it (no lateness from skew)."""
    rnd = random.Random(seed)
    series = [sorted(p) for p in parts]
    a = Aligner(slack_ms=50)
    pos = [0] * len(series)
    out: list[int] = []
    while any(pos[i] < len(s) for i, s in enumerate(series)):
        i = rnd.randrange(len(series))
        n = rnd.randint(0, 5)
        for t in series[i][pos[i]:pos[i] + n]:
            a.add(i, pos[i], t, t)
            pos[i] += 1
        out.extend(a.release({j for j, s in enumerate(series) if pos[j] < len(s)}))
    out.extend(a.release(set()))
    assert sorted(out) == sorted(t for s in series for t in s)
    high = -1
    for t in out:
        assert t >= high - 50
        high = max(high, t)
    a.forget([0])
    assert a.first_held(0) is None
