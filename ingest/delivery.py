"""Delivery confirmation of a group of produced records, and a broker reachability probe."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class Delivery:
    """Completion of a group of sends: done once every record is acked or has failed.

    Callbacks run on the producer's I/O thread, so the collector bridges them to its
    event loop with `call_soon_threadsafe`; the importer just `wait()`s.
    """

    def __init__(self, count: int, on_done: Callable[[Delivery], None] | None = None) -> None:
        self.count = count
        self.errors: dict[int, BaseException] = {}
        self._remaining = count
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._callbacks: list[Callable[[Delivery], None]] = [on_done] if on_done else []
        if count == 0:
            self._finish()

    def _record(self, index: int, result: Any) -> None:
        with self._lock:
            if isinstance(result, BaseException):
                self.errors[index] = result
            self._remaining -= 1
            finished = self._remaining == 0
        if finished:
            self._finish()

    def _finish(self) -> None:
        self._event.set()
        with self._lock:
            callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            try:
                cb(self)
            except Exception:  # a failing observer must not break the I/O thread
                log.exception("delivery callback failed")

    def add_done_callback(self, fn: Callable[[Delivery], None]) -> None:
        """Call `fn(self)` once every record is settled (now, if already done)."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(fn)
                return
        fn(self)

    @property
    def done(self) -> bool:
        return self._event.is_set()

    @property
    def ok(self) -> bool:
        return self.done and not self.errors

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    def first_error(self) -> BaseException | None:
        return next(iter(self.errors.values()), None)


def tcp_reachable(bootstrap_servers: str, timeout: float = 0.5) -> bool:
    """Cheap probe: does any bootstrap address accept a TCP connection?"""
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout).close()
            return True
        except (OSError, ValueError):
            continue
    return False
