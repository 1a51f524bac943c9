"""Where a drop-off step keeps the entries of its still-unsettled windows: the port and
its memory adapter (pure).

`StepAlertState` needs its instances' entries (instance_id -> [reached_at, channel,
next_at, retracted_as_of, [[next_at, as_of], ...]]) only until their windows are final;
everything else it keeps (final_before, per-channel baselines, the late count) is
O(windows x steps). With the memory store the entries are a dict (~230 bytes an
instance that reached a step); with `JOURNEYS_STATE_STORE=rocksdb` the worker keeps them
in a local RocksDB index instead (stream/agents/alert_entry_store.py), so its RSS does not
grow with a backlog's open journeys (docs/reliability.md "Bounded state"). Either way
the index is never the source of truth: the alert table (head + entry part records,
stream.stages.alerts) is, and a key's entries are loaded from it into a fresh index
whenever the stage (re)reads the key.

The stage stores a key's entries in *arrival chunks* (stream/stages/alert_chunks.py): an
entry stays in the chunk it first arrived in, and a batch rewrites only the chunk records
it changed. So the index keeps each entry's chunk id next to it (`EntryIndex`), and can
list one chunk's entries without reading the others (docs/reliability.md "Bounded
state"). `AlertEntries` is what `StepAlertState` sees: entries by id, no chunks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

Entry = list[Any]


class AlertEntries(Protocol):
    """One (journey, step)'s open entries, by instance id."""

    def get(self, iid: str) -> Entry | None:
        """A copy-or-alias of the stored entry: callers `put` what they change."""
        ...

    def put(self, iid: str, entry: Entry) -> None: ...

    def delete(self, iid: str) -> None:
        """Remove `iid` (a no-op when it is not there)."""
        ...

    def ordered(self) -> Iterator[tuple[str, Entry]]:
        """Every entry by instance id (bytes order of the UTF-8 id); the caller may
        `delete` while it iterates."""
        ...

    def __len__(self) -> int: ...


class EntryIndex(Protocol):
    """One (journey, step)'s open entries by instance id, each in a chunk (an int >= 0,
    < 2**32)."""

    def get(self, iid: str) -> tuple[int, Entry] | None:
        """(chunk, a copy-or-alias of the entry): callers `put` what they change."""
        ...

    def put(self, iid: str, chunk: int, entry: Entry, *, known: bool = False) -> None:
        """Store `entry` in `chunk`; an entry already stored stays in its chunk: pass the
        chunk `get` gave (moving an entry is not supported), and `known=True` (then
        only the entry changes: one write less on disk)."""
        ...

    def delete(self, iid: str, chunk: int) -> None:
        """Remove `iid` of `chunk` (a no-op when it is not there)."""
        ...

    def ordered(self) -> Iterator[tuple[str, int, Entry]]:
        """(id, chunk, entry) of every entry by instance id (bytes order of the UTF-8 id);
        the caller may `delete` while it iterates."""
        ...

    def chunk(self, chunk: int) -> Iterator[tuple[str, Entry]]:
        """The entries of one chunk by instance id; O(its entries), not O(all)."""
        ...


class EntryStore(Protocol):
    """Opens the entry index of each state key of one alert stage."""

    def open(self, key: str) -> EntryIndex:
        """An empty index for `key` (whatever an earlier open of it held is gone)."""
        ...

    def reset(self) -> None:
        """Drop every index (partitions moved, or a batch failed half-applied)."""
        ...

    def close(self) -> None: ...


class MemoryEntries(dict[str, Entry]):
    """The entries as a dict (what tests and the in-process evaluator use)."""

    def put(self, iid: str, entry: Entry) -> None:
        self[iid] = entry

    def delete(self, iid: str) -> None:
        self.pop(iid, None)

    def ordered(self) -> Iterator[tuple[str, Entry]]:
        # a sorted copy: deleting while iterating is safe, and the order is the disk's
        return iter(sorted(self.items()))  # code point order = UTF-8 bytes order


class MemoryEntryIndex:
    """`EntryIndex` in dicts: a dict per chunk, and each id's chunk."""

    __slots__ = ("_chunks", "_where")

    def __init__(self) -> None:
        self._chunks: dict[int, dict[str, Entry]] = {}
        self._where: dict[str, int] = {}

    def get(self, iid: str) -> tuple[int, Entry] | None:
        c = self._where.get(iid)
        return None if c is None else (c, self._chunks[c][iid])

    def put(self, iid: str, chunk: int, entry: Entry, *, known: bool = False) -> None:
        self._where[iid] = chunk
        self._chunks.setdefault(chunk, {})[iid] = entry

    def delete(self, iid: str, chunk: int) -> None:
        if self._where.get(iid) == chunk:
            del self._where[iid]
            entries = self._chunks[chunk]
            del entries[iid]
            if not entries:
                del self._chunks[chunk]

    def ordered(self) -> Iterator[tuple[str, int, Entry]]:
        # a sorted copy: deleting while iterating is safe, and the order is the disk's
        chunks = self._chunks
        return iter([(iid, c, chunks[c][iid]) for iid, c in sorted(self._where.items())])

    def chunk(self, chunk: int) -> Iterator[tuple[str, Entry]]:
        return iter(sorted(self._chunks.get(chunk, {}).items()))


class MemoryEntryStore:
    def open(self, key: str) -> EntryIndex:
        return MemoryEntryIndex()

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass
