"""`journeys replay` against the warehouse on BOTH engines (ClickHouse 18.16 server and
chdb): a customer-grouped history file's touchpoints (stored in file order, some twice)
replayed give the reference's journeys and sessions exactly; a replay stopped part-way
(after N customers, or by an exception in its progress callback) resumes to the same
result; a second replay changes nothing; a changed definition is replayed under its new
version beside the old one, equal to the reference of the new definition; the drop-off
alert history of a day of the demo's traffic is the stream's reference."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from deploy.ops.replay_run import ReplayReport, ReplayRequest, replay
from journeys.definitions import Definitions, load_definitions, parse_definitions
from journeys.events import EventValidator, Touchpoint
from journeys.settings import DEFAULT_PATH_CAP, WarehouseConfig
from stream.engine.dropoff import alert_id
from stream.engine.identity import JUNK_IDS
from tests.integration.alerts_support import streamed_alerts
from tests.integration.journey_report_support import open_warehouse
from tests.integration.stream_support import demo_day
from tests.integration.test_ingest_history import grouped_by_customer
from tests.integration.test_stream_backfill import DAY, START_MS
from tests.integration.test_stream_journeys import DEFINITIONS, traffic
from tests.reference.stitching_ref import split
from warehouse.backend import Warehouse
from warehouse.connect import connect
from warehouse.queries import alerts as alerts_query
from warehouse.schema import migrate
from warehouse.sql import qualified
from warehouse.tables import JOURNEY_INSTANCES, SESSIONS
from warehouse.writers import write_touchpoints
from warehouse.writers_alerts import write_alerts

LATENESS = 300_000
_COUNT = iter(range(1_000_000))
CHANGED = DEFINITIONS.replace("abandon_after: 40m", "abandon_after: 25m")


@pytest.fixture(params=["server", "chdb"])
def wh(request: pytest.FixtureRequest, run_id: str) -> Iterator[Warehouse]:
    config: WarehouseConfig = open_warehouse(request, request.param,
                                             f"rpl_{run_id}_{next(_COUNT)}")
    w = connect(config)
    try:
        migrate(w)
        yield w
    finally:
        w.execute(f"DROP DATABASE IF EXISTS {config.database}")
        w.close()


def _history(tmp_path: Path) -> tuple[list[dict[str, Any]], Path]:
    """A JSONL export with each customer's history together (tests/integration/
    test_ingest_history.py), ids as exported (None for a missing one)."""
    events = traffic(seed=33, people=90)
    path = tmp_path / "history.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n"
                              for e in grouped_by_customer(events, seed=5)))
    return events, path


def _store(wh: Warehouse, path: Path) -> None:
    """The file's events into `touchpoints` in file order, in batches as the stream
    writes them, the first 100 twice (a re-delivery)."""
    validator = EventValidator()
    parsed = [validator.parse(line) for line in path.read_bytes().splitlines()]
    events = [e for e in parsed if isinstance(e, Touchpoint)]
    assert len(events) == len(parsed)
    for i in range(0, len(events), 150):
        write_touchpoints(wh, events[i:i + 150])
    write_touchpoints(wh, events[:100])


def _defs(text: str) -> Definitions:
    return parse_definitions(yaml.safe_load(text))


def _run(wh: Warehouse, defs: Definitions, tmp_path: Path, **kw: Any) -> ReplayReport:
    return replay(wh, defs, ReplayRequest(**kw), location=wh.database,
                  data_dir=tmp_path / "data", allowed_lateness_ms=LATENESS,
                  path_cap=DEFAULT_PATH_CAP)


def _instances(wh: Warehouse, version: str) -> dict[str, tuple[Any, ...]]:
    rows = wh.query(
        "SELECT instance_id, journey, customer_id, status, opened_at_ms, closed_at_ms, "
        "furthest_step, path_times, path_types, path_channels, detour_kinds, detour_times\n"
        f"FROM {qualified(wh.database, JOURNEY_INSTANCES.name)} FINAL\n"
        "WHERE deleted = 0 AND definition_version = %(v)s", {"v": version})
    return {r[0]: (r[1], r[2], r[3], int(r[4]), int(r[5]), int(r[6]), list(r[7]),
                   list(r[8]), list(r[9]), list(zip(r[10], r[11], strict=True)))
            for r in rows}


def _sessions(wh: Warehouse) -> set[tuple[str, int, int, int]]:
    rows = wh.query(f"SELECT customer_id, started_at_ms, ended_at_ms, events FROM "
                    f"{qualified(wh.database, SESSIONS.name)} FINAL WHERE deleted = 0")
    return {(str(c), int(s), int(e), int(n)) for c, s, e, n in rows}


def _reference(defs: Definitions, events: list[dict[str, Any]], horizon: int
               ) -> tuple[dict[str, tuple[Any, ...]], set[tuple[str, int, int, int]]]:
    instances, sessions = split(defs, events, set(JUNK_IDS), horizon)
    return {i.instance_id: (
        i.journey, i.customer, i.status, i.opened_at, i.closed_at or 0, i.furthest,
        [e.t for e in i.path], [e.type for e in i.path], [e.channel for e in i.path],
        [(x.kind, x.t) for x in i.detours]) for i in instances}, sessions


def _check_reference(wh: Warehouse, defs: Definitions, events: list[dict[str, Any]],
                     horizon: int) -> None:
    want, want_sessions = _reference(defs, events, horizon)
    got: dict[str, tuple[Any, ...]] = {}
    for d in defs.journeys:
        got.update({k: v for k, v in _instances(wh, d.version).items() if v[0] == d.name})
    assert got == want
    assert _sessions(wh) == want_sessions


def test_grouped_history_replayed_is_the_reference_and_twice_changes_nothing(
        wh: Warehouse, tmp_path: Path) -> None:
    events, path = _history(tmp_path)
    _store(wh, path)
    defs = _defs(DEFINITIONS)
    horizon = max(e["occurred_at"] for e in events) - LATENESS
    seen: list[tuple[int, int]] = []
    first = replay(wh, defs, ReplayRequest(batch=25), location=wh.database,
                   data_dir=tmp_path / "data", allowed_lateness_ms=LATENESS,
                   path_cap=DEFAULT_PATH_CAP, progress=lambda d, t: seen.append((d, t)))
    assert first.finished and first.horizon_ms == horizon
    assert seen[0][0] == 0 and seen[-1][0] == seen[-1][1] == first.groups_total
    assert first.counts["purchase"].added > 0 and first.counts["(sessions)"].added > 0
    _check_reference(wh, defs, events, horizon)
    again = _run(wh, defs, tmp_path, dry_run=True)
    assert again.finished and again.horizon_ms == horizon
    assert {k: c.changes for k, c in again.counts.items()} == dict.fromkeys(again.counts, 0)
    assert sum(c.unchanged for c in again.counts.values()) == sum(
        c.added for c in first.counts.values())
    second = _run(wh, defs, tmp_path)
    assert second.rows_written == 0 and second.groups_done == first.groups_done
    _check_reference(wh, defs, events, horizon)


class Interrupted(Exception):
    pass


def test_interrupted_replay_resumes_to_the_same_result(wh: Warehouse, tmp_path: Path) -> None:
    events, path = _history(tmp_path)
    _store(wh, path)
    defs = _defs(DEFINITIONS)
    horizon = max(e["occurred_at"] for e in events) - LATENESS
    part = _run(wh, defs, tmp_path, limit_groups=17, batch=5)
    assert not part.finished and part.groups_done == 17
    assert part.checkpoint is not None and part.checkpoint.exists()

    def stop(done: int, _total: int) -> None:
        if done >= 40:
            raise Interrupted

    with pytest.raises(Interrupted):  # e.g. Ctrl-C: batches written so far are kept
        replay(wh, defs, ReplayRequest(batch=8), location=wh.database,
               data_dir=tmp_path / "data", allowed_lateness_ms=LATENESS,
               path_cap=DEFAULT_PATH_CAP, progress=stop)
    rest = _run(wh, defs, tmp_path)
    assert rest.finished and rest.resumed_from == 41 and rest.version == part.version
    assert rest.horizon_ms == part.horizon_ms == horizon
    _check_reference(wh, defs, events, horizon)
    assert _run(wh, defs, tmp_path, dry_run=True).counts["purchase"].changes == 0


def test_changed_definition_replays_beside_the_old_version(wh: Warehouse,
                                                          tmp_path: Path) -> None:
    events, path = _history(tmp_path)
    _store(wh, path)
    old, new = _defs(DEFINITIONS), _defs(CHANGED)
    assert old.get("purchase").version != new.get("purchase").version
    assert old.get("onboarding").version == new.get("onboarding").version
    _run(wh, old, tmp_path)
    before = _instances(wh, old.get("purchase").version)
    dry = _run(wh, new, tmp_path, dry_run=True, journeys=("purchase",))
    assert set(dry.counts) == {"purchase", "(alerts)"}  # one definition: no sessions
    want = _reference(new, events, dry.horizon_ms)[0]
    assert dry.counts["purchase"].added == sum(v[0] == "purchase" for v in want.values())
    assert _run(wh, new, tmp_path, journeys=("purchase",)).finished
    assert _instances(wh, old.get("purchase").version) == before  # the old version stays
    _check_reference(wh, new, events, dry.horizon_ms)
    assert dry.counts["purchase"].converted_after == sum(
        1 for v in _instances(wh, new.get("purchase").version).values()
        if v[0] == "purchase" and v[2] == "converted")


@pytest.mark.timeout(600)
def test_alert_history_replayed_is_the_streams_reference(wh: Warehouse,
                                                          tmp_path: Path) -> None:
    """A day of the demo's traffic (its payment incident fires alerts) replayed: the
    alerts are the reference's as the stream evaluates them (tests/integration/
    test_stream_backfill.py), a stale stored alert of a final window is deleted, and a
    second replay changes no alert."""
    defs = load_definitions()
    events = demo_day(START_MS)
    validator = EventValidator()
    parsed = [validator.validate(e) for e in events]
    touchpoints = [e for e in parsed if isinstance(e, Touchpoint)]
    assert len(touchpoints) == len(events)
    for i in range(0, len(touchpoints), 5000):
        write_touchpoints(wh, touchpoints[i:i + 5000])
    horizon = max(e["occurred_at"] for e in events) + 10 * DAY - LATENESS
    write_alerts(wh, [{"alert_id": "stale", "kind": "fired", "journey": "purchase",
                       "step": "cart", "step_index": 1, "channel": "web",
                       "window_start_ms": START_MS, "window_end_ms": START_MS + 3_600_000,
                       "horizon_ms": 3_600_000, "population": 9, "dropped": 9, "rate": 1.0,
                       "baseline": 0.1, "baseline_windows": 3, "threshold": 0.2,
                       "confidence": 0.99, "p_value": 0.0,
                       "definition_version": defs.get("purchase").version}])
    first = _run(wh, defs, tmp_path, horizon_ms=horizon)
    assert first.counts["(alerts)"].removed == 1
    want = {alert_id(a.journey, a.step, a.channel, a.window_start): a.kind
            for a in streamed_alerts(defs, events, horizon)}
    assert sum(k == "fired" for k in want.values()) >= 2  # the incident at least
    rows, _total = alerts_query.run(wh, limit=1000)
    assert {r.alert_id: r.kind for r in rows} == want
    again = _run(wh, defs, tmp_path, horizon_ms=horizon, dry_run=True)
    assert again.counts["(alerts)"].changes == 0
    assert again.counts["(alerts)"].unchanged == len(want)


def test_a_time_range_writes_only_rows_opened_in_it(wh: Warehouse, tmp_path: Path) -> None:
    events, path = _history(tmp_path)
    _store(wh, path)
    defs = _defs(DEFINITIONS)
    times = sorted(e["occurred_at"] for e in events)
    since, until = times[len(times) // 3], times[2 * len(times) // 3]
    part = _run(wh, defs, tmp_path, since_ms=since, until_ms=until)
    assert part.finished and "(alerts)" not in part.counts  # a window needs everyone
    opened = [int(t) for (t,) in wh.query(
        f"SELECT opened_at_ms FROM {qualified(wh.database, JOURNEY_INSTANCES.name)}")]
    assert opened and all(since <= t < until for t in opened)
    started = [int(t) for (t,) in wh.query(
        f"SELECT started_at_ms FROM {qualified(wh.database, SESSIONS.name)}")]
    assert started and all(since <= t < until for t in started)
    assert _run(wh, defs, tmp_path, since_ms=since, until_ms=until,
                dry_run=True).counts["purchase"].changes == 0
    rest = _run(wh, defs, tmp_path)  # everything: the rows outside the range are added
    assert rest.counts["purchase"].unchanged == part.counts["purchase"].added
    _check_reference(wh, defs, events, rest.horizon_ms)
