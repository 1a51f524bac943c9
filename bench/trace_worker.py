"""`python -m stream` under tracemalloc, for bench_state_rss.py `--trace DIR`: each SIGUSR2
writes a snapshot to DIR/snap-N.pickle (SIGUSR1 is mode's stack dump). What grows in
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


def main() -> None:
    where = Path(sys.argv[1])
    tracemalloc.start(FRAMES)
    taken = [0]

    def snapshot(_sig: int, _frame: FrameType | None) -> None:
        taken[0] += 1
        tracemalloc.take_snapshot().dump(str(where / f"snap-{taken[0]}.pickle"))

    signal.signal(signal.SIGUSR2, snapshot)
    sys.argv = ["stream", *sys.argv[2:]]
    runpy.run_module("stream", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
