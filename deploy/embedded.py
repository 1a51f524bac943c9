"""The embedded stack in one process: local broker child process, chdb, worker, API.

chdb allows one OS process per data directory, so the worker and the API share one
embedded warehouse here (its calls run in threads, off the event loop). The broker is a
child process stopped by PID when this process ends, however it ends.

The broker keeps nothing over a stop, so `journeys up` passes the collector's spool
(ingest.spool): once the worker has its partitions, the whole spool is replayed into the
new broker, and only then does the collector's gate open (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import uvicorn
from rich.console import Console

from deploy import stack as stack_file
from journeys.errors import LauncherError
from journeys.settings import ApiSettings, EmbeddedSettings, KafkaConfig, WarehouseConfig

if TYPE_CHECKING:  # annotations only: run_embedded and its helpers import these lazily
    from stream.agents.run import BackgroundService
    from warehouse.backend import Warehouse


@dataclass(frozen=True)
class Sample:
    """What to feed after start-up (demo) — None for a live-traffic `journeys up`."""

    events: Callable[[], Iterator[dict[str, Any]]]
    description: str


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the Faust worker owns SIGINT/SIGTERM."""

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29
        return None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # uvicorn >= 0.29: installs none
        yield


def _port_free(host: str, port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def embedded_api_settings(settings: EmbeddedSettings, wh_config: WarehouseConfig,
                          kafka: KafkaConfig | None = None) -> ApiSettings:
    """The API role of the embedded stack: its own options (API keys, ...) from the
    environment and the settings file, the shared ones from the embedded settings (the
    broker: where DELETE /v1/customers/{id} sends the stream its forget)."""
    return ApiSettings.build(definitions_path=settings.definitions_path, warehouse=wh_config,
                             host=settings.host, port=settings.port,
                             data_dir=settings.data_dir, channels=settings.channels,
                             kafka=kafka)


def run_embedded(settings: EmbeddedSettings, *, sample: Sample | None, fresh: bool,
                 console: Console, spool: Path | None = None,
                 collector_url: str | None = None) -> None:
    """Start everything, feed the sample (if any) or replay the `spool` (if any), serve
    until Ctrl-C, stop everything. The stack file (deploy.stack) says where it all
    listens while it runs."""
    from deploy.local.broker import LocalBroker
    from stream.agents.app import create_app as create_stream_app
    from stream.agents.run import BackgroundService, build_worker

    data_dir = _claim_data_dir(settings, fresh)
    console.print(f"[bold]journeys[/] embedded stack, data in {data_dir}")
    broker = LocalBroker(port=settings.broker_port, workdir=data_dir / "broker")
    broker.start()
    console.print(f"  • broker (Tansu, in memory) on {broker.bootstrap_servers}")
    stack = stack_file.new_stack(
        kind="demo" if sample is not None else "up", data_dir=str(data_dir),
        broker=broker.bootstrap_servers, topic_prefix=settings.kafka.topic_prefix,
        partitions=settings.kafka.partitions, app_id=settings.app_id,
        api_url=f"http://{settings.host}:{settings.port}", collector_url=collector_url,
        warehouse_path=str(data_dir / "warehouse"))
    stack_file.publish(stack)
    console.print(f"  • stack file {data_dir / stack_file.STACK_FILE} (`journeys ingest`, "
                  "`status`, `dlq` find this stack through it)")

    def running() -> None:
        stack_file.publish(stack.model_copy(update={"state": "running"}))

    try:
        kafka = KafkaConfig(**{**settings.kafka.model_dump(),
                               "bootstrap_servers": broker.bootstrap_servers,
                               "idempotent_producer": False})  # Tansu refuses it
        wh_config = WarehouseConfig(**{**settings.warehouse.model_dump(), "backend": "chdb",
                                       "path": data_dir / "warehouse"})
        worker_settings = settings.model_copy(update={"kafka": kafka, "warehouse": wh_config})
        warehouse = _open_warehouse(wh_config, kafka, spool, console)

        from api.app import create_app

        api_settings = embedded_api_settings(settings, wh_config, kafka)
        stream_app = create_stream_app(worker_settings, warehouse=warehouse)
        holder: dict[str, Any] = {"app": stream_app}
        api_app = create_app(api_settings, warehouse=warehouse,
                             metrics=stream_app.metric_sources())
        url = f"http://{settings.host}:{settings.port}/"
        services = [_api_service(api_app, settings.host, settings.port)]
        if sample is not None:
            services.append(BackgroundService(
                "sample", lambda: _feed(sample, kafka, holder, console, url, running)))
        else:
            services.append(BackgroundService(
                "announce", lambda: _announce(stream_app, kafka, spool, console, url,
                                              running)))

        loglevel = os.environ.get("JOURNEYS_LOGLEVEL", "warning")
        if loglevel.lower() == "warning":
            _quiet_library_chatter()
        worker = build_worker(stream_app, extra_services=services, loglevel=loglevel)
        worker.execute_from_commandline()
    finally:
        stack_file.withdraw(stack)
        broker.stop()


def _claim_data_dir(settings: EmbeddedSettings, fresh: bool) -> Path:
    """The stack's data dir, made (emptied first when `fresh`), once its API port is free
    and no other stack runs on it."""
    if not _port_free(settings.host, settings.port):
        raise LauncherError(
            f"port {settings.port} on {settings.host} is in use; pass --port or set JOURNEYS_PORT"
        )
    data_dir = settings.data_dir.resolve()
    refuse_running(data_dir)
    if fresh and data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    return data_dir


def _open_warehouse(wh_config: WarehouseConfig, kafka: KafkaConfig, spool: Path | None,
                    console: Console) -> Warehouse:
    """The stack's chdb warehouse, migrated; with a spool to replay, the spooled dead
    letters forgotten (the replay archives them again)."""
    from warehouse.connect import connect
    from warehouse.schema import migrate

    warehouse = connect(wh_config)
    applied = migrate(warehouse)
    console.print(f"  • warehouse (chdb) at {wh_config.path}: "
                  f"{len(applied)} migration(s) applied")
    if spool is not None:  # the replay archives the spooled dead letters again
        from stream.agents.dead_letters import WORKER_STAGES
        from warehouse.writers import forget_archived_dead_letters

        forget_archived_dead_letters(warehouse, kafka.dead_letter_topic, WORKER_STAGES)
    return warehouse


def _api_service(api_app: Any, host: str, port: int) -> BackgroundService:
    """The API server as a service of the worker (stopped by its should_exit flag)."""
    from stream.agents.run import BackgroundService

    server = _Server(uvicorn.Config(api_app, host=host, port=port,
                                    log_level="warning", lifespan="on"))
    return BackgroundService(
        "api", server.serve, stop=lambda: setattr(server, "should_exit", True)
    )


def refuse_running(data_dir: Path) -> None:
    """One stack per data dir (chdb would refuse the second anyway, less clearly)."""
    other = stack_file.read_stack(data_dir / stack_file.STACK_FILE)
    if other is not None and stack_file.is_live(other):
        raise LauncherError(f"a `journeys {other.kind}` (pid {other.pid}) is already "
                            f"running on {data_dir}; stop it or pass another --data-dir")


def _quiet_library_chatter() -> None:
    """The demo prints its own progress; these library warnings are expected on a laptop
    (a consumer without group, the selector's slow-task note, Faust's producer buffer
    draining after a bulk feed) and only alarm a first-time user. JOURNEYS_LOGLEVEL=info
    shows everything."""
    import logging

    for name in ("kafka", "faust.transport.producer"):
        logging.getLogger(name).setLevel(logging.ERROR)


async def _announce(app: Any, kafka: KafkaConfig, spool: Path | None, console: Console,
                    url: str, running: Callable[[], None]) -> None:
    """Once the worker owns every raw partition: replay the spool, open the collector's
    gate, say ready. Before, the collector answers 503 (nothing it acknowledged could be
    processed yet, and new events must follow the replayed ones)."""
    while not app.owns_every_partition():
        await asyncio.sleep(0.2)
    console.print("  • worker running, every partition assigned")
    if spool is not None:
        from ingest.spool import open_gate, segments

        if segments(spool):
            await asyncio.to_thread(replay_spool, spool, kafka, console)
        open_gate(spool)
    running()
    console.print(f"\n[bold green]ready[/]: dashboard {url}  API docs {url}docs  (Ctrl-C stops)")
    await asyncio.Event().wait()


def replay_spool(spool: Path, kafka: KafkaConfig, console: Console) -> int:
    """Produce every spooled record to the (new, empty) broker in spool order, with
    progress; returns the number of records. A failure stops `up` (LauncherError):
    serving without the history would answer from half of it."""
    from ingest.producer import TouchpointProducer
    from ingest.spool import SpoolRecord, SpoolStats, replay, spool_bytes
    from ingest.tuning import ProducerTuning

    total = max(1, spool_bytes(spool))
    console.print(f"  • replaying the spool {spool} ({total / 2**20:,.1f} MiB: every event "
                  "ever accepted) …")
    producer = TouchpointProducer(kafka, ProducerTuning.for_bulk(), client_id="journeys-replay")
    started = last = time.monotonic()

    def send(records: list[SpoolRecord]) -> None:
        delivery = producer.send_spooled(records)
        if not delivery.wait(120) or not delivery.ok:
            first = delivery.first_error() or "timed out after 120 s"
            raise LauncherError(f"could not replay the spool into the broker: {first}")

    def progress(stats: SpoolStats) -> None:
        nonlocal last
        if time.monotonic() - last >= 5:
            last = time.monotonic()
            console.print(f"    replayed {stats.records:,} records "
                          f"({stats.frame_bytes / total:.0%})")

    try:
        stats = replay(spool, send, on_progress=progress)
    finally:
        producer.close()
    torn = (f"; {stats.ignored_bytes:,} torn bytes ignored (never acknowledged)"
            if stats.ignored_bytes else "")
    console.print(f"  • replayed {stats.records:,} records from the spool "
                  f"({stats.frames:,} writes) in {time.monotonic() - started:.1f} s{torn}")
    return stats.records


async def _feed(sample: Sample, kafka: KafkaConfig, holder: dict[str, Any], console: Console,
                url: str, running: Callable[[], None]) -> None:
    """Produce the sample to the raw topic, wait until the worker has processed it."""
    from ingest.producer import TouchpointProducer
    from ingest.tuning import ProducerTuning

    await asyncio.sleep(0.5)
    producer = TouchpointProducer(kafka, ProducerTuning.for_bulk(), client_id="journeys-demo")
    done = threading.Event()
    total = 0

    def send(chunk: list[tuple[bytes | None, bytes]]) -> None:
        delivery = producer.send_raw(kafka.raw_topic, chunk)
        if not delivery.wait(60) or not delivery.ok:
            first = next(iter(delivery.errors.values()), "timed out after 60 s")
            raise LauncherError(f"could not produce the sample to {kafka.raw_topic}: {first}")

    def produce() -> int:
        n = 0
        chunk: list[tuple[bytes | None, bytes]] = []
        try:
            for event in sample.events():
                key = (event.get("customer_id") or event.get("anonymous_id") or "").encode()
                chunk.append((key or None, orjson.dumps(event)))
                if len(chunk) >= 5000:
                    send(chunk)
                    n += len(chunk)
                    chunk = []
            if chunk:
                send(chunk)
                n += len(chunk)
        finally:
            producer.close()
            done.set()
        return n

    console.print(f"  • feeding {sample.description} …")
    started = time.monotonic()
    total = await asyncio.to_thread(produce)
    console.print(f"  • {total:,} events on {kafka.raw_topic} "
                  f"({time.monotonic() - started:.1f} s); processing …")
    last = -1
    while True:
        stats = holder["app"].stats if "app" in holder else None
        seen = stats.events_in if stats else 0
        if seen >= total and stats and stats.events_sessionized >= stats.events_valid:
            break
        if seen != last and int(time.monotonic()) % 5 == 0:
            console.print(f"    processed {seen:,}/{total:,}")
            last = seen
        await asyncio.sleep(0.5)
    console.print(f"  • processed {total:,} events in {time.monotonic() - started:.1f} s")
    running()
    console.print(f"\n[bold green]ready[/]: dashboard {url}  API docs {url}docs  (Ctrl-C stops)")
    await asyncio.Event().wait()
