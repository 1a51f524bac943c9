"""Forget a customer in the warehouse (`journeys forget`, `DELETE /v1/customers/{id}`):
every row of the customer and of the anonymous ids linked to it, and an audit record
that says it happened (who, when, how many rows per table) without the data.

The ids: the customer id, every anonymous id `identity_merges` links to it, and every
anonymous id that arrived on an event together with it (a link, whether the stream
recorded it yet or not). Rows: `touchpoints` whose customer_id or anonymous_id is one of
them; `sessions` and `journey_instances` of those stream keys (a device never linked is
its own key); `identity_merges` of those devices or that customer; `late_events` and
`dead_letters` of their event ids, and dead letters whose original holds one of the ids
as a JSON string (`"<id>"` anywhere: rejected events were never in `touchpoints`).
Alerts and rollups hold counts only (a rollup of a rewritten part is ignored,
docs/warehouse.md).

`ALTER TABLE … DELETE WHERE …` (a mutation) is the one delete both ClickHouse 18.16 and
chdb have (18.16 has no lightweight `DELETE FROM`); it is asynchronous on a server, so
`apply` waits until `system.mutations` says every one is done. Repeating it deletes
nothing more (safe to run twice). Values reach SQL as parameters; tables and columns
come from the fixed lists below.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from journeys.errors import WarehouseError
from journeys.timeutil import now_ms
from warehouse.backend import Warehouse
from warehouse.sql import qualified
from warehouse.tables import (
    DEAD_LETTERS,
    FORGET_AUDIT,
    IDENTITY_MERGES,
    JOURNEY_INSTANCES,
    LATE_EVENTS,
    SESSIONS,
    TOUCHPOINTS,
)

MUTATION_TIMEOUT_S = 300.0

Condition = tuple[str, str]  # (table, WHERE text over the parameters of `_params`)
CONDITIONS: tuple[Condition, ...] = (
    (TOUCHPOINTS.name, "customer_id IN %(ids)s OR anonymous_id IN %(ids)s"),
    (SESSIONS.name, "customer_id IN %(ids)s"),
    (JOURNEY_INSTANCES.name, "customer_id IN %(ids)s"),
    (IDENTITY_MERGES.name, "customer_id IN %(ids)s OR anonymous_id IN %(ids)s"),
    (LATE_EVENTS.name, "event_id IN %(events)s"),
    (DEAD_LETTERS.name, "event_id IN %(events)s{quoted}"),
)
"""What `apply` deletes, in this order (touchpoints last would lose the event ids: they
are read first, in `plan`)."""


@dataclass
class ForgetPlan:
    """A customer's ids, its event ids and the rows per table that `apply` deletes."""

    customer_id: str
    anonymous_ids: list[str]
    event_ids: list[str]
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return [self.customer_id, *self.anonymous_ids]

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def subject(customer_id: str) -> str:
    """What the audit keeps of the id: a SHA-256 prefix (says which id was forgotten to
    whoever knows it, and nothing to anyone else)."""
    return hashlib.sha256(customer_id.encode()).hexdigest()[:32]


def linked_ids(wh: Warehouse, customer_id: str) -> list[str]:
    """Anonymous ids linked to the customer (recorded links, and any event carrying
    both), sorted; the customer id itself is not among them."""
    merges = qualified(wh.database, IDENTITY_MERGES.name)
    raw = qualified(wh.database, TOUCHPOINTS.name)
    rows = wh.query(
        f"SELECT DISTINCT anonymous_id FROM {merges} WHERE customer_id = %(c)s\n"
        f"UNION ALL\nSELECT DISTINCT anonymous_id FROM {raw}\n"
        "WHERE customer_id = %(c)s AND anonymous_id != ''", {"c": customer_id})
    return sorted({str(r[0]) for r in rows} - {customer_id, ""})


def _params(ids: Sequence[str], events: Sequence[str]) -> dict[str, object]:
    return {"ids": list(ids), "events": list(events) or [""],
            **{f"q{n}": f'"{i}"' for n, i in enumerate(ids)}}


def _where(template: str, ids: Sequence[str]) -> str:
    """A condition with `{quoted}` filled: one `position(original, %(qN)s) > 0` per id."""
    return template.format(quoted="".join(
        f" OR position(original, %(q{n})s) > 0" for n in range(len(ids))))


def plan(wh: Warehouse, customer_id: str) -> ForgetPlan:
    """What forgetting the customer would delete (reads only)."""
    if not customer_id.strip():
        raise WarehouseError("a customer id to forget must not be empty")
    anons = linked_ids(wh, customer_id)
    ids = [customer_id, *anons]
    raw = qualified(wh.database, TOUCHPOINTS.name)
    events = sorted({str(r[0]) for r in wh.query(
        f"SELECT DISTINCT event_id FROM {raw} WHERE {CONDITIONS[0][1]}", {"ids": ids})})
    out = ForgetPlan(customer_id, anons, events)
    params = _params(ids, events)
    for table, where in CONDITIONS:
        out.rows[table] = int(wh.query(
            f"SELECT count() FROM {qualified(wh.database, table)} WHERE {_where(where, ids)}",
            params)[0][0])
    return out


def apply(wh: Warehouse, p: ForgetPlan, *, progress: Callable[[str], None] = lambda _t: None,
          timeout_s: float = MUTATION_TIMEOUT_S) -> None:
    """Delete the plan's rows from every table and wait until the deletes are done."""
    params = _params(p.ids, p.event_ids)
    for table, where in CONDITIONS:
        if p.rows.get(table):
            wh.execute(f"ALTER TABLE {qualified(wh.database, table)} DELETE WHERE "
                       f"{_where(where, p.ids)}", params)
        progress(table)
    wait_for_mutations(wh, [t for t, _ in CONDITIONS], timeout_s)


def wait_for_mutations(wh: Warehouse, tables: Sequence[str], timeout_s: float) -> None:
    """Until no mutation of these tables is pending (system.mutations, both engines)."""
    deadline = time.monotonic() + timeout_s
    while True:
        pending = int(wh.query(
            "SELECT count() FROM system.mutations WHERE database = %(db)s AND table IN %(t)s"
            " AND is_done = 0", {"db": wh.database, "t": list(tables)})[0][0])
        if not pending:
            return
        if time.monotonic() > deadline:
            raise WarehouseError(f"{pending} deletes still running after {timeout_s:.0f} s "
                                 "(system.mutations); run the forget again to finish")
        time.sleep(0.2)


def audit(wh: Warehouse, p: ForgetPlan, *, requested_by: str, via: str,
          stream: str) -> None:
    """One audit row: when, who, how many ids and rows per table; never the data."""
    tables = sorted(p.rows)
    wh.insert(FORGET_AUDIT.name, FORGET_AUDIT.columns, [(
        now_ms() // 1000, subject(p.customer_id), len(p.anonymous_ids), tables,
        [p.rows[t] for t in tables], requested_by, via, stream)])
