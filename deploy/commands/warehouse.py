"""`journeys migrate` (and later retention) — warehouse administration."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console


def register(app: typer.Typer) -> None:
    @app.command()
    def migrate(
        backend: str = typer.Option(None, help="chdb (embedded, default) or server"),
        path: Path = typer.Option(None, help="chdb data directory"),
        host: str = typer.Option(None, help="ClickHouse server host"),
        port: int = typer.Option(None, help="ClickHouse server native port"),
        database: str = typer.Option(None, help="database name"),
    ) -> None:
        """Create or upgrade the ClickHouse schema (idempotent: safe to run any time)."""
        from journeys.settings import WarehouseConfig, WarehouseRole
        from warehouse.connect import connect
        from warehouse.schema import migrate as run_migrations

        base = WarehouseRole.build().warehouse
        overrides = {
            k: v
            for k, v in dict(
                backend=backend, path=path, host=host, port=port, database=database
            ).items()
            if v is not None
        }
        config = WarehouseConfig(**{**base.model_dump(), **overrides})
        wh = connect(config)
        try:
            applied = run_migrations(wh)
        finally:
            wh.close()
        out = Console()
        where = config.path if config.backend == "chdb" else f"{config.host}:{config.port}"
        if applied:
            out.print(f"applied {len(applied)} migration(s) to {config.database} on {where}:")
            for name in applied:
                out.print(f"  • {name}")
        else:
            out.print(f"schema of {config.database} on {where} is up to date")
