"""Where a stream worker keeps its local state: Faust's data directory and, with
`JOURNEYS_STATE_STORE=rocksdb`, the RocksDB tables' options, the customer stage's timer
indexes and the alert stage's open entries, all under one memory budget
(stream.agents.rocks_memory); with the memory store, None everywhere (in memory).

Why a module of its own: these choices are made once per worker and read apart from
the app's topology (stream.agents.app), which only passes them on.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from journeys.errors import ConfigError
from journeys.settings import WorkerSettings
from stream.agents.alert_entry_store import RocksEntryStore
from stream.agents.rocks_memory import RocksMemory
from stream.agents.wake_store import RocksWakeIndex
from stream.engine.alert_entries import EntryStore
from stream.eventtime.timers import Timers


def faust_data_dir(settings: WorkerSettings) -> Path:
    """Faust's local directory for this app id (tables, offsets)."""
    return Path(settings.data_dir) / "faust" / settings.app_id


def claim_data_dir(settings: WorkerSettings) -> IO[bytes]:
    """Lock this app id's local state for this process until it exits (the lock file
    `<data_dir>/faust/<app_id>.lock` beside it, so the app's wipe of a stale directory
    never removes it; the kernel drops the lock when the process dies, SIGKILL too).

    Two workers of one app id started with the same data dir on one machine would share
    RocksDB files (RocksDB refuses the second open, mid-start), wipe each other's timer
    indexes, and share the crash journal and the alert spool: the second one stops here
    with what to do instead."""
    base = faust_data_dir(settings)
    lock = base.parent / f"{settings.app_id}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    fh = lock.open("a+b")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().decode(errors="replace").strip() or "?"
        fh.close()
        raise ConfigError(
            f"the local state in {base} is in use by another worker of app id "
            f"{settings.app_id!r} (pid {holder}); give each worker on this machine its "
            f"own JOURNEYS_DATA_DIR") from None
    fh.truncate(0)
    fh.write(str(os.getpid()).encode())
    fh.flush()
    return fh


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
