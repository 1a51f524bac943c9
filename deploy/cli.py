"""The `journeys` console script: one command per role, plus demo/up/migrate/ingest.

Settings are built once here (per command) and passed down; stage modules are imported
inside commands so `journeys --help` stays fast and a role loads only what it runs.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from journeys.errors import JourneysError

app = typer.Typer(
    name="journeys",
    help="Customer-journey analytics on a stream: sessions, journeys, detours, "
    "abandonment and drop-off alerts in real time.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)


def _register() -> None:
    from deploy.commands import (
        collector,
        dlq,
        embedded,
        forget,
        ingest,
        ops,
        replay,
        roles,
        topics,
        warehouse,
    )

    for module in (embedded, roles, topics, ingest, collector, warehouse, ops, dlq, forget,
                   replay):
        module.register(app)


def main() -> None:
    """Entry point: product errors become one clear line and exit code 2, not a traceback."""
    _register()
    try:
        app()
    except JourneysError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
