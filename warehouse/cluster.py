"""The schema on a ClickHouse cluster: every table a `Distributed` table over
`Replicated*MergeTree` local tables, sharded by customer (docs/warehouse.md "Clusters").

The single-node migrations (warehouse.migrations) are the one description of the
schema; this module renders each statement for a cluster: `CREATE TABLE db.t (...)
ENGINE = X(args) ...` becomes `db.t_local ON CLUSTER c` with `ReplicatedX('/clickhouse/
tables/{shard}/db/t_local', '{replica}', args)` and `db.t ON CLUSTER c AS db.t_local
ENGINE = Distributed(c, db, t_local, <sharding key>)`; an added column is added to both.
The product's SQL then runs unchanged: it names `db.t`, the Distributed table.

A row's shard must be a function of its deduplication key (ReplacingMergeTree merges
within a shard only): every key below is a column the key determines.
"""

from __future__ import annotations

import re

from journeys.errors import ConfigError
from warehouse.migrations import BOOTSTRAP, AddColumn, Migration, Statement
from warehouse.sql import check_identifier

LOCAL_SUFFIX = "_local"

SHARDING_KEYS: dict[str, str] = {
    # by event id: two copies of an event id that name different customers must still
    # meet on one shard to collapse into one row
    "touchpoints": "cityHash64(event_id)",
    # by customer: a session's or instance's versions all carry its customer, and one
    # customer's sessions and journeys are read together (customer lookups)
    "sessions": "cityHash64(customer_id)",
    "journey_instances": "cityHash64(customer_id)",
    "identity_merges": "cityHash64(anonymous_id)",
    "alerts": "cityHash64(journey, step, channel, window_start_ms)",
    "late_events": "cityHash64(event_id)",
    "journey_rollups": "cityHash64(source_part)",
    "dead_letters": "rand()",  # append-only: no deduplication
    "forget_audit": "rand()",  # append-only
    "schema_migrations": "version",
}
"""Table -> sharding expression (fixed list: identifiers never come from input)."""

_CREATE = re.compile(
    r"^\s*CREATE TABLE IF NOT EXISTS \{db\}\.(?P<table>\w+) \((?P<columns>.*?)\n\) "
    r"ENGINE = (?P<engine>\w*MergeTree)(?:\((?P<args>[^)]*)\))?(?P<rest>.*)$", re.S)


def _create(statement: str, database: str, cluster: str) -> list[str]:
    m = _CREATE.match(statement)
    if m is None:
        raise ConfigError(f"no cluster form for this statement: {statement.strip()[:80]}")
    table = m["table"]
    if table not in SHARDING_KEYS:
        raise ConfigError(f"table {table!r} has no sharding key (warehouse.cluster)")
    local = table + LOCAL_SUFFIX
    path = f"'/clickhouse/tables/{{shard}}/{database}/{local}', '{{replica}}'"
    args = f"{path}, {m['args']}" if m["args"] else path
    return [
        f"CREATE TABLE IF NOT EXISTS {database}.{local} ON CLUSTER {cluster} "
        f"({m['columns']}\n) ENGINE = Replicated{m['engine']}({args}){m['rest']}",
        f"CREATE TABLE IF NOT EXISTS {database}.{table} ON CLUSTER {cluster} "
        f"AS {database}.{local} ENGINE = Distributed({cluster}, {database}, {local}, "
        f"{SHARDING_KEYS[table]})",
    ]


def _add_column(change: AddColumn, database: str, cluster: str) -> list[str]:
    """Local table first: the Distributed table must not name a column its shards lack.
    (No IF NOT EXISTS on 18.16: schema.migrate checks system.columns first.) A new
    sorting key applies to the local tables only (a Distributed table has none)."""
    local = change.table + LOCAL_SUFFIX
    return [f"ALTER TABLE {database}.{name} ON CLUSTER {cluster} "
            f"ADD COLUMN {change.column} {change.type}{key}"
            for name, key in ((local, change.order_by()), (change.table, ""))]


def render(statement: Statement, database: str, cluster: str) -> list[str]:
    """One migration statement as DDL for `cluster`."""
    check_identifier(database)
    check_identifier(cluster)
    if isinstance(statement, AddColumn):
        return _add_column(statement, database, cluster)
    return _create(statement, database, cluster)


def render_migration(migration: Migration, database: str, cluster: str) -> list[str]:
    return [ddl for s in migration.statements for ddl in render(s, database, cluster)]


def render_bootstrap(database: str, cluster: str) -> list[str]:
    """The database on every node, and the migrations record."""
    return [f"CREATE DATABASE IF NOT EXISTS {check_identifier(database)} ON CLUSTER "
            f"{check_identifier(cluster)}", *render(BOOTSTRAP, database, cluster)]
