"""The Faust app of the stream stage: topology, broker settings, commit-after-write.

    raw topic ──validate──► by-customer topic (keyed by customer) ──sessions──► ClickHouse
         └─ invalid ──► dead-letter topic (+ warehouse dead_letters)

Both agents consume batches (`take_events`): Faust costs ~300 us per event, so every
per-event step is kept cheap and everything else (state, warehouse, producer waits) is
done once per batch. Faust acks a `take_events` batch when the loop body returns, and
only acked offsets are committed; so the body returns only after the batch's output
is durable (forwards delivered / warehouse flush done). On failure or cancellation the
batch is "nacked" (each message's refcount raised) so the ack in take's `finally`
cannot mark it done, and the events are re-delivered after a restart. All writes are
idempotent (ReplacingMergeTree, deterministic ids and versions), so re-delivery is safe.

No module-level app: `create_app(settings)` builds one per call.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import faust
from faust.types import EventT

from journeys.definitions import load_definitions
from journeys.events import EventValidator, Rejection, Touchpoint
from journeys.settings import WorkerSettings
from journeys.timeutil import now_ms
from stream.processing import SessionStage, customer_key, encode_forward
from stream.sessions import Sessionizer
from stream.sink import DeadLetter, WarehouseSink
from stream.stats import StreamStats, reason_code
from stream.transport import DEFAULT_FETCH_MAX_WAIT_MS, Transport
from warehouse.backend import Warehouse

log = logging.getLogger(__name__)

SESSION_TABLE = "session-state"
FLUSH_RETRY_DEADLINE_S = 300.0  # then the worker crashes (batch left uncommitted)
STATS_LOG_INTERVAL_S = 10.0


def faust_data_dir(settings: WorkerSettings) -> Path:
    """Faust's local directory for this app id (tables, offsets)."""
    return Path(settings.data_dir) / "faust" / settings.app_id


