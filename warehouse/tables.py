"""Table names and column lists: the fixed identifiers writers and queries use.

The migrations create these tables; a contract test checks that the migrated schema
matches these lists on both engines, so writers and queries cannot drift from the DDL.
Times are stored as epoch milliseconds (UInt64, exact) plus a DateTime('UTC') in
seconds for partitioning and grouping: DateTime64 does not exist on ClickHouse 18.16.
"""

from __future__ import annotations

from dataclasses import dataclass

from journeys.versions import TOMBSTONE_VERSION  # noqa: F401  (re-exported: writers, tests)


@dataclass(frozen=True, slots=True)
class Table:
    """A table's name and its columns as (name, ClickHouse type), in insert order."""

    name: str
    schema: tuple[tuple[str, str], ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.schema)


TOUCHPOINTS = Table(
    "touchpoints",
    (
        ("event_id", "String"),
        ("type", "String"),
        ("channel", "String"),
        ("occurred_at_ms", "UInt64"),
        ("occurred_at", "DateTime('UTC')"),
        ("customer_id", "String"),
        ("anonymous_id", "String"),
        ("source", "String"),
        ("properties", "String"),
        ("context", "String"),
        ("ingested_at", "DateTime('UTC')"),
    ),
)
"""Raw events. ReplacingMergeTree keyed by (day, event_id): re-deliveries collapse."""

SESSIONS = Table(
    "sessions",
    (
        ("session_id", "String"),
        ("customer_id", "String"),
        ("started_at_ms", "UInt64"),
        ("ended_at_ms", "UInt64"),
        ("started_at", "DateTime('UTC')"),
        ("events", "UInt32"),
        ("channels", "Array(String)"),
        ("first_channel", "String"),
        ("version", "UInt64"),
        ("deleted", "UInt8"),
    ),
)
"""Session upserts. ReplacingMergeTree(version) by session_id; read with FINAL, deleted = 0."""

DEAD_LETTERS = Table(
    "dead_letters",
    (
        ("received_at", "DateTime('UTC')"),
        ("stage", "String"),
        ("reason", "String"),
        ("event_id", "String"),
        ("original", "String"),
        ("kafka_topic", "String"),
        ("kafka_partition", "Int32"),
        ("kafka_offset", "Int64"),
    ),
)
"""Rejected input kept for inspection (append-only MergeTree); kafka_* = where it was
read ('' / -1 when it did not come from a topic, e.g. the HTTP collector)."""

SCHEMA_MIGRATIONS = Table(
    "schema_migrations",
    (
        ("version", "UInt32"),
        ("name", "String"),
        ("applied_at", "DateTime('UTC')"),
    ),
)
"""Which migrations ran. ReplacingMergeTree by version: concurrent migrators collapse."""

JOURNEY_INSTANCES = Table(
    "journey_instances",
    (
        ("instance_id", "String"),
        ("journey", "String"),
        ("customer_id", "String"),
        ("status", "String"),  # open | converted | abandoned
        ("opened_at_ms", "UInt64"),
        ("closed_at_ms", "UInt64"),  # 0 while open
        ("last_event_at_ms", "UInt64"),
        ("opened_at", "DateTime('UTC')"),
        ("furthest_step", "UInt8"),
        ("furthest_step_name", "String"),
        ("dropped_at", "String"),  # the furthest step when abandoned, else ''
        ("entry_channel", "String"),
        ("channels", "Array(String)"),  # distinct, in first-seen order
        ("path_types", "Array(String)"),
        ("path_channels", "Array(String)"),
        ("path_times", "Array(UInt64)"),
        ("detour_kinds", "Array(String)"),
        ("detour_steps", "Array(String)"),
        ("detour_channels", "Array(String)"),
        ("detour_times", "Array(UInt64)"),
        ("version", "UInt64"),
        ("definitions_version", "String"),
        ("deleted", "UInt8"),  # 0004: 1 = retracted (see warehouse.writers_journeys)
        ("context_keys", "Array(String)"),  # 0005: the opening event's context, flattened
        ("context_values", "Array(String)"),
        # 0008: capped paths (docs/semantics.md "Capped paths"): the path and per-event
        # detour arrays hold the first path_cap events; `events` counts all of them (0 in
        # rows written before: the path's length), detours of the rest are counted here
        ("events", "UInt32"),
        ("path_truncated", "UInt8"),
        ("capped_detour_kinds", "Array(String)"),
        ("capped_detour_steps", "Array(String)"),
        ("capped_detour_channels", "Array(String)"),
        ("capped_detour_counts", "Array(UInt32)"),
        # 0009: the version of the definition that produced the row (part of the key;
        # '' in older rows: journeys.versions.UNVERSIONED)
        ("definition_version", "String"),
        # 0011: journey value (docs/semantics.md "Journey value"): the latest usable
        # properties.value of the instance's events; has_journey_value 0 (value 0): none
        ("journey_value", "Float64"),
        ("has_journey_value", "UInt8"),
    ),
)
"""Journey instance upserts (migrations 0003, 0004, 0005, 0008, 0009, 0011).
ReplacingMergeTree(version) by (journey, instance_id), partitioned by the immutable
opened_at so every version of an instance lands in one partition; read with FINAL."""

