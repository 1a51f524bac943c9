"""Run a replay (`journeys replay`, docs/operations.md "Replay"): groups of customers in
batches, from the raw touchpoints to the rows that differ, with a checkpoint after
every written batch so an interrupted run resumes where it stopped.

I/O at the edges (warehouse.replay_io, the checkpoint file); the recomputation is
stream.engine.recompute, the diff deploy.ops.replay_plan.

The checkpoint is a JSON file in `<data dir>/replay/`, one per replay *scope* (the
warehouse, the selected definitions with their versions, the time range): the run's
horizon, row version and the last group finished (groups go in sorted key order). A run
of the same scope resumes an unfinished one with its horizon and version, so its
result is the same as an uninterrupted run's; once finished, the next run starts anew.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from deploy.ops.replay_plan import (
    ALERT_COMPARED,
    ALERTS_KEY,
    INSTANCE_COMPARED,
    SESSION_COMPARED,
    SESSIONS_KEY,
    Counts,
    Plan,
    Stored,
    alert_content,
    normalized,
    plan_alerts,
    plan_instances,
    plan_sessions,
    replay_version,
)
from journeys.definitions import Definitions
from journeys.errors import ConfigError
from journeys.events import event_value
from journeys.timeutil import now_ms
from stream.engine.dropoff import DropoffEvaluator
from stream.engine.journeys import JourneyEngine
from stream.engine.outputs import StepReached
from stream.engine.recompute import (
    Link,
    RawEvent,
    earliest_links,
    group_key,
    owner,
    recompute_group,
)
from stream.engine.sessions import Sessionizer
from warehouse import replay_io
from warehouse.backend import Warehouse
from warehouse.tables import JOURNEY_INSTANCES

EVENTS_PER_BATCH = 300_000
"""Raw events recomputed, compared and written together (one read of each table per
batch: `touchpoints` has no index by customer), so a batch is this many events' worth of
customers (at least MIN_BATCH), as the table's average events per customer says."""
MIN_BATCH = 100


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """What to replay. `journeys` empty = every definition (and then sessions too)."""

    journeys: tuple[str, ...] = ()
    since_ms: int | None = None
    until_ms: int | None = None
    horizon_ms: int | None = None  # None: the newest raw event minus the lateness
    dry_run: bool = False
    limit_groups: int | None = None  # stop after this many groups (resume later)
    restart: bool = False  # forget an unfinished run's checkpoint
    batch: int | None = None  # groups per read, diff and write; None: EVENTS_PER_BATCH


@dataclass
class ReplayReport:
    """What a run did (or, dry, would do)."""

    horizon_ms: int
    version: int
    groups_total: int
    groups_done: int = 0  # over the whole run, resumed parts included
    resumed_from: int = 0  # groups finished before this invocation
    events: int = 0
    rows_written: int = 0
    late_applied: int = 0  # events listed as late that the run applied (and unlisted)
    finished: bool = False
    counts: dict[str, Counts] = field(default_factory=dict)
    checkpoint: Path | None = None

    def add(self, plan: Plan) -> None:
        self.late_applied += len(plan.late_applied)
        for key, c in plan.counts.items():
            self.counts.setdefault(key, Counts()).add(c)


Progress = Callable[[int, int], None]  # (groups done, groups total)


def scope_key(location: str, journeys: Iterable[tuple[str, str]], req: ReplayRequest) -> str:
    body = orjson.dumps([location, sorted(journeys), req.since_ms, req.until_ms,
                         not req.journeys])
    return hashlib.sha256(body).hexdigest()[:16]