class StreamRuntime:
    """Per-app state the agents share: settings, stats, sessions, the warehouse sink."""

    def __init__(self, app: JourneysApp, settings: WorkerSettings,
                 warehouse: Warehouse | None) -> None:
        self.app = app
        self.settings = settings
        self.stats = StreamStats()
        self.validator = EventValidator(settings.channels)
        definitions = load_definitions(settings.definitions_path)
        self.stage = SessionStage(Sessionizer(definitions.sessions.gap_ms),
                                  settings.allowed_lateness_ms)
        self.sink = WarehouseSink(settings.warehouse, warehouse)
        self.table: Any = None  # the Faust Table, set by create_app
        self.fresh_broker = False  # set when our topics had to be created
        self._logged: tuple[int, ...] = ()

    # ----------------------------------------------------------- topics and start
    def topic_partitions(self) -> dict[str, int]:
        """Every topic this app reads or writes, with its partition count."""
        kafka = self.settings.kafka
        topics = dict.fromkeys(kafka.all_topics(), kafka.partitions)
        topics[self.table.changelog_topic.get_topic_name()] = kafka.partitions
        return topics

    def ensure_topics(self) -> None:
        """Create all topics (blocking). Remembers whether the broker looked new."""
        from deploy.topics import ensure_topics, list_topics

        kafka = self.settings.kafka
        existing = list_topics(kafka.bootstrap_servers)
        self.fresh_broker = kafka.by_customer_topic not in existing
        ensure_topics(kafka.bootstrap_servers, self.topic_partitions(),
                      replication_factor=kafka.replication_factor)

    def prepare_data_dir(self) -> None:
        """Local table state is only valid for the broker it came from: wipe it when
        our topics are new (an in-memory broker was restarted, or a new prefix)."""
        path = faust_data_dir(self.settings)
        if self.fresh_broker and path.exists():
            log.info("topics are new: wiping local Faust state in %s", path)
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)

    async def log_progress(self) -> None:
        """One INFO line per interval while anything moves: what operators grep for."""
        st = self.stats
        now = (st.events_in, st.events_sessionized, st.batches_flushed, st.flush_failures)
        if now != self._logged:
            self._logged = now
            log.info("stream: in=%d valid=%d rejected=%d sessionized=%d late=%d dup=%d "
                     "flushes=%d failures=%d last_flush=%.3fs", st.events_in, st.events_valid,
                     st.rejected_total, st.events_sessionized, st.late_events, st.duplicates,
                     st.batches_flushed, st.flush_failures, st.last_flush_seconds)

    # ----------------------------------------------------------------- batches
    async def handle_raw(self, events: Sequence[EventT]) -> None:
        """Validate; forward valid events keyed by customer, dead-letter the rest.
        Returns once every produced message is acknowledged by the broker."""
        kafka = self.settings.kafka
        producer = self.app.producer
        stats = self.stats
        received = now_ms()
        pending: list[Awaitable[Any]] = []
        dead: list[DeadLetter] = []
        for event in events:
            msg = event.message
            stats.events_in += 1
            result = self.validator.parse(msg.value or b"")
            if isinstance(result, Touchpoint):
                stats.events_valid += 1
                pending.append(await producer.send(
                    kafka.by_customer_topic, customer_key(result).encode(),
                    encode_forward(result), None, None, None))
                continue
            rejection: Rejection = result
            stats.rejected[reason_code(rejection.reason)] += 1
            payload = rejection.to_dead_letter(stage="validate", received_at_ms=received)
            pending.append(await producer.send(
                kafka.dead_letter_topic, msg.key, payload, None, None, None))
            dead.append(DeadLetter(rejection, "validate", received, msg.topic,
                                   msg.partition, msg.offset))
        if pending:
            await asyncio.gather(*pending)
        if dead and self.sink.enabled:
            await self.write_with_retry(lambda: self.sink.write_dead_letters(dead))
            stats.dead_letters_written += len(dead)

    async def handle_by_customer(self, events: Sequence[EventT]) -> None:
        """Sessionize a batch, write raw touchpoints + session rows in one flush, then
        store the new per-customer states (after the write, so a failed write leaves
        the state as it was and re-delivery recomputes the same rows)."""
        batch = self.stage.prepare(
            ((e.message.partition, e.message.key, e.message.value) for e in events),
            self.table.get, self.stats,
        )
        if batch.undecodable:
            log.warning("skipped %d undecodable by-customer records", batch.undecodable)
        if batch.touchpoints or batch.session_rows:
            tps, rows = batch.touchpoints, batch.session_rows
            await self.write_with_retry(lambda: self.sink.write_batch(tps, rows))
            self.stats.touchpoints_written += len(tps)
            self.stats.session_rows_written += len(rows)
        await self.store_states(batch.states)

    async def store_states(self, states: dict[bytes, bytes | None]) -> None:
        """Put new states in the table and wait until their changelog records are
        acknowledged. Faust's own commit-time flush gives up after 0.1 s without
        progress, so a commit could otherwise cover state that never reached the
        changelog (measured: a SIGKILL then restored stale sessions)."""
        table = self.table
        store = table.data
        pending = []
        for key, state in states.items():
            if state is None:
                store.pop(key, None)
                pending.append(table.send_changelog(None, key, None, value_serializer="raw"))
            else:
                store[key] = state
                pending.append(table.send_changelog(None, key, state))
        if pending:
            await asyncio.gather(*pending)

    async def write_with_retry(self, write: Callable[[], object]) -> None:
        """Run a blocking write in a thread; retry with backoff, then give up (raise)."""
        delay, deadline = 0.2, time.monotonic() + FLUSH_RETRY_DEADLINE_S
        while True:
            started = time.perf_counter()
            try:
                await asyncio.to_thread(write)
            except Exception as exc:
                self.stats.flush_failures += 1
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("warehouse write failed (%r); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            self.stats.record_flush(time.perf_counter() - started)
            return

    async def run_batches(self, stream: faust.StreamT,
                          handle: Callable[[Sequence[EventT]], Awaitable[None]]) -> None:
        """The agent loop: batches in, commit only what was handled completely."""
        settings = self.settings
        async for events in stream.take_events(settings.flush_max_events,
                                               within=settings.flush_interval_s):
            try:
                await handle(events)
            except BaseException as exc:
                # take_events acks the batch in its `finally`; one extra reference
                # per message makes that ack a no-op, so the offsets stay uncommitted.
                for event in events:
                    event.message.incref()
                if not isinstance(exc, asyncio.CancelledError):
                    log.exception("batch failed; stopping the worker uncommitted")
                    await self.app.crash(exc)
                raise


class JourneysApp(faust.App):
    """faust.App using our Kafka transport (short fetch wait, fetched high-waters) and
    creating its topics before anything subscribes."""

    journeys: StreamRuntime
    fetch_max_wait_ms: int = DEFAULT_FETCH_MAX_WAIT_MS

    def _new_transport(self) -> Any:
        return Transport(self.conf.broker_consumer, self)

    async def on_first_start(self) -> None:
        runtime = self.journeys
        await asyncio.to_thread(runtime.ensure_topics)
        runtime.prepare_data_dir()
        await asyncio.to_thread(runtime.sink.open)
        await super().on_first_start()

    async def on_stop(self) -> None:
        await super().on_stop()
        await asyncio.to_thread(self.journeys.sink.close)


def _raw_schema() -> faust.Schema:
    """Bytes in, bytes out. One instance per topic, and never for a Table: a Table given
    `schema=` still (de)serializes its changelog as JSON (it derives serializers from
    key_type/value_type only), and a Schema shared with a table made agents receive
    nothing (both measured)."""
    return faust.Schema(key_type=bytes, value_type=bytes,
                        key_serializer="raw", value_serializer="raw")


def _broker_urls(bootstrap_servers: str) -> list[str]:
    return [f"kafka://{s.strip()}" for s in bootstrap_servers.split(",") if s.strip()]


def create_app(settings: WorkerSettings, *, warehouse: Warehouse | None = None) -> JourneysApp:
    """Build the stream app. `warehouse` is used as given (not closed); without it the
    app connects from `settings.warehouse` at start and runs the idempotent migration."""
    kafka = settings.kafka
    app = JourneysApp(
        settings.app_id,
        broker=_broker_urls(kafka.bootstrap_servers),
        store="memory://",
        autodiscover=False,
        datadir=str(faust_data_dir(settings)),
        processing_guarantee="at_least_once",  # exactly_once needs idempotence: not on Tansu
        broker_session_timeout=6.0,  # group join takes ~half of it on Tansu
        broker_heartbeat_interval=1.0,
        broker_request_timeout=30.0,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",  # a new group reads everything
        producer_acks=-1,  # all; acks=0 loses batches on Tansu
        producer_linger=0.005,
        topic_partitions=kafka.partitions,
        topic_replication_factor=kafka.replication_factor,
        web_enabled=settings.web_enabled,
        web_bind="127.0.0.1",
        web_host="127.0.0.1",
        web_port=settings.web_port,
        worker_redirect_stdouts=False,
    )
    runtime = app.journeys = StreamRuntime(app, settings, warehouse)
    raw_topic = app.topic(kafka.raw_topic, schema=_raw_schema(), partitions=kafka.partitions)
    by_customer = app.topic(kafka.by_customer_topic, schema=_raw_schema(),
                            partitions=kafka.partitions)
    # Changelog partition = the key's partition under the default partitioner, which
    # is the by-customer partition of that customer (same key bytes, same count).
    runtime.table = app.Table(SESSION_TABLE, default=None, partitions=kafka.partitions,
                              key_type=bytes, value_type=bytes, use_partitioner=True,
                              help="per-customer open sessions (stream.sessions)")

    async def validate(stream: faust.StreamT) -> None:
        await runtime.run_batches(stream, runtime.handle_raw)

    async def sessions(stream: faust.StreamT) -> None:
        await runtime.run_batches(stream, runtime.handle_by_customer)

    app.agent(raw_topic, name="journeys.validate")(validate)
    app.agent(by_customer, name="journeys.sessions")(sessions)
    app.timer(STATS_LOG_INTERVAL_S, name="journeys.stats")(runtime.log_progress)
    return app
