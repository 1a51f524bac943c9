"""The pure parts of `journeys replay`: the recomputation of a customer group from its
raw history (stream.engine.recompute) equals the reference's stitching semantics
whatever the order and duplication of the stored events, and the diff
(deploy.ops.replay_plan) writes exactly what differs, owning final rows and leaving open
ones the live stream has written to it."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploy.ops.replay_plan import (
    INSTANCE_COMPARED,
    OPEN_JOURNEY_VERSION,
    OPEN_SESSION_VERSION,
    SESSIONS_KEY,
    Plan,
    Stored,
    instance_content,
    plan_instances,
    plan_sessions,
    replay_version,
)
from deploy.ops.replay_run import plan_groups
from journeys.definitions import parse_definitions
from journeys.errors import ServiceUnavailable
from journeys.events import event_value
from journeys.versions import TOMBSTONE_VERSION, version_floor
from stream.engine.identity import JUNK_IDS
from stream.engine.journeys import JourneyEngine
from stream.engine.recompute import RawEvent, earliest_links, group_key, recompute_group
from stream.engine.sessions import Sessionizer
from tests.integration.test_stream_journeys import DEFINITIONS, traffic
from tests.profiles import examples
from tests.reference.stitching_ref import split, view_of
from tests.unit.test_stream_stages import run, scenario
from warehouse.tables import JOURNEY_INSTANCES
from warehouse.writers_journeys import journey_instance_row

DEFS = parse_definitions(yaml.safe_load(DEFINITIONS))
COLUMNS = JOURNEY_INSTANCES.columns


def _raw(e: dict[str, Any]) -> RawEvent:
    return RawEvent(e["event_id"], e["type"], e["channel"], e["occurred_at"],
                    e["customer_id"] or "", e["anonymous_id"] or "", None,
                    event_value(e.get("properties") or {})[0])


def _recompute_all(raw: list[RawEvent], horizon: int) -> tuple[dict[str, Any], set[Any]]:
    links = earliest_links((r.anonymous_id, r.customer_id, r.occurred_at, r.event_id)
                           for r in raw)
    groups: dict[str, list[RawEvent]] = {}
    for r in raw:
        key = group_key(r.customer_id, r.anonymous_id, links)
        if key is not None:
            groups.setdefault(key, []).append(r)
    assert sorted(groups) == plan_groups(((r.customer_id, r.anonymous_id) for r in raw),
                                         links)
    engine, sessionizer = JourneyEngine(DEFS.journeys), Sessionizer(DEFS.sessions.gap_ms)
    view: dict[str, Any] = {}
    sessions: set[Any] = set()
    for key, evs in groups.items():
        res = recompute_group(key, evs, links, engine=engine, sessionizer=sessionizer,
                              horizon=horizon)
        for r in res.instances.values():
            view[r.instance_id] = (
                r.journey, r.customer_id, r.status, r.opened_at_ms, r.closed_at_ms,
                r.furthest_step, r.path_times, r.path_types, r.path_channels,
                list(zip(r.detour_kinds, r.detour_steps, r.detour_channels, r.detour_times,
                         strict=True)), r.value)
        sessions |= {(s.customer_id, s.started_at_ms, s.ended_at_ms, s.events)
                     for s in res.sessions.values()}
    return view, sessions


@settings(max_examples=examples(25), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), order=st.integers(0, 10_000),
       back=st.integers(0, 6 * 3_600_000))
def test_recompute_is_the_reference_in_any_order(seed: int, order: int, back: int) -> None:
    events = traffic(seed=seed, people=25)
    horizon = max(e["occurred_at"] for e in events) - back
    raw = [_raw(e) for e in events]
    rnd = random.Random(order)
    raw += rnd.sample(raw, len(raw) // 5)  # re-deliveries
    rnd.shuffle(raw)
    view, sessions = _recompute_all(raw, horizon)
    instances, want_sessions = split(DEFS, events, set(JUNK_IDS), horizon)
    assert view == view_of(instances)
    assert sessions == want_sessions


def test_links_earliest_wins_and_junk_never_links() -> None:
    links = earliest_links([("d1", "c2", 50, "e9"), ("d1", "c1", 50, "e1"),
                            ("d1", "c3", 70, "e0"), ("guest", "c1", 1, "x"),
                            ("d2", "null", 1, "y")])
    assert links == {"d1": ("c1", 50)}
    assert group_key("", "d1", links) == "c1"
    assert group_key("c9", "d1", links) == "c9"
    assert group_key("undefined", "guest", links) is None


# ------------------------------------------------------------------------ the diff
def _rec(iid: str, status: str = "converted", path: tuple[int, ...] = (10, 20),
         journey: str = "j", opened: int | None = None) -> dict[str, Any]:
    times = list(path)
    return {"instance_id": iid, "journey": journey, "customer_id": "c", "status": status,
            "opened_at_ms": times[0] if opened is None else opened,
            "closed_at_ms": 0 if status == "open" else times[-1],
            "furthest_step": 1, "furthest_step_name": "b", "path_types": ["a"] * len(times),
            "path_channels": ["web"] * len(times), "path_times": times, "version": 1,
            "definition_version": "v2"}


def _stored(rec: dict[str, Any], deleted: bool = False) -> Stored:
    content = instance_content(journey_instance_row(rec), COLUMNS)
    return Stored(content, deleted, rec["opened_at_ms"], rec["status"] != "open")


def _plan(recomputed: list[dict[str, Any]], stored: dict[tuple[str, str], Stored],
          since: int = 0) -> Plan:
    plan = Plan()
    plan_instances(plan, recomputed, stored, columns=COLUMNS, version=replay_version(7),
                   definition_versions={"j": "v2"}, in_scope=lambda t: t >= since)
    return plan


def _written(plan: Plan) -> dict[str, tuple[int, int, str]]:
    v, d, s = COLUMNS.index("version"), COLUMNS.index("deleted"), COLUMNS.index("status")
    return {r[0]: (r[v], r[d], r[s]) for r in plan.instance_rows}


def test_plan_writes_what_differs_and_owns_final_rows_only() -> None:
    same, longer = _rec("same"), _rec("longer", path=(10, 20, 30))
    stale_final = _rec("gone", status="abandoned")
    live_open, new_open = _rec("live", status="open"), _rec("new-open", status="open")
    stored = {("j", "same"): _stored(same), ("j", "longer"): _stored(_rec("longer")),
              ("j", "gone"): _stored(stale_final), ("j", "live"): _stored(live_open),
              ("j", "still-open"): _stored(_rec("still-open", status="open")),
              ("j", "retracted"): _stored(_rec("retracted"), deleted=True),
              ("j", "old"): _stored(_rec("old", opened=1))}
    recomputed = [same, longer, _rec("live", status="open", path=(10, 20, 40)), new_open,
                  _rec("retracted"), _rec("added", status="abandoned")]
    plan = _plan(recomputed, stored, since=5)
    high = replay_version(7)
    assert _written(plan) == {
        "longer": (high, 0, "converted"),  # a final row that differs: replaced
        "gone": (high, 1, "open"),  # a stored final row the replay no longer makes
        "new-open": (OPEN_JOURNEY_VERSION, 0, "open"),  # open, never written: the live wins
        "retracted": (high, 0, "converted"),  # comes back above the tombstone
        "added": (high, 0, "abandoned"),
    }
    c = plan.counts["j"]
    assert (c.added, c.changed, c.removed, c.unchanged, c.left_to_live) == (3, 1, 1, 1, 2)
    assert c.open_added == 1  # "new-open": the workers do not hold it (the CLI warns)
    # "old" is out of the range (opened before --since): neither counted nor touched
    assert (c.converted_before, c.converted_after) == (2, 3)  # + "retracted", - none


def test_plan_twice_is_empty() -> None:
    recs = [_rec("a"), _rec("b", status="open"), _rec("c", status="abandoned")]
    first = _plan(recs, {})
    assert first.counts["j"].added == 3
    v = COLUMNS.index("version")
    stored = {("j", str(r[0])): Stored(instance_content(r, COLUMNS), False, int(r[4]),
                                        r[3] != "open") for r in first.instance_rows}
    assert all(r[v] in (OPEN_JOURNEY_VERSION, replay_version(7)) for r in first.instance_rows)
    again = _plan(recs, stored)
    assert again.instance_rows == [] and again.counts["j"].unchanged == 3


def test_plan_sessions() -> None:
    def row(sid: str, start: int, end: int, n: int) -> tuple[Any, ...]:
        return (sid, "c", start, end, None, n, ["web"], "web", n, 0)

    def stored(start: int, end: int, n: int, final: bool, deleted: bool = False) -> Stored:
        return Stored(("c", start, end, n, ("web",), "web"), deleted, start, final)

    gap, horizon = 100, 1_000
    plan = Plan()
    plan_sessions(plan, [row("same", 0, 10, 2), row("grew", 20, 300, 5),
                         row("open", 950, 960, 1), row("merged", 400, 410, 1),
                         row("live", 970, 990, 3)],
                  {"same": stored(0, 10, 2, True), "grew": stored(20, 200, 4, True),
                   "merged": stored(400, 410, 1, True, deleted=True),
                   "live": stored(970, 980, 2, False), "gone": stored(600, 610, 1, True)},
                  gap_ms=gap, horizon=horizon, version=replay_version(7),
                  in_scope=lambda t: True)
    got = {r[0]: (r[8], r[9]) for r in plan.session_rows}
    # final rows and deletions at the replay's version (above the stream's counters, so
    # a session the stream deleted comes back); an open one at 0, below any stream row
    assert got == {"grew": (replay_version(7), 0), "open": (OPEN_SESSION_VERSION, 0),
                   "merged": (replay_version(7), 0), "gone": (replay_version(7), 1)}
    assert OPEN_SESSION_VERSION == 0
    c = plan.counts[SESSIONS_KEY]
    assert (c.added, c.changed, c.removed, c.unchanged, c.left_to_live) == (2, 1, 1, 1, 1)


def test_replay_versions_outbid_the_stream_and_stay_below_tombstones() -> None:
    now = 1_800_000_000_000  # 2027
    assert replay_version(now) < replay_version(now + 1)
    assert replay_version(3_290_000_000_000) < TOMBSTONE_VERSION  # 2074
    # a worker generation started up to 34 years after the replay writes lower versions
    # (plus its per-customer counter, far below 2^20 per ms of difference)
    assert version_floor((now + 2**40 - 1) * 1_000_000) < replay_version(now)
    assert len(INSTANCE_COMPARED) == len(set(INSTANCE_COMPARED))


@settings(max_examples=examples(60), deadline=None)
@given(scenario(links=True))
def test_replayed_rows_outbid_every_row_the_stream_wrote(case: Any) -> None:
    """Session rows (deletions included) and instance rows of the stage pipeline, over
    random batchings and restarts (one counter per key, jumping at every generation):
    below the version of a replay started even 2^39 ms (17 years) before the workers,
    and above the version of the open rows a replay adds."""
    started = time.time_ns() // 1_000_000
    pipe, _events, _final = run(case, restarts=True)
    sessions = [v for rows in pipe.session_writes.values() for v, _deleted in rows]
    instances = list(pipe.versions.values())  # the highest per instance id
    assert max([*sessions, *instances], default=0) < replay_version(started - 2**39)
    assert min(sessions, default=1) > OPEN_SESSION_VERSION
    assert min(instances, default=1) > OPEN_JOURNEY_VERSION


def test_batches_hold_about_the_same_number_of_events() -> None:
    from deploy.ops.replay_run import EVENTS_PER_BATCH, MIN_BATCH, batch_size

    assert batch_size(1_000_000, 50_000_000) == EVENTS_PER_BATCH // 50
    assert batch_size(10, 10_000_000) == MIN_BATCH  # huge customers: a floor
    assert batch_size(0, 0) == EVENTS_PER_BATCH


def test_a_chdb_warehouse_held_by_a_running_stack_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`journeys replay` names the stack holding the chdb directory instead of failing
    inside chdb (one process per directory); another directory is not refused."""
    from typer.testing import CliRunner

    from deploy import stack as st
    from deploy.cli import _register, app

    data = tmp_path / "up"
    monkeypatch.setenv(st.REGISTRY_ENV, str(tmp_path / "registry"))
    st.publish(st.new_stack(data_dir=str(data), broker="127.0.0.1:39999",
                            topic_prefix="upx", partitions=3, app_id="up-app",
                            api_url="http://127.0.0.1:18000",
                            warehouse_path=str(data / "warehouse"), state="running"))
    monkeypatch.setenv("JOURNEYS_DATA_DIR", str(data))
    monkeypatch.setenv("JOURNEYS_WAREHOUSE__BACKEND", "chdb")
    monkeypatch.setenv("JOURNEYS_WAREHOUSE__PATH", str(data / "warehouse"))
    _register()
    got = CliRunner().invoke(app, ["replay", "--dry-run"])
    assert isinstance(got.exception, ServiceUnavailable), got.output
    assert "holds its chdb warehouse" in str(got.exception)
    assert f"pid {os.getpid()}" in str(got.exception)
