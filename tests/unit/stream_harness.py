"""Drives the three pure stream stages the way the worker does, without Kafka.

Raw events go through ValidateStage -> by-identity partitions -> IdentityStage ->
by-customer partitions -> CustomerStage, each partition a FIFO, each stage taking
random batches of messages (log order kept per partition, partitions interleaved at
random). Handovers are appended to the by-customer partitions like produced messages.
Warehouse rows are folded like ReplacingMergeTree(version) with tombstones; tables are
dicts of bytes. A "restart" replaces the customer stage with a new one rebuilt from
the table and re-delivers the last batch (what an uncommitted batch looks like).
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

import orjson

from journeys.definitions import Definitions
from journeys.events import EventValidator
from stream.engine.identity import MergeRecord
from stream.engine.journeys import InstanceRow
from stream.engine.sessions import SessionRow
from stream.stages.customers import CustomerBatch, CustomerStage
from stream.stages.identity import IdentityStage
from stream.stages.validate import ValidateStage

CHANNELS = ("web", "app", "store", "email")


class Pipeline:
    def __init__(self, defs: Definitions, *, partitions: int, lateness_ms: int,
                 seed: int, bulk: bool = False) -> None:
        self.defs = defs
        self.partitions = partitions
        self.lateness_ms = lateness_ms
        self.rnd = random.Random(seed)
        self.bulk = bulk  # each stage takes everything queued (a backlog), not a few
        self.validate = ValidateStage(EventValidator(CHANNELS),
                                      {d.steps[0] for d in defs.journeys}, partitions)
        self.identity = IdentityStage(partitions)
        self.customers = self._new_customer_stage()
        self.by_identity: list[deque[bytes]] = [deque() for _ in range(partitions)]
        self.by_customer: list[deque[bytes]] = [deque() for _ in range(partitions)]
        self.aliases: dict[str, str] = {}
        self.states: dict[bytes, bytes] = {}
        self.instances: dict[str, InstanceRow] = {}
        self.versions: dict[str, int] = {}
        self.sessions: dict[str, tuple[int, SessionRow]] = {}
        self.closed: list[InstanceRow] = []
        self.merges: list[MergeRecord] = []
        self.wall = 1_000_000
        self.last_batch: list[tuple[int, bytes]] = []
        self.late = 0
        self.reached: list[Any] = []  # step observations, as the alert hook gets them
        self.alert_marks: dict[int, int] = {}  # partition -> last watermark sent with them
        self.expired = 0

    def _new_customer_stage(self) -> CustomerStage:
        return CustomerStage(self.defs, allowed_lateness_ms=self.lateness_ms,
                             partitions=self.partitions)

    # ------------------------------------------------------------------ stages
    def feed_raw(self, events: list[dict[str, Any]], arrived_ms: int | None = None) -> None:
        """Raw events arriving at wall time `arrived_ms` (event time runs with the wall
        clock, as in live traffic: arrival >= occurred_at)."""
        if arrived_ms is not None:
            self.wall = max(self.wall, arrived_ms)
        records = [("raw", 0, i, None, orjson.dumps(e)) for i, e in enumerate(events)]
        batch = self.validate.prepare(records, 0)
        assert not batch.dead
        for p, value in batch.envelopes.messages():
            self.by_identity[p].append(value)

    def _take(self, queues: list[deque[bytes]]) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        for p in self.rnd.sample(range(self.partitions), self.partitions):
            n = len(queues[p]) if self.bulk else self.rnd.randint(0, 3)
            for _ in range(min(len(queues[p]), n)):
                out.append((p, queues[p].popleft()))
        return out

    def step_identity(self) -> None:
        records = self._take(self.by_identity)
        batch = self.identity.prepare(records, self.aliases.get)
        for p, value in batch.envelopes.messages():
            self.by_customer[p].append(value)
        for anon, (cust, _p) in batch.aliases.items():
            self.aliases[anon] = cust
        self.merges.extend(batch.merges)

    def step_customers(self) -> None:
        records = self._take(self.by_customer)
        self._apply(self.customers.prepare(records, self.states.get, self.wall))
        self.last_batch = records

    def tick(self, wall_ms: int = 0) -> None:
        """The worker's timer: partitions that caught up with their log follow the wall
        clock (here: idle at once); every partition visits its due customers."""
        self.wall += wall_ms
        due = []
        caught_up = not self.pending()
        for p in range(self.partitions):
            prog = self.customers.progress_for(p)
            if caught_up:
                prog.idle_advance(self.wall, 0)
            nxt = prog.next_wake()
            if nxt is not None and nxt <= prog.watermark:
                due.append(p)
        self._apply(self.customers.prepare((), self.states.get, self.wall, tick=due))

    def restart(self) -> None:
        """New customer stage from the table; the last batch comes again."""
        self.customers = self._new_customer_stage()
        self.customers.rebuild(set(range(self.partitions)), list(self.states.items()))
        self._apply(self.customers.prepare(self.last_batch, self.states.get, self.wall))

    def _apply(self, batch: CustomerBatch) -> None:
        self.late += batch.late
        self.expired += batch.holds_expired
        for p, (obs, wm) in batch.reached.items():
            self.reached.extend(obs)
            self.alert_marks[p] = wm
        for row in batch.session_rows:
            old = self.sessions.get(row.session_id)
            if old is None or row.version > old[0]:
                self.sessions[row.session_id] = (row.version, row)
        for item in [*batch.instance_rows, *batch.retractions]:
            if item.version <= self.versions.get(item.instance_id, -1):
                continue
            self.versions[item.instance_id] = item.version
            if isinstance(item, InstanceRow):
                self.instances[item.instance_id] = item
            else:
                self.instances.pop(item.instance_id, None)
        self.closed.extend(batch.closed)
        for p, value in batch.handovers.messages():
            self.by_customer[p].append(value)
        for key, (_p, value) in batch.states.items():
            if value is None:
                self.states.pop(key, None)
            else:
                self.states[key] = value

    def pending(self) -> bool:
        return any(self.by_identity) or any(self.by_customer)

    def drain(self) -> None:
        while self.pending():
            self.step_identity()
            self.step_customers()

    def finish(self, watermark: int) -> None:
        """Drain, then move every partition's watermark to `watermark` and settle."""
        self.drain()
        for p in range(self.partitions):
            self.customers.progress_for(p).clock.advance_to(watermark + self.lateness_ms)
        self._apply(self.customers.prepare((), self.states.get, self.wall,
                                           tick=range(self.partitions)))
        self.drain()

    # ------------------------------------------------------------------ views
    def live_sessions(self) -> set[tuple[str, int, int, int]]:
        return {(r.customer_id, r.started_at_ms, r.ended_at_ms, r.events)
                for _v, r in self.sessions.values() if not r.deleted}

    def journey_view(self) -> dict[str, tuple[Any, ...]]:
        return {r.instance_id: (r.journey, r.customer_id, r.status, r.opened_at_ms,
                                r.closed_at_ms, r.furthest_step, r.path_times, r.path_types,
                                r.path_channels, list(zip(r.detour_kinds, r.detour_steps,
                                                          r.detour_channels, r.detour_times,
                                                          strict=True)))
                for r in self.instances.values()}
