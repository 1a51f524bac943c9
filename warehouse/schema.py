"""Apply the versioned migrations (warehouse.migrations); idempotent, safe to run any time.

Which migrations ran is kept in `schema_migrations` (ReplacingMergeTree by version, read
with DISTINCT, so two processes migrating at once leave a correct record; their DDL is
IF NOT EXISTS, so running a statement twice is harmless).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from journeys.errors import WarehouseError
from journeys.settings import WarehouseConfig
from warehouse import cluster as cluster_ddl
from warehouse.backend import Warehouse
from warehouse.migrations import BOOTSTRAP, MIGRATIONS, AddColumn, Migration, Statement
from warehouse.sql import check_identifier, qualified
from warehouse.tables import SCHEMA_MIGRATIONS

log = logging.getLogger(__name__)


def applied_migrations(wh: Warehouse) -> dict[int, str]:
    """version -> name of every migration recorded in the database (empty if none)."""
    table = qualified(wh.database, SCHEMA_MIGRATIONS.name)
    rows = wh.query(f"SELECT DISTINCT version, name FROM {table} ORDER BY version")
    return {int(v): str(n) for v, n in rows}


def pending_migrations(wh: Warehouse, cluster: str | None = None) -> list[Migration]:
    """The migrations this code knows that the database has not recorded yet."""
    _bootstrap(wh, cluster)
    done = applied_migrations(wh)
    return [m for m in MIGRATIONS if m.version not in done]


def migrate(wh: Warehouse, cluster: str | None = None) -> list[str]:
    """Create the database if needed and apply pending migrations in order; with
    `cluster`, as Replicated local tables behind Distributed ones on every node of that
    cluster (warehouse.cluster).

    Returns the names applied now ([] when the schema was up to date).
    """
    done: list[str] = []
    for migration in pending_migrations(wh, cluster):
        for statement in migration.statements:
            if cluster is not None:
                _apply_on_cluster(wh, statement, cluster)
            elif isinstance(statement, AddColumn):
                _add_column(wh, statement)
            else:
                wh.execute(statement.format(db=wh.database))
        wh.insert(
            SCHEMA_MIGRATIONS.name,
            SCHEMA_MIGRATIONS.columns,
            [(migration.version, migration.name, datetime.now(UTC).replace(microsecond=0))],
        )
        log.info("applied migration %s to %s", migration.name, wh.database)
        done.append(migration.name)
    newer = sorted(set(applied_migrations(wh)) - {m.version for m in MIGRATIONS})
    if newer:
        log.warning(
            "database %s has migrations %s that this code does not know (newer release?)",
            wh.database, newer,
        )
    return done


def migrate_from_config(config: WarehouseConfig) -> list[str]:
    """Connect, migrate, close: what `journeys migrate` does."""
    from warehouse.connect import connect

    wh = connect(config, create_database=True)
    try:
        return migrate(wh, config.cluster)
    finally:
        wh.close()


def _has_column(wh: Warehouse, table: str, column: str) -> bool:
    rows = wh.query(
        "SELECT count() FROM system.columns WHERE database = %(db)s AND table = %(t)s"
        " AND name = %(c)s", {"db": wh.database, "t": table, "c": column})
    return bool(rows[0][0])


def _add_column(wh: Warehouse, change: AddColumn) -> None:
    """ADD COLUMN unless present (18.16 lacks IF NOT EXISTS); a concurrent migrator
    that added it first makes our ALTER fail, which is fine once the column exists."""
    for name in (change.table, change.column):
        check_identifier(name)
    if _has_column(wh, change.table, change.column):
        return
    try:
        wh.execute(change.render(check_identifier(wh.database)))
    except WarehouseError:
        if not _has_column(wh, change.table, change.column):
            raise


def _apply_on_cluster(wh: Warehouse, statement: Statement, cluster: str) -> None:
    ddls = cluster_ddl.render(statement, wh.database, cluster)
    if isinstance(statement, AddColumn):  # local table, then the Distributed one
        names = (statement.table + cluster_ddl.LOCAL_SUFFIX, statement.table)
        ddls = [ddl for name, ddl in zip(names, ddls, strict=True)
                if not _has_column(wh, name, statement.column)]
    for ddl in ddls:
        wh.execute(ddl)


def _bootstrap(wh: Warehouse, cluster: str | None = None) -> None:
    database = check_identifier(wh.database)
    if cluster is not None:
        for ddl in cluster_ddl.render_bootstrap(database, cluster):
            wh.execute(ddl)
        return
    wh.execute(f"CREATE DATABASE IF NOT EXISTS {database}")
    wh.execute(BOOTSTRAP.format(db=database))
