"""An alert state key's open entries stored in arrival chunks (pure: no Faust, no I/O).

Before, every batch that touched a (journey, step) re-encoded *all* its open entries
into a new generation of records: O(open entries) CPU and changelog bytes per batch,
quadratic over a backlog (docs/reliability.md "What grows per open journey"). Now an
entry stays in the chunk it first arrived in: a new one goes into the key's open
(highest) chunk until it holds ENTRIES_PER_RECORD, then into a new one. Each chunk is
one part record with its own generation (`part_key(key, gen, chunk)`); the head lists
every live chunk as [chunk, gen, count]. A batch rewrites only the chunks it put or
deleted an entry in, under a generation newer than any stored (the key's "g"), then the
head, then tombstones of those chunks' old generations and of emptied chunks
(stream/stages/parts.py `store_order`): a crash between groups restores the previous or
the new whole state, never a mix. Under a backlog new arrivals and continuations hit the
recent chunks, and older ones stay untouched until their windows finalize.

Up to ENTRIES_PER_RECORD open entries in all, a state is one record with its entries
inline (by id: its bytes are a function of its content), as always. Stored states of
before read the same way: an inline head, or a head with "g"/"n" whose n parts
`part_key(key, g, i)` are chunks 0..n-1 of generation g.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import orjson

from stream.engine.alert_entries import Entry, EntryIndex
from stream.engine.dropoff import StepAlertState
from stream.stages.parts import part_key

ENTRIES_PER_RECORD = 4096
"""Open entries per record: ~110 bytes an entry (24-hex id, times, a channel of <= 32
characters), so <= ~0.5 MiB a record however large a backlog's unsettled window gets
(measured before: 155k entries made one 12.57 MB record, over the 8 MiB message limit,
and the worker crash-looped)."""

Records = dict[bytes, tuple[int, bytes | None]]


def dumps_exact(obj: Any) -> bytes:
    """orjson's output copied to its size: orjson 3.13 returns bytes whose allocation is
    ~8x their length (2.0 MB for a 254 KB part), and a batch holds every part it rewrote
    until stored (docs/reliability.md "What grows per open journey")."""
    return bytes(memoryview(orjson.dumps(obj)))


def stored_chunks(head: bytes | None) -> tuple[int, list[tuple[int, int]]]:
    """(the key's generation, [(chunk, generation)] of its stored entry records) as a
    head names them; (0, []): entries inline (or no state)."""
    if not head:
        return 0, []
    o = orjson.loads(head)
    gen = int(o.get("g", 0))
    if "c" in o:
        return gen, [(int(c), int(g)) for c, g, _n in o["c"]]
    return gen, [(i, gen) for i in range(int(o.get("n", 0)))]  # stored before chunks


class ChunkedEntries:
    """`AlertEntries` (what StepAlertState sees) over an `EntryIndex`: places each new
    entry in the open chunk, counts every chunk's entries and remembers which changed
    since the key was last stored. Memory: O(chunks), whichever index holds entries."""

    __slots__ = ("_last", "counts", "dirty", "gen", "index", "stored", "top")

    def __init__(self, index: EntryIndex) -> None:
        self.index = index
        self.counts: dict[int, int] = {}  # chunk -> entries (0 until the next store)
        self.top = -1  # the highest chunk in counts: the open one, unless full
        self.dirty: set[int] = set()  # chunks with an entry put or deleted since stored
        self.stored: dict[int, int] = {}  # chunk -> generation of its stored record
        self.gen = 0  # the newest generation the key's stored head names
        self._last: tuple[str, int | None] | None = None  # (id, its chunk) last seen

    # ------------------------------------------------------------- AlertEntries
    def get(self, iid: str) -> Entry | None:
        got = self.index.get(iid)
        self._last = (iid, None if got is None else got[0])
        return None if got is None else got[1]

    def put(self, iid: str, entry: Entry) -> None:
        c = self._chunk_of(iid)
        known = c is not None
        if c is None:
            c = self.top if self.counts.get(self.top, ENTRIES_PER_RECORD) < \
                ENTRIES_PER_RECORD else self.top + 1
            self.counts[c] = self.counts.get(c, 0) + 1
            self.top = max(self.top, c)
        self.index.put(iid, c, entry, known=known)
        self.dirty.add(c)
        self._last = (iid, c)

    def delete(self, iid: str) -> None:
        c = self._chunk_of(iid)
        if c is None:
            return
        self.index.delete(iid, c)
        self.counts[c] -= 1
        self.dirty.add(c)
        self._last = (iid, None)

    def ordered(self) -> Iterator[tuple[str, Entry]]:
        for iid, c, e in self.index.ordered():
            self._last = (iid, c)  # the caller may delete it next
            yield iid, e

    def __len__(self) -> int:
        return sum(self.counts.values())

    def __eq__(self, other: object) -> bool:
        """Equal content (which chunk holds an entry is storage, not state)."""
        items = getattr(other, "ordered", None)
        if items is None:
            return NotImplemented
        return list(self.ordered()) == list(items())

    __hash__ = None  # type: ignore[assignment]

    def _chunk_of(self, iid: str) -> int | None:
        last = self._last
        if last is not None and last[0] == iid:
            return last[1]
        got = self.index.get(iid)
        return None if got is None else got[0]

    # ------------------------------------------------------------------ storage
    def load(self, head: bytes | None, kept: bool, get: Callable[[bytes], bytes | None],
             key: bytes) -> None:
        """After `StepAlertState.restore_head` filled this with the head's inline
        entries: the stored chunks' entries too (when the head was kept), one record at
        a time; whatever is stored counts as unchanged."""
        self.gen, chunks = stored_chunks(head)
        self.stored = dict(chunks)  # a head not kept: its records go at the next store
        if kept:
            for c, g in chunks:
                n = 0
                for iid, e in orjson.loads(get(part_key(key, g, c)) or b"{}").items():
                    self.index.put(iid, c, e)
                    n += 1
                self.counts[c] = self.counts.get(c, 0) + n
                self.top = max(self.top, c)
        self.dirty.clear()

    def records(self, st: StepAlertState, key: bytes, partition: int) -> Records:
        """The table records that store `st` (whose entries this is) from what is stored
        now: inline up to ENTRIES_PER_RECORD entries; else the changed chunks under a new
        generation, the head, and tombstones of every stored record it no longer names."""
        live = {c: n for c, n in self.counts.items() if n > 0}
        self.counts, self.top = live, max(live, default=-1)
        out: Records = {}
        layout: dict[int, int] = {}
        if sum(live.values()) <= ENTRIES_PER_RECORD:
            head = st.dumps()  # one record, as always
            self.gen = 0
        else:
            write = sorted(c for c in live if c in self.dirty or c not in self.stored)
            if write:
                self.gen += 1  # newer than every stored record of the key
            for c in write:
                out[part_key(key, self.gen, c)] = (partition, dumps_exact(dict(
                    self.index.chunk(c))))
            layout = {c: self.gen if c in write else self.stored[c] for c in sorted(live)}
            o = st.head({})  # everything but the entries
            o["g"], o["c"] = self.gen, [[c, g, live[c]] for c, g in layout.items()]
            head = dumps_exact(o)
        out[key] = (partition, head)
        for c, g in self.stored.items():
            if layout.get(c) != g:
                out[part_key(key, g, c)] = (partition, None)
        self.stored = layout
        self.dirty.clear()
        return out
