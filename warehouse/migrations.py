"""The schema history: numbered migrations, each a list of DDL statements.

Rules (docs/warehouse.md): a released migration is never edited, only followed by a
new one; every statement is idempotent (IF NOT EXISTS ...) so a migration interrupted
half-way can simply run again; the DDL must be valid on ClickHouse 18.16 and on chdb
(no LowCardinality, DateTime64, TTL, CTE, Map, skip indexes, projections). `{db}` is
the only placeholder: the validated database name.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AddColumn:
    """`ALTER TABLE ... ADD COLUMN`, applied only when the column is missing.

    ClickHouse 18.16 has no `ADD COLUMN IF NOT EXISTS`, so warehouse.schema checks
    system.columns first (and tolerates a concurrent migrator adding it in between).
    The new column's default fills old rows: no rewrite of existing parts.
    """

    table: str
    column: str
    type: str
    key: tuple[str, ...] = ()
    """The new sorting key when the column joins it (`MODIFY ORDER BY` in the same
    ALTER: allowed only for a column added there, without a DEFAULT expression, so old
    rows read the type's default)."""

    def render(self, database: str) -> str:
        return (f"ALTER TABLE {database}.{self.table} ADD COLUMN {self.column} {self.type}"
                f"{self.order_by()}")

    def order_by(self) -> str:
        return f", MODIFY ORDER BY ({', '.join(self.key)})" if self.key else ""


Statement = str | AddColumn


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[Statement, ...]

    def render(self, database: str) -> list[str]:
        """The DDL texts (AddColumn unconditionally; schema.migrate checks first)."""
        return [s.render(database) if isinstance(s, AddColumn) else s.format(db=database)
                for s in self.statements]


BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS {db}.schema_migrations (
    version UInt32,
    name String,
    applied_at DateTime('UTC')
) ENGINE = ReplacingMergeTree ORDER BY version
"""

_TOUCHPOINTS = """
CREATE TABLE IF NOT EXISTS {db}.touchpoints (
    event_id String,
    type String,
    channel String,
    occurred_at_ms UInt64,
    occurred_at DateTime('UTC'),
    customer_id String,
    anonymous_id String,
    source String,
    properties String,
    context String,
    ingested_at DateTime('UTC')
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (toDate(occurred_at), event_id)
"""

_SESSIONS = """
CREATE TABLE IF NOT EXISTS {db}.sessions (
    session_id String,
    customer_id String,
    started_at_ms UInt64,
    ended_at_ms UInt64,
    started_at DateTime('UTC'),
    events UInt32,
    channels Array(String),
    first_channel String,
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(started_at)
ORDER BY session_id
"""

_DEAD_LETTERS = """
CREATE TABLE IF NOT EXISTS {db}.dead_letters (
    received_at DateTime('UTC'),
    stage String,
    reason String,
    event_id String,
    original String,
    kafka_topic String,
    kafka_partition Int32,
    kafka_offset Int64
) ENGINE = MergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (stage, received_at)
"""

_ALERTS = """
CREATE TABLE IF NOT EXISTS {db}.alerts (
    alert_id String,
    kind String,
    journey String,
    step String,
    step_index UInt16,
    channel String,
    window_start_ms UInt64,
    window_end_ms UInt64,
    window_start DateTime('UTC'),
    horizon_ms UInt64,
    population UInt32,
    dropped UInt32,
    rate Float64,
    baseline Float64,
    baseline_windows UInt16,
    threshold Float64,
    confidence Float64,
    p_value Float64,
    resolves String,
    created_at_ms UInt64,
    payload String
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (journey, window_start_ms, step, channel)
"""

_JOURNEY_INSTANCES = """
CREATE TABLE IF NOT EXISTS {db}.journey_instances (
    instance_id String,
    journey String,
    customer_id String,
    status String,
    opened_at_ms UInt64,
    closed_at_ms UInt64,
    last_event_at_ms UInt64,
    opened_at DateTime('UTC'),
    furthest_step UInt8,
    furthest_step_name String,
    dropped_at String,
    entry_channel String,
    channels Array(String),
    path_types Array(String),
    path_channels Array(String),
    path_times Array(UInt64),
    detour_kinds Array(String),
    detour_steps Array(String),
    detour_channels Array(String),
    detour_times Array(UInt64),
    version UInt64,
    definitions_version String
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(opened_at)
ORDER BY (journey, instance_id)
"""

_IDENTITY_MERGES = """
CREATE TABLE IF NOT EXISTS {db}.identity_merges (
    anonymous_id String,
    customer_id String,
    merged_at_ms UInt64,
    merged_at DateTime('UTC'),
    event_id String,
    event_type String,
    channel String,
    recorded_at DateTime('UTC')
) ENGINE = ReplacingMergeTree
ORDER BY anonymous_id
"""

_STREAM_STITCHING = (
    # A retracted instance (stitching moved it to the customer, or a late earlier entry
    # event absorbed it): same key and partition, higher version, deleted = 1.
    # Reports read journey_instances FINAL WHERE deleted = 0.
    AddColumn("journey_instances", "deleted", "UInt8"),
    _IDENTITY_MERGES,  # one row per anonymous id: the link that won (first one)
)

_JOURNEY_CONTEXT = (
    # The opening event's `context`, flattened (nested keys dotted, values as text):
    # the report breakdown `context.<key>` reads context_values[indexOf(context_keys, key)].
    AddColumn("journey_instances", "context_keys", "Array(String)"),
    AddColumn("journey_instances", "context_values", "Array(String)"),
)

_JOURNEY_ROLLUPS = """
CREATE TABLE IF NOT EXISTS {db}.journey_rollups (
    source_part String,
    journey String,
    day Date,
    entry_channel String,
    furthest_step UInt8,
    status String,
    dropped_at String,
    instances UInt64
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (journey, source_part, day, entry_channel, furthest_step, status, dropped_at)
"""

_LATE_EVENTS = """
CREATE TABLE IF NOT EXISTS {db}.late_events (
    event_id String,
    occurred_at_ms UInt64,
    occurred_at DateTime('UTC'),
    watermark_ms UInt64,
    stage String,
    kafka_topic String,
    kafka_partition Int32,
    kafka_offset Int64,
    detected_at DateTime('UTC')
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (stage, event_id)
"""

_CAPPED_PATHS = (
    # A journey keeps its first path_cap events verbatim (path and per-event detour
    # arrays); `events` counts all (0 in older rows: their path is whole), and detours
    # of the events beyond the cap are counts per (kind, step, channel), which the
    # detours report adds to the per-event arrays (docs/semantics.md "Capped paths").
    AddColumn("journey_instances", "events", "UInt32"),
    AddColumn("journey_instances", "path_truncated", "UInt8"),
    AddColumn("journey_instances", "capped_detour_kinds", "Array(String)"),
    AddColumn("journey_instances", "capped_detour_steps", "Array(String)"),
    AddColumn("journey_instances", "capped_detour_channels", "Array(String)"),
    AddColumn("journey_instances", "capped_detour_counts", "Array(UInt32)"),
)

_DEFINITION_VERSIONS = (
    # The version of the journey definition that produced a row (journeys.definitions):
    # part of the deduplication key, so rows of two versions of one instance or alert
    # both stay and reports pick one. Rows written before read '' (the API's
    # `unversioned`, journeys.versions). docs/semantics.md "Definition versions".
    AddColumn("journey_instances", "definition_version", "String",
              ("journey", "instance_id", "definition_version")),
    AddColumn("alerts", "definition_version", "String",
              ("journey", "window_start_ms", "step", "channel", "definition_version")),
    AddColumn("journey_rollups", "definition_version", "String",
              ("journey", "source_part", "day", "entry_channel", "furthest_step", "status",
               "dropped_at", "definition_version")),
)

_FORGET_AUDIT = """
CREATE TABLE IF NOT EXISTS {db}.forget_audit (
    forgotten_at DateTime('UTC'),
    subject String,
    linked_ids UInt32,
    tables Array(String),
    rows Array(UInt64),
    requested_by String,
    via String,
    stream String
) ENGINE = MergeTree
PARTITION BY toYYYYMM(forgotten_at)
ORDER BY forgotten_at
"""

_JOURNEY_VALUE = (
    # An instance's journey value (docs/semantics.md "Journey value"): the latest usable
    # properties.value of its events. Two columns rather than Nullable: old rows read
    # has_journey_value = 0, and sums stay plain sumIf on both backends.
    AddColumn("journey_instances", "journey_value", "Float64"),
    AddColumn("journey_instances", "has_journey_value", "UInt8"),
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "0001_foundation", (_TOUCHPOINTS, _SESSIONS, _DEAD_LETTERS)),
    Migration(2, "0002_alerts", (_ALERTS,)),  # stream/alerting; columns: warehouse.writers_alerts
    Migration(3, "0003_journey_instances", (_JOURNEY_INSTANCES,)),  # warehouse.writers_journeys
    Migration(4, "0004_stream_stitching", _STREAM_STITCHING),  # stream (issue 3)
    Migration(5, "0005_journey_context", _JOURNEY_CONTEXT),  # report breakdown by context
    # Per-part counts of settled months: funnel/abandonment without scanning instances.
    Migration(6, "0006_journey_rollups", (_JOURNEY_ROLLUPS,)),  # warehouse.rollups
    # Late events, left out of journeys: counted, listed and reported (stream.stages).
    Migration(7, "0007_late_events", (_LATE_EVENTS,)),
    Migration(8, "0008_capped_paths", _CAPPED_PATHS),  # stream.engine.runs (path_cap)
    Migration(9, "0009_definition_versions", _DEFINITION_VERSIONS),  # journeys.definitions
    Migration(10, "0010_forget_audit", (_FORGET_AUDIT,)),  # warehouse.forget
    Migration(11, "0011_journey_value", _JOURNEY_VALUE),  # scorecard value converted/abandoned
)
