"""`--wait` of `journeys ingest` / `journeys generate`: progress while the pipeline
catches up with the run, then what became of it, loudly when data was left out
(deploy.ops.wait; docs/operations.md)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from deploy.discovery import Target


class RunWaiter:
    """Snapshot the raw topic before producing; after it, wait and report."""

    def __init__(self, target: Target, timeout_s: float, err: Console) -> None:
        from deploy.ops.context import warehouse_source
        from deploy.ops.wait import now_utc, raw_ends
        from journeys.settings import WorkerSettings

        self.target, self.timeout_s, self.err = target, timeout_s, err
        self.source = warehouse_source(WorkerSettings.build(), target)
        self.before = raw_ends(target)
        self.started = now_utc()

    def finish(self, *, refused: int, out: Console) -> None:
        """Wait for the run (progress on stderr), then print its fate on `out`."""
        import time

        from deploy.ops.wait import raw_ends, run_report, wait_processed

        after = raw_ends(self.target)
        began = time.monotonic()
        self.err.print(f"waiting until the run is queryable (timeout {self.timeout_s:.0f} s; "
                       f"warehouse: {self.source.where}) …")
        with Progress(TextColumn("[bold]{task.description:>12}"), BarColumn(),
                      TaskProgressColumn(), TextColumn("{task.completed:,}/{task.total:,}"),
                      TimeElapsedColumn(), console=self.err, transient=False) as bars:
            tasks: dict[str, Any] = {}

            def progress(stage: Any, done: int, todo: int) -> None:
                if stage.name not in tasks:
                    tasks[stage.name] = bars.add_task(stage.name, total=max(todo, 0))
                bars.update(tasks[stage.name], completed=done if todo else 1,
                            total=max(todo, done, 1))

            wait_processed(self.target, self.before, after, timeout_s=self.timeout_s,
                           progress=progress)
        result = run_report(self.target, self.source, self.before, after, self.started)
        result.seconds = time.monotonic() - began
        self._print(result, refused, out)

    def _print(self, result: Any, refused: int, out: Console) -> None:
        c = result.counts
        out.print(f"[green]processed:[/] the run's {result.records:,} raw records are in the "
                  f"warehouse ({result.seconds:.1f} s after producing); newest raw row "
                  f"written {result.newest_raw_at or '-'}")
        out.print(f"late: {c['late']:,}; dead-lettered by the worker: {c['dead']:,}; "
                  f"refused before producing: {refused:,}")
        left_out = c["late"] + c["dead"] + refused
        if left_out:
            self.err.print(
                f"[bold red]warning:[/] {left_out:,} events of this run are not in the "
                f"journeys: {c['late']:,} late (kept in the raw table only; "
                "GET /v1/late-events, `journeys replay` re-applies them), "
                f"{c['dead'] + refused:,} dead-lettered (`journeys dlq list`; fix and "
                "`journeys dlq redrive`)")
        if c["late_customers"]:
            self.err.print(f"[bold yellow]warning:[/] {c['late_customers']:,} events were late "
                           "at the customer stage since the run started (any source)")


def found_settings(bootstrap: str | None, prefix: str | None) -> tuple[Any, Any]:
    """CollectorSettings with the broker to use: explicit settings, else a running
    `journeys up` (deploy.discovery, which says which stack it found), and the target."""
    from deploy.discovery import resolve
    from journeys.settings import CollectorSettings

    err = Console(stderr=True, soft_wrap=True)
    base = CollectorSettings.build()
    target = resolve(base.kafka, "", base.data_dir, bootstrap=bootstrap, prefix=prefix,
                     console=err)
    update: dict[str, Any] = {"kafka": target.kafka}
    if target.spool_dir is not None:
        update["spool_dir"] = target.spool_dir
        _await_replay(target.spool_dir, err)
    elif target.stack is not None:
        err.print(f"[bold yellow]warning:[/] the `journeys {target.stack.stack.kind}` stack "
                  "keeps what it is sent in its broker's memory only: a crash of it loses "
                  "what it has not processed yet (only `journeys up` spools)")
    return base.model_copy(update=update), target


def _await_replay(spool_dir: Path, err: Console, timeout_s: float = 600.0) -> None:
    """A `journeys up` that is starting replays its spool first; what is produced
    before that would come ahead of older events (ingest.spool "the gate"). Waits, with
    a note, until it is done; ServiceUnavailable after `timeout_s`."""
    from ingest.spool import gate_is_open
    from journeys.errors import ServiceUnavailable

    if gate_is_open(spool_dir):
        err.print(f"[dim]appending what is sent to the stack's spool {spool_dir} before "
                  "producing it (kept over a crash of `journeys up`)[/]")
        return
    err.print("the `journeys up` stack is starting (replaying its spool, waiting for its "
              "worker); waiting until it is ready …")
    deadline = time.monotonic() + timeout_s
    while not gate_is_open(spool_dir):
        if time.monotonic() > deadline:
            raise ServiceUnavailable(f"the `journeys up` stack did not get ready within "
                                     f"{timeout_s:.0f} s (its spool {spool_dir} is not "
                                     "replayed yet); see its output")
        time.sleep(0.5)


def _target(target: Any) -> Any:
    """The target with the workers' app id (settings, else the stack's): for --wait."""
    import dataclasses

    from journeys.settings import WorkerSettings

    worker = WorkerSettings.build()
    if target.stack is not None and "app_id" not in worker.model_fields_set:
        return dataclasses.replace(target, app_id=target.stack.stack.app_id)
    return dataclasses.replace(target, app_id=worker.app_id)


def waiter(target: Any, wait: bool, timeout_s: float, err: Console) -> Any:
    """For --wait: the raw topic's ends before producing (deploy.commands._runwait)."""
    if not wait:
        return None
    return RunWaiter(_target(target), timeout_s, err)


def finish(waiter: Any, refused: int, out: Console) -> None:
    """--wait after producing; a timeout is exit 1 with the stage that is behind."""
    from deploy.ops.wait import WaitTimeout

    try:
        waiter.finish(refused=refused, out=out)
    except WaitTimeout as exc:
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None
