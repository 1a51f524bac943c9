"""The Faust app of the stream stage: topology, tables, timers, broker settings.

    raw ──validate──► by-identity ──identity──► by-customer ──customers──► ClickHouse
     │   (aiokafka,     (envelopes,   alias table   (envelopes,  state table   journeys-closed
     │    no Faust)      by device)                  by customer)  + timer      reached hooks
     └─ dead-letter topic + raw table
    dead-letter topic ──archiver──► dead_letters table (stream.agents.dead_letters)

Faust runs the two stateful stages: it owns partition assignment, co-partitioning
(every internal topic and changelog has the same partition count, so partition p of all
of them lands on one worker) and table recovery from the changelogs. The stateless
validate stage runs on its own aiokafka consumer (stream.agents.validate) because Faust's
per-message cost (~300 us) would cap the pipeline at a few thousand events/s; the
internal topics carry envelopes of many events for the same reason (stream.stages.envelopes).

No module-level app: `create_app(settings)` builds one per call.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path
from typing import Any

import faust

from journeys.settings import WorkerSettings
from stream.agents.alerts import install_alerting
from stream.agents.dead_letters import DeadLetterArchiver
from stream.agents.runtime import StreamRuntime
from stream.agents.transport import DEFAULT_FETCH_MAX_WAIT_MS, Transport
from stream.agents.validate import RawValidator
from warehouse.backend import Warehouse

log = logging.getLogger(__name__)

ALIAS_TABLE = "identity-aliases"
STATE_TABLE = "customer-state"
STATS_LOG_INTERVAL_S = 10.0
TICK_INTERVAL_S = 0.5  # timer resolution: abandonment is emitted within ~this of due
ENVELOPES_PER_BATCH = 64  # Faust messages per take (each up to 2,000 events)


def faust_data_dir(settings: WorkerSettings) -> Path:
    """Faust's local directory for this app id (tables, offsets)."""
    return Path(settings.data_dir) / "faust" / settings.app_id


