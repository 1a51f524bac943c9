"""Time order for file imports: any file order in, event-time order out.

Why: every raw partition has its own watermark (docs/semantics.md "Event time"), and an
event older than its partition's watermark is late. A history export in its natural
order (each customer's history together, or several files of different months) would
be mostly late. So `journeys ingest` sorts what it produces by (occurred_at, event_id)
across all its files: then each partition receives its events in time order and
nothing is late, whatever the file order, the partition count or the number of workers.

Memory is bounded: rows are held in a sorted run of at most `run_rows`; fuller runs are
written to a temporary directory (one orjson line per event) and the runs are merged
(heapq.merge) while producing. A file set that fits in one run never touches the disk.
"""

from __future__ import annotations

import heapq
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, NamedTuple

import orjson


class Ordered(NamedTuple):
    """One valid touchpoint as it will be produced."""

    occurred_at: int
    event_id: str
    key: bytes
    value: bytes
    file: int  # index into the import's file list (for the row headers)
    row: int


class TimeOrder:
    """Collect events, then iterate them in (occurred_at, event_id) order."""

    def __init__(self, run_rows: int = 500_000, spill_dir: Path | None = None) -> None:
        if run_rows < 1:
            raise ValueError("run_rows must be positive")
        self.run_rows = run_rows
        self._spill_parent = spill_dir
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._held: list[Ordered] = []
        self._runs: list[Path] = []
        self.count = 0
        self.in_order = True  # the input came sorted already (nothing moved)
        self._last: tuple[int, str] | None = None

    def add(self, item: Ordered) -> None:
        here = (item.occurred_at, item.event_id)
        if self._last is not None and here < self._last:
            self.in_order = False
        self._last = here
        self._held.append(item)
        self.count += 1
        if len(self._held) >= self.run_rows:
            self._spill()

    @property
    def spilled_runs(self) -> int:
        return len(self._runs)

    def _spill(self) -> None:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="journeys-import-",
                                                    dir=self._spill_parent)
        self._held.sort()
        path = Path(self._tmp.name) / f"run-{len(self._runs):05d}.jsonl"
        with path.open("wb") as out:
            for it in self._held:
                out.write(orjson.dumps([it.occurred_at, it.event_id, it.key.decode(),
                                        it.value.decode(), it.file, it.row]))
                out.write(b"\n")
        self._runs.append(path)
        self._held = []

    @staticmethod
    def _read(handle: IO[bytes]) -> Iterator[Ordered]:
        for line in handle:
            t, eid, key, value, f, row = orjson.loads(line)
            yield Ordered(t, eid, key.encode(), value.encode(), f, row)

    def __iter__(self) -> Iterator[Ordered]:
        """Every event once, in order (call once, after the last `add`)."""
        self._held.sort()
        if not self._runs:
            yield from self._held
            return
        handles = [p.open("rb") for p in self._runs]
        try:
            yield from heapq.merge(*(self._read(h) for h in handles), self._held)
        finally:
            for h in handles:
                h.close()

    def close(self) -> None:
        self._held = []
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> TimeOrder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
