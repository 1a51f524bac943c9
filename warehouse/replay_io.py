"""The warehouse side of `journeys replay` (docs/operations.md "Replay"): reading raw
touchpoints by customer, the stored rows a replay compares with, and writing its rows.

Rows come back as plain tuples (warehouse/ does not import stream/ or deploy/); the
replay's logic is stream.engine.recompute and deploy.ops.replay_plan. Values reach SQL
as parameters; tables and columns come from warehouse.tables and the fixed lists the
callers pass, checked as identifiers. A batch's customers are selected through the run's
key table (`KeyRange`), never a long IN list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from warehouse.backend import Warehouse
from warehouse.forget import MUTATION_TIMEOUT_S, wait_for_mutations
from warehouse.sql import column_list, qualified
from warehouse.tables import JOURNEY_INSTANCES, LATE_EVENTS, SESSIONS, TOUCHPOINTS
from warehouse.writers import write_sessions
from warehouse.writers_alerts import ALERTS, write_alerts

RAW_COLUMNS = ("event_id", "type", "channel", "occurred_at_ms", "customer_id",
               "anonymous_id", "context", "properties")


def _range(since_ms: int | None, until_ms: int | None, column: str
           ) -> tuple[list[str], dict[str, Any]]:
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if since_ms is not None:
        clauses.append(f"{column} >= %(since)s")
        params["since"] = since_ms
    if until_ms is not None:
        clauses.append(f"{column} < %(until)s")
        params["until"] = until_ms
    return clauses, params


def newest_event_ms(wh: Warehouse) -> int | None:
    """The newest raw event's time (None: no touchpoints)."""
    rows = wh.query(f"SELECT count(), max(occurred_at_ms) FROM "
                    f"{qualified(wh.database, TOUCHPOINTS.name)}")
    return int(rows[0][1]) if rows and int(rows[0][0]) else None


def link_pairs(wh: Warehouse) -> list[tuple[str, str, int, str]]:
    """(anonymous id, customer id, time, event id) of every event carrying both ids:
    what stitching links are derived from (stream.engine.recompute.earliest_links)."""
    rows = wh.query(
        f"SELECT anonymous_id, customer_id, occurred_at_ms, event_id FROM "
        f"{qualified(wh.database, TOUCHPOINTS.name)}\n"
        "WHERE anonymous_id != '' AND customer_id != ''")
    return [(str(a), str(c), int(t), str(e)) for a, c, t, e in rows]


def id_pairs(wh: Warehouse, since_ms: int | None = None, until_ms: int | None = None
             ) -> list[tuple[str, str]]:
    """Distinct (customer id, anonymous id) of the raw events in the range: which
    groups a replay of that range recomputes."""
    clauses, params = _range(since_ms, until_ms, "occurred_at_ms")
    where = f"\nWHERE {' AND '.join(clauses)}" if clauses else ""
    rows = wh.query(f"SELECT DISTINCT customer_id, anonymous_id FROM "
                    f"{qualified(wh.database, TOUCHPOINTS.name)}{where}", params or None)
    return [(str(c), str(a)) for c, a in rows]


@dataclass(frozen=True, slots=True)
class KeyRange:
    """The stream keys of a range of groups: rows of the replay's key table (every group
    key and every device linked to it -> the group), groups `first`..`last` inclusive.
    Queries select by a sub-query on it, so a batch of any size is one short statement
    (an IN list of its ids could exceed the server's max_query_size)."""

    table: str
    first: str
    last: str

    def sql(self, database: str) -> str:
        return (f"(SELECT key FROM {qualified(database, self.table)} "
                "WHERE grp >= %(first)s AND grp <= %(last)s)")

    def params(self) -> dict[str, Any]:
        return {"first": self.first, "last": self.last}


