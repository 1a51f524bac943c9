"""The worker's alert stage (stream.stages.alerts): routing, watermarks across partitions,
and, as a property, the whole repartitioned path equals the batch reference under
interleaving, re-delivery, lost acknowledgements, crashes and restarts."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journeys.definitions import AlertRule, JourneyDefinition
from stream.agents.alert_entry_store import RocksEntryStore
from stream.engine.alert_verdict import AlertRecord, final_before
from stream.engine.dropoff import StepAlertState
from stream.engine.outputs import StepReached
from stream.eventtime.watermarks import CLAIM_REFRESH_MS, NO_WATERMARK, Claim
from stream.stages import alert_chunks
from stream.stages.alert_chunks import ENTRIES_PER_RECORD, stored_chunks
from stream.stages.alerts import (
    MAX_OBSERVATIONS,
    AlertStage,
    StepReachedRouter,
    decode,
    key_bytes,
)
from stream.stages.envelopes import FORMAT, encode, partition_for
from stream.stages.parts import is_part, part_key, store_order
from tests.profiles import examples
from tests.reference import alerts_ref
from tests.reference.journeys_ref import Instance
from tests.unit.test_alerts_property import (
    canonical,
    definitions,
    instances,
    observations,
)

H = 3_600_000
PURCHASE = JourneyDefinition(
    name="purchase", steps=("a", "b", "c", "d"), abandon_after="1h", conversion_window="1d",
    alert=AlertRule(window="1h", horizon="30m", baseline_windows=4, min_volume=5,
                    threshold=0.15, confidence=0.99))


def obs(step: int, t: int, iid: str = "i1", channel: str = "web") -> StepReached:
    return StepReached("purchase", iid, step, t, channel)


def bodies(messages: list[tuple[int, bytes]]) -> list[tuple[int, dict[str, Any]]]:
    out = []
    for q, value in messages:
        body = decode(value)
        assert body is not None
        out.append((q, body))
    return out


def c(p: int, mark: int, idle: bool = False) -> Claim:
    return Claim(p, mark, idle)


def test_observation_goes_to_its_step_and_the_step_before() -> None:
    parts = 8
    where = {s: partition_for(f"purchase\x1f{s}", parts) for s in range(3)}
    for step, keys in ((0, [0]), (1, [0, 1]), (2, [1, 2]), (3, [2])):  # 3 is the goal
        router = StepReachedRouter([PURCHASE], parts)
        router.confirm({0: (router.keys.quantize(0), False, 0)})  # no claim to send
        msgs = bodies(router.route({0: ([obs(step, 10)], c(0, 0))})[0])
        assert sorted(q for q, _ in msgs) == sorted({where[k] for k in keys})
        assert all(b["o"] == [["purchase", "i1", step, 10, "web"]] for _, b in msgs)
    other = StepReached("unknown", "i", 1, 1, "web")
    router.confirm({0: (router.keys.quantize(5), False, 0)})
    assert router.route({0: ([other], c(0, 5))})[0] == []


def test_claims_broadcast_when_a_window_boundary_moves_or_to_refresh() -> None:
    router = StepReachedRouter([PURCHASE], 3)
    msgs, confirm = router.route({1: ([], c(1, 10 * H))})
    assert [q for q, _ in msgs] == [0, 1, 2]
    assert all(b["w"] == [3, [[1, 10 * H, 0]]] for _, b in bodies(msgs))
    assert router.route({1: ([], c(1, 10 * H + 1))})[0]  # not confirmed (send failed): again
    router.confirm(confirm)
    assert router.route({1: ([], c(1, 10 * H + 60_000))})[0] == []  # same final windows
    msgs, confirm = router.route({1: ([], c(1, 11 * H))})  # the next window became final
    assert len(msgs) == 3 and confirm[1][:2] == ((final_before(11 * H, PURCHASE.alert),), False)
    router.confirm(confirm)
    msgs, confirm = router.route({1: ([], c(1, 11 * H, idle=True))})  # idleness changed
    assert all(b["w"] == [3, [[1, 11 * H, 1]]] for _, b in bodies(msgs))
    router.confirm(confirm)
    assert router.route({1: ([], c(1, 11 * H, True))}, CLAIM_REFRESH_MS - 1)[0] == []
    assert len(router.route({1: ([], c(1, 11 * H, True))}, CLAIM_REFRESH_MS)[0]) == 3


def test_claims_ride_after_the_observations_of_their_partition() -> None:
    router = StepReachedRouter([PURCHASE], 1)
    many = [obs(1, 5, iid=f"i{i}") for i in range(12_000)]
    msgs = bodies(router.route({0: (many, c(0, 10 * H))})[0])
    assert [len(b["o"]) for _, b in msgs] == [5000, 5000, 2000]  # once per partition
    assert ["w" in b for _, b in msgs] == [False, False, True]


def _stage_input(stage: AlertStage, table: dict[bytes, bytes],
                 items: list[tuple[int, bytes]]) -> Any:
    batch = stage.prepare(items, table.get)
    _store(table, batch.states)
    return batch


def _store(table: dict[bytes, bytes], states: dict[bytes, tuple[int, bytes | None]]) -> None:
    """What the worker's table does with a batch's records (None: a tombstone)."""
    for k, (_q, v) in states.items():
        if v is None:
            table.pop(k, None)
        else:
            table[k] = v


def _heads(states: dict[bytes, Any]) -> set[bytes]:
    """The head record keys among a batch's state records (not the entry records)."""
    return {k for k in states if not is_part(k)}


