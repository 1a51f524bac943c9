"""The alert stage's open entries on disk: the RocksDB adapter of
`stream.engine.alert_entries.EntryStore`.

With `JOURNEYS_STATE_STORE=rocksdb` the alert table's values live in RocksDB, but the
stage held every unsettled window's entries decoded in memory (~230 bytes an instance
that reached a step): RSS grew with a backlog's open journeys (docs/reliability.md
"Bounded state"). Here they are one local database per worker (the state keys are a
handful), under the worker's data dir, keyed

    state_key (UTF-8) + b"\\xff" + instance_id (UTF-8)  ->  orjson of the entry

(b"\\xff" never occurs in UTF-8: no key's range holds another's). Like the timer index
(stream/agents/wake_store.py) it is never the source of truth: wiped when opened, when
partitions move and when a batch failed, and refilled from the table; so it needs no
changelog and no fsync.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import orjson
from rocksdict import Rdict, WriteBatch

from stream.agents.rocks_memory import RocksMemory
from stream.agents.wake_store import local_index_options
from stream.engine.alert_entries import AlertEntries, Entry

_SEP = b"\xff"


class RocksEntries:
    """One state key's entries: a key range of the store's database."""

    __slots__ = ("_prefix", "_store")

    def __init__(self, store: RocksEntryStore, key: str) -> None:
        self._store = store
        self._prefix = key.encode() + _SEP

    def get(self, iid: str) -> Entry | None:
        raw = self._store.db.get(self._prefix + iid.encode())
        if raw is None:
            return None
        entry: Entry = orjson.loads(raw)
        return entry

    def put(self, iid: str, entry: Entry) -> None:
        self._store.db.put(self._prefix + iid.encode(), orjson.dumps(entry))

    def delete(self, iid: str) -> None:
        self._store.db.delete(self._prefix + iid.encode())

    def ordered(self) -> Iterator[tuple[str, Entry]]:
        # a RocksDB iterator reads a snapshot taken when it is made: deletes are safe
        prefix, n, loads = self._prefix, len(self._prefix), orjson.loads
        k: bytes  # raw mode: keys and values are bytes
        v: bytes
        for k, v in self._store.db.items(from_key=prefix):  # type: ignore[assignment]
            if not k.startswith(prefix):
                break
            yield k[n:].decode(), loads(v)

    def clear(self) -> None:
        batch = WriteBatch(raw_mode=True)
        batch.delete_range(self._prefix, self._prefix + _SEP)
        self._store.db.write(batch)

    def __len__(self) -> int:
        return sum(1 for _ in self._keys())

    def _keys(self) -> Iterator[bytes]:
        prefix = self._prefix
        k: bytes
        for k in self._store.db.keys(from_key=prefix):  # type: ignore[assignment]
            if not k.startswith(prefix):
                break
            yield k

    def __eq__(self, other: object) -> bool:
        items = getattr(other, "ordered", None)
        if items is None:
            return NotImplemented
        return list(self.ordered()) == list(items())

    __hash__ = None  # type: ignore[assignment]


class RocksEntryStore:
    """The alert stage's entry indexes, in one local RocksDB database."""

    def __init__(self, path: Path, memory: RocksMemory | None = None) -> None:
        """Opened on first use: the app wipes its data dir at start when its topics are
        new (stream.agents.app `prepare_data_dir`), and a database whose directory was
        removed fails its next flush."""
        self.path = path
        self._memory = memory  # the worker's RocksDB budget (stream/agents/rocks_memory.py)
        self._db: Rdict | None = None

    def _open(self) -> None:
        if self.path.exists():  # a previous owner's index: the table is the truth
            shutil.rmtree(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = Rdict(str(self.path), local_index_options(self._memory))

    @property
    def db(self) -> Rdict:
        if self._db is None:
            raise RuntimeError(f"alert entry index {self.path} is closed")
        return self._db

    def open(self, key: str) -> AlertEntries:
        if self._db is None:  # first use, or closed by a stopped agent: begins empty
            self._open()
        entries = RocksEntries(self, key)
        entries.clear()
        return entries

    def reset(self) -> None:
        """Start over empty (the files of dropped keys go with it); reopened when next
        used."""
        self.close()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
            shutil.rmtree(self.path, ignore_errors=True)
