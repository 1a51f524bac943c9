"""File import: CSV, JSONL and Parquet exports onto the raw topic, in bounded memory.

Files are read in chunks (pandas for CSV, pyarrow row batches for Parquet, since pandas
cannot chunk Parquet; JSONL line by line with orjson, because pandas fails a whole
chunk on one bad line and a bad line must be reported on its own). At most two chunks
are unconfirmed at a time, so memory stays flat whatever the file size. Rejected rows
go to a local file and to the dead-letter topic, with the file name and row number as
Kafka headers.
"""

from __future__ import annotations

import time
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import orjson

from ingest.mapping import ColumnMapping, RowMapper, row_bytes
from ingest.producer import Delivery, Headers, TouchpointProducer
from journeys.errors import ConfigError, ServiceUnavailable
from journeys.events import EventValidator, Rejection, Touchpoint

Format = Literal["csv", "jsonl", "parquet"]
STAGE = "import"
_SUFFIXES: dict[str, Format] = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".jsonl": "jsonl",
                                ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet",
                                ".pq": "parquet"}


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


@dataclass
class _Chunk:
    records: list[Any]  # dicts, or a str reason for a line that is not even a record
    raws: list[bytes | None]
    rows: list[int]  # 1-based data row number of each record
    done: int
    total: int | None


def detect_format(path: Path, explicit: str | None = None) -> Format:
    if explicit:
        if explicit not in ("csv", "jsonl", "parquet"):
            raise ConfigError(f"unknown format {explicit!r}: use csv, jsonl or parquet")
        return explicit  # type: ignore[return-value]
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in (".gz",)]
    for suffix in reversed(suffixes):
        if suffix in _SUFFIXES:
            return _SUFFIXES[suffix]
    raise ConfigError(f"cannot tell the format of {path.name}: name it .csv/.jsonl/.parquet "
                      "or pass --format")


# -- readers (each yields bounded chunks) ------------------------------------------------

def _tell(handle: IO[bytes]) -> int:
    try:
        return handle.tell()
    except (OSError, ValueError):
        return 0


def _csv_chunks(path: Path, opts: ImportOptions) -> Iterator[_Chunk]:
    import pandas as pd
    from pandas.errors import ParserWarning

    total = path.stat().st_size
    with path.open("rb") as handle:
        reader = pd.read_csv(handle, chunksize=opts.chunk_rows, dtype=str,
                             keep_default_na=False, na_filter=False, sep=opts.delimiter,
                             encoding=opts.encoding, on_bad_lines="warn",
                             encoding_errors="replace")
        first = 1
        with reader:
            while True:
                # pandas skips a line with too many fields and only warns: catch the
                # warning so the line is reported and dead-lettered, not lost.
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", ParserWarning)
                    frame = next(reader, None)
                skipped = [str(w.message).strip() for w in caught
                           if issubclass(w.category, ParserWarning)]
                if frame is None and not skipped:
                    break
                records: list[Any] = frame.to_dict("records") if frame is not None else []
                raws: list[bytes | None] = [None] * len(records)
                bad_rows = []
                for message in skipped:  # "Skipping line 7: expected 3 fields, saw 4"
                    records.append(f"bad_csv_line: {message.removeprefix('Skipping ')}")
                    raws.append(message.encode())
                    line = message.split(":")[0].rpartition(" ")[2]
                    bad_rows.append(int(line) - 1 if line.isdigit() else 0)
                rows, first = _number(len(records) - len(bad_rows), first, bad_rows)
                if bad_rows:  # back into file order
                    order = sorted(zip(rows + bad_rows, records, raws, strict=True),
                                   key=lambda t: t[0])
                    rows, records, raws = (list(x) for x in zip(*order, strict=True))
                    bad_rows = []
                yield _Chunk(records, raws, rows + bad_rows, _tell(handle), total)
                if frame is None:
                    break


