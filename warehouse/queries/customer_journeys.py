"""A customer's journey instances with their paths and detours, newest first, paged.

Reads `journey_instances` FINAL WHERE deleted = 0, so each live instance appears once at
its latest version (a retracted one not at all). A capped path (docs/semantics.md
"Capped paths") lists its first events; `events` counts all of them.
The customer key is the stitched customer id the stream assigned (customer_id, or the
anonymous id for visitors never identified). `versions` keeps the instances of given
(journey, definition version) pairs (the API: each definition's current version).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from journeys.errors import InvalidQuery
from warehouse.backend import Warehouse
from warehouse.queries import _journeys as j
from warehouse.queries import _settled

MAX_LIMIT = 500

_COLUMNS = (
    "instance_id", "journey", "status", "opened_at_ms", "closed_at_ms", "last_event_at_ms",
    "furthest_step", "furthest_step_name", "dropped_at", "entry_channel", "channels",
    "path_types", "path_channels", "path_times", "detour_kinds", "detour_steps",
    "detour_channels", "detour_times", "definitions_version", "events", "path_truncated",
    "definition_version",
)


class CustomerJourneyRow(NamedTuple):
    instance_id: str
    journey: str
    status: str
    opened_at_ms: int
    closed_at_ms: int
    last_event_at_ms: int
    furthest_step: int
    furthest_step_name: str
    dropped_at: str
    entry_channel: str
    channels: list[str]
    path_types: list[str]
    path_channels: list[str]
    path_times: list[int]
    detour_kinds: list[str]
    detour_steps: list[str]
    detour_channels: list[str]
    detour_times: list[int]
    definitions_version: str
    events: int  # all events of the instance; the path holds the first path_cap of them
    path_truncated: bool
    definition_version: str


Versions = j.Versions | None


def _where(customer_id: str, journey: str | None,
           versions: Versions = None) -> tuple[str, dict[str, Any]]:
    if not customer_id:
        raise InvalidQuery("customer id must not be empty")
    params: dict[str, Any] = {"customer_id": customer_id}
    clauses = ["customer_id = %(customer_id)s", j.LIVE]
    if journey is not None:
        clauses.append("journey = %(journey)s")
        params["journey"] = journey
    if versions is not None:
        clauses.append(j.VERSIONS_IN)
        params["versions"] = j.version_keys(versions)
    return "WHERE " + " AND ".join(clauses), params


def build(
    database: str, customer_id: str, *, journey: str | None = None, limit: int = 50,
    offset: int = 0, split: _settled.Split = _settled.FINAL_EVERYWHERE,
    versions: Versions = None,
) -> tuple[str, dict[str, Any]]:
    """One page, newest opened first (ties by journey, instance id: a stable order)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidQuery(f"limit must be within 1..{MAX_LIMIT}")
    if offset < 0:
        raise InvalidQuery("offset must not be negative")
    where, params = _where(customer_id, journey, versions)
    params.update(limit=limit, offset=offset, **_settled.params(split))
    sql = (
        f"SELECT {', '.join(_COLUMNS)}\n"
        f"{_settled.source(database, where, _COLUMNS, split)}\n"
        "ORDER BY opened_at_ms DESC, journey, instance_id\n"
        "LIMIT %(limit)s OFFSET %(offset)s"
    )
    return sql, params


def build_count(
    database: str, customer_id: str, *, journey: str | None = None,
    split: _settled.Split = _settled.FINAL_EVERYWHERE, versions: Versions = None,
) -> tuple[str, dict[str, Any]]:
    where, params = _where(customer_id, journey, versions)
    source = _settled.source(database, where, ("instance_id",), split)
    return f"SELECT count() {source}", {**params, **_settled.params(split)}


def _row(v: tuple[Any, ...]) -> CustomerJourneyRow:
    (iid, journey, status, opened, closed, last, furthest, fname, dropped, entry, channels,
     ptypes, pchannels, ptimes, dkinds, dsteps, dchannels, dtimes, defs, events, cut,
     version) = v
    return CustomerJourneyRow(
        str(iid), str(journey), str(status), int(opened), int(closed), int(last),
        int(furthest), str(fname), str(dropped), str(entry), [str(c) for c in channels],
        [str(t) for t in ptypes], [str(c) for c in pchannels], [int(t) for t in ptimes],
        [str(k) for k in dkinds], [str(s) for s in dsteps], [str(c) for c in dchannels],
        [int(t) for t in dtimes], str(defs), int(events) or len(ptimes), bool(cut),
        str(version),
    )


def run(
    wh: Warehouse, customer_id: str, *, journey: str | None = None, limit: int = 50,
    offset: int = 0, versions: Versions = None,
) -> tuple[list[CustomerJourneyRow], int]:
    """(the page, total instances of the customer matching the filter)."""
    def query(split: _settled.Split) -> tuple[list[Any], list[Any]]:
        return (wh.query(*build(wh.database, customer_id, journey=journey, limit=limit,
                                offset=offset, split=split, versions=versions)),
                wh.query(*build_count(wh.database, customer_id, journey=journey,
                                      split=split, versions=versions)))

    page, count = _settled.consistent(wh, j.MIN_DATE, j.MAX_DATE, query)
    return [_row(tuple(r)) for r in page], int(count[0][0])