def _claims(*claims: Claim, n: int = 3) -> bytes:
    return encode({"v": FORMAT, "o": [], "w": [n, [[x.partition, x.mark, int(x.idle)]
                                                   for x in claims]]})


def test_min_watermark_over_all_sources_idle_ones_excluded() -> None:
    stage, table = AlertStage([PURCHASE], 3), {}
    b = _stage_input(stage, table, [(0, _claims(c(0, 10 * H), c(1, 12 * H)))])
    assert b.watermarks == {0: NO_WATERMARK}  # source 2 never reported: hold back
    b = _stage_input(stage, table, [(0, _claims(c(2, NO_WATERMARK, idle=True)))])
    assert b.watermarks == {0: 10 * H}  # source 2 is idle: it does not hold back
    b = _stage_input(stage, table, [(0, _claims(c(0, 9 * H)))])
    assert b.watermarks == {0: 10 * H}  # a source's watermark never goes back
    restarted = AlertStage([PURCHASE], 3)  # claims are not stored: they come again
    assert restarted.frontier(0).watermark == NO_WATERMARK


def test_states_written_once_per_touched_key_and_restored() -> None:
    stage, table = AlertStage([PURCHASE], 1), {}
    rows = [["purchase", f"i{i}", 1, 1000 + i, "web"] for i in range(5)]
    b = _stage_input(stage, table, [(0, encode({"v": FORMAT, "o": rows}))] * 3)
    assert _heads(b.states) == {key_bytes(("purchase", 0)), key_bytes(("purchase", 1))}
    assert b.observations == 30 and b.late == 0  # 5 rows x 2 keys x 3 (re-delivered)
    b = _stage_input(stage, table, [(0, _claims(c(0, 2 * H), n=1))])
    assert b.records == [] and _heads(b.states) == {
        key_bytes(("purchase", s)) for s in range(3)}  # windows closed: all advanced
    late = _stage_input(AlertStage([PURCHASE], 1), table,
                        [(0, encode({"v": FORMAT, "o": rows[:1]}))])
    assert late.late == 2  # its window is final now (the state says so after a restart)


