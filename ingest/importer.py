"""File import: CSV, JSONL and Parquet exports onto the raw topic, in bounded memory.

Files are read in chunks (ingest.readers) and at most two chunks are unconfirmed at a
time, so memory stays flat whatever the file size. Rejected rows go to a local file and
to the dead-letter topic, with the file name and row number as Kafka headers.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from ingest.batchmap import ChunkMapper
from ingest.heap import quiet_gc
from ingest.mapping import ColumnMapping, RowMapper
from ingest.producer import Delivery, Headers, TouchpointProducer
from ingest.readers import READERS, Format, columns, detect_format
from journeys.errors import ConfigError, ServiceUnavailable
from journeys.events import EventValidator, Rejection, Touchpoint

STAGE = "import"
__all__ = ["Format", "ImportOptions", "ImportReport", "Progress", "detect_format",
           "import_file", "send_events"]


@dataclass(frozen=True)
class ImportOptions:
    mapping: ColumnMapping = field(default_factory=ColumnMapping)
    format: Format | None = None  # None: from the file name
    chunk_rows: int = 10_000
    delimiter: str = ","
    encoding: str = "utf-8"
    rejects_path: Path | None = None  # None: <cwd>/<file name>.rejected.jsonl
    max_reasons: int = 10  # rejections listed in the report (all go to the file)
    max_unconfirmed_chunks: int = 2


@dataclass
class ImportReport:
    path: Path
    rows: int = 0
    accepted: int = 0
    rejected: int = 0
    seconds: float = 0.0
    first_rejections: list[tuple[int, str]] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)  # by reason code
    rejects_path: Path | None = None

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Progress:
    rows: int
    done: int  # bytes (CSV, JSONL) or rows (Parquet) read so far
    total: int | None


# -- the import ---------------------------------------------------------------------------

class _Rejects:
    """The local rejects file (JSONL), opened on the first rejection only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[bytes] | None = None

    def write(self, row: int, rej: Rejection) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("wb")
        self._handle.write(orjson.dumps({
            "row": row, "reason": rej.reason, "event_id": rej.event_id,
            "original": rej.raw.decode("utf-8", errors="replace")}) + b"\n")

    def close(self) -> bool:
        if self._handle is None:
            return False
        self._handle.close()
        return True


