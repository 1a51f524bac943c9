"""Which definition versions have result rows in the warehouse, per journey (GET
/v1/journeys; docs/semantics.md "Definition versions").

A plain `DISTINCT` over the key column of `journey_instances` and `alerts` (no FINAL: a
version is present while any row of it is, a tombstone included, until retention or
`journeys forget` removes it). '' is the version of rows written before migration 0009.
"""

from __future__ import annotations

from warehouse.backend import Warehouse
from warehouse.sql import qualified
from warehouse.tables import JOURNEY_INSTANCES
from warehouse.writers_alerts import ALERTS


def build(database: str) -> str:
    return "\nUNION ALL\n".join(
        f"SELECT DISTINCT journey, definition_version FROM {qualified(database, t)}"
        for t in (JOURNEY_INSTANCES.name, ALERTS.name))


def run(wh: Warehouse) -> dict[str, list[str]]:
    """journey -> its stored definition versions, sorted."""
    out: dict[str, set[str]] = {}
    for journey, version in wh.query(build(wh.database)):
        out.setdefault(str(journey), set()).add(str(version))
    return {j: sorted(v) for j, v in sorted(out.items())}
