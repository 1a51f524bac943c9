"""`journeys status`: how far each stage is, event time, late and dead-lettered counts,
the warehouse's last writes (deploy.ops.status; docs/operations.md)."""

from __future__ import annotations

import sys
from typing import Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from journeys.timeutil import ms_to_iso

_KAFKA = typer.Option(None, "--bootstrap-servers", "-b",
                      help="Kafka bootstrap servers (default: settings/env, else a running "
                      "`journeys up`)")
_PREFIX = typer.Option(None, "--topic-prefix", help="topic name prefix (default: settings)")


def _when(value: Any) -> str:
    return value.isoformat(timespec="seconds").replace("+00:00", "Z") if value else "-"


def _stages_table(report: Any) -> Table:
    table = Table("stage", "topic", "committed", "end", "lag",
                  title="stages (committed offsets vs log end; groups in --json)",
                  title_justify="left")
    for s in report.stages:
        lag = f"[bold yellow]{s.lag:,}[/]" if s.lag else "[green]0[/]"
        committed = f"{s.committed:,}" if s.started else "[dim]never[/]"
        table.add_row(s.stage.name, s.stage.topic, committed, f"{s.end:,}", lag)
    return table


def _event_time(out: Console, report: Any) -> None:
    if report.clocks:
        table = Table("raw partition", "newest event", "watermark", title="event time (the "
                      "validate stage's committed source clocks)", title_justify="left")
        for c in report.clocks:
            table.add_row(str(c.partition), ms_to_iso(c.newest_ms), ms_to_iso(c.watermark_ms))
        out.print(table)
    elif report.event_time_lag:
        lags = ", ".join(f"{k} {v:,.0f} s" for k, v in sorted(report.event_time_lag.items()))
        out.print(f"event time behind the wall clock (the stack's /metrics): {lags}")
    elif report.event_time_lag is not None:
        out.print("event time: none yet (no event read since the stack started)")
    else:
        out.print("[dim]event time: not observable here (the broker keeps no commit "
                  "metadata and no stack API to ask; see the workers' /metrics)[/]")


def _warehouse(out: Console, report: Any) -> None:
    if report.warehouse_error:
        out.print(f"[bold red]warehouse ({report.warehouse_where}) did not answer:[/] "
                  f"{report.warehouse_error}")
        return
    wh = report.warehouse
    if wh is None:
        return
    table = Table("table", "rows", "last part written", title=f"warehouse "
                  f"({report.warehouse_where})", title_justify="left")
    for t in wh.tables:
        table.add_row(t.table, f"{t.rows:,}", _when(t.last_part_at))
    out.print(table)
    out.print(f"newest raw row written: {_when(wh.newest_raw_at)}")
    late = ", ".join(f"{c.stage} {c.count:,}" for c in wh.late) or "none"
    dead = ", ".join(f"{c.stage} {c.count:,}" for c in wh.dead_letters) or "none"
    out.print(f"late events: {late}")
    out.print(f"dead letters: {dead} ({report.dead_letter_records:,} records on the "
              "dead-letter topic; `journeys dlq list`)")


def render(out: Console, report: Any) -> None:
    """The human form of a StatusReport."""
    stack = f" (stack in {report.stack})" if report.stack else ""
    out.print(f"[bold]journeys status[/] at {ms_to_iso(report.checked_at_ms)}: broker "
              f"{report.broker}{stack}, app id {report.app_id}")
    if report.missing_topics:
        out.print(f"[yellow]topics not created yet:[/] {', '.join(report.missing_topics)}")
    out.print(_stages_table(report))
    if report.lag:
        out.print(f"[bold yellow]behind:[/] {report.lag:,} records not committed yet")
    elif report.stages:
        out.print("[green]caught up:[/] every stage has committed its topic's end")
    _event_time(out, report)
    _warehouse(out, report)


def register(app: typer.Typer) -> None:
    @app.command()
    def status(
        as_json: bool = typer.Option(False, "--json", help="one JSON document on stdout"),
        bootstrap_servers: str = _KAFKA,
        topic_prefix: str = _PREFIX,
    ) -> None:
        """Per stage: committed vs end offsets (lag); event time; late and dead-lettered
        counts; the warehouse's rows and last writes. Reads only: safe any time."""
        from deploy.ops.context import hinted, ops_target, warehouse_source
        from deploy.ops.status import collect, to_json

        err = Console(stderr=True, soft_wrap=True)
        settings, target = ops_target(bootstrap_servers, topic_prefix, err)
        with hinted(target):
            report = collect(target, warehouse_source(settings, target))
        if as_json:
            sys.stdout.buffer.write(orjson.dumps(to_json(report), option=orjson.OPT_INDENT_2)
                                    + b"\n")
            return
        render(Console(soft_wrap=True), report)
