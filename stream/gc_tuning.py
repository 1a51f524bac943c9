"""The cyclic garbage collector's thresholds in a worker process (stdlib only, so the
entry point can set them before the heavy imports: stream/__main__.py)."""

from __future__ import annotations

import gc

GC_THRESHOLDS = (50_000, 50, 100)
"""CPython's default is (700, 10, 10). A worker allocates millions of short-lived lists
and tuples (decoded envelopes, events, rows) next to a large long-lived heap (customer
state, caches, imported modules), so with the defaults the collector ran all the time
and walked that heap: bench/bench_stream.py with these thresholds set at interpreter
start took 275-305 instead of 450-566 µs of worker CPU per event, output identical
(docs/performance.md "Binary envelopes"). Reference counting frees almost everything;
only reference cycles wait longer for a collection."""


def tune_gc() -> None:
    """Set GC_THRESHOLDS (idempotent)."""
    gc.set_threshold(*GC_THRESHOLDS)
