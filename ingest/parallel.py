"""Import many files: all of them as one stream in event-time order (the default), or
each file as it is, optionally in parallel processes (`--order file --jobs N`).

kafka-python produces ~10–15k records/s per process (CPU-bound in pure Python), so the
way past one process is more processes, each with its own producer: `--jobs N` imports
N files at a time, in file order (only for files already in time order: events more
than the allowed lateness behind what a partition already holds are late).
"""

from __future__ import annotations

import multiprocessing
import queue
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from ingest.importer import (
    ImportOptions,
    ImportReport,
    OrderedReport,
    Progress,
    import_file,
    import_in_time_order,
)
from ingest.mapping import ColumnMapping
from ingest.producer import bulk_producer
from journeys.events import EventValidator
from journeys.settings import CollectorSettings

OnProgress = Callable[[int, int, int, int | None], None]  # file index, rows, done, total


def _options(path: Path, mapping: ColumnMapping, rejects_dir: Path | None,
             **kw: Any) -> ImportOptions:
    rejects = (rejects_dir or Path.cwd()) / f"{path.name}.rejected.jsonl"
    return ImportOptions(mapping=mapping, rejects_path=rejects, **kw)


def _one(index: int, path: Path, settings: CollectorSettings, options: ImportOptions,
         dry_run: bool, report_progress: Callable[[int, Progress], None]) -> ImportReport:
    producer = None if dry_run else bulk_producer(
        settings.kafka, client_id="journeys-import", spool_dir=settings.spool_dir)
    try:
        return import_file(path, producer, options,
                           validator=EventValidator(settings.channels),
                           on_progress=lambda p: report_progress(index, p))
    finally:
        if producer is not None:
            producer.close()


def _in_child(index: int, path: Path, settings: CollectorSettings, options: ImportOptions,
              dry_run: bool, progress_queue: Any) -> ImportReport:
    return _one(index, path, settings, options, dry_run,
                lambda i, p: progress_queue.put((i, p.rows, p.done, p.total)))


def import_ordered(
    paths: Sequence[Path],
    settings: CollectorSettings,
    mapping: ColumnMapping,
    *,
    fmt: str | None = None,
    delimiter: str = ",",
    chunk_rows: int = 10_000,
    rejects_dir: Path | None = None,
    run_rows: int = 500_000,
    on_read: OnProgress | None = None,
    on_produced: Callable[[int, int], None] | None = None,
) -> OrderedReport:
    """Import all files as one stream in event-time order (ingest.importer
    `import_in_time_order`), one process: the raw partitions then see time order."""
    from ingest.heads import newest_event_times

    kw = dict(format=fmt, delimiter=delimiter, chunk_rows=chunk_rows)
    opts = [_options(p, mapping, rejects_dir, **kw) for p in paths]
    newest = newest_event_times(settings.kafka)
    producer = bulk_producer(settings.kafka, client_id="journeys-import",
                             spool_dir=settings.spool_dir)

    def read(index: int, p: Progress) -> None:
        if on_read is not None:
            on_read(index, p.rows, p.done, p.total)

    try:
        return import_in_time_order(
            list(paths), producer, opts, validator=EventValidator(settings.channels),
            allowed_lateness_ms=settings.allowed_lateness_ms, newest=newest,
            run_rows=run_rows, on_read=read, on_produced=on_produced)
    finally:
        producer.close()


def import_files(
    paths: Sequence[Path],
    settings: CollectorSettings,
    mapping: ColumnMapping,
    *,
    fmt: str | None = None,
    delimiter: str = ",",
    chunk_rows: int = 10_000,
    rejects_dir: Path | None = None,
    dry_run: bool = False,
    jobs: int = 1,
    on_progress: OnProgress | None = None,
) -> list[ImportReport]:
    """Import each file (in `jobs` processes when > 1); reports in the order given."""
    kw = dict(format=fmt, delimiter=delimiter, chunk_rows=chunk_rows)
    opts = [_options(p, mapping, rejects_dir, **kw) for p in paths]

    def forward(index: int, p: Progress) -> None:
        if on_progress is not None:
            on_progress(index, p.rows, p.done, p.total)

    if jobs <= 1 or len(paths) <= 1:
        return [_one(i, p, settings, o, dry_run, forward)
                for i, (p, o) in enumerate(zip(paths, opts, strict=True))]
    ctx = multiprocessing.get_context("spawn")  # no fork of a process with Kafka threads
    with ctx.Manager() as manager, ProcessPoolExecutor(min(jobs, len(paths)),
                                                       mp_context=ctx) as pool:
        progress_queue = manager.Queue()
        futures: list[Future[ImportReport]] = [
            pool.submit(_in_child, i, p, settings, o, dry_run, progress_queue)
            for i, (p, o) in enumerate(zip(paths, opts, strict=True))]
        while not all(f.done() for f in futures):
            try:
                index, rows, done, total = progress_queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if on_progress is not None:
                on_progress(index, rows, done, total)
        return [f.result() for f in futures]
