"""Chunked readers for exported touchpoint files: CSV, JSONL, Parquet (optionally .gz,
.bz2 or .xz compressed).

Every reader yields bounded chunks, so a multi-GB file streams in flat memory: pandas
chunks for CSV; pyarrow row batches for Parquet (pandas cannot chunk Parquet; memory
is bounded by the file's row-group size); JSONL line by line with orjson, because pandas
fails a whole chunk on one bad line and each bad line must be reported on its own.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Literal, Protocol, cast

import orjson

from journeys.errors import ConfigError

Format = Literal["csv", "jsonl", "parquet"]
_SUFFIXES: dict[str, Format] = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".jsonl": "jsonl",
                                ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet",
                                ".pq": "parquet"}
_COMPRESSED: dict[str, Callable[[IO[bytes]], IO[bytes]]] = {  # closed by _open
    # typeshed's GzipFile is a BufferedIOBase, not an IO[bytes]; it is a binary file
    ".gz": lambda f: cast(IO[bytes], gzip.GzipFile(fileobj=f)), ".bz2": lambda f: bz2.BZ2File(f),
    ".xz": lambda f: lzma.LZMAFile(f)}  # noqa: SIM115


class ReadOptions(Protocol):
    """What the readers need of the import options."""

    @property
    def chunk_rows(self) -> int: ...
    @property
    def delimiter(self) -> str: ...
    @property
    def encoding(self) -> str: ...


class Chunk:
    """Up to `chunk_rows` rows: `records` (dicts, or a str reason for a line that is not
    even a record), their original bytes (`raws`, JSONL) and 1-based data row numbers.
    CSV and Parquet chunks also carry their rows as an Arrow `table`, which
    ingest.columnar maps without building the dicts (then built on first use only)."""

    __slots__ = ("_records", "done", "raws", "rows", "table", "total")

    def __init__(self, records: list[Any] | None, raws: list[bytes | None], rows: list[int],
                 done: int, total: int | None, table: Any = None) -> None:
        self._records = records
        self.raws = raws
        self.rows = rows
        self.done = done
        self.total = total
        self.table = table

    @property
    def records(self) -> list[Any]:
        if self._records is None:
            self._records = table_records(self.table)
        return self._records

    def __len__(self) -> int:
        return len(self.rows)


def detect_format(path: Path, explicit: str | None = None) -> Format:
    if explicit:
        if explicit not in ("csv", "jsonl", "parquet"):
            raise ConfigError(f"unknown format {explicit!r}: use csv, jsonl or parquet")
        return explicit  # type: ignore[return-value]
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in _COMPRESSED]
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


@contextlib.contextmanager
def _open(path: Path) -> Iterator[tuple[IO[bytes], IO[bytes]]]:
    """(decompressed stream, raw file): exports often come as .gz/.bz2/.xz, and progress
    is measured on the raw file, whose size is the total."""
    with path.open("rb") as raw:
        opener = _COMPRESSED.get(path.suffix.lower())
        if opener is None:
            yield raw, raw
        else:
            with opener(raw) as stream:
                yield stream, raw


def _csv_chunks(path: Path, opts: ReadOptions) -> Iterator[Chunk]:
    import pandas as pd
    from pandas.errors import ParserWarning

    total = path.stat().st_size
    with _open(path) as (handle, raw):
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
                if frame is not None and not skipped:  # the common case: whole frames
                    rows, first = _number(len(frame), first, [])
                    yield Chunk(None, [None] * len(frame), rows, _tell(raw), total,
                                table=_table(frame))
                    continue
                records: list[Any] = _records(frame) if frame is not None else []
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
                yield Chunk(records, raws, rows + bad_rows, _tell(raw), total)
                if frame is None:
                    break


def _table(frame: Any) -> Any:
    """The frame as an Arrow table of its text columns (converted in C)."""
    import pyarrow as pa

    return pa.Table.from_arrays(
        [pa.array(frame[c].to_numpy(), pa.string()) for c in frame.columns],
        names=[str(c) for c in frame.columns])


def table_records(table: Any) -> list[dict[str, Any]]:
    """An Arrow table's rows as dicts, from zipped column lists (`to_pylist()` builds
    each row's dict in a Python loop)."""
    names = table.schema.names
    return [dict(zip(names, values, strict=True))
            for values in zip(*(c.to_pylist() for c in table.columns), strict=True)]


def _records(frame: Any) -> list[dict[str, Any]]:
    """The frame's rows as dicts: zipped column lists, ~3× cheaper than
    `to_dict("records")`, which boxes every cell on its own."""
    names = [str(c) for c in frame.columns]
    columns = [frame[c].tolist() for c in frame.columns]
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


def _jsonl_chunks(path: Path, opts: ReadOptions) -> Iterator[Chunk]:
    total = path.stat().st_size
    with _open(path) as (handle, raw):
        records: list[Any] = []
        raws: list[bytes | None] = []
        row, first = 0, 1
        for line in handle:
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
                yield Chunk(records, raws, list(range(first, row + 1)), _tell(raw), total)
                records, raws, first = [], [], row + 1
        if records:
            yield Chunk(records, raws, list(range(first, row + 1)), total, total)


def _parquet_chunks(path: Path, opts: ReadOptions) -> Iterator[Chunk]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    total = pf.metadata.num_rows
    first, done = 1, 0
    for batch in pf.iter_batches(batch_size=opts.chunk_rows):
        done += batch.num_rows
        yield Chunk(None, [None] * batch.num_rows, list(range(first, done + 1)), done, total,
                    table=batch)
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


def columns(path: Path, fmt: Format, opts: ReadOptions) -> list[str] | None:
    """Header columns, to check the mapping before reading gigabytes."""
    if fmt == "csv":
        import pandas as pd

        return [str(c) for c in pd.read_csv(path, nrows=0, sep=opts.delimiter,
                                            encoding=opts.encoding).columns]
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return list(pq.ParquetFile(path).schema_arrow.names)
    return None  # JSONL: every line has its own keys


READERS: dict[Format, Callable[[Path, ReadOptions], Iterator[Chunk]]] = {
    "csv": _csv_chunks, "jsonl": _jsonl_chunks, "parquet": _parquet_chunks}