def _jsonl_chunks(path: Path, opts: ImportOptions) -> Iterator[_Chunk]:
    total = path.stat().st_size
    with path.open("rb") as handle:
        records: list[Any] = []
        raws: list[bytes | None] = []
        row, first, done = 0, 1, 0
        for line in handle:
            done += len(line)
            line = line.strip()
            if not line:
                continue
            row += 1
            try:
                obj = orjson.loads(line)
                records.append(obj if isinstance(obj, dict)
                               else f"not_an_object: got {type(obj).__name__}")
            except orjson.JSONDecodeError as exc:
                records.append(f"invalid_json: {exc.args[0] if exc.args else exc}")
            raws.append(line)
            if len(records) >= opts.chunk_rows:
                yield _Chunk(records, raws, list(range(first, row + 1)), done, total)
                records, raws, first = [], [], row + 1
        if records:
            yield _Chunk(records, raws, list(range(first, row + 1)), done, total)


def _parquet_chunks(path: Path, opts: ImportOptions) -> Iterator[_Chunk]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    total = pf.metadata.num_rows
    first, done = 1, 0
    for batch in pf.iter_batches(batch_size=opts.chunk_rows):
        records = batch.to_pylist()
        done += len(records)
        yield _Chunk(records, [None] * len(records), list(range(first, done + 1)), done, total)
        first = done + 1


def _number(count: int, first: int, skipped: list[int]) -> tuple[list[int], int]:
    """Data row numbers for `count` parsed rows from `first`, skipping the bad lines'
    rows (pandas leaves those out of the frame); returns them and the next number."""
    taken = set(skipped)
    rows: list[int] = []
    n = first
    while len(rows) < count:
        if n not in taken:
            rows.append(n)
        n += 1
    while n in taken:
        n += 1
    return rows, n


def _columns(path: Path, fmt: Format, opts: ImportOptions) -> list[str] | None:
    """Header columns, to check the mapping before reading gigabytes."""
    if fmt == "csv":
        import pandas as pd

        return [str(c) for c in pd.read_csv(path, nrows=0, sep=opts.delimiter,
                                            encoding=opts.encoding).columns]
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return list(pq.ParquetFile(path).schema_arrow.names)
    return None  # JSONL: every line has its own keys


_READERS: dict[Format, Callable[[Path, ImportOptions], Iterator[_Chunk]]] = {
    "csv": _csv_chunks, "jsonl": _jsonl_chunks, "parquet": _parquet_chunks}


# -- the import ---------------------------------------------------------------------------

def map_chunk(
    chunk: _Chunk, mapper: RowMapper, validator: EventValidator
) -> tuple[list[Touchpoint], list[int], list[Rejection], list[int]]:
    """Map and validate one chunk: (touchpoints, their rows, rejections, their rows)."""
    good: list[Touchpoint] = []
    good_rows: list[int] = []
    bad: list[Rejection] = []
    bad_rows: list[int] = []
    for record, raw, row in zip(chunk.records, chunk.raws, chunk.rows, strict=True):
        if isinstance(record, str):  # unparseable line
            bad.append(Rejection(record, raw or b""))
            bad_rows.append(row)
            continue
        original = raw if raw is not None else row_bytes(record)
        wire = mapper.map(record)
        result = (Rejection(wire, original, _event_id(record)) if isinstance(wire, str)
                  else validator.validate(wire, original))
        if isinstance(result, Rejection):
            bad.append(result)
            bad_rows.append(row)
        else:
            good.append(result)
            good_rows.append(row)
    return good, good_rows, bad, bad_rows


def _event_id(record: dict[str, Any]) -> str | None:
    value = record.get("event_id")
    return value if isinstance(value, str) else None


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
    mapper = RowMapper(opts.mapping, _columns(path, fmt, opts))
    validator = validator or EventValidator()
    report = ImportReport(path=path)
    rejects = _Rejects(opts.rejects_path or Path.cwd() / f"{path.name}.rejected.jsonl")
    name = path.name.encode()
    unconfirmed: deque[Delivery] = deque()
    started = time.perf_counter()
    try:
        for chunk in _READERS[fmt](path, opts):
            good, good_rows, bad, bad_rows = map_chunk(chunk, mapper, validator)
            for row, rej in zip(bad_rows, bad, strict=True):
                rejects.write(row, rej)
                report.reasons[rej.reason.partition(":")[0]] += 1
                if len(report.first_rejections) < opts.max_reasons:
                    report.first_rejections.append((row, rej.reason))
            report.rows += len(chunk.records)
            report.rejected += len(bad)
            report.accepted += len(good)
            if producer is not None:
                delivery, oversized = producer.send_batch(
                    good, bad, stage=STAGE,
                    headers=[_headers(name, r) for r in good_rows],
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
