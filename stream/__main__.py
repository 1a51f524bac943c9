"""`python -m stream [--loglevel info]`: one stream worker configured from JOURNEYS_* env.

Same as `journeys worker`, without the CLI's dependencies; the integration tests start
workers this way as subprocesses.
"""

from __future__ import annotations

import argparse

from journeys.settings import WorkerSettings
from stream.agents.run import run_worker


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stream", description=__doc__)
    parser.add_argument("--loglevel", default="info", help="debug, info, warning")
    args = parser.parse_args(argv)
    run_worker(WorkerSettings.build(), loglevel=args.loglevel)


if __name__ == "__main__":
    main()
