"""Where a stream worker keeps its local state: Faust's data directory and, with
`JOURNEYS_STATE_STORE=rocksdb`, the RocksDB tables' options, the customer stage's timer
indexes and the alert stage's open entries, all under one memory budget
(stream.agents.rocks_memory); with the memory store, None everywhere (in memory).

Why a module of its own: these choices are made once per worker and read apart from
the app's topology (stream.agents.app), which only passes them on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from journeys.settings import WorkerSettings
from stream.agents.alert_entry_store import RocksEntryStore
from stream.agents.rocks_memory import RocksMemory
from stream.agents.wake_store import RocksWakeIndex
from stream.engine.alert_entries import EntryStore
from stream.eventtime.timers import Timers


def faust_data_dir(settings: WorkerSettings) -> Path:
    """Faust's local directory for this app id (tables, offsets)."""
    return Path(settings.data_dir) / "faust" / settings.app_id


def memory_budget(settings: WorkerSettings) -> RocksMemory | None:
    """The one memory budget of every RocksDB database of this worker (tables, timer
    indexes, alert entries): `JOURNEYS_STATE_MEMORY_BYTES`."""
    if settings.state_store != "rocksdb":
        return None
    return RocksMemory(settings.state_memory_bytes)


def store_options(memory: RocksMemory | None) -> dict[str, Any]:
    """Table options of the state store: RocksDB through rocksdict (a wheel on PyPI;
    python-rocksdb is unmaintained)."""
    if memory is None:
        return {}
    # one database per table and partition; their memtables and blocks are charged to
    # the worker's shared budget (stream/agents/rocks_memory.py): before, each had its
    # own (2 x 4 MiB memtables and a 4 MiB cache), up to ~170 MiB with 4 partitions
    return {"options": {"driver": "rocksdict", "write_buffer_size": 4 << 20,
                        "max_write_buffer_number": 2, "memory": memory}}


def timer_indexes(settings: WorkerSettings,
                  memory: RocksMemory | None) -> Callable[[int], Timers] | None:
    """The customer stage's timer index per partition: on disk beside the RocksDB
    tables (so RSS does not grow with open journeys), else in memory."""
    if memory is None:
        return None
    where = faust_data_dir(settings) / "timers"
    return lambda partition: RocksWakeIndex(where / f"customers-{partition}", memory)


def entry_store(settings: WorkerSettings, memory: RocksMemory | None) -> EntryStore | None:
    """The alert stage's open entries: on disk beside the RocksDB tables (so RSS does not
    grow with a backlog's unsettled windows), else in memory."""
    if memory is None:
        return None
    return RocksEntryStore(faust_data_dir(settings) / "alert-entries", memory)
