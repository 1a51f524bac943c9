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
import tracemalloc
from pathlib import Path
from types import FrameType

FRAMES = 12
SNAP_SIGNAL = signal.SIGRTMIN + 3
"""A real-time signal no library in the worker handles (mode takes SIGUSR1/SIGUSR2)."""


def main() -> None:
    where = Path(sys.argv[1])
    tracemalloc.start(FRAMES)
    taken = [0]

    def snapshot(_sig: int, _frame: FrameType | None) -> None:
        taken[0] += 1
        tracemalloc.take_snapshot().dump(str(where / f"snap-{taken[0]}.pickle"))

    signal.signal(SNAP_SIGNAL, snapshot)
    sys.argv = ["stream", *sys.argv[2:]]
    runpy.run_module("stream", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
