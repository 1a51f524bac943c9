"""`journeys topics`: every topic the product uses, created with its settings, checked."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table


def register(app: typer.Typer) -> None:
    @app.command()
    def topics(
        alter: bool = typer.Option(False, "--alter",
                                   help="set the configs of existing topics that fall short"),
    ) -> None:
        """Create the topics a worker uses (raw, dead-letter, internal, its tables'
        changelogs) with their partitions, replication factor and configs, and check the
        ones that exist already. Safe to run twice. Exit code 1 when an existing topic's
        configs fall short and --alter was not given."""
        from journeys.settings import WorkerSettings
        from journeys.topics import alter_configs, config_drift, topic_partitions
        from stream.agents.app import create_app

        settings = WorkerSettings.build()
        servers = settings.kafka.bootstrap_servers
        worker = create_app(settings)
        worker.ensure_topics()
        wanted = worker.topic_configs()
        drift = config_drift(servers, wanted)
        if drift and alter:
            alter_configs(servers, {t: {k: want for k, (_have, want) in kv.items()}
                                    for t, kv in drift.items()})
            drift = config_drift(servers, wanted)
        parts = topic_partitions(servers, wanted)
        out = Console()
        table = Table("topic", "partitions", "configs")
        for topic, configs in wanted.items():
            short = drift.get(topic)
            state = ", ".join(f"{k}={v}" for k, v in configs.items()) if not short else \
                "[bold red]" + ", ".join(f"{k}={have} (wants {want})"
                                         for k, (have, want) in short.items()) + "[/]"
            table.add_row(topic, str(parts.get(topic, "?")), state)
        out.print(table)
        if drift:
            Console(stderr=True).print(
                f"[bold red]warning:[/] {len(drift)} existing topic(s) have configs that fall "
                "short (above); run `journeys topics --alter` to set them")
            raise typer.Exit(1)
