"""Contract of the customer stage's timer index, over both adapters (memory, RocksDB)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.agents.rocks_memory import RocksMemory
from stream.agents.wake_store import RocksWakeIndex
from stream.eventtime.timers import Timers, WakeIndex

BASE = 1_772_323_200_000
ADAPTERS = ("memory", "rocksdb", "rocksdb-budgeted")


def make(kind: str, where: Path) -> Timers:
    if kind == "memory":
        return WakeIndex()
    # budgeted: within a tiny shared RocksDB budget (stream/agents/rocks_memory.py)
    memory = RocksMemory(2 << 20) if kind == "rocksdb-budgeted" else None
    return RocksWakeIndex(where / "timers" / "p0", memory)


@pytest.fixture(params=ADAPTERS)
def timers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Timers]:
    t = make(request.param, tmp_path)
    yield t
    t.close()


def test_due_in_wake_order_and_rescheduling_replaces(timers: Timers) -> None:
    timers.schedule("a", BASE + 5000)
    timers.schedule("b", BASE)
    timers.schedule("a", BASE + 500)  # rescheduled: the old time no longer counts
    assert timers.next_wake() == BASE and len(timers) == 2
    assert timers.due(BASE + 1000) == ["b", "a"] and timers.due(BASE + 10_000) == []
    assert len(timers) == 0
    timers.schedule("c", BASE)
    timers.schedule("c", None)
    assert timers.next_wake() is None and len(timers) == 0
    timers.schedule("d", None)  # clearing what is not there is a no-op
    assert len(timers) == 0


def test_extreme_times_and_non_ascii_keys(timers: Timers) -> None:
    timers.schedule("ü-late", 2**62)
    timers.schedule("zz", -(2**62))
    timers.schedule("aa", -(2**62))
    assert timers.next_wake() == -(2**62)
    assert timers.due(0) == ["aa", "zz"]
    assert timers.due(2**62 - 1) == []
    assert timers.due(2**62) == ["ü-late"]


def test_rocksdb_index_starts_empty_and_close_removes_it(tmp_path: Path) -> None:
    where = tmp_path / "timers" / "p3"
    first = RocksWakeIndex(where)
    first.schedule("a", BASE)
    first.close()
    assert not where.exists()
    with pytest.raises(RuntimeError):
        first.schedule("a", BASE)
    second = RocksWakeIndex(where)  # never trusted across owners: rebuilt from the table
    assert len(second) == 0 and second.next_wake() is None
    second.close()


keys = st.sampled_from(["a", "b", "c", "d", "é", "a1", "b2"])
wakes = st.one_of(st.none(), st.integers(BASE - 10, BASE + 10))
ops = st.lists(st.one_of(st.tuples(st.just("s"), keys, wakes),
                         st.tuples(st.just("d"), st.just(""), st.integers(BASE - 12, BASE + 12)),
                         st.tuples(st.sampled_from(["d0", "d1", "d2", "d3"]), st.just(""),
                                   st.integers(BASE - 12, BASE + 12))),
               max_size=60)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(ops)
def test_both_adapters_behave_like_the_model(tmp_path: Path,
                                             script: list[tuple[str, str, int | None]]) -> None:
    indexes = [make(kind, tmp_path / f"run-{id(script)}-{kind}") for kind in ADAPTERS]
    model: dict[str, int] = {}
    try:
        for op, key, value in script:
            if op == "s":
                for t in indexes:
                    t.schedule(key, value)
                if value is None:
                    model.pop(key, None)
                else:
                    model[key] = value
            else:  # "d": every key due; "dN": at most N of them, the rest stay due
                assert value is not None
                limit = int(op[1:]) if len(op) > 1 else None
                want = sorted((w, k) for k, w in model.items() if w <= value)[:limit]
                for k in [k for _w, k in want]:
                    del model[k]
                for t in indexes:
                    assert t.due(value, limit) == [k for _w, k in want]
            for t in indexes:
                assert len(t) == len(model)
                assert t.next_wake() == (min(model.values()) if model else None)
    finally:
        for t in indexes:
            t.close()
