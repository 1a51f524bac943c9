"""`journeys replay`: recompute sessions and journeys from the raw touchpoints in the
warehouse, for a time range or everything, one definition or all, while the stream
runs (docs/operations.md "Replay"; logic in deploy.ops.replay_run)."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.table import Table


def _print(report: Any, dry_run: bool, out: Console) -> None:
    from journeys.timeutil import ms_to_iso

    table = Table(title=("would change (dry run)" if dry_run else "changed") +
                  f" — horizon {ms_to_iso(report.horizon_ms)}")
    for col in ("rows of", "added", "changed", "removed", "unchanged",
                "left to the live stream", "converted/fired before", "after"):
        table.add_column(col, justify="left" if col == "rows of" else "right")
    for name, c in sorted(report.counts.items()):
        before, after = (("-", "-") if name == "(sessions)" else
                         (f"{c.converted_before:,}", f"{c.converted_after:,}"))
        table.add_row(name, f"{c.added:,}", f"{c.changed:,}", f"{c.removed:,}",
                      f"{c.unchanged:,}", f"{c.left_to_live:,}", before, after)
    out.print(table)
    left = sum(c.left_to_live for c in report.counts.values())
    if left:
        out.print(f"[bold yellow]warning:[/] {left:,} open row(s) differ from the live "
                  "stream's and were left to it (it has their newest events); run the "
                  "replay again once they have closed")
    opened = sum(c.open_added for c in report.counts.values())
    if opened:
        out.print(f"[bold yellow]warning:[/] {opened:,} open instance(s) "
                  f"{'would be' if dry_run else 'were'} added that no worker had written "
                  "(a new definition, or history the workers never saw): the workers do "
                  "not hold them, so the stream will not close them; run the replay again "
                  "once their conversion window has passed (docs/operations.md \"Replay\")")


def _report(report: Any, dry_run: bool, as_json: bool, out: Console) -> None:
    """The run's outcome: one JSON object (--json), else the table and what is left."""
    if as_json:
        import orjson

        typer.echo(orjson.dumps({
            "horizon_ms": report.horizon_ms, "version": report.version,
            "dry_run": dry_run, "finished": report.finished,
            "customers": report.groups_done, "customers_total": report.groups_total,
            "resumed_from": report.resumed_from, "events": report.events,
            "rows_written": report.rows_written, "late_applied": report.late_applied,
            "counts": {k: c.as_dict() for k, c in sorted(report.counts.items())},
        }).decode())
        return
    if report.resumed_from:
        out.print(f"resumed: {report.resumed_from:,} customer(s) were done before; the "
                  "counts below are this invocation's")
    _print(report, dry_run, out)
    done = f"{report.groups_done:,} of {report.groups_total:,} customer(s)"
    if report.late_applied:
        out.print(f"late events {'to be ' if dry_run else ''}applied and taken off "
                  f"the late-events list: {report.late_applied:,}")
    if dry_run:
        out.print(f"dry run: {done} recomputed from {report.events:,} events; "
                  "nothing written")
    elif report.finished:
        out.print(f"replayed {done} from {report.events:,} events; "
                  f"{report.rows_written:,} row(s) written")
    else:
        out.print(f"stopped after {done} ({report.rows_written:,} row(s) written); run "
                  f"the same command again to resume (checkpoint {report.checkpoint})")


def _not_held(config: Any, data_dir: Any) -> None:
    """A running `journeys up` holds its chdb directory (one process per directory):
    say so plainly instead of failing inside chdb."""
    from pathlib import Path

    from deploy.stack import find_stack
    from journeys.errors import ServiceUnavailable

    if config.backend != "chdb":
        return
    found = find_stack(data_dir)
    if found is not None and Path(found.stack.warehouse_path).resolve() == Path(
            config.path).resolve():
        raise ServiceUnavailable(
            f"the `journeys {found.stack.kind}` stack in {found.stack.data_dir} (pid "
            f"{found.stack.pid}) holds its chdb warehouse {config.path}: stop it, run "
            "`journeys replay`, start it again (or use a ClickHouse server)")


def register(app: typer.Typer) -> None:
    @app.command("replay")
    def replay_command(
        journey: list[str] = typer.Option(None, "--journey", "-j", help="only this "
                                          "definition (repeat); default all, and sessions"),
        since: str = typer.Option(None, "--since", help="customers with events at or "
                                  "after (ISO-8601 or e.g. 30d ago); rows opened from then"),
        until: str = typer.Option(None, "--until", help="… and before (ISO-8601 or e.g. 1d)"),
        horizon: str = typer.Option(None, "--horizon", help="the watermark to settle up "
                                    "to (ISO-8601); default the newest raw event minus "
                                    "the allowed lateness"),
        dry_run: bool = typer.Option(False, "--dry-run", help="report what would change; "
                                     "write nothing"),
        limit_customers: int = typer.Option(None, "--limit-customers", min=1,
                                            help="stop after this many customers (the "
                                            "next run resumes)"),
        restart: bool = typer.Option(False, "--restart", help="discard an unfinished "
                                     "run's checkpoint and start over"),
        as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    ) -> None:
        """Recompute sessions and journeys from the raw touchpoints (late events
        included) and write what differs; resumable, safe to run twice, live
        processing may go on (docs/operations.md "Replay")."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        from deploy.commands.dlq import _time
        from deploy.ops.replay_run import ReplayRequest, replay, selected
        from journeys.definitions import load_definitions
        from journeys.settings import WorkerSettings
        from warehouse.connect import connect

        settings = WorkerSettings.build()
        cfg = settings.warehouse
        _not_held(cfg, settings.data_dir)
        location = (f"chdb:{cfg.path}/{cfg.database}" if cfg.backend == "chdb"
                    else f"{cfg.host}:{cfg.port}/{cfg.database}")
        req = ReplayRequest(
            journeys=tuple(journey or ()), since_ms=_time(since, "--since"),
            until_ms=_time(until, "--until"), horizon_ms=_time(horizon, "--horizon"),
            dry_run=dry_run, limit_groups=limit_customers, restart=restart)
        defs = load_definitions(settings.definitions_path)
        selected(defs, req.journeys)  # an unknown name fails here, before any work
        out = Console(stderr=as_json, soft_wrap=True)
        wh = connect(cfg, create_database=False)
        try:
            with Progress("[progress.description]{task.description}", BarColumn(),
                          MofNCompleteColumn(), TimeElapsedColumn(), console=out,
                          transient=as_json) as bar:
                task = bar.add_task("customers", total=None)

                def progress(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total)

                report = replay(wh, defs, req, location=location, data_dir=settings.data_dir,
                                allowed_lateness_ms=settings.allowed_lateness_ms,
                                path_cap=settings.path_cap, progress=progress)
        finally:
            wh.close()
        _report(report, dry_run, as_json, out)
