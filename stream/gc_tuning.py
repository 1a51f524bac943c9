"""The cyclic garbage collector in a worker process: the one home of its settings
(stdlib only, so the entry point can set them before the heavy imports:
stream/__main__.py).

A worker allocates millions of short-lived lists and tuples (decoded envelopes, events,
rows) next to a large long-lived heap (customer state, the decoded-value cache, imported
modules). With CPython's defaults (700, 10, 10) batch-lived objects were promoted to the
oldest generation and set off full collections, each walking every object in the
process: measured 11.6 of 26.8 CPU-s of a worker, 35 full collections for 50,000 events
(docs/performance.md "Customer state kept decoded, and the garbage collector" and
"Binary envelopes"). Reference counting frees nearly all of it; the collector only has
to find cycles (futures, exceptions with their tracebacks), and finds them later.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

GC_THRESHOLDS = (50_000, 50, 100)
"""Young-generation allocations between collections, and the two promotion ratios."""


def tune_gc() -> None:
    """Set GC_THRESHOLDS (idempotent): first thing in the process."""
    gc.set_threshold(*GC_THRESHOLDS)


def freeze_startup() -> None:
    """Once the app is built: collect, then move everything alive (modules, the app,
    its definitions) out of the collector's sight for good (`gc.freeze`: never garbage,
    never traversed again)."""
    gc.collect()
    gc.freeze()


TRIM_INTERVAL_S = 30.0
"""How often a worker hands glibc's free memory back to the OS (`release_free_memory`)."""

_libc: ctypes.CDLL | None = None


def release_free_memory() -> bool:
    """`malloc_trim(0)`: give the pages glibc holds free (in every arena, not only at
    the top of the heap) back to the OS. After a backlog glibc kept 92 MiB free at 120k
    open journeys, growing with the backlog (docs/reliability.md "What grows per open
    journey"); RSS then looked like state. False where the C library has no
    malloc_trim (not glibc)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    trim = getattr(_libc, "malloc_trim", None)
    if trim is None:
        return False
    trim(0)
    return True
