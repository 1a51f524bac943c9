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
