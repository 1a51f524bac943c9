"""One frozen settings object per role, built once at the entry point and passed down.

Values come from (highest first): explicit keyword arguments (CLI options), environment
variables (names in journeys.envvars), an optional settings file, defaults. Nothing is
read at import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from journeys import envvars
from journeys.events import DEFAULT_CHANNELS
from journeys.timeutil import parse_duration_ms

DEFAULT_PATH_CAP = 1000  # WorkerSettings.path_cap (stream.engine.runs)
DEFAULT_STATE_CACHE_CUSTOMERS = 20_000  # WorkerSettings.state_cache_customers
DEFAULT_STATE_MEMORY_BYTES = 64 << 20  # WorkerSettings.state_memory_bytes


class KafkaConfig(BaseModel):
    """Where the broker is and what the topics are called (names derive from a prefix)."""

    model_config = ConfigDict(frozen=True)

    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = Field(default="journeys", pattern=r"^[A-Za-z0-9._\-]{1,100}$")
    partitions: int = Field(default=4, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1)
    # kafka-python options of the ingest producers (collector, import, generate, demo
    # feeder) over each role's measured defaults (ingest.tuning), e.g.
    # JOURNEYS_KAFKA__PRODUCER='{"compression_type": "lz4", "linger_ms": 20}'
    producer: dict[str, str | bool | int | float | None] = {}
    # The stream worker's producer (aiokafka) with enable_idempotence: a retry after a
    # lost acknowledgement never writes a record twice. Apache Kafka: on. The embedded
    # Tansu broker refuses it (InitProducerId), so `journeys demo`/`up` turn it off.
    idempotent_producer: bool = True
    # Faust's processing guarantee for the worker's stages. at_least_once (default):
    # every stage is idempotent to re-delivery (docs/stream.md "Exactly once in
    # effect"). exactly_once turns on Faust's Kafka transactions: measured, and not
    # recommended (docs/local-services.md "Exactly-once transactions").
    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"

    @property
    def raw_topic(self) -> str:
        return f"{self.topic_prefix}.touchpoints"

    @property
    def dead_letter_topic(self) -> str:
        return f"{self.topic_prefix}.dead-letter"

    @property
    def by_identity_topic(self) -> str:
        """Internal repartition topic: validated events keyed by device (anonymous id,
        else customer id), where identity stitching keeps its alias table."""
        return f"{self.topic_prefix}.by-identity"

    @property
    def by_customer_topic(self) -> str:
        """Internal repartition topic: touchpoints keyed by the stitched customer."""
        return f"{self.topic_prefix}.by-customer"

    @property
    def handovers_topic(self) -> str:
        """Internal: a stitched device's open state handed to its customer's partition
        (co-partitioned with by-customer; a lane of its own so that a handover never
        waits behind a backlog of events, docs/stream.md "Identity stitching")."""
        return f"{self.topic_prefix}.handovers"

    @property
    def closed_journeys_topic(self) -> str:
        return f"{self.topic_prefix}.journeys-closed"

    @property
    def alerts_topic(self) -> str:
        return f"{self.topic_prefix}.alerts"

    @property
    def step_reached_topic(self) -> str:
        """Internal: "step reached" observations keyed by alert state, plus by-customer
        partition watermarks broadcast to every partition (stream.stages.alerts)."""
        return f"{self.topic_prefix}.step-reached"

    @property
    def redrive_log_topic(self) -> str:
        """`journeys dlq redrive`'s record of what it re-produced (compacted, keyed by
        dead-letter coordinates): each dead letter is redriven at most once."""
        return f"{self.topic_prefix}.dead-letter-redriven"

    def all_topics(self) -> tuple[str, ...]:
        return (
            self.raw_topic,
            self.dead_letter_topic,
            self.by_identity_topic,
            self.by_customer_topic,
            self.handovers_topic,
            self.closed_journeys_topic,
            self.alerts_topic,
            self.step_reached_topic,
        )


class WarehouseConfig(BaseModel):
    """Which ClickHouse: the embedded engine (chdb, default) or a server."""

    model_config = ConfigDict(frozen=True)

    backend: Literal["chdb", "server"] = "chdb"
    path: Path = Path(".journeys/warehouse")
    host: str = "127.0.0.1"
    port: int = 9000
    database: str = Field(default="journeys", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    user: str = "default"
    password: SecretStr = SecretStr("")
    # A ClickHouse cluster (remote_servers name): `journeys migrate` then creates every
    # table as Replicated local tables behind a Distributed one (warehouse.cluster)
    cluster: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def _url_list(v: Any) -> Any:
    """A JSON list, or comma-separated URLs (friendlier in an environment variable)."""
    if isinstance(v, str):
        text = v.strip()
        if text.startswith("["):
            return tuple(orjson.loads(text))
        return tuple(u.strip() for u in text.split(",") if u.strip())
    return v


class AlertingConfig(BaseModel):
    """Where drop-off alerts are POSTed and how hard delivery tries (stream/alerting)."""

    model_config = ConfigDict(frozen=True)

    webhook_urls: Annotated[tuple[str, ...], NoDecode] = ()  # generic JSON payload
    slack_webhook_urls: Annotated[tuple[str, ...], NoDecode] = ()  # Slack-compatible payload
    signing_secret: SecretStr = SecretStr("")  # HMAC-SHA256 signature header when set
    max_attempts: int = Field(default=8, ge=1, le=100)
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=60.0, gt=0)
    timeout_s: float = Field(default=10.0, gt=0)
    queue_size: int = Field(default=10_000, ge=1)

    @field_validator("webhook_urls", "slack_webhook_urls", mode="before")
    @classmethod
    def _urls(cls, v: Any) -> Any:
        return _url_list(v)


class _RoleSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=envvars.PREFIX,
        env_nested_delimiter=envvars.NESTED,
        frozen=True,
        extra="ignore",
    )

    definitions_path: Path | None = None
    channels: tuple[str, ...] = DEFAULT_CHANNELS
    data_dir: Path = Path(".journeys")
    log_format: Literal["text", "json"] = "text"  # json: one object per line (journeys.logs)

    @classmethod
    def build(cls, **overrides: Any) -> Any:
        """Build from env (+ settings file named by JOURNEYS_SETTINGS_FILE) and overrides."""
        env_file = os.environ.get(envvars.SETTINGS_FILE)
        clean = {k: v for k, v in overrides.items() if v is not None}
        return cls(_env_file=env_file, **clean)  # type: ignore[call-arg]


class WarehouseRole(_RoleSettings):
    """Anything that only needs the warehouse (migrate, reports)."""

    warehouse: WarehouseConfig = WarehouseConfig()


FAULT_STAGES = ("validate", "identity", "customers", "alerts")


class WorkerSettings(WarehouseRole):
    """The stream worker (Faust)."""

    kafka: KafkaConfig = KafkaConfig()
    app_id: str = "journeys-worker"
    # how long each Faust stage (identity, customers, handovers, alerts) waits to fill a
    # batch: a wait per hop, so the sum is in every session/journey row's latency
    # (docs/performance.md "Where a session row's latency goes"); backlogs fill batches
    # at once whatever it is
    flush_interval_s: float = Field(default=0.2, gt=0)
    # raw records the validate stage takes per fetch (its batch; the Faust stages take
    # 64 envelopes of up to 2,000 events each, stream/agents/app.py ENVELOPES_PER_BATCH)
    flush_max_events: int = Field(default=10_000, ge=1)
    allowed_lateness_ms: int = Field(default=300_000, ge=0)
    # a raw partition with nothing to read for this long stops holding the others back
    # and its watermark follows the wall clock (docs/semantics.md "Event time")
    source_idle_ms: int = Field(default=10_000, ge=0)
    # events of a journey instance kept verbatim (path, per-event detours); beyond them
    # counts only, so a customer's state stays bounded (docs/semantics.md "Capped paths")
    path_cap: int = Field(default=DEFAULT_PATH_CAP, ge=1, le=100_000)
    # where table values live: "rocksdb" (local RocksDB files under data_dir via
    # rocksdict, with the timer indexes and alert entries: RSS flat in the number of open
    # journeys; docs/reliability.md "Bounded state"; one worker per data dir and app id,
    # stream.agents.local_state.claim_data_dir) or "memory" (a dict, rebuilt from the
    # changelogs at start: ~1.9 KB of RSS per open journey)
    state_store: Literal["memory", "rocksdb"] = "rocksdb"
    # with state_store="rocksdb": the one memory budget of all the worker's RocksDB
    # databases (a shared block cache and write buffer manager, half each;
    # stream/agents/rocks_memory.py)
    state_memory_bytes: int = Field(default=DEFAULT_STATE_MEMORY_BYTES, ge=2 << 20)
    # customers kept decoded between batches of the customer stage, least recently
    # used out first (0: decode every touched customer per batch; docs/performance.md)
    state_cache_customers: int = Field(default=DEFAULT_STATE_CACHE_CUSTOMERS, ge=0)
    web_port: int = 6066
    web_enabled: bool = False  # /healthz, /readyz, /metrics (stream.agents.web)
    web_bind: str = "127.0.0.1"  # 0.0.0.0 in a container, so probes reach it
    alerting: AlertingConfig = AlertingConfig()
    # fault injection for tests/faults ("stage:text": that stage exits at once on a
    # record containing the text, as a native crash would); never set in production
    fault_exit_on: str = ""

    @field_validator("fault_exit_on")
    @classmethod
    def _fault(cls, v: str) -> str:
        stage, sep, text = v.partition(":")
        if v and (not sep or not text or stage not in FAULT_STAGES):
            raise ValueError(f"must be '<stage>:<text>' with stage one of "
                             f"{', '.join(FAULT_STAGES)}, got {v!r}")
        return v

    @field_validator("allowed_lateness_ms", "source_idle_ms", mode="before")
    @classmethod
    def _dur(cls, v: Any) -> int:
        """Milliseconds as a number (the field's unit; also the default, which settings
        validate too), or a duration with a unit ("5m", "30s")."""
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        if isinstance(v, str) and v.strip().isdigit():
            return int(v)
        return parse_duration_ms(v)


class ApiKey(BaseModel):
    """One query-API key: the secret and what it may do. A bare string is a read key."""

    model_config = ConfigDict(frozen=True)

    key: SecretStr
    # read: every /v1 report, journey, customer and alert endpoint; metrics: /metrics
    # admin: DELETE /v1/customers/{id} (forget a customer; docs/operations.md)
    scopes: tuple[Literal["read", "metrics", "admin"], ...] = ("read",)

    @field_validator("key")
    @classmethod
    def _long_enough(cls, v: SecretStr) -> SecretStr:
        if len(v.get_secret_value()) < 16:
            raise ValueError("an API key must be at least 16 characters")
        return v


class ApiSettings(WarehouseRole):
    """The query API."""

    host: str = "127.0.0.1"
    port: int = 8000
    # key name -> key; empty disables auth (the default, fine on 127.0.0.1; see
    # docs/reports.md). JSON: {"pm": "rk_...", "prom": {"key": "...", "scopes": ["metrics"]}}
    api_keys: dict[str, ApiKey] = {}
    # where DELETE /v1/customers/{id} sends the stream its forget (journeys.control);
    # None (no JOURNEYS_KAFKA__* set): the API forgets in the warehouse only
    kafka: KafkaConfig | None = None

    @field_validator("api_keys", mode="before")
    @classmethod
    def _bare_keys(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {name: {"key": k} if isinstance(k, str | SecretStr) else k
                    for name, k in v.items()}
        return v


class CollectorSettings(_RoleSettings):
    """The HTTP collector."""

    kafka: KafkaConfig = KafkaConfig()
    host: str = "127.0.0.1"
    port: int = 8001
    max_batch: int = Field(default=1000, ge=1, le=10_000)
    # source name -> write key; empty disables auth (fine on 127.0.0.1, not in public).
    write_keys: dict[str, SecretStr] = {}
    cors_origins: tuple[str, ...] = ("*",)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    # Unconfirmed records before answering 503 (kafka-python 3.x has no buffer bound).
    max_pending: int = Field(default=100_000, ge=1)
    delivery_timeout_s: float = Field(default=10.0, gt=0)
    # `journeys up` sets it (DATA_DIR/spool): every record is fsync'd there before it is
    # produced, and nothing is accepted until the launcher has replayed it (ingest.spool)
    spool_dir: Path | None = None
    # the workers' allowed lateness (the same variable): `journeys ingest` says how many
    # of its events the stream will call late
    allowed_lateness_ms: int = Field(default=300_000, ge=0)

    @field_validator("allowed_lateness_ms", mode="before")
    @classmethod
    def _lateness(cls, v: Any) -> int:
        return WorkerSettings._dur(v)


class EmbeddedSettings(WorkerSettings):
    """`journeys demo` / `journeys up`: every role in one process, local broker, chdb."""

    host: str = "127.0.0.1"
    port: int = 8000
    broker_port: int = 0  # 0 = pick a free port
