"""`journeys demo` and `journeys up`: the whole embedded stack in one command."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

_DAY = 86_400_000


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        port: int = typer.Option(None, help="API/dashboard port (default 8000)"),
        days: int = typer.Option(3, min=1, max=30, help="days of generated history"),
        visitors_per_hour: float = typer.Option(60.0, min=1, help="sample volume"),
        seed: int = typer.Option(7, help="random seed of the sample"),
        data_dir: Path = typer.Option(Path(".journeys/demo"), help="where the demo keeps data"),
        keep: bool = typer.Option(False, help="keep data from a previous demo run"),
    ) -> None:
        """Start broker + chdb + worker + API in one process, load a generated
        multi-channel sample with known stories, serve the dashboard, print the URL."""
        from deploy.embedded import Sample, run_embedded
        from ingest.generator import GeneratorConfig, demo_stories, generate_events
        from journeys.settings import EmbeddedSettings

        settings = EmbeddedSettings.build(port=port, data_dir=data_dir)
        config = GeneratorConfig(seed=seed, duration_ms=days * _DAY,
                                 visitors_per_hour=visitors_per_hour,
                                 stories=demo_stories(days * _DAY))
        sample = Sample(lambda: generate_events(config),
                        f"{days} days of generated traffic (seed {seed}, with a checkout loop, "
                        "a payment incident and a call-centre switch)")
        run_embedded(settings, sample=sample, fresh=not keep, console=Console())

    @app.command()
    def up(
        port: int = typer.Option(None, help="API/dashboard port (default 8000)"),
        data_dir: Path = typer.Option(None, help="data directory (default .journeys)"),
        definitions: Path = typer.Option(None, help="journey definitions YAML"),
    ) -> None:
        """Embedded stack serving live traffic: broker, worker, API (and collector)."""
        from deploy.embedded import run_embedded
        from journeys.settings import EmbeddedSettings

        settings = EmbeddedSettings.build(port=port, data_dir=data_dir,
                                          definitions_path=definitions)
        run_embedded(settings, sample=None, fresh=False, console=Console())
