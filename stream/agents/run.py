"""Running the stream app: as its own process (`run_worker`, `python -m stream`), with
other services next to it in the same worker (`BackgroundService`).

The embedded `journeys demo` runs worker + API in one process (chdb allows one process
per data directory): pass the API as an extra service, e.g.

    server = uvicorn.Server(uvicorn.Config(api_app, host="127.0.0.1", port=8000))
    api = BackgroundService("api", server.serve,
                            stop=lambda: setattr(server, "should_exit", True))
    run_worker(settings, warehouse=wh, extra_services=[api])
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import NoReturn

import faust
from mode import Service, ServiceT

from journeys.logs import logging_config
from journeys.settings import WorkerSettings
from stream.agents.app import JourneysApp, create_app
from stream.agents.local_state import claim_data_dir
from stream.gc_tuning import freeze_startup, tune_gc
from warehouse.backend import Warehouse

log = logging.getLogger(__name__)

class BackgroundService(Service):
    """Runs `run()` as a task next to the worker; stopping calls `stop()` (if given) and
    waits up to `stop_timeout` for it to return, then cancels it. If `run()` fails, the
    whole worker is stopped: a half-running embedded stack is worse than none."""

    def __init__(self, name: str, run: Callable[[], Awaitable[object]], *,
                 stop: Callable[[], object] | None = None, stop_timeout: float = 10.0) -> None:
        super().__init__()
        self.name = name
        self._run = run
        self._stop = stop
        self._stop_timeout = stop_timeout
        self._task: asyncio.Future[None] | None = None

    @property
    def label(self) -> str:
        return f"BackgroundService({self.name})"

    async def on_start(self) -> None:
        self._task = asyncio.ensure_future(self._main())

    async def _main(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("%s failed", self.label)
            await self.crash(exc)
            return
        if not self.should_stop:
            log.warning("%s returned; stopping the worker", self.label)
            await self.crash(RuntimeError(f"{self.label} exited"))

    async def on_stop(self) -> None:
        task = self._task
        if task is None or task.done():
            return
        if self._stop is not None:
            self._stop()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), self._stop_timeout)
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


def build_worker(app: JourneysApp, *, extra_services: Sequence[ServiceT] = (),
                 loglevel: str = "info", **worker_options: object) -> faust.Worker:
    """A faust.Worker for `app` that also starts and stops `extra_services`."""
    options: dict[str, object] = {"loglevel": loglevel, "redirect_stdouts": False,
                                  "quiet": True}
    options.update(worker_options)
    worker = faust.Worker(app, *extra_services, **options)  # type: ignore[arg-type]
    # Faust's terminal spinner sets the root logger to DEBUG (to spin on every record)
    # whenever the level is WARNING or above: every aiokafka/Faust debug call then
    # builds a LogRecord (measured: ~12% of a worker's CPU). No spinner, no DEBUG.
    worker.spinner = None
    freeze_startup()
    return worker


def run_worker(settings: WorkerSettings, *, loglevel: str = "info",
               warehouse: Warehouse | None = None,
               extra_services: Sequence[ServiceT] = ()) -> NoReturn:
    """Build the app and run a worker until SIGINT/SIGTERM; exits the process.

    Topics are created and a stale local data dir is wiped by the app at start (see
    JourneysApp.on_first_start).
    """
    tune_gc()  # already done by `python -m stream`; here for `journeys worker`, `up`
    _claim = claim_data_dir(settings)  # held until the process exits
    app = create_app(settings, warehouse=warehouse)
    worker = build_worker(app, extra_services=extra_services, loglevel=loglevel,
                          logging_config=logging_config(settings.log_format, loglevel))
    worker.execute_from_commandline()
