"""Alert history: drop-off alerts and recovery notices, newest window first.

Reads `alerts` FINAL so an alert re-emitted by a replay or restart is listed once.
Time filters are on the window start in epoch ms (`from` inclusive, `to` exclusive),
compared as integers, which avoids any time-zone reading on either engine. `versions`
keeps the alerts of given (journey, definition version) pairs: the API asks for each
definition's current version unless told another (docs/semantics.md "Definition
versions").
"""

from __future__ import annotations

from typing import Any, NamedTuple

from journeys.errors import InvalidQuery
from journeys.timeutil import ms_to_iso
from warehouse.backend import Warehouse
from warehouse.queries import _journeys as j
from warehouse.sql import qualified
from warehouse.writers_alerts import ALERTS

MAX_LIMIT = 1000
KINDS = ("fired", "recovered")
_COLUMNS = (
    "alert_id", "kind", "journey", "step", "step_index", "channel", "window_start_ms",
    "window_end_ms", "horizon_ms", "population", "dropped", "rate", "baseline",
    "baseline_windows", "threshold", "confidence", "p_value", "resolves", "created_at_ms",
    "definition_version",
)


class AlertRow(NamedTuple):
    alert_id: str
    kind: str
    journey: str
    step: str
    step_index: int
    channel: str
    window_start_ms: int
    window_end_ms: int
    horizon_ms: int
    population: int
    dropped: int
    rate: float
    baseline: float
    baseline_windows: int
    threshold: float
    confidence: float
    p_value: float
    resolves: str
    created_at_ms: int
    definition_version: str


def _where(
    *, journey: str | None, step: str | None, channel: str | None, kind: str | None,
    from_ms: int | None, to_ms: int | None, alert_id: str | None = None,
    versions: j.Versions | None = None,
) -> tuple[str, dict[str, Any]]:
    if kind is not None and kind not in KINDS:
        raise InvalidQuery(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if from_ms is not None and to_ms is not None and from_ms > to_ms:
        # the same words as every report's range check (api/openapi.py documents them);
        # from == to is an empty half-open range: no alerts, not an error
        raise InvalidQuery(f"'from' ({ms_to_iso(from_ms)}) is after 'to' ({ms_to_iso(to_ms)})")
    for name, ms in (("from", from_ms), ("to", to_ms)):
        if ms is not None and ms < 0:
            raise InvalidQuery(f"'{name}' must not be before 1970")
    clauses: list[str] = []
    params: dict[str, Any] = {}
    for col, value in (("journey", journey), ("step", step), ("channel", channel),
                       ("kind", kind), ("alert_id", alert_id)):
        if value is not None:
            clauses.append(f"{col} = %({col})s")
            params[col] = value
    if from_ms is not None:
        clauses.append("window_start_ms >= %(from_ms)s")
        params["from_ms"] = from_ms
    if to_ms is not None:
        clauses.append("window_start_ms < %(to_ms)s")
        params["to_ms"] = to_ms
    if versions is not None:
        if not versions:
            raise InvalidQuery("no definition version to list alerts of")
        clauses.append(j.VERSIONS_IN)
        params["versions"] = j.version_keys(versions)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def build(
    database: str, *, journey: str | None = None, step: str | None = None,
    channel: str | None = None, kind: str | None = None, from_ms: int | None = None,
    to_ms: int | None = None, limit: int = 100, offset: int = 0,
    versions: j.Versions | None = None,
) -> tuple[str, dict[str, Any]]:
    """A page of alerts: newest window first, then journey, step, channel (a stable order)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidQuery(f"limit must be within 1..{MAX_LIMIT}")
    if offset < 0:
        raise InvalidQuery("offset must not be negative")
    where, params = _where(journey=journey, step=step, channel=channel, kind=kind,
                           from_ms=from_ms, to_ms=to_ms, versions=versions)
    params.update(limit=limit, offset=offset)
    sql = (
        f"SELECT {', '.join(_COLUMNS)}\n"
        f"FROM {qualified(database, ALERTS.name)} FINAL\n"
        f"{where}\n"
        "ORDER BY window_start_ms DESC, journey, step_index, channel, kind\n"
        "LIMIT %(limit)s OFFSET %(offset)s"
    )
    return sql, params


def build_count(
    database: str, *, journey: str | None = None, step: str | None = None,
    channel: str | None = None, kind: str | None = None, from_ms: int | None = None,
    to_ms: int | None = None, versions: j.Versions | None = None,
) -> tuple[str, dict[str, Any]]:
    where, params = _where(journey=journey, step=step, channel=channel, kind=kind,
                           from_ms=from_ms, to_ms=to_ms, versions=versions)
    return f"SELECT count() FROM {qualified(database, ALERTS.name)} FINAL\n{where}", params


def _row(values: tuple[Any, ...]) -> AlertRow:
    (aid, kind, journey, step, idx, channel, ws, we, hz, pop, dropped, rate, base, nb, thr,
     conf, p, resolves, created, version) = values
    return AlertRow(str(aid), str(kind), str(journey), str(step), int(idx), str(channel),
                    int(ws), int(we), int(hz), int(pop), int(dropped), float(rate),
                    float(base), int(nb), float(thr), float(conf), float(p), str(resolves),
                    int(created), str(version))


def run(wh: Warehouse, **filters: Any) -> tuple[list[AlertRow], int]:
    """(the page, total matching) for the filters of `build`."""
    sql, params = build(wh.database, **filters)
    counting = {k: v for k, v in filters.items() if k not in ("limit", "offset")}
    csql, cparams = build_count(wh.database, **counting)
    rows = [_row(tuple(r)) for r in wh.query(sql, params)]
    return rows, int(wh.query(csql, cparams)[0][0])


def get(wh: Warehouse, alert_id: str, versions: j.Versions | None = None) -> AlertRow | None:
    """The alert of that id (ids name a window: one per definition version there; with
    `versions`, of those), the newest written first."""
    where, params = _where(journey=None, step=None, channel=None, kind=None, from_ms=None,
                           to_ms=None, alert_id=alert_id, versions=versions)
    sql = (f"SELECT {', '.join(_COLUMNS)} FROM {qualified(wh.database, ALERTS.name)} FINAL "
           f"{where} ORDER BY created_at_ms DESC LIMIT 1")
    rows = wh.query(sql, params)
    return _row(tuple(rows[0])) if rows else None