IDENTITY_MERGES = Table(
    "identity_merges",
    (
        ("anonymous_id", "String"),
        ("customer_id", "String"),
        ("merged_at_ms", "UInt64"),  # event time of the linking event
        ("merged_at", "DateTime('UTC')"),
        ("event_id", "String"),  # the event that made the link
        ("event_type", "String"),
        ("channel", "String"),
        ("recorded_at", "DateTime('UTC')"),
    ),
)
"""Identity stitching: which anonymous id became which customer, when, from which event
(migration 0004). ReplacingMergeTree by anonymous_id: the first link wins in the
stream, so re-deliveries write the same row again."""

JOURNEY_ROLLUPS = Table(
    "journey_rollups",
    (
        ("source_part", "String"),  # the journey_instances part the rows were counted from
        ("journey", "String"),  # '' = the part's marker row (written last: rollup complete)
        ("day", "Date"),  # toDate(opened_at)
        ("entry_channel", "String"),
        ("furthest_step", "UInt8"),
        ("status", "String"),
        ("dropped_at", "String"),
        ("instances", "UInt64"),  # live instances (deleted = 0) with these values
        ("definition_version", "String"),  # 0009 (part of the key)
    ),
)
"""Per-part counts of settled journey_instances months (migration 0006, written by
`journeys compact`, read by funnel/abandonment: warehouse/rollups.py).
ReplacingMergeTree by every column but `instances`, read with FINAL, so a rollup
written twice for one part counts once."""

LATE_EVENTS = Table(
    "late_events",
    (
        ("event_id", "String"),
        ("occurred_at_ms", "UInt64"),
        ("occurred_at", "DateTime('UTC')"),
        ("watermark_ms", "UInt64"),  # what it was older than
        ("stage", "String"),  # validate (its source partition) | customers
        ("kafka_topic", "String"),
        ("kafka_partition", "Int32"),
        ("kafka_offset", "Int64"),
        ("detected_at", "DateTime('UTC')"),
    ),
)
"""Events left out of sessions and journeys because they were late (migration 0007;
docs/semantics.md "Event time"). The events themselves are in `touchpoints`; a replay
re-applies them. ReplacingMergeTree by (stage, event_id): re-deliveries collapse."""

FORGET_AUDIT = Table(
    "forget_audit",
    (
        ("forgotten_at", "DateTime('UTC')"),
        ("subject", "String"),  # SHA-256 prefix of the customer id (warehouse.forget)
        ("linked_ids", "UInt32"),  # anonymous ids forgotten with it
        ("tables", "Array(String)"),
        ("rows", "Array(UInt64)"),  # rows deleted per table (parallel to `tables`)
        ("requested_by", "String"),  # OS user (CLI) or API key name
        ("via", "String"),  # cli | api
        ("stream", "String"),  # what became of the stream's state (warehouse.forget)
    ),
)
"""That a customer was forgotten (migration 0010): who, when, how much; never the data.
Append-only MergeTree."""

ALL_TABLES: tuple[Table, ...] = (
    TOUCHPOINTS, SESSIONS, DEAD_LETTERS, SCHEMA_MIGRATIONS, JOURNEY_INSTANCES,
    IDENTITY_MERGES, JOURNEY_ROLLUPS, LATE_EVENTS, FORGET_AUDIT,
)