def import_file(
    path: Path,
    producer: TouchpointProducer | None,
    options: ImportOptions | None = None,
    *,
    validator: EventValidator | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> ImportReport:
    """Import one file. `producer=None` validates only (a dry run: nothing is sent).

    Raises ConfigError for a mapping that does not fit the file, ServiceUnavailable
    when the broker does not confirm (re-running is safe: event ids deduplicate).
    """
    opts = options or ImportOptions()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no such file: {path}")
    fmt = detect_format(path, opts.format)
    validator = validator or EventValidator()
    mapper = ChunkMapper(RowMapper(opts.mapping, columns(path, fmt, opts)), validator)
    report = ImportReport(path=path)
    rejects = _Rejects(opts.rejects_path or Path.cwd() / f"{path.name}.rejected.jsonl")
    name = path.name.encode()
    unconfirmed: deque[Delivery] = deque()
    started = time.perf_counter()
    with quiet_gc():  # ingest.heap: no re-walking the heap per chunk
        try:
            for chunk in READERS[fmt](path, opts):
                mapped = mapper.map(chunk)
                good, good_rows, bad, bad_rows = (mapped.good, mapped.good_rows, mapped.bad,
                                                  mapped.bad_rows)
                _reject(report, rejects, bad_rows, bad, opts)
                report.rows += len(chunk)
                report.accepted += len(good)
                if producer is not None:
                    delivery, oversized = producer.send_batch(
                        good, bad, stage=STAGE, values=mapped.values,
                        headers=_all_headers(name, good_rows),
                        reject_headers=[_headers(name, r) for r in bad_rows])
                    _count_oversized(report, oversized, good, good_rows, rejects, opts)
                    unconfirmed.append(delivery)
                    while len(unconfirmed) > opts.max_unconfirmed_chunks:
                        _confirm(unconfirmed.popleft(), producer)
                if on_progress is not None:
                    on_progress(Progress(report.rows, chunk.done, chunk.total))
            while unconfirmed:
                _confirm(unconfirmed.popleft(), producer)  # type: ignore[arg-type]
        finally:
            report.seconds = time.perf_counter() - started
            if rejects.close():
                report.rejects_path = rejects.path
    return report


def _headers(name: bytes, row: int) -> Headers:
    return [("journeys-file", name), ("journeys-row", str(row).encode())]


def _all_headers(name: bytes, rows: list[int]) -> list[Headers]:
    """`_headers` of each row, the file's header shared: one comprehension per chunk."""
    file = ("journeys-file", name)
    return [[file, ("journeys-row", b"%d" % row)] for row in rows]


def _reject(report: ImportReport, rejects: _Rejects, rows: list[int], bad: list[Rejection],
            opts: ImportOptions) -> None:
    """A chunk's rejected rows: into the rejects file and the report's counts."""
    for row, rej in zip(rows, bad, strict=True):
        rejects.write(row, rej)
        report.reasons[rej.reason.partition(":")[0]] += 1
        if len(report.first_rejections) < opts.max_reasons:
            report.first_rejections.append((row, rej.reason))
    report.rejected += len(bad)


def _count_oversized(report: ImportReport, oversized: list[Rejection],
                     good: list[Touchpoint], rows: list[int], rejects: _Rejects,
                     opts: ImportOptions) -> None:
    """Events the producer refused as too large were dead-lettered; count them as such."""
    if not oversized:
        return
    row_of = {tp.event_id: r for tp, r in zip(good, rows, strict=True)}
    for rej in oversized:
        row = row_of.get(rej.event_id or "", 0)
        rejects.write(row, rej)
        report.reasons["too_large"] += 1
        report.accepted -= 1
        report.rejected += 1
        if len(report.first_rejections) < opts.max_reasons:
            report.first_rejections.append((row, rej.reason))


def _confirm(delivery: Delivery, producer: TouchpointProducer) -> None:
    timeout = producer.tuning.delivery_timeout_ms / 1000 + 5
    if not delivery.wait(timeout) or not delivery.ok:
        err = delivery.first_error() or "no acknowledgement in time"
        raise ServiceUnavailable(f"the broker did not confirm a chunk ({err}); nothing is "
                                 "lost by re-running the import: event ids deduplicate")


def send_events(
    events: Iterable[dict[str, Any]],
    producer: TouchpointProducer,
    *,
    validator: EventValidator | None = None,
    chunk_rows: int = 5_000,
    max_wait_s: float = 0.2,
    pace: Callable[[dict[str, Any]], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Validate and produce wire dicts (e.g. generator output); bad ones are dead-lettered.

    `pace(event)` may sleep before each event (live traffic, rate caps); a chunk is sent
    when full or `max_wait_s` after its first event, so paced traffic flows steadily.
    """
    validator = validator or EventValidator()
    report = ImportReport(path=Path("-"))
    unconfirmed: deque[Delivery] = deque()
    good: list[Touchpoint] = []
    bad: list[Rejection] = []
    opened = started = time.perf_counter()

    def flush() -> None:
        delivery, oversized = producer.send_batch(good, bad, stage="generate")
        report.accepted += len(good) - len(oversized)
        report.rejected += len(bad) + len(oversized)
        for rej in [*bad, *oversized][: max(0, 10 - len(report.first_rejections))]:
            report.first_rejections.append((0, rej.reason))
        unconfirmed.append(delivery)
        while len(unconfirmed) > 2:
            _confirm(unconfirmed.popleft(), producer)
        if on_progress is not None:
            on_progress(len(good) + len(bad))
        good.clear()
        bad.clear()

    for event in events:
        if pace is not None:
            pace(event)
        result = validator.validate(event)
        (bad if isinstance(result, Rejection) else good).append(result)  # type: ignore[arg-type]
        report.rows += 1
        now = time.perf_counter()
        if len(good) + len(bad) == 1:
            opened = now
        if len(good) + len(bad) >= chunk_rows or now - opened >= max_wait_s:
            flush()
    if good or bad:
        flush()
    while unconfirmed:
        _confirm(unconfirmed.popleft(), producer)
    report.seconds = time.perf_counter() - started
    return report


# -- the import in time order (the default of `journeys ingest`) --------------------------

@dataclass
class OrderedReport:
    """What an import in time order did, over all its files."""

    files: list[ImportReport]
    produced: int = 0
    sorted_already: bool = True  # the files' rows came in time order
    spilled_runs: int = 0  # sorted runs written to disk (0: sorted in memory)
    # events produced behind what their raw partition already held, by more than the
    # allowed lateness: the stream will call them late (per raw partition)
    late: dict[int, int] = field(default_factory=dict)
    newest_before: dict[int, int] = field(default_factory=dict)  # partition -> occurred_at
    seconds: float = 0.0

    @property
    def late_total(self) -> int:
        return sum(self.late.values())


def import_in_time_order(
    paths: list[Path],
    producer: TouchpointProducer,
    options: list[ImportOptions],
    *,
    validator: EventValidator | None = None,
    allowed_lateness_ms: int,
    newest: dict[int, int] | None = None,
    run_rows: int = 500_000,
    on_read: Callable[[int, Progress], None] | None = None,
    on_produced: Callable[[int, int], None] | None = None,
) -> OrderedReport:
    """Read and validate every file (rejections reported, written and dead-lettered as in
    `import_file`), then produce all valid events in (occurred_at, event_id) order
    (ingest.ordering), so the stream sees each raw partition in time order: nothing is
    late unless the topic already held newer events (`newest`: raw partition -> newest
    occurred_at there before the import), which is counted per partition."""
    from ingest.ordering import Ordered, TimeOrder

    validator = validator or EventValidator()
    limit = producer.tuning.max_request_size - 1024
    started = time.perf_counter()
    with quiet_gc(), TimeOrder(run_rows) as order:  # ingest.heap
        reports = []
        for index, (path, opts) in enumerate(zip(paths, options, strict=True)):
            reports.append(_read_into(order, index, path, opts, producer, validator, limit,
                                      on_read))
        out = OrderedReport(files=reports, sorted_already=order.in_order,
                            spilled_runs=order.spilled_runs, newest_before=dict(newest or {}))
        names = [p.name.encode() for p in paths]
        unconfirmed: deque[Delivery] = deque()
        batch: list[Ordered] = []

        def send() -> None:
            delivery, where = producer.send_keyed(
                ((it.key, it.value, _headers(names[it.file], it.row)) for it in batch),
                where=bool(out.newest_before))  # partitions matter to the late count only
            for it, p in zip(batch, where, strict=False):
                head = out.newest_before.get(p)
                if head is not None and it.occurred_at < head - allowed_lateness_ms:
                    out.late[p] = out.late.get(p, 0) + 1
            unconfirmed.append(delivery)
            while len(unconfirmed) > 2:
                _confirm(unconfirmed.popleft(), producer)
            out.produced += len(batch)
            if on_produced is not None:
                on_produced(out.produced, order.count)
            batch.clear()

        for item in order:
            batch.append(item)
            if len(batch) >= 10_000:
                send()
        if batch:
            send()
        while unconfirmed:
            _confirm(unconfirmed.popleft(), producer)
    out.seconds = time.perf_counter() - started
    return out


def _read_into(order: Any, index: int, path: Path, opts: ImportOptions,
               producer: TouchpointProducer, validator: EventValidator, limit: int,
               on_read: Callable[[int, Progress], None] | None) -> ImportReport:
    """Pass 1 of the ordered import for one file: valid rows into `order`, rejected rows
    (and events too large for the broker) to the rejects file and the dead-letter topic."""
    from ingest.ordering import Ordered

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no such file: {path}")
    fmt = detect_format(path, opts.format)
    mapper = ChunkMapper(RowMapper(opts.mapping, columns(path, fmt, opts)), validator)
    report = ImportReport(path=path)
    rejects = _Rejects(opts.rejects_path or Path.cwd() / f"{path.name}.rejected.jsonl")
    name = path.name.encode()
    started = time.perf_counter()
    try:
        for chunk in READERS[fmt](path, opts):
            mapped = mapper.map(chunk)
            bad, bad_rows = mapped.bad, mapped.bad_rows
            for tp, value, row in zip(mapped.good, mapped.values, mapped.good_rows,
                                      strict=True):
                if len(value) > limit:
                    bad.append(Rejection(f"too_large: event is {len(value)} bytes, broker "
                                         f"limit {limit}", value[:65_536], tp.event_id))
                    bad_rows.append(row)
                    continue
                order.add(Ordered(tp.occurred_at, tp.event_id, tp.identity_key.encode(),
                                  value, index, row))
                report.accepted += 1
            _reject(report, rejects, bad_rows, bad, opts)
            report.rows += len(chunk)
            if bad:
                delivery, _ = producer.send_batch(
                    (), bad, stage=STAGE,
                    reject_headers=[_headers(name, r) for r in bad_rows])
                _confirm(delivery, producer)
            if on_read is not None:
                on_read(index, Progress(report.rows, chunk.done, chunk.total))
    finally:
        report.seconds = time.perf_counter() - started
        if rejects.close():
            report.rejects_path = rejects.path
    return report