class JourneysApp(faust.App):
    """faust.App using our Kafka transport (short fetch wait, fetched high-waters),
    creating its topics before anything subscribes, and running the validate stage."""

    journeys: StreamRuntime
    fetch_max_wait_ms: int = DEFAULT_FETCH_MAX_WAIT_MS
    fresh_broker: bool = False
    _logged: tuple[int, ...] = ()

    def _new_transport(self) -> Any:
        return Transport(self.conf.broker_consumer, self)

    def topic_partitions(self) -> dict[str, int]:
        """Every topic this app reads or writes, with its partition count."""
        kafka = self.journeys.settings.kafka
        topics = dict.fromkeys(kafka.all_topics(), kafka.partitions)
        for table in self.tables.values():  # identity, customers, alerts
            topics[table.changelog_topic.get_topic_name()] = kafka.partitions
        return topics

    def ensure_topics(self) -> None:
        """Create all topics (blocking). Remembers whether the broker looked new."""
        from journeys.topics import ensure_topics, list_topics

        kafka = self.journeys.settings.kafka
        self.fresh_broker = kafka.by_customer_topic not in list_topics(kafka.bootstrap_servers)
        ensure_topics(kafka.bootstrap_servers, self.topic_partitions(),
                      replication_factor=kafka.replication_factor)

    def prepare_data_dir(self) -> None:
        """Local table state is only valid for the broker it came from: wipe it when
        our topics are new (an in-memory broker was restarted, or a new prefix)."""
        path = faust_data_dir(self.journeys.settings)
        if self.fresh_broker and path.exists():
            log.info("topics are new: wiping local Faust state in %s", path)
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)

    async def on_first_start(self) -> None:
        runtime = self.journeys
        await asyncio.to_thread(self.ensure_topics)
        self.prepare_data_dir()
        await asyncio.to_thread(runtime.sink.open)
        await super().on_first_start()

    async def on_started(self) -> None:
        await super().on_started()  # tables recovered by now
        await self.add_runtime_dependency(
            RawValidator(self.journeys, loop=self.loop, beacon=self.beacon))
        await self.add_runtime_dependency(
            DeadLetterArchiver(self.journeys, loop=self.loop, beacon=self.beacon))

    async def on_stop(self) -> None:
        await super().on_stop()
        await asyncio.to_thread(self.journeys.sink.close)

    async def log_progress(self) -> None:
        """One INFO line per interval while anything moves: what operators grep for."""
        st = self.journeys.stats
        now = (st.events_in, st.events_sessionized, st.batches_flushed, st.flush_failures,
               st.journeys_closed)
        if now != self._logged:
            self._logged = now
            log.info("stream: in=%d valid=%d rejected=%d customers=%d late=%d dup=%d "
                     "merges=%d journeys=%d closed=%d flushes=%d failures=%d",
                     st.events_in, st.events_valid, st.rejected_total, st.events_sessionized,
                     st.late_events, st.duplicates, st.identity_merges,
                     st.journey_rows_written, st.journeys_closed, st.batches_flushed,
                     st.flush_failures)


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
        producer_max_request_size=8 * 1024 * 1024,  # a handover envelope can be large
        # the memory store drops standby partitions' keys after each recovery anyway,
        # so standbys would only cost CPU; a new owner recovers from the changelog
        table_standby_replicas=0,
        topic_partitions=kafka.partitions,
        topic_replication_factor=kafka.replication_factor,
        web_enabled=settings.web_enabled,
        web_bind="127.0.0.1",
        web_host="127.0.0.1",
        web_port=settings.web_port,
        worker_redirect_stdouts=False,
    )
    runtime = app.journeys = StreamRuntime(app, settings, warehouse)
    by_identity = app.topic(kafka.by_identity_topic, schema=_raw_schema(),
                            partitions=kafka.partitions)
    by_customer = app.topic(kafka.by_customer_topic, schema=_raw_schema(),
                            partitions=kafka.partitions)
    # Values are written with explicit partitions (stream.stages.envelopes.partition_for), so
    # a key's changelog partition is its source partition and recovery follows it.
    runtime.aliases = app.Table(ALIAS_TABLE, default=None, partitions=kafka.partitions,
                                key_type=bytes, value_type=bytes,
                                help="anonymous_id -> customer_id (stream.stages.identity)")
    runtime.states = app.Table(STATE_TABLE, default=None, partitions=kafka.partitions,
                               key_type=bytes, value_type=bytes,
                               help="per-customer sessions + journeys (stream.stages.customers)")
    runtime.states.on_recover(runtime.on_states_recovered)

    async def identity(stream: faust.StreamT) -> None:
        await runtime.run_batches(stream, ENVELOPES_PER_BATCH, runtime.handle_identity)

    async def customers(stream: faust.StreamT) -> None:
        await runtime.run_batches(stream, ENVELOPES_PER_BATCH, runtime.handle_customers)

    app.agent(by_identity, name="journeys.identity")(identity)
    app.agent(by_customer, name="journeys.customers")(customers)
    runtime.alerts = install_alerting(app, runtime)  # step-reached -> alerts (stream.agents.alerts)
    app.timer(TICK_INTERVAL_S, name="journeys.tick")(runtime.tick)
    app.timer(STATS_LOG_INTERVAL_S, name="journeys.stats")(app.log_progress)
    return app


def committed_stages(kafka_topics: Any, app_id: str) -> tuple[tuple[str, str], ...]:
    """(topic, consumer group) of each stage in processing order: a worker is done with
    everything produced so far when each group has committed its topic's end offsets
    (each stage commits a batch only after its outputs are durable). For tests and ops."""
    from stream.agents.dead_letters import dead_letter_group
    from stream.agents.validate import validate_group

    return ((kafka_topics.raw_topic, validate_group(app_id)),
            (kafka_topics.by_identity_topic, app_id),
            (kafka_topics.by_customer_topic, app_id),
            (kafka_topics.dead_letter_topic, dead_letter_group(app_id)))
