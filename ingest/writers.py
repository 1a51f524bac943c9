"""Write wire-format events to JSONL, CSV or Parquet files, in chunks.

Used by `journeys generate --out` and the benchmarks. CSV and Parquet keep
`properties`/`context` as JSON text columns, which `journeys ingest` reads back as
objects, so a generated file round-trips through the importer in any format.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

from ingest.importer import Format, detect_format

COLUMNS = ("event_id", "type", "channel", "occurred_at", "customer_id", "anonymous_id",
           "source", "properties", "context")


def _chunks(events: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    it = iter(events)
    while chunk := list(islice(it, size)):
        yield chunk


def _flat(event: dict[str, Any]) -> dict[str, Any]:
    row = {c: event.get(c) for c in COLUMNS}
    for c in ("properties", "context"):
        row[c] = orjson.dumps(row[c] or {}).decode()
    if not isinstance(row["occurred_at"], str) and row["occurred_at"] is not None:
        row["occurred_at"] = str(row["occurred_at"])
    return row


def write_events(
    events: Iterable[dict[str, Any]],
    path: Path,
    fmt: Format | None = None,
    *,
    chunk_rows: int = 50_000,
    on_chunk: Callable[[int], None] | None = None,
) -> int:
    """Write events to `path` (format from the suffix unless given); returns the count."""
    fmt = detect_format(path, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    if fmt == "jsonl":
        with path.open("wb") as out:
            for chunk in _chunks(events, chunk_rows):
                out.write(b"".join(orjson.dumps(e) + b"\n" for e in chunk))
                count += len(chunk)
                if on_chunk:
                    on_chunk(len(chunk))
        return count
    if fmt == "csv":
        import pandas as pd

        with path.open("w", encoding="utf-8", newline="") as out:
            for i, chunk in enumerate(_chunks(events, chunk_rows)):
                frame = pd.DataFrame([_flat(e) for e in chunk], columns=list(COLUMNS))
                frame.to_csv(out, index=False, header=i == 0)
                count += len(chunk)
                if on_chunk:
                    on_chunk(len(chunk))
        return count
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(c, pa.string()) for c in COLUMNS])
    with pq.ParquetWriter(path, schema) as writer:
        for chunk in _chunks(events, chunk_rows):
            writer.write_table(pa.Table.from_pylist([_flat(e) for e in chunk], schema=schema))
            count += len(chunk)
            if on_chunk:
                on_chunk(len(chunk))
    return count
