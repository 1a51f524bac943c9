"""`python -m stream` under tracemalloc, for bench_state_rss.py `--trace DIR`: each SIGUSR2
`SNAP_SIGNAL` writes a snapshot to DIR/snap-N.pickle. Not SIGUSR2 (as before): mode's
worker takes SIGUSR1 (stack dump) and SIGUSR2 (drops into pdb, which stopped the traced
worker for good: why traced runs never finished). What grows in
the worker's Python heap over a backlog is then a snapshot diff (docs/reliability.md
"Bounded state")."""

from __future__ import annotations

import runpy
import signal
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from types import FrameType

FRAMES = 8
SNAP_SIGNAL = signal.SIGRTMIN + 3
"""A real-time signal no library in the worker handles (mode takes SIGUSR1/SIGUSR2)."""


PEAK_STEP = 16 << 20


def _peaks(where: Path) -> None:
    """The heap at its highest: a snapshot (DIR/snap-peak.pickle) each time the traced
    memory is PEAK_STEP above the last one taken. What RSS keeps after a backlog is
    the allocator's high-water mark, so the transient peak is what to take apart."""
    best = tracemalloc.get_traced_memory()[0] + PEAK_STEP
    while True:
        time.sleep(0.5)
        current = tracemalloc.get_traced_memory()[0]
        if current >= best:
            tracemalloc.take_snapshot().dump(str(where / "snap-peak.tmp"))
            (where / "snap-peak.tmp").replace(where / "snap-peak.pickle")
            (where / "snap-peak.txt").write_text(str(current))
            best = current + PEAK_STEP


def main() -> None:
    where = Path(sys.argv[1])
    tracemalloc.start(FRAMES)
    taken = [0]

    def snapshot(_sig: int, _frame: FrameType | None) -> None:
        taken[0] += 1
        tracemalloc.take_snapshot().dump(str(where / f"snap-{taken[0]}.pickle"))
        if taken[0] == 1:  # idle: from now on, the peaks
            threading.Thread(target=_peaks, args=(where,), daemon=True).start()

    signal.signal(SNAP_SIGNAL, snapshot)
    sys.argv = ["stream", *sys.argv[2:]]
    # this checkout's code, as `python -m stream` run from it gets: sys.path[0] is
    # bench/ here, and the shared venv's editable install may point at another checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    runpy.run_module("stream", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
