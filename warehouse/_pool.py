"""A tiny blocking connection pool shared by both adapters.

Neither a clickhouse-driver Client nor a chdb streaming insert may be used by two
threads at once, while the API and the stream worker call one Warehouse from many
threads: each call borrows a connection for its duration. Connections are created
lazily up to `max_size`; further callers wait.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")


class Pool(Generic[T]):
    """Borrow with `with pool.connection() as conn:`; `close()` closes idle and returned ones."""

    def __init__(
        self, create: Callable[[], T], dispose: Callable[[T], None], max_size: int = 4
    ) -> None:
        if max_size < 1:
            raise ValueError("max_size must be >= 1")
        self._create = create
        self._dispose = dispose
        self._max = max_size
        self._idle: list[T] = []
        self._count = 0
        self._closed = False
        self._cond = threading.Condition()

    @contextmanager
    def connection(self) -> Iterator[T]:
        conn = self._acquire()
        try:
            yield conn
        finally:
            self._release(conn)

    def _acquire(self) -> T:
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("the warehouse is closed")
                if self._idle:
                    return self._idle.pop()
                if self._count < self._max:
                    self._count += 1
                    break
                self._cond.wait()
        try:
            return self._create()
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def _release(self, conn: T) -> None:
        with self._cond:
            if not self._closed:
                self._idle.append(conn)
                self._cond.notify()
                return
            self._count -= 1
        self._dispose(conn)

    def close(self) -> None:
        """Dispose idle connections now; borrowed ones are disposed when returned."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._count -= len(idle)
            self._cond.notify_all()
        for conn in idle:
            self._dispose(conn)

    @property
    def closed(self) -> bool:
        return self._closed
