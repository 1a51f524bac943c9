"""What an operations command talks to: the broker (explicit settings, else a running
stack: deploy.discovery) and the warehouse (directly, or the stack's API when its chdb
directory is held by the stack's process)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

from deploy.discovery import Target, resolve
from deploy.ops.sources import DirectWarehouse, StackApi, WarehouseSource
from journeys.errors import ServiceUnavailable
from journeys.settings import WorkerSettings


@contextmanager
def hinted(target: Target) -> Iterator[None]:
    """An unreachable broker's error says how a broker is found, when none was given."""
    try:
        yield
    except ServiceUnavailable as exc:
        raise ServiceUnavailable(f"{exc}{target.unreachable_hint()}") from exc


def ops_target(bootstrap: str | None, prefix: str | None, console: Console
               ) -> tuple[WorkerSettings, Target]:
    """Settings from env/file (one frozen object), and the Kafka side to use."""
    settings = WorkerSettings.build()
    target = resolve(settings.kafka, settings.app_id, settings.data_dir, bootstrap=bootstrap,
                     prefix=prefix, app_id_explicit="app_id" in settings.model_fields_set,
                     console=console)
    return settings, target


def warehouse_source(settings: WorkerSettings, target: Target) -> WarehouseSource:
    """A ClickHouse server: directly. chdb of a running stack: through its API."""
    if settings.warehouse.backend == "chdb" and target.stack is not None:
        return StackApi(target.stack.stack.api_url)
    return DirectWarehouse(settings.warehouse)
