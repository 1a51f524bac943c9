"""Customer search: customers whose id, or a linked anonymous id, starts with a prefix,
each with its journey counts and when it was last seen (`GET /v1/customers?q=`).

The customer key is the stitched one (journey_instances.customer_id: the customer id, or
the anonymous id of a visitor never identified); anonymous ids that stitching linked to a
customer (identity_merges) lead to that customer. Counts are of live instances
(FINAL, deleted = 0) of the (journey, definition version) pairs given (the API: each
definition's current version, as the customer lookup reads them). Prefixes match bytes
(`substring(id, 1, n) = prefix`: the same on ClickHouse 18.16 and chdb, no LIKE
escaping); ids sort as bytes. There is no index on customer ids: a search reads the
customer_id column of the whole table (docs/reports.md "Customer search").
"""

from __future__ import annotations

from typing import Any, NamedTuple

from journeys.errors import InvalidQuery
from warehouse.backend import Warehouse
from warehouse.queries import _journeys as j
from warehouse.queries import _settled
from warehouse.sql import qualified
from warehouse.tables import IDENTITY_MERGES

MAX_LIMIT = 100
MAX_PREFIX = 128  # the longest id (journeys.events.MAX_ID)
LINKED_SHOWN = 10  # linked anonymous ids listed per customer (all are counted)


class CustomerHit(NamedTuple):
    customer_id: str
    matched_by: str  # customer_id | anonymous_id
    matched_anonymous_ids: list[str]  # the linked ids that start with the prefix
    anonymous_ids: list[str]  # linked anonymous ids, the first LINKED_SHOWN by id
    anonymous_id_count: int
    journeys: int
    converted: int
    abandoned: int
    open: int
    first_opened_at_ms: int | None
    last_seen_at_ms: int | None


def _prefix(q: str) -> dict[str, Any]:
    if not q:
        raise InvalidQuery("q (an id prefix) must not be empty")
    if len(q) > MAX_PREFIX:
        raise InvalidQuery(f"q is longer than {MAX_PREFIX} characters")
    return {"q": q, "q_len": len(q.encode())}


def _limit(limit: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidQuery(f"limit must be within 1..{MAX_LIMIT}")


def _stats(database: str, match: str, params: dict[str, Any], versions: j.Versions,
           split: _settled.Split) -> tuple[str, dict[str, Any]]:
    where = "WHERE " + " AND ".join([j.LIVE, j.VERSIONS_IN, match])
    cols = ("customer_id", "status", "opened_at_ms", "last_event_at_ms")
    sql = ("SELECT customer_id, count(), countIf(status = 'converted'), "
           "countIf(status = 'abandoned'), countIf(status = 'open'), min(opened_at_ms), "
           f"max(last_event_at_ms)\n{_settled.source(database, where, cols, split)}\n"
           "GROUP BY customer_id\nORDER BY customer_id")
    return sql, {**params, "versions": j.version_keys(versions), **_settled.params(split)}


def build_by_id(database: str, q: str, *, versions: j.Versions, limit: int = 20,
                split: _settled.Split = _settled.FINAL_EVERYWHERE,
                ) -> tuple[str, dict[str, Any]]:
    """Customers whose key starts with `q`, first `limit` + 1 by id (one more: there are
    more)."""
    _limit(limit)
    sql, params = _stats(database, "substring(customer_id, 1, %(q_len)s) = %(q)s",
                         _prefix(q), versions, split)
    return f"{sql}\nLIMIT %(limit_more)s", {**params, "limit_more": limit + 1}


def build_by_ids(database: str, ids: list[str], *, versions: j.Versions,
                 split: _settled.Split = _settled.FINAL_EVERYWHERE,
                 ) -> tuple[str, dict[str, Any]]:
    """The same figures for given customer keys."""
    return _stats(database, "customer_id IN %(ids)s", {"ids": ids or [""]}, versions, split)


def build_anonymous(database: str, q: str, *, limit: int = 20) -> tuple[str, dict[str, Any]]:
    """Linked anonymous ids starting with `q` and their customer (the first link: every
    row of an anonymous id names the same one, warehouse.queries.identity)."""
    _limit(limit)
    sql = (f"SELECT anonymous_id, argMin(customer_id, merged_at_ms)\n"
           f"FROM {qualified(database, IDENTITY_MERGES.name)}\n"
           "WHERE substring(anonymous_id, 1, %(q_len)s) = %(q)s\n"
           "GROUP BY anonymous_id\nORDER BY anonymous_id\nLIMIT %(limit_more)s")
    return sql, {**_prefix(q), "limit_more": limit + 1}


def build_linked(database: str, ids: list[str]) -> tuple[str, dict[str, Any]]:
    """Per customer: how many anonymous ids are linked to it, and the first few."""
    sql = (f"SELECT customer_id, count(), arraySlice(arraySort(groupArray(anonymous_id)), "
           f"1, {LINKED_SHOWN})\nFROM (\n"
           f"    SELECT DISTINCT customer_id, anonymous_id FROM "
           f"{qualified(database, IDENTITY_MERGES.name)}\n"
           "    WHERE customer_id IN %(ids)s\n)\nGROUP BY customer_id")
    return sql, {"ids": ids or [""]}


def _figures(rows: list[Any]) -> dict[str, tuple[int, int, int, int, int | None, int | None]]:
    return {str(c): (int(n), int(cv), int(ab), int(op), int(lo), int(hi))
            for c, n, cv, ab, op, lo, hi in rows}


def run(wh: Warehouse, q: str, *, versions: j.Versions, limit: int = 20,
        ) -> tuple[list[CustomerHit], bool]:
    """(customers matching by id or by a linked anonymous id, first `limit` by id;
    whether there are more)."""
    db = wh.database

    def by_id(split: _settled.Split) -> list[Any]:
        return wh.query(*build_by_id(db, q, versions=versions, limit=limit, split=split))

    found = _figures(_settled.consistent(wh, j.MIN_DATE, j.MAX_DATE, by_id))
    anon = [(str(a), str(c)) for a, c in wh.query(*build_anonymous(db, q, limit=limit))]
    more = len(found) > limit or len(anon) > limit
    via: dict[str, list[str]] = {}
    for a, c in anon[:limit]:
        via.setdefault(c, []).append(a)
    keys = sorted({*list(found)[:limit], *via})[:limit]
    more = more or len({*found, *via}) > limit
    missing = [k for k in keys if k not in found]
    if missing:
        def by_ids(split: _settled.Split) -> list[Any]:
            return wh.query(*build_by_ids(db, missing, versions=versions, split=split))

        found.update(_figures(_settled.consistent(wh, j.MIN_DATE, j.MAX_DATE, by_ids)))
    linked = {str(c): (int(n), [str(a) for a in ids])
              for c, n, ids in wh.query(*build_linked(db, keys))} if keys else {}
    hits = []
    for k in keys:
        n, cv, ab, op, lo, hi = found.get(k, (0, 0, 0, 0, None, None))
        count, shown = linked.get(k, (0, []))
        hits.append(CustomerHit(
            k, "customer_id" if k.encode().startswith(q.encode()) else "anonymous_id",
            sorted(via.get(k, [])), shown, count, n, cv, ab, op, lo, hi))
    return hits, more
