"""Child-process plumbing shared by the local launchers (broker, ClickHouse server).

Why a helper: both launchers must start a binary with its output in a log file, wait
for a readiness probe while noticing an early exit, and stop strictly by PID. Every
process started here is also stopped at interpreter exit, so a crashed demo or test run
does not leave servers behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from journeys.errors import LauncherError

LOCALHOST = "127.0.0.1"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Everything to stop at interpreter exit, newest last. Strong references on purpose: a
# launcher nobody refers to any more is still stopped (and its temp dir removed).
_LIVE: dict[int, Callable[[], object]] = {}
_LIVE_LOCK = threading.Lock()


_PR_SET_PDEATHSIG = 1
try:  # resolved here, not in the forked child (no dlopen between fork and exec)
    _prctl: Callable[..., int] | None = ctypes.CDLL(ctypes.util.find_library("c") or None,
                                                    use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies, even by SIGKILL (Linux).
    A parent killed outright can run no atexit hook; without this its broker and
    collector children kept running and answering (measured with `journeys up`)."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def track(owner: object, stop: Callable[[], object]) -> None:
    """Call `stop` at interpreter exit unless `untrack(owner)` happens first."""
    with _LIVE_LOCK:
        _LIVE[id(owner)] = stop


def untrack(owner: object) -> None:
    with _LIVE_LOCK:
        _LIVE.pop(id(owner), None)


class EarlyExit(LauncherError):
    """The child ended before it was ready (e.g. its port was taken meanwhile)."""


def free_port(host: str = LOCALHOST) -> int:
    """A port the OS reports free right now (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = LOCALHOST) -> bool:
    """True when nothing listens on host:port.

    SO_REUSEADDR makes a port in TIME_WAIT count as free (the servers set it too), while
    a live listener still makes the bind fail.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def tcp_connects(host: str, port: int, timeout: float = 0.25) -> bool:
    """True when a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def log_tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log file, without terminal colour codes (for error messages)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    tail = _ANSI.sub("", text).rstrip().splitlines()[-lines:]
    return "\n".join(tail) if tail else "(log is empty)"


def run_logged(argv: Sequence[str], log: Path, *, cwd: Path, timeout: float,
               env: Mapping[str, str] | None = None) -> int:
    """Run a set-up command to its end with its output in `log`; its exit code.
    `subprocess.TimeoutExpired` and `OSError` reach the caller, which says what it was."""
    with open(log, "wb") as out:
        return subprocess.run(list(argv), stdin=subprocess.DEVNULL, stdout=out,
                              stderr=subprocess.STDOUT, cwd=cwd, env=env,
                              timeout=timeout, check=False).returncode


class WorkDir:
    """A directory a launcher owns: a given path (kept) or a fresh temp dir (removed)."""

    def __init__(self, path: Path | None, prefix: str) -> None:
        self._given = Path(path) if path is not None else None
        self._prefix = prefix
        self._temp: Path | None = None

    def create(self) -> Path:
        if self._given is not None:
            self._given.mkdir(parents=True, exist_ok=True)
            return self._given
        if self._temp is None:
            self._temp = Path(tempfile.mkdtemp(prefix=self._prefix))
        return self._temp

    @property
    def owned_by_caller(self) -> bool:
        """True when the caller gave the path (it is kept and may hold wanted data)."""
        return self._given is not None

    @property
    def path(self) -> Path | None:
        return self._given if self._given is not None else self._temp

    def cleanup(self) -> None:
        """Remove the directory only when it is a temp dir this object created."""
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)
            self._temp = None


class ManagedProcess:
    """One child process with its output in a log file; stopped by its PID only."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._env = dict(env) if env is not None else None
        self._cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Spawn the process in its own session, so a terminal Ctrl-C reaches only us and
        the owner decides the shutdown order. Started from the main thread, it also gets
        SIGTERM when this process dies (the death signal follows the thread that forked,
        so a child of a short-lived thread would be stopped with that thread)."""
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        main = threading.current_thread() is threading.main_thread()
        try:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=self._env,
                cwd=self._cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent if main and _prctl is not None else None,
            )
        except OSError as exc:
            self._log.close()
            self._log = None
            raise LauncherError(f"cannot start {self.name} ({self.argv[0]}): {exc}") from exc
        track(self, lambda: self.stop(timeout=5.0))

    def returncode(self) -> int | None:
        """The exit code once the process has ended, else None."""
        return self._proc.poll() if self._proc is not None else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait_ready(self, probe: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll `probe` until true; raise LauncherError (with the log tail) on exit/timeout.

        The process is checked both before and after each probe: a server that dies right
        after its port was found open must not be reported ready.
        """
        deadline = time.monotonic() + timeout
        while True:
            rc = self.returncode()
            if rc is None and probe() and self.returncode() is None:
                return
            rc = self.returncode()
            if rc is not None:
                self.stop()
                raise EarlyExit(
                    f"{self.name} exited with code {rc} before it was ready ({what}).\n"
                    f"Log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            if time.monotonic() >= deadline:
                self.stop()
                raise LauncherError(
                    f"{self.name} was not ready after {timeout:.1f}s ({what}).\n"
                    f"Log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL. Idempotent; returns the exit code.

        Popen.send_signal/kill signal only our own PID and do nothing once the child has
        been reaped, so a recycled PID is never hit.
        """
        proc = self._proc
        rc: int | None = None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=timeout)
            rc = proc.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        untrack(self)
        return rc


def child_env(drop: Sequence[str] = (), **extra: str) -> dict[str, str]:
    """This process's environment minus `drop`, plus `extra` (for a predictable child)."""
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra)
    return env


@atexit.register
def _stop_all() -> None:
    """Last line of defence: never leave a server running after the interpreter exits."""
    with _LIVE_LOCK:
        stops = list(_LIVE.values())
    for stop in reversed(stops):  # launchers (registered after their process) first
        with contextlib.suppress(Exception):
            stop()
