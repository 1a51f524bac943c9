"""`python -m stream` with a memory probe, for bench_state_rss.py `--probe`: each SNAP_SIGNAL
(bench/trace_worker.py) writes DIR/probe-N.json with the worker's RSS taken apart (docs/reliability.md "Bounded
state", "What grows per open journey"):

- VmRSS, RssAnon, RssFile (/proc/self/status);
- glibc malloc (`mallinfo2`: bytes in use, free but kept in its arenas, mmapped) — RocksDB
  (C++ `new`), orjson buffers and Python objects over 512 bytes come from there;
- pymalloc (`sys._debugmallocstats`: arenas, bytes in allocated blocks) — small Python
  objects;
- every RocksDB database of the worker (Faust's tables, the timer indexes, the alert
  entries): memtables, block cache, table readers, keys;
- the customer stage's decoded cache (entries, stored bytes);
- then `malloc_trim(0)` and VmRSS again: what glibc kept but did not use.

Unlike bench/trace_worker.py (tracemalloc) it costs nothing until signalled.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import re
import runpy
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trace_worker import SNAP_SIGNAL

ROCKS_PROPS = ("rocksdb.cur-size-all-mem-tables", "rocksdb.block-cache-usage",
               "rocksdb.estimate-table-readers-mem", "rocksdb.estimate-num-keys")


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]


_libc = ctypes.CDLL("libc.so.6")
_libc.mallinfo2.restype = _Mallinfo2
_seen: dict[str, list[Any]] = {"stores": [], "indexes": [], "entries": [], "stages": [],
                               "budgets": []}


def _status() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(rest.split()[0]) * 1024
    return out


def _pymalloc() -> dict[str, int]:
    """The totals of `sys._debugmallocstats()` (it writes to fd 2)."""
    with tempfile.TemporaryFile() as f:
        saved = os.dup(2)
        os.dup2(f.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        text = f.read().decode(errors="replace")
    out = {}
    for name, pat in (("arenas", r"# arenas allocated current\s*=\s*([\d,]+)"),
                      ("allocated_blocks_bytes", r"# bytes in allocated blocks\s*=\s*([\d,]+)"),
                      ("arena_bytes", r"Total\s*=\s*([\d,]+)")):
        m = re.search(pat, text)
        if m:
            out[name] = int(m.group(1).replace(",", ""))
    return out


def _rocks(db: Any) -> dict[str, int]:
    out = {}
    for p in ROCKS_PROPS:
        with contextlib.suppress(Exception):  # a closed database
            out[p.split(".", 1)[1]] = int(db.property_int_value(p) or 0)
    return out


def _databases() -> dict[str, dict[str, int]]:
    dbs: dict[str, Any] = {}
    for store in _seen["stores"]:
        for partition, db in getattr(store, "_dbs", {}).items():
            dbs[f"{store.table_name}-{partition}"] = db
    for index in _seen["indexes"]:
        if index._db is not None:
            dbs[f"timers/{index.path.name}"] = index._db
    for entries in _seen["entries"]:
        if entries._db is not None:
            dbs["alert-entries"] = entries._db
    return {name: _rocks(db) for name, db in sorted(dbs.items())}


def probe(where: Path, n: int) -> None:
    gc.collect()
    m = _libc.mallinfo2()
    caches = [{"entries": len(s.cache), "stored_bytes": s.cache.bytes}
              for s in _seen["stages"]]
    dbs = _databases()
    out: dict[str, Any] = {
        "status": _status(),
        "malloc": {"in_use": m.uordblks, "free_kept": m.fordblks, "mmapped": m.hblkhd,
                   "arena": m.arena},
        "pymalloc": _pymalloc(),
        "objects": len(gc.get_objects()),
        "rocksdb": dbs,
        "rocksdb_total": {k: sum(d.get(k, 0) for d in dbs.values())
                          for k in ("cur-size-all-mem-tables", "block-cache-usage",
                                    "estimate-table-readers-mem")},
        "rocksdb_budget": [m.budget_bytes for m in _seen["budgets"]],
        "cache": caches,
    }
    _libc.malloc_trim(0)
    if _seen["budgets"] and dbs:  # one cache shared by every database: count it once
        out["rocksdb_total"]["block-cache-usage"] = max(
            d.get("block-cache-usage", 0) for d in dbs.values())
    out["after_trim"] = _status()
    (where / f"probe-{n}.json").write_text(json.dumps(out, indent=1))


def _record(cls: type, kind: str) -> None:
    init = cls.__init__

    def wrapped(self: Any, *a: Any, **k: Any) -> None:
        init(self, *a, **k)
        _seen[kind].append(self)

    cls.__init__ = wrapped  # type: ignore[misc]


def main() -> None:
    where = Path(sys.argv[1])
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from faust.stores.rocksdb import Store

    from stream.agents.alert_entry_store import RocksEntryStore
    from stream.agents.rocks_memory import RocksMemory
    from stream.agents.wake_store import RocksWakeIndex
    from stream.stages.customers import CustomerStage

    for cls, kind in ((Store, "stores"), (RocksWakeIndex, "indexes"),
                      (RocksEntryStore, "entries"), (CustomerStage, "stages"),
                      (RocksMemory, "budgets")):
        _record(cls, kind)
    taken = [0]

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        taken[0] += 1
        probe(where, taken[0])

    signal.signal(SNAP_SIGNAL, on_signal)
    sys.argv = ["stream", *sys.argv[2:]]
    # this checkout's code, as `python -m stream` run from it gets: sys.path[0] is
    # bench/ here, and the shared venv's editable install may point at another checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    runpy.run_module("stream", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
