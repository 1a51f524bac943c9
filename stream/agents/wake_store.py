"""The customer stage's timers on disk: the RocksDB adapter of `stream.eventtime.timers.Timers`.

With `JOURNEYS_STATE_STORE=rocksdb` the customers' values live in RocksDB, but the
in-memory timer index would still hold ~200 bytes per customer with something due (every
open journey): RSS would grow with open journeys (docs/reliability.md "Bounded state").
Here the index is one local database per by-customer partition, under the worker's data
dir, with two kinds of keys:

    b"w" + wake (8 bytes, big-endian, offset by 2**63) + key  ->  b""     (the order)
    b"k" + key                                                 ->  wake   (the lookup)

so `due(watermark)` is one ordered scan from the start, and the keys come out in the
same order as the memory index's (wake, then key). Like the memory index it is never
the source of truth: it is wiped when the partition is assigned again and rebuilt from
the table (`CustomerStage.rebuild`), so it needs no changelog and no fsync.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

from rocksdict import Options, Rdict, WriteBatch

from stream.agents.rocks_memory import RocksMemory

_WAKE = struct.Struct(">Q")
_OFFSET = 1 << 63
# small buffers: one database per partition, and its whole point is to stay off RSS
_WRITE_BUFFER = 1 << 20
_BLOCK_CACHE = 1 << 20


def local_index_options(memory: RocksMemory | None = None) -> Options:
    """Options of a local index that must stay off RSS (also the alert entries); with
    `memory`, within the worker's one RocksDB budget (stream/agents/rocks_memory.py)."""
    from rocksdict import BlockBasedOptions, Cache

    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.set_write_buffer_size(_WRITE_BUFFER)
    opts.set_max_write_buffer_number(2)
    if memory is not None:
        return memory.apply(opts)
    table = BlockBasedOptions()
    table.set_block_cache(Cache(_BLOCK_CACHE))
    opts.set_block_based_table_factory(table)
    return opts


def _wake_bytes(wake: int) -> bytes:
    return _WAKE.pack(wake + _OFFSET)


class RocksWakeIndex:
    """key -> the watermark at which it is due, in a local RocksDB database."""

    def __init__(self, path: Path, memory: RocksMemory | None = None) -> None:
        self.path = path
        if path.exists():  # a previous owner's index: the table is the truth, rebuild
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db: Rdict | None = Rdict(str(path), local_index_options(memory))
        self._count = 0

    @property
    def db(self) -> Rdict:
        if self._db is None:
            raise RuntimeError(f"timer index {self.path} is closed")
        return self._db

    def schedule(self, key: str, wake: int | None) -> None:
        db, kb = self.db, key.encode()
        old = db.get(b"k" + kb)
        new = None if wake is None else _wake_bytes(wake)
        if old == new:
            return
        batch = WriteBatch(raw_mode=True)
        if old is not None:
            batch.delete(b"w" + old + kb)
        if new is None:
            batch.delete(b"k" + kb)
            self._count -= 1
        else:
            batch.put(b"w" + new + kb, b"")
            batch.put(b"k" + kb, new)
            if old is None:
                self._count += 1
        db.write(batch)

    def due(self, watermark: int, limit: int | None = None) -> list[str]:
        db = self.db
        upto = _wake_bytes(watermark)
        out: list[str] = []
        batch = WriteBatch(raw_mode=True)
        it = db.iter()
        it.seek(b"w")
        room = -1 if limit is None else limit
        while it.valid() and len(out) != room:
            k = it.key()
            if not k.startswith(b"w") or k[1:9] > upto:
                break
            kb = k[9:]
            out.append(kb.decode())
            batch.delete(k)
            batch.delete(b"k" + kb)
            it.next()
        del it
        if out:
            db.write(batch)
            self._count -= len(out)
        return out

    def next_wake(self) -> int | None:
        it = self.db.iter()
        it.seek(b"w")
        if it.valid() and it.key().startswith(b"w"):
            wake: int = _WAKE.unpack_from(it.key(), 1)[0] - _OFFSET
            return wake
        return None

    def __len__(self) -> int:
        return self._count

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
            shutil.rmtree(self.path, ignore_errors=True)
