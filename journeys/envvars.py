"""Every environment variable the product reads, in one place.

Settings objects (journeys.settings) read `JOURNEYS_<FIELD>` and, for nested groups,
`JOURNEYS_<GROUP>__<FIELD>`. The names below are the documented, supported ones;
tests check each maps to a real settings field (except the launcher-only ones, marked).
"""

PREFIX = "JOURNEYS_"
NESTED = "__"

SETTINGS_FILE = "JOURNEYS_SETTINGS_FILE"  # optional .env-style file with any of the below
DEFINITIONS_PATH = "JOURNEYS_DEFINITIONS_PATH"
CHANNELS = "JOURNEYS_CHANNELS"
DATA_DIR = "JOURNEYS_DATA_DIR"
LOG_FORMAT = "JOURNEYS_LOG_FORMAT"  # text (default) or json: one JSON object per line

KAFKA_BOOTSTRAP_SERVERS = "JOURNEYS_KAFKA__BOOTSTRAP_SERVERS"
KAFKA_TOPIC_PREFIX = "JOURNEYS_KAFKA__TOPIC_PREFIX"
KAFKA_PARTITIONS = "JOURNEYS_KAFKA__PARTITIONS"
KAFKA_REPLICATION_FACTOR = "JOURNEYS_KAFKA__REPLICATION_FACTOR"
KAFKA_PRODUCER = "JOURNEYS_KAFKA__PRODUCER"
KAFKA_IDEMPOTENT_PRODUCER = "JOURNEYS_KAFKA__IDEMPOTENT_PRODUCER"  # false for Tansu
KAFKA_PROCESSING_GUARANTEE = "JOURNEYS_KAFKA__PROCESSING_GUARANTEE"  # at_least_once
# Not a settings field: read by deploy.local.kafka_jars (the local Apache Kafka jars) for
# the directory of its Maven Central jars; default ~/.cache/journeys/kafka-<version>.
KAFKA_JARS_DIR = "JOURNEYS_KAFKA_JARS_DIR"
# Not a settings field: read by deploy.stack. Where running `journeys up`/`demo` stacks
# register, so `ingest`, `generate`, `status` and `dlq` find one from any directory;
# default $XDG_STATE_HOME/journeys/stacks (~/.local/state/journeys/stacks).
STACK_REGISTRY = "JOURNEYS_STACK_REGISTRY"

WAREHOUSE_BACKEND = "JOURNEYS_WAREHOUSE__BACKEND"
WAREHOUSE_PATH = "JOURNEYS_WAREHOUSE__PATH"
WAREHOUSE_HOST = "JOURNEYS_WAREHOUSE__HOST"
WAREHOUSE_PORT = "JOURNEYS_WAREHOUSE__PORT"
WAREHOUSE_DATABASE = "JOURNEYS_WAREHOUSE__DATABASE"
WAREHOUSE_USER = "JOURNEYS_WAREHOUSE__USER"
WAREHOUSE_PASSWORD = "JOURNEYS_WAREHOUSE__PASSWORD"
WAREHOUSE_CLUSTER = "JOURNEYS_WAREHOUSE__CLUSTER"  # Replicated + Distributed (warehouse.cluster)

WORKER_APP_ID = "JOURNEYS_APP_ID"
WORKER_FLUSH_INTERVAL = "JOURNEYS_FLUSH_INTERVAL_S"
WORKER_FLUSH_MAX_EVENTS = "JOURNEYS_FLUSH_MAX_EVENTS"
WORKER_ALLOWED_LATENESS = "JOURNEYS_ALLOWED_LATENESS_MS"  # also accepts 5m, 30s
WORKER_SOURCE_IDLE = "JOURNEYS_SOURCE_IDLE_MS"  # also accepts 10s
# fault injection for the fault suite only (stream.agents.crash_journal): "stage:text"
WORKER_FAULT_EXIT_ON = "JOURNEYS_FAULT_EXIT_ON"
WORKER_PATH_CAP = "JOURNEYS_PATH_CAP"  # events kept verbatim per journey instance
WORKER_STATE_STORE = "JOURNEYS_STATE_STORE"  # memory | rocksdb: where table values live
# bytes of memory all the worker's RocksDB databases share (cache + memtables)
WORKER_STATE_MEMORY_BYTES = "JOURNEYS_STATE_MEMORY_BYTES"
# customers kept decoded between batches (stream.stages.customer_cache); 0: none
WORKER_STATE_CACHE_CUSTOMERS = "JOURNEYS_STATE_CACHE_CUSTOMERS"
WORKER_WEB_PORT = "JOURNEYS_WEB_PORT"
WORKER_WEB_ENABLED = "JOURNEYS_WEB_ENABLED"  # /healthz, /readyz, /metrics (stream.agents.web)
WORKER_WEB_BIND = "JOURNEYS_WEB_BIND"  # 0.0.0.0 in a container, for probes

ALERTING_WEBHOOK_URLS = "JOURNEYS_ALERTING__WEBHOOK_URLS"  # comma-separated or JSON list
ALERTING_SLACK_WEBHOOK_URLS = "JOURNEYS_ALERTING__SLACK_WEBHOOK_URLS"  # same format
ALERTING_SIGNING_SECRET = "JOURNEYS_ALERTING__SIGNING_SECRET"
ALERTING_MAX_ATTEMPTS = "JOURNEYS_ALERTING__MAX_ATTEMPTS"
ALERTING_BACKOFF_INITIAL = "JOURNEYS_ALERTING__BACKOFF_INITIAL_S"
ALERTING_BACKOFF_MAX = "JOURNEYS_ALERTING__BACKOFF_MAX_S"
ALERTING_TIMEOUT = "JOURNEYS_ALERTING__TIMEOUT_S"
ALERTING_QUEUE_SIZE = "JOURNEYS_ALERTING__QUEUE_SIZE"

HTTP_HOST = "JOURNEYS_HOST"
HTTP_PORT = "JOURNEYS_PORT"

# `journeys up` / `demo`: the embedded broker's port (0, the default: a free one; the
# stack file says which, deploy.stack)
EMBEDDED_BROKER_PORT = "JOURNEYS_BROKER_PORT"

# query API keys, JSON: {"pm": "rk_...", "prom": {"key": "...", "scopes": ["metrics"]}}
API_KEYS = "JOURNEYS_API_KEYS"

COLLECTOR_MAX_BATCH = "JOURNEYS_MAX_BATCH"
COLLECTOR_WRITE_KEYS = "JOURNEYS_WRITE_KEYS"  # JSON object: {"web": "wk_...", "pos": "wk_..."}
COLLECTOR_CORS_ORIGINS = "JOURNEYS_CORS_ORIGINS"  # JSON list, e.g. ["https://shop.example"]
COLLECTOR_MAX_BODY_BYTES = "JOURNEYS_MAX_BODY_BYTES"
COLLECTOR_MAX_PENDING = "JOURNEYS_MAX_PENDING"
COLLECTOR_DELIVERY_TIMEOUT = "JOURNEYS_DELIVERY_TIMEOUT_S"
COLLECTOR_SPOOL_DIR = "JOURNEYS_SPOOL_DIR"  # set by `journeys up` (ingest.spool)
