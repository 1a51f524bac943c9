"""ingest.heap.quiet_gc: the collector's settings are raised for the block and restored
exactly, nested or after an error, and cycles made inside are still collected."""

from __future__ import annotations

import gc
import weakref

import pytest

from ingest.heap import IMPORT_THRESHOLD, quiet_gc


class _Node:
    other: object = None


def test_frozen_and_raised_inside_restored_after() -> None:
    before = gc.get_threshold()
    keep = [object() for _ in range(10)]  # something alive before the block
    with quiet_gc():
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (max(before[0], IMPORT_THRESHOLD), *before[1:])
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
    del keep


def test_nested_blocks_restore_once_at_the_outer_end() -> None:
    before = gc.get_threshold()
    with quiet_gc():
        with quiet_gc():
            pass
        assert gc.get_threshold()[0] == max(before[0], IMPORT_THRESHOLD)  # still inside
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_restored_after_an_error() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), quiet_gc():
        raise RuntimeError("boom")
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_cycles_made_inside_are_collected() -> None:
    with quiet_gc():
        a, b = _Node(), _Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        del a, b
        # allocations alone trigger it: no explicit gc.collect()
        for _ in range(20):
            _junk = [[] for _ in range(IMPORT_THRESHOLD)]
            if gone() is None:
                break
        assert gone() is None


def test_a_heap_frozen_before_stays_frozen() -> None:
    """A worker's heap frozen for life (stream/gc_tuning.py) is not unfrozen by an
    import run in the same process."""
    gc.freeze()
    try:
        with quiet_gc():
            assert gc.get_threshold()[0] >= IMPORT_THRESHOLD
        assert gc.get_freeze_count() > 0  # (a frozen object that died leaves it)
    finally:
        gc.unfreeze()
