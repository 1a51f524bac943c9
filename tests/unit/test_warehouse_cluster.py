"""Cluster DDL (warehouse.cluster): every single-node table becomes Replicated local
tables behind a Distributed one, sharded by a column its deduplication key determines.
Checked as text: no ZooKeeper here to run ON CLUSTER DDL (docs/warehouse.md)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from journeys.errors import ConfigError
from warehouse import cluster
from warehouse.migrations import BOOTSTRAP, MIGRATIONS, AddColumn
from warehouse.schema import migrate

DB, CLUSTER = "journeys", "analytics"
CREATES = [s for m in MIGRATIONS for s in m.statements if isinstance(s, str)] + [BOOTSTRAP]


def _table(statement: str) -> str:
    found = re.search(r"\{db\}\.(\w+) \(", statement)
    assert found, statement
    return found.group(1)


@pytest.mark.parametrize("statement", CREATES, ids=_table)
def test_each_table_is_replicated_locally_and_distributed(statement: str) -> None:
    table = _table(statement)
    local, dist = cluster.render(statement, DB, CLUSTER)
    single = statement.format(db=DB)
    assert local.startswith(f"CREATE TABLE IF NOT EXISTS {DB}.{table}_local ON CLUSTER {CLUSTER} (")
    engine = re.search(r"ENGINE = (\w+)(\(([^)]*)\))?", single)
    assert engine
    replicated = re.search(r"ENGINE = (\w+)\(([^)]*)\)", local)
    assert replicated and replicated.group(1) == "Replicated" + engine.group(1)
    args = [a.strip() for a in replicated.group(2).split(",")]
    assert args[:2] == [f"'/clickhouse/tables/{{shard}}/{DB}/{table}_local'", "'{replica}'"]
    assert args[2:] == ([a.strip() for a in engine.group(3).split(",")] if engine.group(3) else [])
    # columns, partitioning and ordering exactly as on one node
    assert local.split(" ON CLUSTER " + CLUSTER, 1)[1].split("ENGINE")[0] == \
        single.split(f"{DB}.{table}", 1)[1].split("ENGINE")[0]
    assert local.split(")", 1)[1].split("ENGINE")[1].split(")", 1)[1] == \
        single.split("ENGINE")[1].split(engine.group(0).split("ENGINE = ")[1], 1)[1]
    assert dist == (f"CREATE TABLE IF NOT EXISTS {DB}.{table} ON CLUSTER {CLUSTER} AS "
                    f"{DB}.{table}_local ENGINE = Distributed({CLUSTER}, {DB}, {table}_local, "
                    f"{cluster.SHARDING_KEYS[table]})")


def test_sharding_keys_name_columns_of_their_tables() -> None:
    for statement in CREATES:
        table = _table(statement)
        columns = set(re.findall(r"^\s+(\w+) ", statement, re.M))
        used = set(re.findall(r"\b([a-z_]+)\b", cluster.SHARDING_KEYS[table])) - {
            "cityHash64", "if", "rand"}
        assert used <= columns, (table, used - columns)


def test_added_columns_go_to_the_local_table_first() -> None:
    ddl = cluster.render(AddColumn("journey_instances", "deleted", "UInt8"), DB, CLUSTER)
    assert ddl == [
        f"ALTER TABLE {DB}.journey_instances_local ON CLUSTER {CLUSTER} ADD COLUMN deleted UInt8",
        f"ALTER TABLE {DB}.journey_instances ON CLUSTER {CLUSTER} ADD COLUMN deleted UInt8"]


def test_identifiers_are_checked_and_unknown_tables_refused() -> None:
    with pytest.raises(ConfigError):
        cluster.render(BOOTSTRAP.replace("schema_migrations", "nobody"), DB, CLUSTER)
    with pytest.raises(Exception, match="identifier"):
        cluster.render(BOOTSTRAP, DB, "analytics; DROP")


class _Recorder:
    """A Warehouse that records DDL (no cluster to run it on here)."""

    database = DB

    def __init__(self) -> None:
        self.ddl: list[str] = []
        self.inserted: list[Any] = []

    def execute(self, sql: str, params: Any = None) -> None:
        self.ddl.append(sql)

    def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        return [(0,)] if "system.columns" in sql else []

    def insert(self, table: str, columns: Any, rows: Any) -> int:
        self.inserted.extend(rows)
        return len(rows)


def test_migrate_on_a_cluster_runs_every_statement_on_cluster() -> None:
    wh = _Recorder()
    applied = migrate(wh, CLUSTER)  # type: ignore[arg-type]
    assert applied == [m.name for m in MIGRATIONS]
    assert wh.ddl[0] == f"CREATE DATABASE IF NOT EXISTS {DB} ON CLUSTER {CLUSTER}"
    assert all(f" ON CLUSTER {CLUSTER}" in d for d in wh.ddl)
    assert not any("{db}" in d for d in wh.ddl)
    tables = {_table(s) for s in CREATES}
    for table in tables:
        assert sum(f"CREATE TABLE IF NOT EXISTS {DB}.{table} ON CLUSTER" in d for d in wh.ddl) == 1
        assert sum(f"{DB}.{table}_local ON CLUSTER" in d and "CREATE" in d
                   for d in wh.ddl) == 1
    assert len(wh.inserted) == len(MIGRATIONS)
