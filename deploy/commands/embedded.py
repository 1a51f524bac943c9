"""`journeys demo` and `journeys up`: the whole embedded stack in one command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from ingest.generator import DEMO_VISITORS_PER_HOUR

_DAY = 86_400_000


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        port: int = typer.Option(None, help="API/dashboard port (default 8000)"),
        days: int = typer.Option(3, min=1, max=30, help="days of generated history"),
        visitors_per_hour: float = typer.Option(
            DEMO_VISITORS_PER_HOUR, min=1,
            help="sample volume (below ~150 the drop-off alerts cannot fire)"),
        seed: int = typer.Option(7, help="random seed of the sample"),
        data_dir: Path = typer.Option(Path(".journeys/demo"), help="where the demo keeps data"),
        keep: bool = typer.Option(False, help="keep data from a previous demo run"),
    ) -> None:
        """Start broker + chdb + worker + API in one process, load a generated
        multi-channel sample with known stories, serve the dashboard, print the URL."""
        from deploy.embedded import Sample, run_embedded
        from ingest.generator import GeneratorConfig, generate_events
        from ingest.stories import demo_stories, unsettled
        from journeys.settings import EmbeddedSettings
        from journeys.timeutil import now_ms

        settings = EmbeddedSettings.build(port=port, data_dir=data_dir)
        span = days * _DAY
        start = (now_ms() - span) // 3_600_000 * 3_600_000  # the last `days`, whole hours
        # busy UTC hours; the payment incident a day (abandon_after) before the end when
        # the span allows: the journeys it ends are abandoned within the sample
        stories = demo_stories(span, start)
        config = GeneratorConfig(seed=seed, start_ms=start, duration_ms=span,
                                 visitors_per_hour=visitors_per_hour, stories=stories)
        console = Console()
        for story in unsettled(stories, span):
            console.print(f"[yellow]warning:[/] with --days {days} the {story.kind} story ends "
                          "less than a day (abandon_after) before the sample does: its "
                          "journeys stay open, not abandoned; pass --days 3 to see them "
                          "abandoned")
        sample = Sample(lambda: generate_events(config),
                        f"{days} days of generated traffic (seed {seed}, with a checkout loop, "
                        "a payment incident and a call-centre switch)")
        run_embedded(settings, sample=sample, fresh=not keep, console=console)

    @app.command()
    def up(
        port: int = typer.Option(None, help="API/dashboard port (default 8000)"),
        data_dir: Path = typer.Option(None, help="data directory (default .journeys)"),
        definitions: Path = typer.Option(None, help="journey definitions YAML"),
        collector_port: int = typer.Option(8001, help="HTTP collector port"),
        collector: bool = typer.Option(True, help="serve POST /v1/events (the collector)"),
    ) -> None:
        """Embedded stack serving live traffic: broker, worker, API and the collector.

        The collector runs as a child process (`journeys collector`, stopped by PID on
        exit): it needs no warehouse, so chdb's one-process rule does not bind it, and
        its kafka-python CPU does not compete with the worker's event loop. It fsyncs
        every record into DATA_DIR/spool before producing it (the broker keeps nothing
        over a stop) and accepts nothing until the spool is replayed and the worker
        runs (ingest.spool)."""
        from deploy.embedded import refuse_running, run_embedded
        from deploy.local._proc import free_port
        from ingest.spool import close_gate
        from journeys.settings import EmbeddedSettings

        console = Console()
        settings = EmbeddedSettings.build(port=port, data_dir=data_dir,
                                          definitions_path=definitions)
        refuse_running(settings.data_dir.resolve())
        if not settings.broker_port:  # fixed now, so the collector knows where to send
            settings = settings.model_copy(update={"broker_port": free_port()})
        spool = settings.data_dir.resolve() / "spool"
        close_gate(spool)  # a gate left open by a run that was killed
        process = (_start_collector(settings, collector_port, console, spool)
                   if collector else None)
        url = f"http://{settings.host}:{collector_port}" if collector else None
        try:
            run_embedded(settings, sample=None, fresh=False, console=console, spool=spool,
                         collector_url=url)
        finally:
            if process is not None:
                process.stop()


def _start_collector(settings: Any, port: int, console: Console, spool: Path) -> Any:
    """`journeys collector` as a child process aimed at the embedded broker's port; it
    answers 503 + Retry-After until the launcher opens the spool's gate."""
    from deploy.local._proc import ManagedProcess, port_is_free, tcp_connects
    from journeys.errors import LauncherError

    if not port_is_free(port, settings.host):
        raise LauncherError(f"collector port {port} on {settings.host} is in use; pass "
                            "--collector-port or --no-collector")
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    bootstrap = f"127.0.0.1:{settings.broker_port}"
    process = ManagedProcess(
        "collector", [sys.executable, "-m", "deploy.cli", "collector", "--host", settings.host,
                      "--port", str(port), "-b", bootstrap,
                      "--topic-prefix", settings.kafka.topic_prefix, "--spool", str(spool)],
        data_dir / "collector.log")
    process.start()
    process.wait_ready(lambda: tcp_connects(settings.host, port), timeout=30,
                       what=f"listening on {settings.host}:{port}")
    console.print(f"  • collector on http://{settings.host}:{port}/v1/events "
                  f"(pid {process.pid}, log {data_dir / 'collector.log'})")
    return process