def test_a_huge_unsettled_window_is_stored_in_bounded_records_and_restored() -> None:
    """~155k journeys reaching one step in one unsettled window made one 12.57 MB record
    (over the 8 MiB message limit: the worker crash-looped). Now no record of the state
    exceeds ~0.5 MiB, and a restarted stage restores exactly the same state."""
    stage, table = AlertStage([PURCHASE], 1), {}
    n = 30_000
    rows = [["purchase", f"{i:024x}", 1, 1000 + i, "call_center"] for i in range(n)]
    for i in range(0, n, MAX_OBSERVATIONS):
        _stage_input(stage, table, [(0, encode({"v": FORMAT, "o": rows[i:i + 5000]}))])
    assert max(len(v) for v in table.values()) <= 512 * 1024
    assert len(table) >= 2 * (n // ENTRIES_PER_RECORD)  # split, for both keys it touched
    restored = AlertStage([PURCHASE], 1)
    for key in (("purchase", 0), ("purchase", 1)):
        assert restored.state(key, table.get, NO_WATERMARK) == stage.state(
            key, table.get, NO_WATERMARK)
    # the window closes: entries go, their records become tombstones, results equal
    before = {k for k in table if is_part(k)}
    out = _stage_input(restored, table, [(0, _claims(c(0, 3 * H), n=1))])
    gone = {k for k, (_q, v) in out.states.items() if v is None}
    assert gone and gone <= before and not any(is_part(k) for k in table)
    again = _stage_input(stage, {}, [(0, _claims(c(0, 3 * H), n=1))])
    assert out.records == again.records


def test_a_crash_between_entry_records_and_head_leaves_the_previous_state() -> None:
    """Entry records of a new generation are stored before the head that points at them,
    tombstones after: a crash in between restores the previous state whole."""
    stage, table = AlertStage([PURCHASE], 1), {}
    rows = [["purchase", f"{i:024x}", 1, 1000 + i, "web"] for i in range(2 * ENTRIES_PER_RECORD)]
    _stage_input(stage, table, [(0, encode({"v": FORMAT, "o": rows[:5000]}))])
    before = AlertStage([PURCHASE], 1).state(("purchase", 1), table.get, NO_WATERMARK)
    batch = stage.prepare([(0, encode({"v": FORMAT, "o": rows[5000:]}))], table.get)
    groups = store_order(batch.states)
    assert [all(is_part(k) for k in g) for g in groups[:1]] == [True]
    _store(table, groups[0])  # the crash comes before the heads
    after = AlertStage([PURCHASE], 1).state(("purchase", 1), table.get, NO_WATERMARK)
    assert after == before
    for g in groups[1:]:
        _store(table, g)
    done = AlertStage([PURCHASE], 1).state(("purchase", 1), table.get, NO_WATERMARK)
    assert len(done.entries) == len(rows)


# --------------------------------------------------------------------- property
def _simulate(d: JourneyDefinition, insts: list[Instance], final_wm: int,
              seed: int) -> tuple[dict[str, AlertRecord], int]:
    """Sources emit settled observations + watermarks through the router into P logs;
    the stage consumes random interleavings, sometimes crashing before its states are
    stored (the batch is re-delivered) or restarting from the table."""
    rnd = random.Random(seed)
    parts, lateness = rnd.randint(1, 4), rnd.randint(0, 30)
    source = {i.instance_id: rnd.randrange(parts) for i in insts}
    arrivals = []
    for o in observations(insts):
        for _ in range(2 if rnd.random() < 0.05 else 1):  # re-emitted by a restarted source
            arrivals.append((o.reached_at_ms + rnd.randint(0, lateness), rnd.random(), o))
    arrivals.sort(key=lambda a: a[:2])
    router, stage = StepReachedRouter([d], parts), AlertStage([d], parts)
    logs: list[list[bytes]] = [[] for _ in range(parts)]
    committed, table = [0] * parts, {}
    pending: dict[int, list[StepReached]] = {p: [] for p in range(parts)}
    emitted: dict[str, AlertRecord] = {}
    late = 0

    wall = [0]

    def flush(sources: list[int], wm: int) -> None:
        wall[0] += rnd.randint(0, CLAIM_REFRESH_MS)
        messages, confirm = router.route({p: (pending[p], Claim(p, wm)) for p in sources},
                                         wall[0])
        for q, value in messages:
            logs[q].append(value)
        if rnd.random() < 0.9:
            router.confirm(confirm)
        for p in sources:
            pending[p] = []

    def consume(limit: int, crashes: bool = True) -> None:
        nonlocal stage, late
        heads = list(committed)
        batch: list[tuple[int, bytes]] = []
        while len(batch) < limit:
            ready = [q for q in range(parts) if heads[q] < len(logs[q])]
            if not ready:
                break
            q = rnd.choice(ready)
            batch.append((q, logs[q][heads[q]]))
            heads[q] += 1
        out = stage.prepare(batch, table.get)
        late += out.late
        for r in out.records:
            assert emitted.setdefault(r.alert_id, r) == r  # re-emission: identical
        if crashes and rnd.random() < 0.1:  # crash before the states are stored
            stage = AlertStage([d], parts)
            return
        _store(table, out.states)
        committed[:] = heads
        if crashes and rnd.random() < 0.05:
            stage = AlertStage([d], parts)  # restart / rebalance

    for t, _, o in arrivals:
        pending[source[o.instance_id]].append(o)
        if rnd.random() < 0.3:
            flush(rnd.sample(range(parts), rnd.randint(1, parts)), t - lateness)
        if rnd.random() < 0.2:
            consume(rnd.randint(1, 6))
    flush(list(range(parts)), final_wm)
    while any(committed[q] < len(logs[q]) for q in range(parts)):
        consume(rnd.randint(1, 6))
    # sources keep re-sending their claims (CLAIM_REFRESH_MS): a stage that restarted
    # after the last ones gets them again
    wall[0] += CLAIM_REFRESH_MS
    flush(list(range(parts)), final_wm)
    while any(committed[q] < len(logs[q]) for q in range(parts)):
        consume(rnd.randint(1, 6), crashes=False)
    return emitted, late


@given(d=definitions(), insts=instances(), seed=st.integers(0, 2**32), final=st.integers(0, 400))
@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_repartitioned_stage_equals_batch_reference(
    d: JourneyDefinition, insts: list[Instance], seed: int, final: int
) -> None:
    final_wm = max([t for i in insts for t, _ in i.reached.values()], default=0) + final
    emitted, late = _simulate(d, insts, final_wm, seed)
    got = [alerts_ref.RefAlert(r.kind, r.journey, r.step, r.channel, r.window_start_ms,
                               r.population, r.dropped, r.baseline) for r in emitted.values()]
    assert canonical(got) == canonical(alerts_ref.alerts(d, insts, final_wm))
    assert late == 0


def test_entry_records_take_no_more_memory_than_their_bytes(tmp_path: Path) -> None:
    """A batch holds every entry record it rewrote until they are stored: orjson's own
    output took ~8x its length (2.0 MB for a 254 KB record), ~460 bytes of transient
    memory per entry (docs/reliability.md "What grows per open journey"). The records'
    allocations are now their size (entries on disk, so only the records are held)."""
    import tracemalloc

    stage = AlertStage([PURCHASE], 1, RocksEntryStore(tmp_path / "entries"))
    table: dict[bytes, bytes] = {}
    n = 4 * ENTRIES_PER_RECORD
    rows = [["purchase", f"{i:024x}", 0, 1000 + i, "web"] for i in range(n)]
    try:
        for i in range(0, n - MAX_OBSERVATIONS, MAX_OBSERVATIONS):
            _stage_input(stage, table, [(0, encode({"v": FORMAT, "o": rows[i:i + 5000]}))])
        last = encode({"v": FORMAT, "o": rows[n - MAX_OBSERVATIONS:]})
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            states = stage.prepare([(0, last)], table.get).states
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    finally:
        stage.entries.close()
    stored = sum(len(v or b"") for _q, v in states.values())
    assert stored > 150_000 and held < 2 * stored


# ------------------------------------------------------------ arrival chunks
def _fill(stage: AlertStage, table: dict[bytes, bytes], rows: list[list[Any]]) -> None:
    for i in range(0, len(rows), MAX_OBSERVATIONS):
        _stage_input(stage, table, [(0, encode({"v": FORMAT, "o": rows[i:i + 5000]}))])


def _written(states: dict[bytes, tuple[int, bytes | None]]) -> tuple[int, int, int]:
    """(entry records written, heads written, tombstones) of a batch."""
    return (sum(is_part(k) and v is not None for k, (_q, v) in states.items()),
            sum(not is_part(k) and v is not None for k, (_q, v) in states.items()),
            sum(v is None for _q, v in states.values()))


def test_a_few_new_entries_rewrite_only_the_open_chunk_not_the_key() -> None:
    """Every batch re-encoded all open entries of a key it touched (O(open entries) CPU
    and changelog bytes a batch, quadratic over a backlog). Now a batch adding a few
    entries to a key of >= 5 x 4096 entries writes the open chunk (at most one more),
    the head and the old chunk's tombstone; a continuation rewrites its entry's chunk."""
    stage, table = AlertStage([PURCHASE], 1), {}
    n = 5 * ENTRIES_PER_RECORD + 100
    rows = [["purchase", f"{i:024x}", 0, 1000 + i, "web"] for i in range(n)]  # key 0 only
    _fill(stage, table, rows)
    new = [["purchase", f"n{i}", 0, 1000 + i, "web"] for i in range(3)]
    b = _stage_input(stage, table, [(0, encode({"v": FORMAT, "o": new}))])
    parts, heads, gone = _written(b.states)
    assert parts <= 2 and heads == 1 and gone <= 2
    assert sum(len(v or b"") for _q, v in b.states.values()) < 3 * 110 * ENTRIES_PER_RECORD
    # a continuation of the first instance (step 1: keys 0 and 1) touches its chunk only
    b = _stage_input(stage, table, [(0, encode({"v": FORMAT, "o": [
        ["purchase", f"{0:024x}", 1, 2000, "web"]]}))])
    assert _written({k: v for k, v in b.states.items()
                     if k.startswith(key_bytes(("purchase", 0)))}) == (1, 1, 1)
    restored = AlertStage([PURCHASE], 1)
    for key in (("purchase", 0), ("purchase", 1)):
        assert restored.state(key, table.get, NO_WATERMARK) == stage.state(
            key, table.get, NO_WATERMARK)
    assert len(restored.state(("purchase", 0), table.get, NO_WATERMARK).entries) == n + 3
    # every window closes: every record of the key goes, no part record is left over
    _stage_input(stage, table, [(0, _claims(c(0, 3 * H), n=1))])
    assert not any(is_part(k) for k in table)


def _old_split_state(n: int) -> tuple[dict[bytes, bytes], StepAlertState]:
    """A key stored by the code before arrival chunks: a head with generation "g" and
    count "n" of id-ordered entry records part_key(key, g, i), i < n."""
    st = StepAlertState.new(PURCHASE, 0)
    for i in range(n):
        st.observe(obs(0, 1000 + i, iid=f"{i:024x}"))
    kb = key_bytes(("purchase", 0))
    items = list(st.entries.ordered())
    parts = [dict(items[i:i + ENTRIES_PER_RECORD]) for i in range(0, n, ENTRIES_PER_RECORD)]
    head = st.head({})
    head["g"], head["n"] = 7, len(parts)
    table = {kb: orjson.dumps(head)}
    table.update({part_key(kb, 7, i): orjson.dumps(p) for i, p in enumerate(parts)})
    return table, st


def test_states_stored_before_chunks_still_read_and_are_rewritten_in_chunks() -> None:
    key, kb = ("purchase", 0), key_bytes(("purchase", 0))
    table, st = _old_split_state(2 * ENTRIES_PER_RECORD + 10)  # parts of 4096, 4096, 10
    stage = AlertStage([PURCHASE], 1)
    assert stage.state(key, table.get, NO_WATERMARK) == st
    b = _stage_input(stage, table, [(0, encode({"v": FORMAT, "o": [
        ["purchase", "new", 0, 1500, "web"]]}))])
    assert set(b.states) == {kb, part_key(kb, 7, 2), part_key(kb, 8, 2)}  # the last one
    assert b.states[part_key(kb, 7, 2)][1] is None
    assert orjson.loads(table[kb])["c"] == [[0, 7, 4096], [1, 7, 4096], [2, 8, 11]]
    st.observe(obs(0, 1500, iid="new"))
    assert AlertStage([PURCHASE], 1).state(key, table.get, NO_WATERMARK) == st
    # one record with the entries inline (a small state, before as now)
    small = StepAlertState.new(PURCHASE, 0)
    small.observe(obs(0, 1000))
    old = {kb: small.dumps()}
    assert AlertStage([PURCHASE], 1).state(key, old.get, NO_WATERMARK) == small
    b = _stage_input(AlertStage([PURCHASE], 1), old, [(0, encode({"v": FORMAT, "o": [
        ["purchase", "i2", 0, 1001, "web"]]}))])
    assert set(b.states) == {kb}  # still one record
    small.observe(obs(0, 1001, iid="i2"))
    assert old[kb] == small.dumps()  # the same bytes as before chunks


def _messages(d: JourneyDefinition, insts: list[Instance], rnd: random.Random,
              parts: int) -> list[tuple[int, bytes]]:
    """Routed observations with claims, in an arrival order a little out of time order.
    No claim passes an observation still to come (as the customer stage's claims never
    pass what it has not settled, stream.stages.alerts): with late observations a
    restarted stage, whose frontiers start empty, would rightly count some that the
    uncrashed one left out as late, and the two runs could not be compared."""
    obs_ = sorted(observations(insts), key=lambda o: (o.reached_at_ms + rnd.randint(0, 20),
                                                       rnd.random()))
    router, out, wall = StepReachedRouter([d], parts), [], 0
    for i in range(0, len(obs_) + 1, 5):
        chunk, later = obs_[i:i + 5], obs_[i + 5:]
        wm = (min(o.reached_at_ms for o in later) - 10) if later else 10**7
        wall += CLAIM_REFRESH_MS
        msgs, confirm = router.route(
            {p: ([o for o in chunk if sum(map(ord, o.instance_id)) % parts == p], Claim(p, wm))
             for p in range(parts)}, wall)
        router.confirm(confirm)
        out.extend(msgs)
    return out


def _view(d: JourneyDefinition, parts: int, table: dict[bytes, bytes]) -> dict[Any, Any]:
    """Every key's state as a freshly started stage restores it from `table`."""
    stage = AlertStage([d], parts)
    return {k: stage.state(k, table.get, NO_WATERMARK) for k in stage.keys.partition}


def _unnamed_parts(table: dict[bytes, bytes]) -> set[bytes]:
    """Part records no head names (left over)."""
    named = {part_key(k, g, c) for k, v in table.items() if not is_part(k)
             for g_c in [stored_chunks(v)] for c, g in g_c[1]}
    return {k for k in table if is_part(k)} - named


@given(d=definitions(), insts=instances(), seed=st.integers(0, 2**32),
       per_record=st.integers(1, 4))
@settings(max_examples=examples(100), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
def test_a_crash_between_store_groups_restores_the_previous_or_the_new_whole_state(
        d: JourneyDefinition, insts: list[Instance], seed: int, per_record: int) -> None:
    """Random batches (chunks of 1-4 entries, so keys hold many) stored group by group
    (`store_order`: new chunks, heads, tombstones), crashing after a random group: a
    restarted stage restores the previous whole state before the heads, the new one
    from then on; re-delivered, the batches give the alert records of a run that
    never crashed, and that run leaves no part record no head names."""
    rnd = random.Random(seed)
    parts = rnd.randint(1, 3)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(alert_chunks, "ENTRIES_PER_RECORD", per_record)
        messages = _messages(d, insts, rnd, parts)
        ref, ref_table = AlertStage([d], parts), {}
        stage, table = AlertStage([d], parts), {}
        want: dict[str, AlertRecord] = {}
        got: dict[str, AlertRecord] = {}
        while messages:
            n = rnd.randint(1, len(messages))
            batch, messages = messages[:n], messages[n:]
            for r in _stage_input(ref, ref_table, batch).records:
                want.setdefault(r.alert_id, r)
            out = stage.prepare(batch, table.get)
            for r in out.records:
                assert got.setdefault(r.alert_id, r) == r
            groups = store_order(out.states)
            crash = rnd.randint(0, len(groups)) if rnd.random() < 0.5 else len(groups)
            if crash == len(groups):
                _store(table, out.states)
                continue
            before, after = _view(d, parts, table), dict(table)
            _store(after, out.states)
            for g in groups[:crash]:
                _store(table, g)
            heads = any(not is_part(k) and v is not None for g in groups[:crash]
                        for k, (_q, v) in g.items())
            assert _view(d, parts, table) == (_view(d, parts, after) if heads else before)
            stage = AlertStage([d], parts)  # restarted: the batch comes again
            messages = batch + messages
        assert got == want
        assert not _unnamed_parts(ref_table)
