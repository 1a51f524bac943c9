"""`journeys migrate` and `journeys retention` — warehouse administration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console


def _single_node(config: Any, command: str) -> None:
    """Compaction and retention work on one node's parts and partitions: on a cluster
    they would have to run on every shard's local tables, which is not built yet."""
    if config.cluster is not None:
        from journeys.errors import ConfigError

        raise ConfigError(f"`journeys {command}` works on a single ClickHouse node; with "
                          f"JOURNEYS_WAREHOUSE__CLUSTER={config.cluster} run it per shard "
                          "against the *_local tables (docs/warehouse.md \"Clusters\")")


def _config(**overrides: Any) -> Any:
    """WarehouseConfig from env/settings file, with the command-line options on top."""
    from journeys.settings import WarehouseConfig, WarehouseRole

    base = WarehouseRole.build().warehouse
    given = {k: v for k, v in overrides.items() if v is not None}
    return WarehouseConfig(**{**base.model_dump(), **given})


def _where(config: Any) -> str:
    return str(config.path) if config.backend == "chdb" else f"{config.host}:{config.port}"


def register(app: typer.Typer) -> None:
    @app.command()
    def migrate(
        backend: str = typer.Option(None, help="chdb (embedded, default) or server"),
        path: Path = typer.Option(None, help="chdb data directory"),
        host: str = typer.Option(None, help="ClickHouse server host"),
        port: int = typer.Option(None, help="ClickHouse server native port"),
        database: str = typer.Option(None, help="database name"),
        cluster: str = typer.Option(None, help="ClickHouse cluster (remote_servers name): "
                                    "Replicated local tables behind Distributed ones"),
    ) -> None:
        """Create or upgrade the ClickHouse schema (idempotent: safe to run any time)."""
        from warehouse.connect import connect
        from warehouse.schema import migrate as run_migrations

        config = _config(backend=backend, path=path, host=host, port=port, database=database,
                         cluster=cluster)
        wh = connect(config)
        try:
            applied = run_migrations(wh, config.cluster)
        finally:
            wh.close()
        out = Console()
        if applied:
            on_cluster = f" (cluster {config.cluster})" if config.cluster else ""
            out.print(f"applied {len(applied)} migration(s) to {config.database} on "
                      f"{_where(config)}{on_cluster}:")
            for name in applied:
                out.print(f"  • {name}")
        else:
            out.print(f"schema of {config.database} on {_where(config)} is up to date")

    @app.command()
    def retention(
        older_than: int = typer.Option(..., "--older-than", min=1,
                                       help="keep this many days; drop months entirely older"),
        table: list[str] = typer.Option(None, help="only these tables (repeat); default all"),
        dry_run: bool = typer.Option(False, "--dry-run", help="list what would be dropped"),
        backend: str = typer.Option(None, help="chdb (embedded, default) or server"),
        path: Path = typer.Option(None, help="chdb data directory"),
        host: str = typer.Option(None, help="ClickHouse server host"),
        port: int = typer.Option(None, help="ClickHouse server native port"),
        database: str = typer.Option(None, help="database name"),
    ) -> None:
        """Drop monthly partitions whose whole month is older than --older-than days
        (touchpoints, sessions, dead letters, alerts, journey instances). Run from cron."""
        from warehouse import retention as ret
        from warehouse.connect import connect

        config = _config(backend=backend, path=path, host=host, port=port, database=database)
        _single_node(config, "retention")
        wh = connect(config, create_database=False)
        try:
            drops = ret.plan(wh, older_than, tables=tuple(table) if table else ret.TABLES)
            removed = 0 if dry_run else ret.apply(wh, drops)
        finally:
            wh.close()
        out = Console()
        verb = "would drop" if dry_run else "dropped"
        cutoff = ret.cutoff_date(older_than)
        if not drops:
            out.print(f"nothing older than {cutoff} in {config.database} on {_where(config)}")
            return
        for d in drops:
            out.print(f"  • {d.table} {d.partition}: {d.rows:,} rows, "
                      f"{d.bytes_on_disk / 1e6:.1f} MB")
        out.print(f"{verb} {len(drops)} partition(s), "
                  f"{sum(d.rows for d in drops) if dry_run else removed:,} rows, "
                  f"entirely before {cutoff}")

    @app.command()
    def compact(
        dry_run: bool = typer.Option(False, "--dry-run", help="list what would be merged"),
        backend: str = typer.Option(None, help="chdb (embedded, default) or server"),
        path: Path = typer.Option(None, help="chdb data directory"),
        host: str = typer.Option(None, help="ClickHouse server host"),
        port: int = typer.Option(None, help="ClickHouse server native port"),
        database: str = typer.Option(None, help="database name"),
    ) -> None:
        """Merge each month of journey instances into one part, so reports read it
        without FINAL (much faster on old servers). Safe any time; run from cron."""
        from warehouse import compaction
        from warehouse.connect import connect

        config = _config(backend=backend, path=path, host=host, port=port, database=database)
        _single_node(config, "compact")
        wh = connect(config, create_database=False)
        try:
            todo = compaction.unsettled(wh)
            if not dry_run:
                compaction.compact(wh, todo)
        finally:
            wh.close()
        out = Console()
        for p in todo:
            out.print(f"  • journey_instances {p.partition}: {p.parts} part(s), {p.rows:,} rows")
        verb = "would compact" if dry_run else "compacted"
        out.print(f"{verb} {len(todo)} partition(s) of {config.database} on {_where(config)}")
