"""The Faust app of the stream stage: topology, tables, timers, broker settings.

    raw ──validate──► by-identity ──identity──► by-customer ──customers──► ClickHouse
     │   (aiokafka,     (envelopes,   alias table   (envelopes,  state table   journeys-closed
     │    no Faust)      by device)                  by customer)   ▲    │     step-reached
     │                                                 handovers ───┘◄───┘      ──alerts──►
     └─ dead-letter topic + raw table
    dead-letter topic ──archiver──► dead_letters table (stream.agents.dead_letters)

Faust runs the stateful stages: it owns partition assignment, co-partitioning (every
internal topic and changelog has the same partition count, so partition p of all of
them lands on one worker) and table recovery from the changelogs. The validate stage
runs on its own aiokafka consumer (stream.agents.validate) because Faust's per-message
cost (~300 us) would cap the pipeline at a few thousand events/s; the internal topics
carry envelopes of many events for the same reason (stream.stages.envelopes).

No module-level app: `create_app(settings)` builds one per call. The agents share a
`StageContext` (stream.agents.context); none of them holds the app.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import faust

from journeys.definitions import load_definitions
from journeys.events import EventValidator
from journeys.settings import KafkaConfig, WorkerSettings
from journeys.stages import stages
from journeys.topics import (
    CHANGELOG_TOPIC_CONFIGS,
    PRODUCER_MAX_REQUEST_BYTES,
    TOPIC_CONFIGS,
    ensure_topics,
    list_topics,
)
from stream.agents.alerts import ALERT_TABLE, AlertWorker
from stream.agents.context import StageContext, run_batches
from stream.agents.crash_journal import CrashJournal
from stream.agents.customers import CustomerAgent
from stream.agents.dead_letters import DeadLetterArchiver
from stream.agents.identity import IdentityAgent
from stream.agents.local_state import (
    entry_store,
    faust_data_dir,
    memory_budget,
    store_options,
    timer_indexes,
)
from stream.agents.rocks_memory import register_store
from stream.agents.sink import WarehouseSink
from stream.agents.stats import StreamStats, stats_line
from stream.agents.transport import (
    DEFAULT_FETCH_MAX_WAIT_MS,
    Consumer,
    OffsetGuard,
    Transport,
)
from stream.agents.validate import RawValidator
from stream.agents.web import install_pages, ready_problems
from stream.gc_tuning import TRIM_INTERVAL_S, release_free_memory
from stream.stages.customers import CustomerStage
from stream.stages.identity import IdentityStage
from stream.stages.validate import ValidateStage
from warehouse.backend import Warehouse

log = logging.getLogger(__name__)

ALIAS_TABLE = "identity-aliases"
STATE_TABLE = "customer-state"
STATS_LOG_INTERVAL_S = 10.0
TICK_INTERVAL_S = 0.5  # overdue holds and stranded partitions are checked this often
SLOW_TICK_S = 30.0  # a tick this slow is a stall worth a warning (see `periodic`)
MIN_TICK_PAUSE_S = 0.05  # a pause after each tick, however long it took
ENVELOPES_PER_BATCH = 64  # Faust messages per take (each up to 2,000 events)


class JourneysApp(faust.App):
    """faust.App using our Kafka transport (short fetch wait, fetched high-waters),
    creating its topics before anything subscribes, and running the validate stage
    and the dead-letter archiver next to the agents."""

    fetch_max_wait_ms: int = DEFAULT_FETCH_MAX_WAIT_MS
    idempotent_producer: bool = False  # from KafkaConfig (stream.agents.transport.Producer)
    fresh_broker: bool = False
    ctx: StageContext
    stats: StreamStats
    alert_worker: AlertWorker
    offset_guard: OffsetGuard
    validate: ValidateStage
    _logged: tuple[int, ...] = ()
    raw_validator: RawValidator | None = None
    customer_table: Any = None  # per-customer state (stream.stages.customers)

    def _new_transport(self) -> Any:
        return Transport(self.conf.broker_consumer, self)

    def metric_sources(self) -> dict[str, Any]:
        """What this worker's /metrics (and the embedded API's) render (journeys.metrics)."""
        return {"stream": self.stats.samples, "alerts": self.alert_worker.samples,
                "consumers": self.consumer_samples}

    def consumer_samples(self) -> dict[str, Any]:
        """Consumer lag per stage topic and partition this worker owns (records behind
        the log end), and the customers whose state this worker holds."""
        lag: dict[tuple[str, int], int] = {}
        if self.raw_validator is not None:
            lag.update(self.raw_validator.lag())
        if self._consumer is not None:
            lag.update(cast(Consumer, self._consumer).lag())
        return {
            "journeys_consumer_lag_records": {
                (("topic", t), ("partition", p)): n for (t, p), n in lag.items()},
            "journeys_customer_states": len(self.customer_table) if self.customer_table
            is not None else 0,
        }

    def topic_configs(self) -> dict[str, dict[str, str]]:
        """Every topic this app reads or writes -> the configs it is created with: the
        tables' changelogs compacted (a table is its changelog: with the default delete
        policy, Apache Kafka would drop state older than its retention)."""
        kafka = self.ctx.settings.kafka
        out = {topic: dict(TOPIC_CONFIGS) for topic in kafka.all_topics()}
        for table in self.tables.values():  # identity, customers, alerts
            out[table.changelog_topic.get_topic_name()] = dict(CHANGELOG_TOPIC_CONFIGS)
        return out

    def ensure_topics(self) -> None:
        """Create all topics that are missing, with their configs (blocking).
        Remembers whether the broker looked new."""
        kafka = self.ctx.settings.kafka
        self.fresh_broker = kafka.by_customer_topic not in list_topics(kafka.bootstrap_servers)
        wanted = self.topic_configs()
        for configs in (TOPIC_CONFIGS, CHANGELOG_TOPIC_CONFIGS):
            ensure_topics(kafka.bootstrap_servers,
                          [t for t, c in wanted.items() if c == configs], kafka.partitions,
                          replication_factor=kafka.replication_factor, configs=configs)

    def prepare_data_dir(self) -> None:
        """Local table state is only valid for the broker it came from: wipe it when
        our topics are new (an in-memory broker was restarted, or a new prefix)."""
        path = faust_data_dir(self.ctx.settings)
        if self.fresh_broker and path.exists():
            log.info("topics are new: wiping local Faust state in %s", path)
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)

    async def on_first_start(self) -> None:
        await asyncio.to_thread(self.ensure_topics)
        self.prepare_data_dir()
        await asyncio.to_thread(self.ctx.sink.open)
        await super().on_first_start()

    async def on_started(self) -> None:
        await super().on_started()  # tables recovered by now
        self.raw_validator = RawValidator(self.ctx, self.validate, loop=self.loop,
                                          beacon=self.beacon)
        await self.add_runtime_dependency(self.raw_validator)
        await self.add_runtime_dependency(
            DeadLetterArchiver(self.ctx, loop=self.loop, beacon=self.beacon))

    async def on_stop(self) -> None:
        await super().on_stop()
        await asyncio.to_thread(self.ctx.sink.close)

    def in_rebalance(self) -> bool:
        return bool(self.rebalancing or getattr(self, "in_recovery", False))

    def active_partitions(self, topic: str) -> set[int]:
        return {tp.partition for tp in self.assignor.assigned_actives() if tp.topic == topic}

    def owns_every_partition(self) -> bool:
        """Running (ready_problems empty) with every partition of the raw topic (the
        validate stage's own consumer) and of the stage topics assigned here: what a
        lone worker, the embedded stack's, is before it can process anything
        (`journeys up` keeps its collector closed until then)."""
        kafka = self.ctx.settings.kafka
        every = set(range(kafka.partitions))
        consumer = self.raw_validator.consumer if self.raw_validator is not None else None
        if consumer is None or ready_problems(self):
            return False
        raw = {tp.partition for tp in consumer.assignment() if tp.topic == kafka.raw_topic}
        return every <= raw and every <= self.active_partitions(kafka.by_identity_topic)

    async def log_progress(self) -> None:
        """One INFO line per interval while anything moves: what operators grep for."""
        st = self.stats
        now = (st.events_in, st.events_sessionized, st.batches_flushed, st.flush_failures,
               st.journeys_closed)
        if now != self._logged:
            self._logged = now
            log.info("%s", stats_line(st))


def _raw_schema() -> faust.Schema:
    """Bytes in, bytes out. One instance per topic, and never for a Table: a Table given
    `schema=` still (de)serializes its changelog as JSON (it derives serializers from
    key_type/value_type only), and a Schema shared with a table made agents receive
    nothing (both measured)."""
    return faust.Schema(key_type=bytes, value_type=bytes,
                        key_serializer="raw", value_serializer="raw")


def _broker_urls(bootstrap_servers: str) -> list[str]:
    return [f"kafka://{s.strip()}" for s in bootstrap_servers.split(",") if s.strip()]


def _faust_app(settings: WorkerSettings) -> JourneysApp:
    kafka = settings.kafka
    return JourneysApp(
        settings.app_id,
        broker=_broker_urls(kafka.bootstrap_servers),
        store=register_store() if settings.state_store == "rocksdb" else "memory://",
        autodiscover=False,
        datadir=str(faust_data_dir(settings)),
        # at_least_once: every stage is idempotent to re-delivery (docs/stream.md)
        processing_guarantee=kafka.processing_guarantee,
        broker_session_timeout=6.0,  # group join takes ~half of it on Tansu
        broker_heartbeat_interval=1.0,
        broker_request_timeout=30.0,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",  # a new group reads everything
        producer_acks=-1,  # all; acks=0 loses batches on Tansu
        producer_linger=0.005,
        producer_max_request_size=PRODUCER_MAX_REQUEST_BYTES,  # handover envelopes
        # the memory store drops standby partitions' keys after each recovery anyway,
        # so standbys would only cost CPU; a new owner recovers from the changelog
        table_standby_replicas=0,
        topic_partitions=kafka.partitions,
        topic_replication_factor=kafka.replication_factor,
        web_enabled=settings.web_enabled,
        web_bind=settings.web_bind,
        web_host="127.0.0.1",  # the advertised URL: no Faust table routing is used
        web_port=settings.web_port,
        worker_redirect_stdouts=False,
    )


def create_app(settings: WorkerSettings, *, warehouse: Warehouse | None = None) -> JourneysApp:
    """Build the stream app. `warehouse` is used as given (not closed); without it the
    app connects from `settings.warehouse` at start and runs the idempotent migration."""
    kafka = settings.kafka
    parts = kafka.partitions
    definitions = load_definitions(settings.definitions_path)
    app = _faust_app(settings)
    memory = memory_budget(settings)
    app.idempotent_producer = kafka.idempotent_producer
    app.stats = StreamStats()
    app.offset_guard = OffsetGuard(lambda: app.consumer)
    app.ctx = ctx = StageContext(
        settings=settings, definitions=definitions, stats=app.stats,
        sink=WarehouseSink(settings.warehouse, warehouse),
        send=lambda *args: app.producer.send(*args), crash=lambda exc: app.crash(exc),
        batches=lambda: app.producer._ensure_producer(),  # type: ignore[attr-defined]
        journal=CrashJournal(faust_data_dir(settings) / "crash-journal",
                             settings.fault_exit_on))
    app.validate = ValidateStage(
        EventValidator(settings.channels), {d.steps[0] for d in definitions.journeys}, parts,
        allowed_lateness_ms=settings.allowed_lateness_ms,
        idle_after_ms=settings.source_idle_ms)
    identity = IdentityAgent(ctx, IdentityStage(parts, parts))
    customers = CustomerAgent(ctx, CustomerStage(definitions, partitions=parts,
                                                 topic=kafka.by_customer_topic,
                                                 path_cap=settings.path_cap,
                                                 cache_customers=settings.state_cache_customers,
                                                 timers=timer_indexes(settings, memory)),
                              lambda: app.consumer)
    customers.stage.committed = customers.committed_offset
    app.alert_worker = alerts = AlertWorker(ctx, entry_store(settings, memory))
    customers.add_reached_hook(alerts.publish_reached)

    def table(name: str, help_: str) -> Any:
        # Values are written with explicit partitions (stream.stages.envelopes.
        # partition_for), so a key's changelog partition is its source partition.
        return app.Table(name, default=None, partitions=parts, key_type=bytes,
                         extra_topic_configs=CHANGELOG_TOPIC_CONFIGS,
                         value_type=bytes, help=help_, **store_options(memory))

    identity.table = table(ALIAS_TABLE, "anonymous_id -> customer (stream.stages.identity)")
    identity.table.on_recover(identity.on_recovered)
    customers.table = table(STATE_TABLE, "per-customer sessions + journeys "
                                         "(stream.stages.customers)")

    async def recovered() -> None:
        app.offset_guard.reset()  # partitions may have moved: start from committed offsets
        await customers.on_recovered(app.active_partitions(kafka.by_customer_topic))

    customers.table.on_recover(recovered)
    app.customer_table = customers.table
    alerts.table = table(ALERT_TABLE, "drop-off alert state per (journey, step) "
                                      "(stream.stages.alerts)")
    alerts.table.on_recover(alerts.on_recovered)
    _agents(app, ctx, identity, customers, alerts)
    install_pages(app)
    return app


def _agents(app: JourneysApp, ctx: StageContext, identity: IdentityAgent,
            customers: CustomerAgent, alerts: AlertWorker) -> None:
    kafka, within = ctx.settings.kafka, ctx.settings.flush_interval_s
    guard = app.offset_guard

    def topic(name: str) -> Any:
        return app.topic(name, schema=_raw_schema(), partitions=kafka.partitions)

    async def identity_agent(stream: faust.StreamT) -> None:
        await run_batches(ctx, stream, ENVELOPES_PER_BATCH, within, identity.handle,
                          guard)

    async def customers_agent(stream: faust.StreamT) -> None:
        await run_batches(ctx, stream, ENVELOPES_PER_BATCH, within, customers.handle,
                          guard)

    async def handovers_agent(stream: faust.StreamT) -> None:
        await run_batches(ctx, stream, ENVELOPES_PER_BATCH, within,
                          customers.handle_handovers, guard)

    async def alerts_agent(stream: faust.StreamT) -> None:
        await alerts.start()
        try:
            await run_batches(ctx, stream, ENVELOPES_PER_BATCH, within, alerts.handle,
                              guard)
        finally:
            await alerts.stop()

    async def tick() -> None:
        await customers.tick(app.in_rebalance())

    app.agent(topic(kafka.by_identity_topic), name="journeys.identity")(identity_agent)
    app.agent(topic(kafka.by_customer_topic), name="journeys.customers")(customers_agent)
    app.agent(topic(kafka.handovers_topic), name="journeys.handovers")(handovers_agent)
    app.agent(topic(kafka.step_reached_topic), name="journeys.alerts")(alerts_agent)
    app.task(periodic(app, TICK_INTERVAL_S, tick, "journeys.tick"))

    async def trim() -> None:  # off the event loop: it walks every arena
        await asyncio.to_thread(release_free_memory)

    app.task(periodic(app, TRIM_INTERVAL_S, trim, "journeys.trim"))
    app.timer(STATS_LOG_INTERVAL_S, name="journeys.stats")(app.log_progress)


def periodic(app: JourneysApp, interval_s: float, work: Callable[[], Awaitable[None]],
             name: str) -> Callable[[], Awaitable[None]]:
    """`work` again `interval_s` after each run ends, until the app stops.

    Not a Faust timer: a timer keeps a fixed rate and warns "Timer … is overlapping"
    whenever one run takes longer than its interval. The tick's work awaits the broker
    (committed offsets), the warehouse (a due batch) and the busy event loop, so under
    load a run often took over 0.5 s: that warning fired at the default level while
    nothing was wrong, and overlapping runs only queue behind each other. Here a run
    never overlaps the next; one that takes longer than SLOW_TICK_S is a real stall
    (warehouse or broker not answering, the loop blocked) and is logged as such."""

    async def loop() -> None:
        while not app.should_stop:
            started = time.monotonic()
            await work()
            took = time.monotonic() - started
            if took > SLOW_TICK_S:
                log.warning("%s took %.1f s (the warehouse, the broker or the event loop is "
                            "stalled; the stage's own logs say which)", name, took)
            await app.sleep(max(interval_s - took, MIN_TICK_PAUSE_S))

    loop.__name__ = loop.__qualname__ = name
    return loop


def committed_stages(kafka_topics: KafkaConfig, app_id: str) -> tuple[tuple[str, str], ...]:
    """(topic, consumer group) of each stage in processing order (journeys.stages; a
    wait checks the handovers topic twice, `Stage.rounds`)."""
    return tuple((s.topic, s.group) for s in stages(kafka_topics, app_id))
