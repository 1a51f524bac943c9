"""The customer stage's decoded-value cache (stream.stages.customer_cache): LRU bound,
invalidation, and above all that it changes nothing — every table value and every row
is the same with the cache as without it, whatever the batching, evictions, restarts."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.stages.customer_cache import StateCache
from stream.stages.customer_state import RECORDS
from tests.profiles import examples
from tests.unit.stream_harness import CHANNELS, Pipeline
from tests.unit.test_stream_stages import BASE, STEPS, definitions, event, scenario

# ------------------------------------------------------------------ the LRU itself


def test_least_recently_used_go_first_beyond_the_capacity() -> None:
    cache: StateCache[str] = StateCache(2)
    cache.keep([("a", "A"), ("b", "B")])
    assert cache.take("a") == "A"  # taken while a batch works on it
    assert "a" not in cache
    cache.keep([("a", "A2")])  # a is now the most recently used
    cache.keep([("c", "C")])
    assert cache.items() == [("a", "A2"), ("c", "C")]  # b was the least recently used
    assert (cache.hits, cache.misses, cache.evictions) == (1, 0, 1)
    assert cache.take("b") is None
    assert cache.misses == 1


def test_a_deleted_value_leaves_the_cache_and_zero_capacity_keeps_nothing() -> None:
    cache: StateCache[str] = StateCache(3)
    cache.keep([("a", "A"), ("b", "B")])
    cache.keep([("a", None)])  # the batch deleted a's value
    assert cache.items() == [("b", "B")]
    cache.discard(["b", "x"])
    assert len(cache) == 0
    off: StateCache[str] = StateCache(0)
    off.keep([("a", "A")])
    assert len(off) == 0 and off.take("a") is None
    with pytest.raises(ValueError):
        StateCache(-1)


def test_the_stored_bytes_bound_evicts_too() -> None:
    """A few customers with large values must not take the memory of thousands."""
    cache: StateCache[str] = StateCache(100, weigh=len, max_bytes=10)
    cache.keep([("a", "xxxx"), ("b", "yyyy")])
    assert cache.bytes == 8
    cache.keep([("c", "zzzz")])  # 12 bytes: a goes
    assert [k for k, _e in cache.items()] == ["b", "c"] and cache.bytes == 8
    assert cache.take("b") == "yyyy" and cache.bytes == 4
    cache.keep([("b", "yy")])
    assert cache.bytes == 6
    cache.discard(["c"])
    assert cache.bytes == 2
    cache.keep([("huge", "h" * 11)])  # over the bound alone: not kept at all
    assert cache.items() == [("b", "yy")] and cache.bytes == 2
    cache.clear()
    assert cache.bytes == 0 and len(cache) == 0


# ------------------------------------------------------------------ in the stage

BASE_DEFS = definitions(60_000, 600_000, 30_000)


def _pipe(cache: int, partitions: int = 2) -> Pipeline:
    return Pipeline(BASE_DEFS, partitions=partitions, lateness_ms=1000, seed=3,
                    cache_customers=cache)


def test_forgetting_partitions_drops_their_cached_values_only() -> None:
    pipe = _pipe(100, partitions=4)
    pipe.feed_raw([event(i, i * 1000, STEPS[i % 3], CHANNELS[0], f"c{i % 8}", None)
                   for i in range(40)])
    pipe.drain()
    stage = pipe.customers
    held = {w.partition for _k, w in stage.cache.items()}
    assert len(held) >= 2  # customers of several partitions are cached
    gone = min(held)
    stage.forget([gone])
    assert stage.cache.items()
    assert all(w.partition != gone for _k, w in stage.cache.items())


def _pending(logs: list[Any]) -> list[tuple[int, int, bytes]]:
    return [(p, off, log.values[off]) for p, log in enumerate(logs)
            for off in range(log.pos, len(log.values))]


def test_a_batch_that_raises_leaves_nothing_half_changed_in_the_cache() -> None:
    """The poison rule re-runs a batch's records in halves after `prepare` raised
    (stream.agents.context.isolating): the values the failed attempt loaded and changed
    must not be what the re-run starts from. The same steps with and without the cache
    store the same values."""
    pipes = [_pipe(100, partitions=1), _pipe(0, partitions=1)]
    _twins(pipes)
    for pipe in pipes:
        pipe.feed_raw([event(i, i * 1000, STEPS[i % 3], CHANNELS[0], "c1", None)
                       for i in range(6)], 1_000_000)
        pipe.drain()
    assert "c1" in pipes[0].customers.cache
    for pipe in pipes:  # c1 again, then a new customer whose load fails
        pipe.feed_raw([event(10, 7000, "cart", CHANNELS[1], "c1", None),
                       event(11, 7500, "view", CHANNELS[1], "c2", None)])
        pipe.rnd = random.Random(5)
        while any(pipe.by_identity) or any(pipe.raw):
            pipe.step_validate()
            pipe.step_identity()
        records = _pending(pipe.by_customer)
        assert records

        def failing(key: bytes, pipe: Pipeline = pipe) -> bytes | None:
            if key == b"c2":
                raise RuntimeError("storage hiccup")
            return pipe.states.get(key)

        hits = pipe.customers.cache.hits
        with pytest.raises(RuntimeError):
            pipe.customers.prepare(records, failing, pipe.wall, lane=RECORDS)
        if pipe is pipes[0]:
            assert pipe.customers.cache.hits == hits + 1  # c1 was taken, then c2 failed
            assert "c1" not in pipe.customers.cache  # dropped, not put back half-changed
        pipe.rnd = random.Random(6)
        pipe.finish(BASE + 10 * 10**6)
    with_cache, without = pipes
    assert with_cache.states == without.states
    assert with_cache.journey_view() == without.journey_view()
    assert with_cache.live_sessions() == without.live_sessions()


def _twins(pipes: list[Pipeline]) -> None:
    """The same stage generation (a clock reading at start and restart): it is in every
    table value and every version."""
    for pipe in pipes[1:]:
        pipe.customers.generation = pipes[0].customers.generation


def _same(a: Pipeline, b: Pipeline) -> None:
    assert a.states == b.states  # every table value, byte for byte
    assert a.instances == b.instances and a.versions == b.versions
    assert a.sessions == b.sessions
    assert a.closed == b.closed and a.reached == b.reached
    assert (a.late, a.expired, a.redelivered, len(a.conflicts)) == (
        b.late, b.expired, b.redelivered, len(b.conflicts))


@settings(max_examples=examples(120), deadline=None)
@given(st.one_of(scenario(links=False), scenario(links=True)),
       st.sampled_from([1, 2, 5, 10_000]), st.booleans(), st.sampled_from([1, 40, 10**9]))
def test_the_cache_changes_nothing(case: Any, capacity: int, restarts: bool,
                                   retention: int) -> None:
    """Two pipelines, one with the cache (of `capacity` customers: 1 evicts nearly
    every batch) and one decoding every touched customer per batch, driven by the same
    random choices (batching, interleaving, commits, crashes): after every step the
    same table bytes, rows, closes and observations. Finished customers' floors kept
    for `retention` ms of event time: short, they expire and are deleted mid-run."""
    defs, lateness, events, order, seed, partitions, sources, readers = case
    pipes = [Pipeline(defs, partitions=partitions, lateness_ms=lateness, seed=seed,
                      sources=sources, readers=readers, record_bound=300,
                      cache_customers=c, floor_retention_ms=retention)
             for c in (capacity, 0)]
    _twins(pipes)
    rnd = random.Random(seed)
    i = 0
    while i < len(order):
        n = rnd.randint(1, 8)
        chunk = order[i:i + n]
        i += n
        steps, tick, crash = rnd.randint(0, 3), rnd.random() < 0.15, rnd.random() < 0.1
        for pipe in pipes:
            pipe.feed_raw([e for _, e in chunk], chunk[-1][0])
            for _ in range(steps):
                pipe.step()
            if tick:
                pipe.tick()
            if restarts and crash:
                pipe.restart()
        _twins(pipes)
        _same(*pipes)
    final = max(e["occurred_at"] for e in events) + 10 * 10**6
    for pipe in pipes:
        pipe.finish(final)
    _same(*pipes)
