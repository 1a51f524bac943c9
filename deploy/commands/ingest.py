"""`journeys ingest`, `journeys generate`, `journeys collector` (owned by the ingest stage)."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from deploy.commands._runwait import finish as _finish
from deploy.commands._runwait import found_settings as _found_settings
from deploy.commands._runwait import waiter as _waiter


def _out() -> Console:
    return Console(soft_wrap=True)


def _err() -> Console:
    return Console(stderr=True, soft_wrap=True)


_KAFKA = typer.Option(None, "--bootstrap-servers", "-b",
                      help="Kafka bootstrap servers (default: settings/env, else a running "
                      "`journeys up`)")
_PREFIX = typer.Option(None, "--topic-prefix", help="topic name prefix (default: settings)")
_WAIT = typer.Option(False, "--wait", help="return once what was produced is queryable "
                     "(every stage caught up, the warehouse written), with progress; print "
                     "the run's late and dead-lettered counts")
_WAIT_TIMEOUT = typer.Option(600.0, min=1, help="seconds --wait waits at most (exit 1)")


def _ensure_topics(kafka: Any, *, required: bool = True, hint: str = "") -> None:
    """Create the product's topics if the raw topic is missing (Tansu would auto-create
    it with 4 partitions); leave existing topics alone whatever their partition count."""
    from journeys.errors import ServiceUnavailable
    from journeys.topics import ensure_journey_topics, topic_partitions

    try:
        have = topic_partitions(kafka.bootstrap_servers,
                                [kafka.raw_topic, kafka.dead_letter_topic], timeout_s=10)
        if len(have) < 2:
            ensure_journey_topics(kafka, timeout_s=30)
    except ServiceUnavailable as exc:
        if required:
            raise ServiceUnavailable(f"{exc}{hint}") from exc
        _err().print(f"[yellow]warning:[/] Kafka at {kafka.bootstrap_servers} is not reachable "
                  "yet; answering 503 until it is")


def _readable_files(files: list[Path], fmt: str | None, spool: contextlib.ExitStack,
                    err: Console) -> list[Path]:
    """The files to import: '-' (standard input) and pipes or devices (/dev/stdin, a
    process substitution) are copied to a temporary file first, because the default
    event-time order reads every file twice (a read pass, then the produce pass)."""
    out: list[Path] = []
    for path in files:
        if str(path) != "-" and not path.exists():
            raise typer.BadParameter(f"{path}: no such file")
        if path.is_dir():
            raise typer.BadParameter(f"{path} is a directory")
        if str(path) != "-" and path.is_file():
            out.append(path)
            continue
        name = "stdin" if str(path) == "-" else path.name
        suffix = f".{fmt}" if fmt else "".join(path.suffixes)
        if not suffix:
            raise typer.BadParameter(f"{path}: pass --format (csv, jsonl or parquet) to "
                                     "read standard input or a pipe")
        tmp = Path(spool.enter_context(tempfile.TemporaryDirectory(prefix="journeys-in-")))
        copy = tmp / f"{name}{suffix}"
        err.print(f"reading {'standard input' if name == 'stdin' else path} into {copy}")
        with (contextlib.nullcontext(sys.stdin.buffer) if str(path) == "-"
              else path.open("rb")) as src, copy.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        out.append(copy)
    return out


def _import_ordered(progress: Progress, files: list[Path], settings: Any, mapping: Any,
                    update: Any, **kw: Any) -> Any:
    """Both passes of an import in time order, each with its progress bar."""
    from ingest.parallel import import_ordered

    task: list[Any] = []

    def produced(done: int, total: int) -> None:
        if not task:
            task.append(progress.add_task("producing in time order", total=total, rows=0,
                                          rate=""))
        progress.update(task[0], completed=done, rows=done)

    return import_ordered(files, settings, mapping, on_read=update, on_produced=produced,
                          **kw)


def _report_ordered(out: Console, err: Console, report: Any, settings: Any) -> None:
    """What the time order did, and loudly, any events the stream will count late."""
    from journeys.timeutil import format_duration_ms, ms_to_iso

    how = ("already in time order" if report.sorted_already else
           f"sorted by event time ({report.spilled_runs} runs on disk)" if report.spilled_runs
           else "sorted by event time in memory")
    out.print(f"produced {report.produced:,} events in event-time order ({how}) in "
              f"{report.seconds:.1f}s")
    if not report.late_total:
        return
    lateness = format_duration_ms(settings.allowed_lateness_ms)
    err.print(f"[bold red]warning:[/] {report.late_total:,} events are older than what the "
              f"raw topic already held by more than the allowed lateness ({lateness}): the "
              "stream counts them late and leaves them out of sessions, journeys and "
              "alerts (they stay in the raw table; GET /v1/late-events lists them, "
              "`journeys replay` re-applies them):")
    for p, n in sorted(report.late.items()):
        newest = report.newest_before.get(p)
        err.print(f"  partition {p}: {n:,} events older than "
                  f"{ms_to_iso(newest) if newest else '?'} - {lateness}")


def _report_files(out: Console, reports: list[Any], dry_run: bool,
                  dead_letter_topic: str) -> None:
    """Each file's rows, accepted and rejected (with the first reasons and where all
    rejected rows went)."""
    for r in reports:
        line = (f"{r.path.name}: {r.rows:,} rows, [green]{r.accepted:,} accepted[/], "
                f"[red]{r.rejected:,} rejected[/] in {r.seconds:.1f}s "
                f"({r.rows_per_s:,.0f} rows/s)")
        out.print(line + (" — dry run, nothing sent" if dry_run else ""))
        if r.rejected:
            codes = ", ".join(f"{code} ×{n}" for code, n in r.reasons.most_common())
            out.print(f"  rejected: {codes}")
            for row, reason in r.first_rejections:
                out.print(f"    row {row}: {reason}")
            where = "" if dry_run else f" and to topic {dead_letter_topic}"
            out.print(f"  all rejected rows: {r.rejects_path}{where}")


def _progress(unit: str) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(),
                    TextColumn("{task.fields[rows]:>10,} " + unit + " [cyan]{task.fields[rate]}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=_err())


def _rate(rows: int, started: float) -> str:
    elapsed = time.perf_counter() - started
    return f"{rows / elapsed:,.0f}/s" if elapsed > 0.2 else ""


def _parse_start(text: str | None, duration_ms: int) -> int | None:
    """ISO-8601 time, or a relative '-3d' (ago); None means now − duration."""
    from journeys.timeutil import datetime_to_ms, now_ms, parse_duration_ms

    if text is None:
        return None
    if text.startswith("-"):
        return (now_ms() - parse_duration_ms(text[1:])) // 60_000 * 60_000
    try:
        return datetime_to_ms(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        raise typer.BadParameter(f"--start {text!r}: use ISO-8601 or e.g. -3d") from None


def register(app: typer.Typer) -> None:
    """Attach the ingest commands to the CLI."""

    @app.command()
    def ingest(
        files: Annotated[list[Path], typer.Argument(
            help="CSV, JSONL or Parquet files (CSV/JSONL may be .gz, .bz2, .xz); '-' "
            "reads standard input (with --format)")],
        fmt: str = typer.Option(None, "--format", help="csv, jsonl or parquet (default: "
                                "from the file name)"),
        event_id_column: str = typer.Option("event_id", help="column with a unique event "
                                            "id; if absent, ids derive from row content"),
        customer_column: str = typer.Option("customer_id", help="known-customer id column"),
        anonymous_column: str = typer.Option("anonymous_id", help="device/cookie id column"),
        type_column: str = typer.Option("type", help="event type column"),
        time_column: str = typer.Option("occurred_at", help="event time column"),
        channel_column: str = typer.Option("channel", help="channel column"),
        source_column: str = typer.Option("source", help="source system column"),
        event_type: str = typer.Option(None, "--type", help="one event type for every row"),
        channel: str = typer.Option(None, help="one channel for every row (e.g. store)"),
        source: str = typer.Option(None, help="one source for every row"),
        timezone: str = typer.Option("UTC", help="zone of times written without one"),
        time_format: str = typer.Option(None, help="strptime format, e.g. '%d/%m/%Y %H:%M'"),
        time_unit: str = typer.Option("ms", help="unit of numeric times: ms or s"),
        extra_columns: str = typer.Option("properties", help="unmapped columns go to "
                                          "'properties' or are 'ignore'd"),
        delimiter: str = typer.Option(",", help="CSV delimiter"),
        chunk_rows: int = typer.Option(10_000, min=100, help="rows per chunk (memory bound)"),
        rejects: Annotated[Path | None, typer.Option(
            help="directory for <file>.rejected.jsonl (default: current directory)")] = None,
        dry_run: bool = typer.Option(False, help="validate only; send nothing"),
        order: str = typer.Option("time", help="time: produce all files' events in event-"
                                  "time order (any file order comes out exact); file: as "
                                  "they are (only for files already in time order)"),
        jobs: int = typer.Option(1, min=1, help="files imported in parallel processes "
                                 "(--order file only)"),
        wait: bool = _WAIT,
        wait_timeout: float = _WAIT_TIMEOUT,
        bootstrap_servers: str = _KAFKA,
        topic_prefix: str = _PREFIX,
    ) -> None:
        """Import touchpoints from CSV/JSONL/Parquet files onto the raw topic.

        Events are produced in event-time order across all files (files may be in any
        order, e.g. grouped by customer), so the stream counts none of them late unless
        the topic already holds newer events: then how many, and where, is printed.
        Bad rows are reported, written to a rejects file and dead-lettered.
        Exits 1 if no row at all was accepted.
        """
        from ingest.mapping import ColumnMapping
        from ingest.parallel import import_files

        out, err = _out(), _err()
        spool = contextlib.ExitStack()
        files = _readable_files(files, fmt, spool, err)
        settings, target = _found_settings(bootstrap_servers, topic_prefix)
        if time_unit not in ("ms", "s") or extra_columns not in ("properties", "ignore"):
            raise typer.BadParameter("--time-unit is ms or s; --extra-columns is "
                                     "properties or ignore")
        if order not in ("time", "file"):
            raise typer.BadParameter("--order is time or file")
        if order == "time" and jobs > 1:
            raise typer.BadParameter("--jobs needs --order file (time order is one stream)")
        mapping = ColumnMapping(
            event_id=event_id_column or None, type=type_column, channel=channel_column,
            occurred_at=time_column, customer_id=customer_column or None,
            anonymous_id=anonymous_column or None, source=source_column or None,
            constant_type=event_type, constant_channel=channel, constant_source=source,
            timezone=timezone, time_format=time_format, time_unit=time_unit,  # type: ignore[arg-type]
            extra_columns=extra_columns)  # type: ignore[arg-type]
        if not dry_run:
            _ensure_topics(settings.kafka, hint=target.unreachable_hint())
        waiter = _waiter(target, wait and not dry_run, wait_timeout, err)
        started = time.perf_counter()
        with _progress("rows") as progress:
            tasks = {i: progress.add_task(p.name, total=None, rows=0, rate="")
                     for i, p in enumerate(files)}

            def update(index: int, rows: int, done: int, total: int | None) -> None:
                progress.update(tasks[index], completed=done, total=total, rows=rows,
                                rate=_rate(rows, started))

            if order == "time" and not dry_run:
                ordered = _import_ordered(progress, files, settings, mapping, update,
                                          fmt=fmt, delimiter=delimiter,
                                          chunk_rows=chunk_rows, rejects_dir=rejects)
                reports = ordered.files
            else:
                ordered = None
                reports = import_files(files, settings, mapping, fmt=fmt,
                                       delimiter=delimiter, chunk_rows=chunk_rows,
                                       rejects_dir=rejects, dry_run=dry_run, jobs=jobs,
                                       on_progress=update)
        accepted = sum(r.accepted for r in reports)
        _report_files(out, reports, dry_run, settings.kafka.dead_letter_topic)
        if ordered is not None:
            _report_ordered(out, err, ordered, settings)
        if accepted == 0:
            err.print("[bold red]error:[/] no row was accepted")
            raise typer.Exit(1)
        spool.close()
        if waiter is not None:
            _finish(waiter, sum(r.rejected for r in reports), out)

    @app.command()
    def generate(
        out_file: Annotated[Path | None, typer.Option(
            "--out", "-o", help="write to a .jsonl/.csv/.parquet file instead of the raw "
            "topic")] = None,
        seed: int = typer.Option(42, help="same seed and start → same events"),
        start: str = typer.Option(None, help="first event time: ISO-8601 or relative like "
                                  "-3d (default: now − duration)"),
        duration: str = typer.Option("1d", help="time span of the traffic, e.g. 3d, 90m"),
        visitors_per_hour: float = typer.Option(200.0, "--visitors-per-hour", "-v",
                                                help="mean visits per hour (daily cycle)"),
        max_events: int = typer.Option(None, help="stop after this many events"),
        story: Annotated[list[str] | None, typer.Option(
            help="inject a story: KIND@OFFSET+DURATION[,share=0.8][,channel=app]; kinds: "
            "checkout_loop, payment_incident, call_center_switch")] = None,
        demo_stories: bool = typer.Option(False, "--demo-stories", help="one of each story "
                                          "on the last day"),
        live: bool = typer.Option(False, help="start now and send each event at its time"),
        rate: float = typer.Option(0.0, help="max events/s to the topic (0: unlimited)"),
        id_prefix: str = typer.Option("", help="prefix for customer/anonymous ids"),
        wait: bool = _WAIT,
        wait_timeout: float = _WAIT_TIMEOUT,
        bootstrap_servers: str = _KAFKA,
        topic_prefix: str = _PREFIX,
    ) -> None:
        """Synthetic multi-channel traffic with identity links and known stories."""
        from ingest import generator as g
        from ingest import stories as st
        from journeys.timeutil import now_ms, parse_duration_ms

        err = _err()
        try:
            span = parse_duration_ms(duration)
            stories = tuple(st.parse_story(s) for s in story or [])
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        config = g.GeneratorConfig(
            seed=seed, start_ms=now_ms() if live else _parse_start(start, span),
            duration_ms=span, visitors_per_hour=visitors_per_hour, max_events=max_events,
            stories=stories, id_prefix=id_prefix)
        if demo_stories:  # at fixed UTC hours of the resolved start (busy afternoon)
            begin = config.resolved_start()
            config = dataclasses.replace(config, start_ms=begin,
                                         stories=stories + st.demo_stories(span, begin))
        for s, begin, end in g.story_windows(config):
            err.print(f"story {s.kind} at {s.target_step}"
                      f"{' on ' + s.channel if s.channel else ''}: "
                      f"{datetime.fromtimestamp(begin / 1000).isoformat(timespec='minutes')} → "
                      f"{datetime.fromtimestamp(end / 1000).isoformat(timespec='minutes')}")
        events = g.generate_events(config)
        waiter = None
        if out_file is None:
            settings, target = _found_settings(bootstrap_servers, topic_prefix)
            _ensure_topics(settings.kafka, hint=target.unreachable_hint())
            waiter = _waiter(target, wait, wait_timeout, err)
        started = time.perf_counter()
        with _progress("events") as progress:
            task = progress.add_task("generate", total=max_events, rows=0, rate="")
            count = [0]

            def advance(n: int) -> None:
                count[0] += n
                progress.update(task, advance=n, rows=count[0], rate=_rate(count[0], started))

            if out_file is not None:
                from ingest.writers import write_events

                n = write_events(events, out_file, on_chunk=advance)
                err.print(f"wrote {n:,} events to {out_file}")
                return
            from ingest.importer import send_events
            from ingest.producer import bulk_producer

            producer = bulk_producer(settings.kafka, client_id="journeys-generate",
                                     spool_dir=settings.spool_dir)
            try:
                report = send_events(events, producer, on_progress=advance,
                                     pace=_pacer(live, rate))
            finally:
                producer.close()
        err.print(f"sent {report.accepted:,} events to {settings.kafka.raw_topic} "
                  f"({report.rows_per_s:,.0f}/s)")
        if waiter is not None:
            _finish(waiter, report.rejected, _out())


def _pacer(live: bool, rate: float) -> Any:
    """Sleep so events go out at their event time (live) and/or at most `rate` per second."""
    if not live and rate <= 0:
        return None
    from journeys.events import parse_occurred_at

    started = time.perf_counter()
    sent = [0]

    def pace(event: dict[str, Any]) -> None:
        if live:
            wait = parse_occurred_at(event["occurred_at"]) / 1000 - time.time()
            if wait > 0:
                time.sleep(wait)
        if rate > 0:
            sent[0] += 1
            ahead = sent[0] / rate - (time.perf_counter() - started)
            if ahead > 0:
                time.sleep(ahead)

    return pace