def create_keys(wh: Warehouse, table: str, rows: Iterable[tuple[str, str]],
                chunk: int = 100_000) -> None:
    """(Re)create the replay's key table (stream key, group) from `rows`. A work table
    of the run, not schema: dropped by `drop_keys` (a crashed run's is replaced)."""
    name = qualified(wh.database, table)
    wh.execute(f"DROP TABLE IF EXISTS {name}")
    wh.execute(f"CREATE TABLE {name} (key String, grp String) ENGINE = MergeTree "
               "ORDER BY (grp, key)")
    batch: list[tuple[str, str]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= chunk:
            wh.insert(table, ("key", "grp"), batch)
            batch = []
    wh.insert(table, ("key", "grp"), batch)


def drop_keys(wh: Warehouse, table: str) -> None:
    wh.execute(f"DROP TABLE IF EXISTS {qualified(wh.database, table)}")


def raw_events(wh: Warehouse, keys: KeyRange) -> list[tuple[Any, ...]]:
    """Every stored event whose customer id or anonymous id is one of the keys
    (RAW_COLUMNS), ordered by time then event id; a re-delivered event may come twice
    (deduplicate by event id)."""
    sub = keys.sql(wh.database)
    return wh.query(
        f"SELECT {column_list(RAW_COLUMNS)} FROM {qualified(wh.database, TOUCHPOINTS.name)}\n"
        f"WHERE customer_id IN {sub} OR anonymous_id IN {sub}\n"
        "ORDER BY occurred_at_ms, event_id", keys.params())


def stored_instances(wh: Warehouse, keys: KeyRange, journeys: Sequence[str],
                     versions: Sequence[str], columns: Sequence[str]
                     ) -> list[tuple[Any, ...]]:
    """(journey, instance_id, definition_version, deleted, *columns) of the stored
    journey instances (FINAL: one row per key, tombstones included) of the stream keys,
    journeys and definition versions given."""
    if not journeys:
        return []
    return wh.query(
        f"SELECT journey, instance_id, definition_version, deleted, {column_list(list(columns))}"
        f"\nFROM {qualified(wh.database, JOURNEY_INSTANCES.name)} FINAL\n"
        f"WHERE customer_id IN {keys.sql(wh.database)} AND journey IN %(journeys)s "
        "AND definition_version IN %(versions)s",
        {**keys.params(), "journeys": list(journeys), "versions": list(versions)})


def stored_sessions(wh: Warehouse, keys: KeyRange, columns: Sequence[str]
                    ) -> list[tuple[Any, ...]]:
    """(session_id, deleted, *columns) of the stored sessions (FINAL) of the keys."""
    return wh.query(
        f"SELECT session_id, deleted, {column_list(list(columns))}\n"
        f"FROM {qualified(wh.database, SESSIONS.name)} FINAL\n"
        f"WHERE customer_id IN {keys.sql(wh.database)}", keys.params())


def touchpoint_count(wh: Warehouse) -> int:
    return int(wh.query(f"SELECT count() FROM {qualified(wh.database, TOUCHPOINTS.name)}"
                        )[0][0])


def write(wh: Warehouse, instance_rows: Sequence[Sequence[Any]],
          session_rows: Sequence[Sequence[Any]]) -> int:
    """One insert per table: journey_instances rows in JOURNEY_INSTANCES column order
    (warehouse.writers_journeys built and checked them), sessions in SESSIONS order."""
    n = wh.insert(JOURNEY_INSTANCES.name, JOURNEY_INSTANCES.columns, instance_rows)
    return n + (write_sessions(wh, session_rows) if session_rows else 0)


def late_among(wh: Warehouse, event_ids: Sequence[str]) -> list[str]:
    """Which of these events are listed in `late_events` (left out of sessions and
    journeys when they arrived)."""
    if not event_ids:
        return []
    return sorted({str(r[0]) for r in wh.query(
        f"SELECT DISTINCT event_id FROM {qualified(wh.database, LATE_EVENTS.name)} "
        "WHERE event_id IN %(ids)s", {"ids": list(event_ids)})})


def clear_late(wh: Warehouse, event_ids: Sequence[str]) -> None:
    """Unlist events a replay has applied (they are in the sessions and journeys now),
    and wait until the delete is done, so reports stop counting them as left out."""
    if event_ids:
        wh.execute(f"ALTER TABLE {qualified(wh.database, LATE_EVENTS.name)} DELETE WHERE "
                   "event_id IN %(ids)s", {"ids": list(event_ids)})
        wait_for_mutations(wh, [LATE_EVENTS.name], MUTATION_TIMEOUT_S)


def stored_alerts(wh: Warehouse, journeys: Sequence[str], versions: Sequence[str],
                  columns: Sequence[str]) -> list[tuple[Any, ...]]:
    """(alert_id, journey, definition_version, window_end_ms + horizon_ms, *columns) of
    the stored alerts (FINAL) of the journeys and definition versions."""
    if not journeys:
        return []
    return wh.query(
        "SELECT alert_id, journey, definition_version, window_end_ms + horizon_ms, "
        f"{column_list(list(columns))}\nFROM {qualified(wh.database, ALERTS.name)} FINAL\n"
        "WHERE journey IN %(journeys)s AND definition_version IN %(versions)s",
        {"journeys": list(journeys), "versions": list(versions)})


def replace_alerts(wh: Warehouse, records: Sequence[Mapping[str, Any]],
                   delete: Mapping[str, Sequence[str]]) -> int:
    """Delete the alert ids per definition version (a mutation, waited for: the alerts
    table has no tombstones), then write the records. Returns rows written + deleted."""
    for version, ids in delete.items():
        wh.execute(f"ALTER TABLE {qualified(wh.database, ALERTS.name)} DELETE WHERE "
                   "alert_id IN %(ids)s AND definition_version = %(v)s",
                   {"ids": list(ids), "v": version})
    if delete:
        wait_for_mutations(wh, [ALERTS.name], MUTATION_TIMEOUT_S)
    return (write_alerts(wh, records) if records else 0) + sum(map(len, delete.values()))
