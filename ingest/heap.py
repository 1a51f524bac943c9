"""The garbage collector held back while a bulk import runs.

An import keeps up to three chunks of events, JSON values and header lists alive, so
CPython's generational collector promotes them and keeps re-walking everything that
is long-lived, pandas' and pyarrow's module objects included: ~450 ms of collections
per 100,000 imported rows, ~4.5 µs a row (docs/performance.md "Importer at 50,000
rows/s?"). While an import runs, what was alive before it is frozen (never walked,
`gc.freeze`) and young collections run less often; cycles made during the import are
still collected. Both are undone at the end (a library call must not change the
process for good; the stream worker sets its own for life, stream/gc_tuning.py).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# 10x CPython's first threshold: a chunk of 10,000 rows allocates ~30,000 containers
IMPORT_THRESHOLD = 7_000

_lock = threading.Lock()
_depth = 0
_saved: tuple[int, int, int] = (700, 10, 10)
_froze = False  # whether the outermost block froze (and so may unfreeze) the heap


@contextmanager
def quiet_gc() -> Iterator[None]:
    """Freeze the heap as it is and collect young objects less often, for the block.
    Re-entrant and thread-safe: the first block in saves the settings, the last out
    restores them. A process that froze its heap itself (a stream worker,
    stream/gc_tuning.py `freeze_startup`) keeps it frozen: `gc.unfreeze` has no nesting,
    so the block then only raises the threshold."""
    global _depth, _saved, _froze
    with _lock:
        if _depth == 0:
            _saved = gc.get_threshold()
            _froze = gc.get_freeze_count() == 0
            if _froze:
                gc.freeze()
            gc.set_threshold(max(_saved[0], IMPORT_THRESHOLD), *_saved[1:])
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                gc.set_threshold(*_saved)
                if _froze:
                    gc.unfreeze()
