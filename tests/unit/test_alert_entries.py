"""Contract of the alert stage's open-entry index over both adapters (memory, RocksDB),
and the alert stage run through random batches with either: the same records and the
same table bytes (docs/reliability.md "Bounded state")."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.agents.alert_entry_store import RocksEntryStore
from stream.agents.rocks_memory import RocksMemory
from stream.engine.alert_entries import EntryStore, MemoryEntryStore
from stream.eventtime.watermarks import CLAIM_REFRESH_MS, Claim
from stream.stages import alert_chunks
from stream.stages.alerts import AlertStage, StepReachedRouter
from tests.profiles import examples
from tests.unit.test_alerts_property import definitions, instances, observations

ADAPTERS = ("memory", "rocksdb", "rocksdb-budgeted")


def make(kind: str, where: Path) -> EntryStore:
    if kind == "memory":
        return MemoryEntryStore()
    # budgeted: within a tiny shared RocksDB budget (stream/agents/rocks_memory.py)
    memory = RocksMemory(2 << 20) if kind == "rocksdb-budgeted" else None
    return RocksEntryStore(where / "alert-entries", memory)


@pytest.fixture(params=ADAPTERS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EntryStore]:
    s = make(request.param, tmp_path)
    yield s
    s.close()


def test_keys_are_separate_ordered_chunked_and_open_starts_empty(store: EntryStore) -> None:
    a, a1 = store.open("j\x1f1"), store.open("j\x1f10")
    a.put("b", 0, [2, "web", None, None, None])
    a.put("a", 1, [1, None, None, None, [[5, 6]]])
    a.put("ü", 0, [3, "app", 4, None, None])
    a1.put("a", 0, [9, "web", None, None, None])
    assert list(a.ordered()) == [("a", 1, [1, None, None, None, [[5, 6]]]),
                                 ("b", 0, [2, "web", None, None, None]),
                                 ("ü", 0, [3, "app", 4, None, None])]
    assert list(a.chunk(0)) == [("b", [2, "web", None, None, None]),
                                ("ü", [3, "app", 4, None, None])]
    assert list(a.chunk(1)) == [("a", [1, None, None, None, [[5, 6]]])]
    assert list(a.chunk(2)) == [] and a.get("zz") is None
    a.put("a", 1, [0, "web", None, None, None])  # replaces, in its chunk
    assert a.get("a") == (1, [0, "web", None, None, None]) and len(list(a.ordered())) == 3
    assert list(a.chunk(1)) == [("a", [0, "web", None, None, None])]
    a.put("big", 2**32 - 1, [1, None, None, None, None])  # the largest chunk id
    assert list(a.chunk(2**32 - 1)) == [("big", [1, None, None, None, None])]
    for iid, c, _e in a.ordered():  # deleting while iterating
        a.delete(iid, c)
    a.delete("never", 0)  # a no-op
    assert list(a.ordered()) == [] and list(a.chunk(0)) == []
    assert list(a1.ordered()) == [("a", 0, [9, "web", None, None, None])]
    a1.put("x", 3, [1, None, None, None, None])
    again = store.open("j\x1f10")  # a key (re)read from the table: nothing left over
    assert list(again.ordered()) == [] and list(again.chunk(3)) == []


def test_rocksdb_store_starts_empty_reset_and_close_remove_it(tmp_path: Path) -> None:
    where = tmp_path / "alert-entries"
    first = RocksEntryStore(where)
    first.open("k").put("a", 0, [1, None, None, None, None])
    first.close()
    assert not where.exists()
    second = RocksEntryStore(where)  # never trusted across owners: refilled from the table
    k = second.open("k")
    assert list(k.ordered()) == []
    k.put("a", 0, [1, None, None, None, None])
    second.reset()
    assert list(second.open("k").ordered()) == []
    second.close()


def test_rocksdb_store_opens_on_first_use(tmp_path: Path) -> None:
    """The app wipes its data dir at start (new topics) after building the stages: a
    database opened before that would fail its first flush."""
    where = tmp_path / "faust" / "alert-entries"
    store = RocksEntryStore(where)
    assert not where.exists()
    entries = store.open("k")
    entries.put("a", 0, [1, None, None, None, None])
    assert where.exists() and list(entries.chunk(0)) == [("a", [1, None, None, None, None])]
    store.close()


iids = st.sampled_from(["a", "b", "c", "é", "a1", "\x1f", "b2"])
chunks = st.sampled_from([0, 1, 7, 256])
entries = st.lists(st.one_of(st.none(), st.integers(-2**62, 2**62), st.sampled_from(["web", ""])),
                   min_size=5, max_size=5)
ops = st.lists(st.one_of(
    st.tuples(st.just("put"), st.sampled_from(["k0", "k1"]), iids, chunks, entries),
    st.tuples(st.just("del"), st.sampled_from(["k0", "k1"]), iids, st.none(), st.none()),
    st.tuples(st.just("open"), st.sampled_from(["k0", "k1"]), st.just(""), st.none(), st.none()),
    st.tuples(st.just("drain"), st.sampled_from(["k0", "k1"]), st.just(""), st.none(), st.none()),
), max_size=60)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(ops)
def test_both_adapters_behave_like_the_model(
        tmp_path: Path, script: list[tuple[str, str, str, int | None, Any]]) -> None:
    """Model: per key, id -> (chunk, entry); an id is put again only in its chunk (the
    port's rule), deleted with its chunk."""
    stores = [make(kind, tmp_path / f"run-{id(script)}-{kind}") for kind in ADAPTERS]
    try:
        views = [{k: s.open(k) for k in ("k0", "k1")} for s in stores]
        model: dict[str, dict[str, tuple[int, list[Any]]]] = {"k0": {}, "k1": {}}
        for op, key, iid, chunk, entry in script:
            held = model[key].get(iid)
            if op == "put":
                chunk = held[0] if held is not None else chunk
                assert chunk is not None
                model[key][iid] = (chunk, entry)
            elif op == "del":
                model[key].pop(iid, None)
            elif op in ("open", "drain"):
                model[key] = {}
            for s, v in zip(stores, views, strict=True):
                if op == "put":
                    assert chunk is not None
                    v[key].put(iid, chunk, list(entry), known=held is not None)
                elif op == "del":
                    v[key].delete(iid, held[0] if held is not None else 0)
                elif op == "open":
                    v[key] = s.open(key)
                else:
                    for i, c, _e in v[key].ordered():
                        v[key].delete(i, c)
            for v in views:
                for k, m in model.items():
                    assert list(v[k].ordered()) == [(i, c, e) for i, (c, e) in sorted(m.items())]
                    for c in (0, 1, 7, 256):
                        assert list(v[k].chunk(c)) == sorted(
                            (i, e) for i, (cc, e) in m.items() if cc == c)
                    assert all(v[k].get(i) == m.get(i) for i in ("a", "é", "zz"))
    finally:
        for s in stores:
            s.close()


def _run(d: Any, insts: Any, seed: int, store: EntryStore) -> tuple[list[Any], list[Any]]:
    """The alert stage fed random batches of routed observations and claims, sometimes
    restarting from its table (so the index is refilled): its records and table writes."""
    rnd = random.Random(seed)
    parts = rnd.randint(1, 3)
    obs = sorted(observations(insts), key=lambda o: (o.reached_at_ms + rnd.randint(0, 20),
                                                      rnd.random()))
    router, stage = StepReachedRouter([d], parts), AlertStage([d], parts, store)
    table: dict[bytes, bytes] = {}
    records: list[Any] = []
    writes: list[Any] = []
    messages: list[tuple[int, bytes]] = []
    wall = 0
    for i in range(0, len(obs) + 1, 7):
        chunk = obs[i:i + 7]
        wm = (chunk[0].reached_at_ms - 10) if chunk else 10**7
        wall += CLAIM_REFRESH_MS
        out, confirm = router.route(
            {p: ([o for o in chunk if sum(map(ord, o.instance_id)) % parts == p], Claim(p, wm))
             for p in range(parts)}, wall)
        router.confirm(confirm)
        messages.extend(out)
        while messages and rnd.random() < 0.7:
            n = rnd.randint(1, len(messages))
            batch, messages = messages[:n], messages[n:]
            got = stage.prepare(batch, table.get)
            records.extend(got.records)
            writes.append(sorted(got.states.items()))
            for k, (_q, v) in got.states.items():
                if v is None:
                    table.pop(k, None)
                else:
                    table[k] = v
            if rnd.random() < 0.1:
                stage.forget()
    got = stage.prepare(messages, table.get)
    records.extend(got.records)
    writes.append(sorted(got.states.items()))
    return records, writes


@given(d=definitions(), insts=instances(), seed=st.integers(0, 2**32),
       per_record=st.sampled_from([2, 5, alert_chunks.ENTRIES_PER_RECORD]))
@settings(max_examples=examples(60), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
def test_the_stage_is_byte_identical_with_either_index(tmp_path: Path, d: Any, insts: Any,
                                                      seed: int, per_record: int) -> None:
    """Small chunks (2 or 5 entries a record) so that keys are stored in many."""
    rocks = RocksEntryStore(tmp_path / f"stage-{seed}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(alert_chunks, "ENTRIES_PER_RECORD", per_record)
        try:
            on_disk = _run(d, insts, seed, rocks)
        finally:
            rocks.close()
        assert on_disk == _run(d, insts, seed, MemoryEntryStore())
