"""`python -m stream [--loglevel info]`: one stream worker configured from JOURNEYS_* env.

Same as `journeys worker`, without the CLI's dependencies; the integration tests start
workers this way as subprocesses.
"""

from __future__ import annotations

import argparse
import sys

from stream.gc_tuning import tune_gc

tune_gc()  # before the heavy imports below: their garbage is collected the same way

from journeys.errors import JourneysError  # noqa: E402
from journeys.settings import WorkerSettings  # noqa: E402
from stream.agents.run import run_worker  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stream", description=__doc__)
    parser.add_argument("--loglevel", default="info", help="debug, info, warning")
    args = parser.parse_args(argv)
    try:
        run_worker(WorkerSettings.build(), loglevel=args.loglevel)
    except JourneysError as exc:  # a clear line, not a traceback (as `journeys worker`)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
