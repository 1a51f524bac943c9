"""Late events: how many events were left out of sessions and journeys because they
arrived after their source partition's watermark had passed them (docs/semantics.md
"Event time"), and which. Every report states the count for its range, so a product
manager never reads figures with data silently missing (api/routes/late_events.py).

Reads `late_events` FINAL (an event recorded twice by a re-delivery counts once); the
range is on the event's own time, days inclusive, compared as epoch ms integers.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any, NamedTuple

from journeys.timeutil import date_to_ms
from warehouse.backend import Warehouse
from warehouse.sql import qualified
from warehouse.tables import LATE_EVENTS

MAX_LIMIT = 1000


class LateRow(NamedTuple):
    event_id: str
    occurred_at_ms: int
    watermark_ms: int
    stage: str
    kafka_topic: str
    kafka_partition: int
    kafka_offset: int


def _range(date_from: date | None, date_to: date | None) -> tuple[str, dict[str, Any]]:
    clauses, params = [], {}
    if date_from is not None:
        clauses.append("occurred_at_ms >= %(from_ms)s")
        params["from_ms"] = date_to_ms(date_from)
    if date_to is not None:
        clauses.append("occurred_at_ms < %(to_ms)s")
        params["to_ms"] = date_to_ms(date_to + timedelta(days=1))
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def build_counts(database: str, date_from: date | None = None,
                 date_to: date | None = None) -> tuple[str, dict[str, Any]]:
    where, params = _range(date_from, date_to)
    sql = (f"SELECT stage, kafka_topic, kafka_partition, count(), min(occurred_at_ms), "
           f"max(occurred_at_ms)\nFROM {qualified(database, LATE_EVENTS.name)} FINAL{where}\n"
           "GROUP BY stage, kafka_topic, kafka_partition\n"
           "ORDER BY stage, kafka_topic, kafka_partition")
    return sql, params


def counts(wh: Warehouse, date_from: date | None = None, date_to: date | None = None,
           ) -> list[tuple[str, str, int, int, int, int]]:
    """(stage, topic, partition, count, oldest, newest occurred_at) per source."""
    return [(str(s), str(t), int(p), int(n), int(lo), int(hi))
            for s, t, p, n, lo, hi in wh.query(*build_counts(wh.database, date_from, date_to))]


def total(wh: Warehouse, date_from: date | None = None, date_to: date | None = None) -> int:
    return sum(row[3] for row in counts(wh, date_from, date_to))


def build_list(database: str, date_from: date | None, date_to: date | None, *,
               limit: int) -> tuple[str, dict[str, Any]]:
    limit = max(1, min(int(limit), MAX_LIMIT))
    where, params = _range(date_from, date_to)
    sql = (f"SELECT {', '.join(LateRow._fields)}\n"
           f"FROM {qualified(database, LATE_EVENTS.name)} FINAL{where}\n"
           f"ORDER BY occurred_at_ms DESC, event_id\nLIMIT {limit}")
    return sql, params


def recent(wh: Warehouse, date_from: date | None = None, date_to: date | None = None, *,
           limit: int = 20) -> list[LateRow]:
    rows = wh.query(*build_list(wh.database, date_from, date_to, limit=limit))
    return [LateRow(str(r[0]), int(r[1]), int(r[2]), str(r[3]), str(r[4]), int(r[5]),
                    int(r[6])) for r in rows]

