"""Which customer an anonymous id was stitched to (identity_merges, migration 0004).

Lets `GET /v1/customers/{id}/journeys` answer for a device/cookie id that was linked
later: its journeys live under the customer. No FINAL needed: every row of one
anonymous id names the same customer (the stream's first link wins), and argMin by
event time picks that first link even before merges.
"""

from __future__ import annotations

from typing import Any

from journeys.errors import InvalidQuery
from warehouse.backend import Warehouse
from warehouse.sql import qualified
from warehouse.tables import IDENTITY_MERGES


def build(database: str, anonymous_id: str) -> tuple[str, dict[str, Any]]:
    if not anonymous_id:
        raise InvalidQuery("anonymous id must not be empty")
    sql = (f"SELECT argMin(customer_id, merged_at_ms), count()\n"
           f"FROM {qualified(database, IDENTITY_MERGES.name)}\n"
           "WHERE anonymous_id = %(anonymous_id)s")
    return sql, {"anonymous_id": anonymous_id}


def resolve(wh: Warehouse, anonymous_id: str) -> str | None:
    """The customer the anonymous id was linked to, or None if it never was."""
    customer, n = wh.query(*build(wh.database, anonymous_id))[0]
    return str(customer) if int(n) and customer else None
