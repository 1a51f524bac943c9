"""`journeys collector`: the HTTP collector as a role of its own (owned by the ingest
stage; docs/ingest.md "HTTP collector")."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from deploy.commands.ingest import _KAFKA, _PREFIX, _ensure_topics, _err


def _settings(bootstrap: str | None, prefix: str | None, **fields: Any) -> Any:
    """CollectorSettings from env/file, with the CLI's Kafka overrides merged in."""
    from journeys.settings import CollectorSettings

    base = CollectorSettings.build(**fields)
    update = {k: v for k, v in (("bootstrap_servers", bootstrap), ("topic_prefix", prefix)) if v}
    if not update:
        return base
    kafka = type(base.kafka)(**{**base.kafka.model_dump(), **update})
    return base.model_copy(update={"kafka": kafka})



def register(app: typer.Typer) -> None:
    """Attach the collector command to the CLI."""

    @app.command()
    def collector(
        host: str = typer.Option(None, help="bind address (default 127.0.0.1)"),
        port: int = typer.Option(None, help="port (default 8001)"),
        workers: int = typer.Option(1, min=1, help="processes, each with its own producer"),
        access_log: bool = typer.Option(False, help="log every request"),
        bootstrap_servers: str = _KAFKA,
        topic_prefix: str = _PREFIX,
        spool: Path = typer.Option(
            None, help="fsync every record here before producing it; accept nothing until "
            "a launcher replayed it (`journeys up` passes DATA_DIR/spool)"),
    ) -> None:
        """HTTP collector: POST /v1/events → raw topic (503 + Retry-After if Kafka is down)."""
        import uvicorn

        from journeys import envvars
        from journeys.logs import uvicorn_logging

        err = _err()
        settings = _settings(bootstrap_servers, topic_prefix, host=host, port=port,
                             spool_dir=spool)
        _ensure_topics(settings.kafka, required=False)
        keys = "write keys for " + ", ".join(settings.write_keys) if settings.write_keys \
            else "[yellow]no write keys: anyone may post[/]"
        err.print(f"collector on http://{settings.host}:{settings.port}/v1/events → "
                  f"{settings.kafka.raw_topic} at {settings.kafka.bootstrap_servers}; {keys}")
        if workers == 1:
            from ingest.collector import create_collector_app

            uvicorn.run(create_collector_app(settings), host=settings.host, port=settings.port,
                        access_log=access_log, log_level="info",
                        **uvicorn_logging(settings.log_format))
            return
        # Worker processes build their settings from the environment: pass overrides on.
        os.environ[envvars.KAFKA_BOOTSTRAP_SERVERS] = settings.kafka.bootstrap_servers
        os.environ[envvars.KAFKA_TOPIC_PREFIX] = settings.kafka.topic_prefix
        if settings.spool_dir is not None:  # one segment per process, one gate for all
            os.environ[envvars.COLLECTOR_SPOOL_DIR] = str(settings.spool_dir)
        uvicorn.run("ingest.collector:app_from_env", factory=True, host=settings.host,
                    port=settings.port, workers=workers, access_log=access_log,
                    log_level="info", **uvicorn_logging(settings.log_format))