def _load(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ConfigError(f"replay checkpoint {path} is unreadable ({exc}); remove it or "
                          "run with --restart") from None
    return data


def _save(path: Path, data: dict[str, Any]) -> None:
    """Atomically (a crash leaves the old or the new checkpoint, never half of one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(data))
    os.replace(tmp, path)


def selected(defs: Definitions, names: Sequence[str]) -> Definitions:
    known = set(defs.names)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"no journey definition named {', '.join(map(repr, unknown))} "
                          f"(defined: {', '.join(defs.names)})")
    if not names:
        return defs
    return defs.model_copy(update={"journeys": [d for d in defs.journeys if d.name in names]})


def _state(wh: Warehouse, ckpt: Path, req: ReplayRequest, allowed_lateness_ms: int
           ) -> dict[str, Any]:
    """The unfinished run of this scope to resume, else a new run: its horizon (given,
    else the newest raw event minus the allowed lateness) and row version."""
    state = None if req.dry_run else _load(ckpt)
    if state is not None and not state.get("finished") and not req.restart:
        return state
    newest = replay_io.newest_event_ms(wh)
    horizon = req.horizon_ms if req.horizon_ms is not None else (
        (newest or 0) - allowed_lateness_ms)
    return {"horizon": horizon, "version": replay_version(now_ms()), "last": None,
            "done": 0, "finished": False}


def plan_groups(pairs: Iterable[tuple[str, str]], links: dict[str, Link]) -> list[str]:
    """Sorted group keys of the raw events' (customer id, anonymous id) pairs."""
    keys = {group_key(c, a, links) for c, a in pairs}
    return sorted(k for k in keys if k is not None)


def replay(wh: Warehouse, defs: Definitions, req: ReplayRequest, *, location: str,
           data_dir: Path, allowed_lateness_ms: int, path_cap: int,
           progress: Progress = lambda _done, _total: None) -> ReplayReport:
    """Run (or, with dry_run, plan) a replay; see the module docstring."""
    chosen = selected(defs, req.journeys)
    versions = {d.name: d.version for d in chosen.journeys}
    ckpt = data_dir / "replay" / f"{scope_key(location, versions.items(), req)}.json"
    state = _state(wh, ckpt, req, allowed_lateness_ms)
    links = earliest_links(replay_io.link_pairs(wh))
    groups = plan_groups(replay_io.id_pairs(wh, req.since_ms, req.until_ms), links)
    last = state["last"]
    todo = [g for g in groups if last is None or g > last]
    report = ReplayReport(horizon_ms=int(state["horizon"]), version=int(state["version"]),
                          groups_total=len(todo) + int(state["done"]),
                          groups_done=int(state["done"]), resumed_from=int(state["done"]),
                          checkpoint=None if req.dry_run else ckpt)
    engine = JourneyEngine(chosen.journeys, path_cap=path_cap,
                           definitions_version=defs.version)
    sessionizer = Sessionizer(defs.sessions.gap_ms)
    limit = len(todo) if req.limit_groups is None else min(req.limit_groups, len(todo))
    with_alerts = req.since_ms is None and req.until_ms is None
    observed = ckpt.with_suffix(".observations.jsonl")
    if with_alerts and not req.dry_run and not state["last"]:
        observed.unlink(missing_ok=True)  # a new run: observations of an old one go
    memory: list[StepReached] = []
    size = req.batch or batch_size(len(groups), replay_io.touchpoint_count(wh))
    keys = f"replay_keys_{ckpt.stem}{'_dry' if req.dry_run else ''}"
    wanted = set(todo)
    replay_io.create_keys(wh, keys, [*((g, g) for g in todo), *(
        (dev, cust) for dev, (cust, _at) in links.items() if cust in wanted and dev != cust)])
    try:
        progress(report.groups_done, report.groups_total)
        for start in range(0, limit, size):
            batch = todo[start:min(start + size, limit)]
            plan, reached = _batch(wh, batch, replay_io.KeyRange(keys, batch[0], batch[-1]),
                                   links, engine, sessionizer, versions, req,
                                   int(state["horizon"]), int(state["version"]),
                                   not req.journeys, report)
            report.add(plan)
            if req.dry_run:
                memory.extend(reached)
            else:
                report.rows_written += replay_io.write(wh, plan.instance_rows,
                                                       plan.session_rows)
                replay_io.clear_late(wh, plan.late_applied)  # after the rows it concerns
                if with_alerts:  # before the checkpoint: a batch redone adds duplicates only
                    _append(observed, reached)
                state.update(last=batch[-1], done=int(state["done"]) + len(batch))
                _save(ckpt, state)
            report.groups_done += len(batch)
            progress(report.groups_done, report.groups_total)
    finally:
        replay_io.drop_keys(wh, keys)
    report.finished = limit == len(todo)
    if report.finished and with_alerts:
        report.add(_alerts(wh, chosen, versions, report, req,
                           memory if req.dry_run else _read(observed)))
    if report.finished and not req.dry_run:
        state["finished"] = True
        _save(ckpt, state)
        observed.unlink(missing_ok=True)
    return report


def _append(path: Path, observations: Sequence[StepReached]) -> None:
    """Observations of a written batch, for the alert history at the end (idempotent:
    the evaluator applies a repeated observation once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as f:
        for o in observations:
            f.write(orjson.dumps([o.journey, o.instance_id, o.step_index, o.reached_at_ms,
                                  o.channel, o.as_of]) + b"\n")
        f.flush()
        os.fsync(f.fileno())


def _read(path: Path) -> list[StepReached]:
    if not path.exists():
        return []
    return [StepReached(*orjson.loads(line)) for line in path.read_bytes().splitlines()
            if line]


def _alerts(wh: Warehouse, chosen: Definitions, versions: dict[str, str],
            report: ReplayReport, req: ReplayRequest,
            observations: Iterable[StepReached]) -> Plan:
    """The drop-off alert history of the selected definitions, from every group's
    observations (docs/alerting.md): windows final at the horizon, diffed with the
    stored alerts and, unless dry, written (alerts no longer raised are deleted)."""
    evaluator = DropoffEvaluator(chosen.journeys)
    evaluator.observe_many(observations)
    records = [r.to_dict() for r in evaluator.advance(report.horizon_ms)]
    stored = {(str(aid), str(dv)): (tuple(alert_content(dict(zip(ALERT_COMPARED, rest,
                                                                 strict=True)))),
                                    int(final_at))
              for aid, journey, dv, final_at, *rest in replay_io.stored_alerts(
                  wh, list(versions), sorted(set(versions.values())), ALERT_COMPARED)
              if versions.get(journey) == dv}
    plan = Plan()
    plan.count(ALERTS_KEY)
    todo = plan_alerts(plan, records, stored, horizon=report.horizon_ms)
    if not req.dry_run:
        report.rows_written += replay_io.replace_alerts(wh, todo.write, todo.delete)
    return plan


def batch_size(groups: int, events: int) -> int:
    """Groups per batch: EVENTS_PER_BATCH events' worth on average, at least MIN_BATCH."""
    per_group = max(1, events // max(1, groups))
    return max(MIN_BATCH, EVENTS_PER_BATCH // per_group)


def _batch(wh: Warehouse, batch: Sequence[str], keys: replay_io.KeyRange,
           links: dict[str, Link], engine: JourneyEngine, sessionizer: Sessionizer,
           versions: dict[str, str], req: ReplayRequest, horizon: int, version: int,
           with_sessions: bool, report: ReplayReport) -> tuple[Plan, list[StepReached]]:
    """Recompute, read what is stored, and diff one batch of groups; its drop-off
    observations."""
    wanted = set(batch)
    by_group: dict[str, list[RawEvent]] = {}
    for eid, typ, ch, t, cust, anon, ctx, props in replay_io.raw_events(wh, keys):
        g = group_key(cust, anon, links)
        if g in wanted:
            by_group.setdefault(g, []).append(RawEvent(
                eid, typ, ch, int(t), cust, anon,
                orjson.loads(ctx) if ctx and ctx not in ("{}", "null") else None,
                _value(props)))
    records: list[dict[str, Any]] = []
    sessions: list[Any] = []
    reached: list[StepReached] = []
    for g in batch:
        res = recompute_group(g, by_group.get(g, []), links, engine=engine,
                              sessionizer=sessionizer, horizon=horizon)
        report.events += res.events
        records.extend(r.as_record() for r in res.instances.values())
        sessions.extend(res.sessions.values())
        reached.extend(res.reached)

    def in_scope(t: int) -> bool:
        return ((req.since_ms is None or t >= req.since_ms)
                and (req.until_ms is None or t < req.until_ms))

    plan = Plan()
    if with_sessions:  # every definition and the sessions: late events applied now
        plan.late_applied = replay_io.late_among(
            wh, _settled_events(by_group, sessions, links, engine, sessionizer.gap_ms,
                                horizon, in_scope))
    for name in versions:
        plan.count(name)
    plan_instances(plan, records, _stored_instances(wh, keys, versions),
                   columns=JOURNEY_INSTANCES.columns, version=version,
                   definition_versions=versions, in_scope=in_scope)
    if with_sessions:
        plan.count(SESSIONS_KEY)
        plan_sessions(plan, sessions, _stored_sessions(wh, keys, sessionizer.gap_ms, horizon),
                      gap_ms=sessionizer.gap_ms, horizon=horizon, version=version,
                      in_scope=in_scope)
    return plan, reached


def _stored_instances(wh: Warehouse, keys: replay_io.KeyRange, versions: dict[str, str]
                      ) -> dict[tuple[str, str], Stored]:
    out: dict[tuple[str, str], Stored] = {}
    opened = INSTANCE_COMPARED.index("opened_at_ms")
    for journey, iid, dv, deleted, *content in replay_io.stored_instances(
            wh, keys, list(versions), sorted(set(versions.values())), INSTANCE_COMPARED):
        if versions.get(journey) != dv:
            continue
        c = normalized(content)
        out[(journey, iid)] = Stored(c, bool(deleted), int(c[opened]), c[1] != "open")
    return out


def _stored_sessions(wh: Warehouse, keys: replay_io.KeyRange, gap_ms: int, horizon: int
                     ) -> dict[str, Stored]:
    out: dict[str, Stored] = {}
    for sid, deleted, *content in replay_io.stored_sessions(wh, keys, SESSION_COMPARED):
        c = normalized(content)
        out[sid] = Stored(c, bool(deleted), int(c[1]), int(c[2]) + gap_ms <= horizon)
    return out


def _value(properties: str | None) -> float | None:
    """The journey value the stream read from the event (docs/semantics.md "Journey
    value"): an unusable one is left out, as there."""
    if not properties or properties in ("{}", "null"):
        return None
    try:
        props = orjson.loads(properties)
    except orjson.JSONDecodeError:
        return None
    return event_value(props)[0] if isinstance(props, dict) else None


def _settled_events(by_group: Mapping[str, Sequence[RawEvent]], sessions: Sequence[Any],
                    links: dict[str, Link], engine: JourneyEngine, gap_ms: int,
                    horizon: int, in_scope: Callable[[int], bool]) -> list[str]:
    """Events the replay's written rows surely hold: before the horizon by more than
    the longest conversion window (no journey still open at the horizon, which the
    replay leaves to the live stream, can hold them) and inside a session of their key
    that is final at the horizon. Only those leave the late-events list."""
    before = horizon - max((d.conversion_window_ms for d in engine.definitions), default=0)
    spans: dict[str, list[tuple[int, int]]] = {}
    for s in sessions:
        if s.ended_at_ms + gap_ms <= horizon:
            spans.setdefault(s.customer_id, []).append((s.started_at_ms, s.ended_at_ms))
    out: set[str] = set()
    for evs in by_group.values():
        for e in evs:
            key = owner(e, links)
            if (key is not None and e.occurred_at < before and in_scope(e.occurred_at)
                    and any(a <= e.occurred_at <= b for a, b in spans.get(key, ()))):
                out.add(e.event_id)
    return sorted(out)
