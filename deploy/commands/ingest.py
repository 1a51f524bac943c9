"""`journeys ingest`, `journeys generate`, `journeys collector` (owned by the ingest stage)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach the ingest commands to the CLI."""
