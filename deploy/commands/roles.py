"""One role per command, for distributed runs: `journeys worker`, `journeys api`."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def worker(
        definitions: Path = typer.Option(None, help="journey definitions YAML"),
        loglevel: str = typer.Option("info", help="debug, info, warning"),
    ) -> None:
        """Run a stream worker (Faust). Scale by starting more; partitions are shared out."""
        from journeys.settings import WorkerSettings
        from stream.agents.run import run_worker

        run_worker(WorkerSettings.build(definitions_path=definitions), loglevel=loglevel)

    @app.command()
    def api(
        host: str = typer.Option(None, help="bind address (default 127.0.0.1)"),
        port: int = typer.Option(None, help="port (default 8000)"),
        definitions: Path = typer.Option(None, help="journey definitions YAML"),
    ) -> None:
        """Serve the query API and dashboard."""
        import uvicorn

        from api.app import create_app
        from journeys.logs import uvicorn_logging
        from journeys.settings import ApiSettings

        settings = ApiSettings.build(host=host, port=port, definitions_path=definitions)
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                    log_level="info", **uvicorn_logging(settings.log_format))
