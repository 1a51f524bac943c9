"""One RocksDB memory budget per worker (stream/agents/rocks_memory.py,
docs/reliability.md "What grows per open journey")."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from faust.stores import by_url
from rocksdict import Rdict

from journeys.settings import DEFAULT_STATE_MEMORY_BYTES, WorkerSettings
from stream.agents.alert_entry_store import RocksEntryStore
from stream.agents.local_state import memory_budget, store_options
from stream.agents.rocks_memory import BudgetedStore, RocksMemory, _BudgetedOptions, register_store
from stream.agents.wake_store import RocksWakeIndex, local_index_options

MIB = 1 << 20


def _memtables(dbs: list[Rdict]) -> int:
    return sum(int(db.property_int_value("rocksdb.cur-size-all-mem-tables") or 0) for db in dbs)


def _flushes_done(dbs: list[Rdict], timeout_s: float = 60.0) -> None:
    """Wait until no memtable of `dbs` is waiting for or being flushed. The budget
    triggers flushes; they run in RocksDB's background threads, and until one ends its
    memtable still counts: on a loaded machine a measurement taken right after the
    writes saw more than the budget (a flaky test)."""
    props = ("rocksdb.num-immutable-mem-table", "rocksdb.mem-table-flush-pending",
             "rocksdb.num-running-flushes")
    deadline = time.monotonic() + timeout_s
    while any(int(db.property_int_value(p) or 0) for db in dbs for p in props):
        assert time.monotonic() < deadline, "RocksDB flushes did not end in time"
        time.sleep(0.05)


def _fill(dbs: list[Rdict], keys: int) -> None:
    value = os.urandom(64)
    for j in range(keys):
        for db in dbs:
            db.put(f"{j:09d}".encode(), value)


def test_the_budget_is_split_between_the_shared_cache_and_the_memtables() -> None:
    memory = RocksMemory(8 * MIB)
    assert memory.writes.get_buffer_size() == 4 * MIB
    with pytest.raises(ValueError):
        RocksMemory(1)


@pytest.mark.parametrize("budgeted", [True, False])
def test_memtables_of_all_databases_stay_within_the_budget(tmp_path: Path,
                                                           budgeted: bool) -> None:
    """Four local indexes written well past their own buffers: with one budget their
    memtables together stay near its half; each on its own (before) they hold more."""
    memory = RocksMemory(4 * MIB) if budgeted else None
    dbs = [Rdict(str(tmp_path / f"d{i}"), local_index_options(memory)) for i in range(4)]
    try:
        _fill(dbs, 40_000)  # ~3.5 MiB of keys and values per database
        _flushes_done(dbs)
        if budgeted:
            assert _memtables(dbs) <= 3 * MIB
        else:
            assert _memtables(dbs) > 3 * MIB
    finally:
        for db in dbs:
            db.close()


def test_every_database_reads_through_the_one_cache(tmp_path: Path) -> None:
    memory = RocksMemory(6 * MIB)
    timers = RocksWakeIndex(tmp_path / "timers", memory)
    entries = RocksEntryStore(tmp_path / "entries", memory)
    entries.open("k")  # opened on first use
    faust_db = _BudgetedOptions(memory=memory, write_buffer_size=MIB).open(tmp_path / "t.db")
    try:
        for db in (timers.db, entries.db, faust_db):
            assert db.property_int_value("rocksdb.block-cache-capacity") == 3 * MIB
    finally:
        faust_db.close()
        timers.close()
        entries.close()


def test_faust_tables_get_the_budgeted_store() -> None:
    assert by_url(register_store()) is BudgetedStore
    settings = WorkerSettings(state_store="rocksdb", state_memory_bytes=16 * MIB)
    memory = memory_budget(settings)
    assert memory is not None and memory.budget_bytes == 16 * MIB
    assert store_options(memory)["options"]["memory"] is memory
    assert memory_budget(WorkerSettings(state_store="memory")) is None  # no RocksDB there


def test_the_budget_is_read_from_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert WorkerSettings().state_memory_bytes == DEFAULT_STATE_MEMORY_BYTES
    monkeypatch.setenv("JOURNEYS_STATE_MEMORY_BYTES", str(32 * MIB))
    assert WorkerSettings().state_memory_bytes == 32 * MIB
