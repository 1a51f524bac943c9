"""The last UTC day that has data: where a report's range ends when the request gives
no `to` (a year of loaded history must not show zeros because "today" is later).

`max()` over one column, no FINAL: a retracted or superseded row still marks a day that
had data, which is all a range end needs.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from warehouse.backend import Warehouse
from warehouse.sql import qualified
from warehouse.tables import JOURNEY_INSTANCES, SESSIONS

_TIME_COLUMN = {JOURNEY_INSTANCES.name: "opened_at_ms", SESSIONS.name: "started_at_ms"}


def build(database: str, table: str) -> str:
    column = _TIME_COLUMN[table]  # identifiers from a fixed list only
    return f"SELECT max({column}), count() FROM {qualified(database, table)}"


def last_day(wh: Warehouse, table: str) -> date | None:
    """The UTC day of the latest row of `table` (journey_instances: opened; sessions:
    started), None when the table is empty."""
    latest, rows = wh.query(build(wh.database, table))[0]
    if not int(rows):
        return None
    return datetime.fromtimestamp(int(latest) / 1000, UTC).date()
