"""Drives the three pure stream stages the way workers do, without Kafka.

Raw events are appended to R raw partitions (logs). V validate readers each own some raw
partitions (several workers); every step each stage takes random batches from its input
logs (log order kept per partition, partitions interleaved at random) and appends what
it writes to the next logs, like produced messages: ValidateStage -> by-identity logs ->
IdentityStage -> by-customer logs -> CustomerStage (handovers into handover logs, which
the customer stage reads as a second input, at its own pace, like the second agent).
Watermark claims travel in the envelopes, exactly as in the worker. `legacy` is the
share of internal records written in the older JSON wire format (format 2), as workers
of an earlier version left them on the topics (stream.stages.envelopes).

Warehouse rows are folded like ReplacingMergeTree(version) with deletions, and every
session row written is logged (`session_writes`: each id's versions must grow); tables are
dicts of bytes. Stages commit their input offsets after some batches (at random) and
after every tick (a commit interval passed). Restarts model crashes: a validate reader
restarts from one of its last commits, the identity and customer stages are rebuilt
from their tables and read again from their committed offsets, the last batch's table
writes having happened or not (a crash after the outputs, before the store; only an
uncommitted batch can lose them).
"""

from __future__ import annotations

import random
from itertools import pairwise
from typing import Any

import orjson

from journeys.definitions import Definitions
from journeys.events import EventValidator
from stream.engine.identity import MergeRecord
from stream.engine.outputs import InstanceRow
from stream.engine.runs import PATH_CAP
from stream.engine.session_state import SessionRow
from stream.stages.customer_batch import CustomerBatch
from stream.stages.customer_cache import DEFAULT_CUSTOMERS
from stream.stages.customer_state import HANDOVER_RECORDS, PEER_RECORDS, RECORD_BOUND, RECORDS
from stream.stages.customers import DUE_PER_BATCH, FLOOR_RETENTION_MS, CustomerStage
from stream.stages.duplicates import Conflict
from stream.stages.envelopes import JSON_FORMAT, MAX_HANDOVER_BYTES, decode
from stream.stages.identity import IdentityStage
from stream.stages.validate import ValidateStage

CHANNELS = ("web", "app", "store", "email")
NEVER_IDLE = 10**15


class Log:
    """A partition: values in order, and the consumer's position (next to read)."""

    def __init__(self) -> None:
        self.values: list[bytes] = []
        self.pos = 0
        self.committed = 0  # the consumer's committed offset (next to read after a crash)

    def take(self, n: int) -> list[tuple[int, bytes]]:
        end = min(len(self.values), self.pos + n)
        out = [(off, self.values[off]) for off in range(self.pos, end)]
        self.pos = end
        return out

    def __bool__(self) -> bool:
        return self.pos < len(self.values)


