"""The customer stage's warehouse write (stream/agents/sink.py `write_customers`): on a
ClickHouse server its inserts run side by side, and it returns only once every one of
them has ended, so the stage's write order (docs/stream.md "Exactly once in effect":
final rows durable before the store, provisional rows only after it) is unchanged."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from journeys.settings import WarehouseConfig
from stream.agents.sink import WarehouseSink
from stream.engine.outputs import Retraction
from stream.engine.session_state import SessionRow
from stream.stages.validate import LateEvent
from tests.profiles import examples

TABLES = ("sessions", "journey_instances", "late_events")


class _Warehouse:
    """Logs each insert's start and end; `wait_for[a] = b`: a's insert waits (at most
    1 s) until b's has started; `fail`: tables whose insert raises; `delay`: seconds."""

    database = "db"

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.log: list[tuple[str, str]] = []
        self.started = {t: threading.Event() for t in TABLES}
        self.wait_for: dict[str, str] = {}
        self.fail: set[str] = set()
        self.delay: dict[str, float] = {}

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Any]) -> int:
        return self.insert_columns(table, columns, [list(c) for c in zip(*rows, strict=True)])

    def insert_columns(self, table: str, columns: Sequence[str], data: Any) -> int:
        self.log.append(("start", table))
        self.started[table].set()
        if table in self.wait_for:
            self.started[self.wait_for[table]].wait(1.0)
        time.sleep(self.delay.get(table, 0.0))
        self.log.append(("end", table))
        if table in self.fail:
            raise ConnectionError(f"{table}: connection reset")
        return 1


def _sink(wh: _Warehouse) -> WarehouseSink:
    return WarehouseSink(WarehouseConfig(), wh)  # type: ignore[arg-type]


def _rows(tables: set[str]) -> tuple[list[SessionRow], list[Retraction], list[LateEvent]]:
    sessions = [SessionRow("s1", "c1", 0, 0, datetime(2026, 1, 1, tzinfo=UTC), 1, ["web"],
                           "web", 1, 0)] if "sessions" in tables else []
    retractions = [Retraction("i1", "j", "c1", 2)] if "journey_instances" in tables else []
    late = [LateEvent("e1", 1, 2, "customers", "t", 0, 5, 3)] if "late_events" in tables \
        else []
    return sessions, retractions, late


def test_server_inserts_run_side_by_side() -> None:
    """Fails on one-after-the-other inserts: the sessions insert then waits 1 s for a
    journey_instances insert that only starts after it."""
    wh = _Warehouse("server")
    wh.wait_for["sessions"] = "journey_instances"
    sessions, retractions, _late = _rows({"sessions", "journey_instances"})
    _sink(wh).write_customers(sessions, [], retractions)
    assert wh.log.index(("start", "journey_instances")) < wh.log.index(("end", "sessions"))


def test_embedded_inserts_stay_one_by_one() -> None:
    wh = _Warehouse("chdb")
    sessions, retractions, late = _rows(set(TABLES))
    _sink(wh).write_customers(sessions, [], retractions, late)
    assert wh.log == [(e, t) for t in TABLES for e in ("start", "end")]


@settings(max_examples=examples(40), deadline=None)
@given(st.sets(st.sampled_from(TABLES)), st.sets(st.sampled_from(TABLES)),
       st.dictionaries(st.sampled_from(TABLES), st.sampled_from([0.0, 0.002, 0.01])))
def test_returns_after_every_insert_and_raises_any_failure(
        tables: set[str], failing: set[str], delay: dict[str, float]) -> None:
    """Whatever finishes first or fails: write_customers returns (or raises) only once
    every insert has ended (an early return would let the stage store its states, or
    write provisional rows, before a final row is durable), each table once."""
    wh = _Warehouse("server")
    wh.fail, wh.delay = failing & tables, delay
    sessions, retractions, late = _rows(tables)
    sink = _sink(wh)
    try:
        if wh.fail:
            with pytest.raises(ConnectionError):
                sink.write_customers(sessions, [], retractions, late)
        else:
            sink.write_customers(sessions, [], retractions, late)
        ended = list(wh.log)  # as it was when write_customers came back
        assert sorted(t for e, t in ended if e == "end") == sorted(tables)
        assert sorted(t for e, t in ended if e == "start") == sorted(tables)
    finally:
        sink.close()