class Pipeline:
    def __init__(self, defs: Definitions, *, partitions: int, lateness_ms: int, seed: int,
                 bulk: bool = False, sources: int = 1, readers: int = 1,
                 idle_after_ms: int = NEVER_IDLE, path_cap: int = PATH_CAP,
                 record_bound: int = RECORD_BOUND,
                 cache_customers: int = DEFAULT_CUSTOMERS,
                 floor_retention_ms: int = FLOOR_RETENTION_MS,
                 due_per_batch: int | None = None,
                 handover_bytes: int | None = None) -> None:
        self.defs = defs
        # timer visits per partition and batch: by default a few (1-3) in three runs of
        # four, from the seed (its own generator: the steps' choices stay as they were),
        # so every property test also runs visits cut short (CustomerStage.due_per_batch)
        self.due_per_batch = (due_per_batch if due_per_batch is not None else
                              random.Random(seed * 7919 + 1).choice([1, 2, 3, DUE_PER_BATCH]))
        # bytes per handovers record: by default so small in two runs of three that
        # nearly every handover travels as pieces (stream.stages.envelopes), also read
        # across batches, crashes and rebalances
        self.handover_bytes = (handover_bytes if handover_bytes is not None else
                               random.Random(seed * 7919 + 2).choice(
                                   [24, 200, MAX_HANDOVER_BYTES]))
        self.floor_retention_ms = floor_retention_ms  # finished customers' floors kept
        self.cache_customers = cache_customers  # decoded values kept between batches
        self.path_cap = path_cap
        self.record_bound = record_bound  # customer values split into records of this
        self.partitions = partitions
        self.lateness_ms = lateness_ms
        self.idle_after_ms = idle_after_ms
        self.rnd = random.Random(seed)
        self.wall = 1_000_000
        self.bulk = bulk  # each stage takes everything queued (a backlog), not a few
        self.raw = [Log() for _ in range(sources)]
        self.owner = [p % max(1, min(readers, sources)) for p in range(sources)]
        self.readers = [self._new_reader(r, None) for r in range(max(self.owner) + 1)]
        # raw partition -> its commits: (next offset, source clock state), oldest first
        self.committed: dict[int, list[tuple[int, list[int]]]] = {}
        self.identity = IdentityStage(partitions, partitions)
        self.customers = self._new_customer_stage()
        self.by_identity = [Log() for _ in range(partitions)]
        self.by_customer = [Log() for _ in range(partitions)]
        self.handovers = [Log() for _ in range(partitions)]
        self.aliases: dict[bytes, bytes] = {}
        self.states: dict[bytes, bytes] = {}
        self.instances: dict[str, InstanceRow] = {}
        self.versions: dict[str, int] = {}
        self.sessions: dict[str, tuple[int, SessionRow]] = {}
        # session id -> (version, deleted) of every row written for it, in write order
        # (writes a crash prevented included: a later row must outbid those too)
        self.session_writes: dict[str, list[tuple[int, int]]] = {}
        self.closed: list[InstanceRow] = []
        self.merge_rows: dict[str, MergeRecord] = {}  # identity_merges: last write wins
        # the table values the last batch overwrote (None: absent), while uncommitted
        self.undo_identity: dict[bytes, bytes | None] = {}
        self.undo_customers: dict[bytes, bytes | None] = {}
        # the last customer batch's provisional rows, written after its states were
        # stored: what they replaced, so a crash before that write can be played
        self.undo_provisional: dict[tuple[str, str], Any] = {}
        self.late = 0
        self.conflicts: list[Conflict] = []
        self.reached: list[Any] = []  # step observations, as the alert hook gets them
        self.alert_marks: dict[int, int] = {}  # partition -> last claim sent with them
        self.expired = 0
        self.redelivered = 0
        self.legacy = 0.0  # share of internal records written as JSON (format 2)

    def _written(self, value: bytes) -> bytes:
        """An internal record as this version writes it, or (`legacy`) as JSON."""
        if self.legacy and self.rnd.random() < self.legacy:
            body = decode(value)
            assert body is not None
            if "hp" in body:  # pieces (bytes) came after format 2: never JSON
                return value
            return orjson.dumps({**body, "v": JSON_FORMAT})
        return value

    def _new_reader(self, reader: int, committed: dict[int, list[int]] | None) -> ValidateStage:
        stage = ValidateStage(EventValidator(CHANNELS), {d.steps[0] for d in self.defs.journeys},
                              self.partitions, allowed_lateness_ms=self.lateness_ms,
                              idle_after_ms=self.idle_after_ms)
        for p, r in enumerate(self.owner):
            if r == reader:
                stage.assign(p, (committed or {}).get(p), len(self.raw), self.wall)
        return stage

    def _new_customer_stage(self) -> CustomerStage:
        return CustomerStage(self.defs, partitions=self.partitions, committed=self._committed,
                             path_cap=self.path_cap, record_bound=self.record_bound,
                             cache_customers=self.cache_customers,
                             floor_retention_ms=self.floor_retention_ms,
                             due_per_batch=self.due_per_batch,
                             handover_bytes=self.handover_bytes)

    def _committed(self, lane: int, partition: int) -> int:
        """The customer stage's `Committed`: the consumers' committed offsets."""
        if lane >= 0:
            return self.by_identity[lane].committed
        logs = self.by_customer if lane in (RECORDS, PEER_RECORDS) else self.handovers
        return logs[partition].committed

    def _maybe_commit(self, logs: list[Log], undo: dict[bytes, bytes | None]) -> None:
        """After a batch (its outputs and table writes done), commit or not."""
        if self.rnd.random() < 0.5:
            for log in logs:
                log.committed = log.pos
            undo.clear()

    def commit_all(self) -> None:
        for log in [*self.by_identity, *self.by_customer, *self.handovers]:
            log.committed = log.pos
        self.undo_identity.clear()
        self.undo_customers.clear()
        self.undo_provisional.clear()

    # ------------------------------------------------------------------ stages
    def feed_raw(self, events: list[dict[str, Any]], arrived_ms: int | None = None) -> None:
        """Raw events arriving at wall time `arrived_ms` (event time runs with the wall
        clock, as in live traffic: arrival >= occurred_at), each to a random raw
        partition (any producer key)."""
        if arrived_ms is not None:
            self.wall = max(self.wall, arrived_ms)
        for e in events:
            self.raw[self.rnd.randrange(len(self.raw))].values.append(orjson.dumps(e))

    def _n(self, log: Log) -> int:
        return len(log.values) if self.bulk else self.rnd.randint(0, 3)

    def step_validate(self, *, claims: bool = True) -> None:
        for r, reader in enumerate(self.readers):
            records = []
            for p in self.rnd.sample(range(len(self.raw)), len(self.raw)):
                if self.owner[p] == r:
                    records.extend(("raw", p, off, None, v)
                                   for off, v in self.raw[p].take(self._n(self.raw[p])))
            caught_up = {p for p, log in enumerate(self.raw) if self.owner[p] == r and not log}
            if not records and not (claims and reader.claims_due(self.wall, caught_up)):
                continue
            batch = reader.prepare(records, self.wall, caught_up)
            assert not batch.dead
            self.late += len(batch.late)
            for p, value in batch.envelopes.messages():
                self.by_identity[p].values.append(self._written(value))
            for p, state in reader.states().items():  # commit after the batch
                self.committed.setdefault(p, []).append((self.raw[p].pos, state))

    def _take(self, logs: list[Log]) -> list[tuple[int, int, bytes]]:
        out: list[tuple[int, int, bytes]] = []
        for p in self.rnd.sample(range(self.partitions), self.partitions):
            out.extend((p, off, v) for off, v in logs[p].take(self._n(logs[p])))
        return out

    def step_identity(self) -> None:
        records = self._take(self.by_identity)
        batch = self.identity.prepare(records, self.aliases.get)
        self.redelivered += batch.redelivered
        for p, value in batch.envelopes.messages():
            self.by_customer[p].values.append(self._written(value))
        self.undo_identity = {key: self.aliases.get(key) for key in batch.states}
        for key, (_p, value) in batch.states.items():
            self.aliases[key] = value
        self.merge_rows.update((m.anonymous_id, m) for m in batch.merges)
        self._maybe_commit(self.by_identity, self.undo_identity)

    def step_customers(self) -> None:
        """One batch of the by-customer or the handovers topic (at random)."""
        lane = RECORDS if self.rnd.random() < 0.5 else HANDOVER_RECORDS
        logs = self.by_customer if lane == RECORDS else self.handovers
        records = self._take(logs)
        self._apply(self.customers.prepare(records, self.states.get, self.wall, lane=lane))
        self._maybe_commit(logs, self.undo_customers)
        if not self.undo_customers:
            self.undo_provisional.clear()

    def step(self) -> None:
        self.step_validate()
        self.step_identity()
        self.step_customers()
        if self._left_due() and (not self._queued() or self.rnd.random() < 0.5):
            self.visit_left_due()

    def _left_due(self) -> list[int]:
        return [p for p, prog in sorted(self.customers.progress.items())
                if prog.unvisited is not None]

    def visit_left_due(self) -> None:
        """The timer tick's part for customers a bounded visit left due (stream.agents.
        customers.CustomerAgent.tick)."""
        self._apply(self.customers.prepare((), self.states.get, self.wall,
                                           tick=self._left_due()))

    def tick(self, wall_ms: int = 0) -> None:
        """Wall time passes: validate readers send claims (idle partitions follow the
        wall clock); every stage commits; the customer stage gives up overdue holds and
        deletes finished customers whose inputs are committed."""
        self.wall += wall_ms
        self.step_validate()
        self.commit_all()
        overdue = [p for p, prog in self.customers.progress.items()
                   if prog.overdue(self.wall, 15 * 60_000) or prog.unvisited is not None
                   or prog.has_deletable(p, self._committed)]
        if overdue:
            self._apply(self.customers.prepare((), self.states.get, self.wall, tick=overdue))

    def restart(self, *, stored: bool | None = None) -> None:
        """A crash of every stage: validate readers restart from their last commit, the
        identity and customer stages from their tables and committed offsets (the last
        uncommitted batch's table writes happened or not: `stored`, random by
        default)."""
        clocks: dict[int, list[int]] = {}
        for p, commits in self.committed.items():
            # the last commits may not have happened: the reader resumes from an earlier
            # one, with the source clock committed with it, and reads the rest again
            k = self.rnd.randint(max(0, len(commits) - 3), len(commits) - 1)
            del commits[k + 1:]
            offset, clocks[p] = commits[k]
            self.raw[p].pos = offset
        self.readers = [self._new_reader(r, clocks) for r in range(len(self.readers))]
        for table, undo in ((self.aliases, self.undo_identity),
                            (self.states, self.undo_customers)):
            kept = self.rnd.random() < 0.5 if stored is None else stored
            if not kept:
                for key, value in undo.items():
                    if value is None:
                        table.pop(key, None)
                    else:
                        table[key] = value
            if undo is self.undo_customers and undo and (not kept or self.rnd.random() < 0.5):
                self._undo_rows(self.undo_provisional)  # the crash came before that write
            undo.clear()
        self.undo_provisional.clear()
        self.alert_marks.clear()  # what is read again re-sends its observations (repeats)
        for log in [*self.by_identity, *self.by_customer, *self.handovers]:
            log.pos = log.committed
        self.identity = IdentityStage(self.partitions, self.partitions)
        crashed = self.customers.generation
        self.customers = self._new_customer_stage()
        # a worker restarts a second or more after the one that crashed started (a
        # process start and a consumer group join): its version floor (2^20 per ms,
        # journeys/versions.py) is above all that one handed out
        self.customers.generation = max(self.customers.generation, crashed + 1_000_000_000)
        self.customers.rebuild(set(range(self.partitions)), list(self.states.items()))

    def _apply(self, batch: CustomerBatch) -> None:
        self.late += len(batch.late)
        self.conflicts.extend(batch.conflicts)
        self.expired += batch.holds_expired
        self.redelivered += batch.redelivered
        for p, (obs, claim) in batch.reached.items():
            mark = self.alert_marks.get(p)
            for o in obs:  # an observation below its partition's claim is late for alerts
                at = o.reached_at_ms if o.as_of is None else o.as_of
                assert mark is None or at >= mark, (p, o, mark)
            self.reached.extend(obs)
            self.alert_marks[p] = max(claim.mark, mark if mark is not None else claim.mark)
        sessions, rows = batch.final()  # written before the states are stored
        self._write_rows(sessions, [*rows, *batch.retractions])
        self.closed.extend(r for r in batch.closed
                           if r.instance_id not in {c.instance_id for c in self.closed})
        for p, value in batch.handovers.messages():
            self.handovers[p].values.append(self._written(value))
        self.undo_customers = {key: self.states.get(key) for key in batch.states}
        for key, (_p, value) in batch.states.items():
            if value is None:
                self.states.pop(key, None)
            else:
                self.states[key] = value
        sessions, rows = batch.provisional()  # written after the store (a crash between
        self.undo_provisional = self._write_rows(sessions, rows)  # is played in restart)

    def _write_rows(self, sessions: list[SessionRow], items: list[Any]
                    ) -> dict[tuple[str, str], Any]:
        """ReplacingMergeTree(version) semantics; returns what was replaced."""
        undo: dict[tuple[str, str], Any] = {}
        for row in sessions:
            self.session_writes.setdefault(row.session_id, []).append((row.version,
                                                                       row.deleted))
            old = self.sessions.get(row.session_id)
            if old is None or row.version > old[0]:
                undo.setdefault(("s", row.session_id), old)
                self.sessions[row.session_id] = (row.version, row)
        for item in items:
            if item.version <= self.versions.get(item.instance_id, -1):
                continue
            undo.setdefault(("i", item.instance_id), (self.versions.get(item.instance_id),
                                                      self.instances.get(item.instance_id)))
            self.versions[item.instance_id] = item.version
            if isinstance(item, InstanceRow):
                self.instances[item.instance_id] = item
            else:
                self.instances.pop(item.instance_id, None)
        return undo

    def _undo_rows(self, undo: dict[tuple[str, str], Any]) -> None:
        for (kind, key), old in undo.items():
            if kind == "s":
                if old is None:
                    self.sessions.pop(key, None)
                else:
                    self.sessions[key] = old
                continue
            version, row = old
            if version is None:
                self.versions.pop(key, None)
            else:
                self.versions[key] = version
            if row is None:
                self.instances.pop(key, None)
            else:
                self.instances[key] = row

    def _queued(self) -> bool:
        return (any(self.raw) or any(self.by_identity) or any(self.by_customer)
                or any(self.handovers))

    def pending(self) -> bool:
        return self._queued() or bool(self._left_due())

    def drain(self) -> None:
        while self.pending():
            self.step()

    def finish(self, watermark: int) -> None:
        """Drain, then move every raw partition's watermark to `watermark` (an event
        with placeholder ids only, which belongs to nobody) and settle."""
        self.drain()
        for p, log in enumerate(self.raw):
            log.values.append(orjson.dumps({
                "event_id": f"filler-{p}-{watermark}", "type": "page_view", "channel": "web",
                "occurred_at": watermark + self.lateness_ms, "customer_id": None,
                "anonymous_id": "guest"}))
        self.drain()

    # ------------------------------------------------------------------ views
    @property
    def merges(self) -> list[MergeRecord]:
        return list(self.merge_rows.values())

    def unordered_session_writes(self) -> dict[str, list[tuple[int, int]]]:
        """Session ids whose rows were not written in strictly increasing versions."""
        return {sid: rows for sid, rows in self.session_writes.items()
                if any(b[0] <= a[0] for a, b in pairwise(rows))}

    def live_sessions(self) -> set[tuple[str, int, int, int]]:
        return {(r.customer_id, r.started_at_ms, r.ended_at_ms, r.events)
                for _v, r in self.sessions.values() if not r.deleted}

    def journey_view(self) -> dict[str, tuple[Any, ...]]:
        return {r.instance_id: (r.journey, r.customer_id, r.status, r.opened_at_ms,
                                r.closed_at_ms, r.furthest_step, r.path_times, r.path_types,
                                r.path_channels, list(zip(r.detour_kinds, r.detour_steps,
                                                          r.detour_channels, r.detour_times,
                                                          strict=True)), r.value)
                for r in self.instances.values()}
