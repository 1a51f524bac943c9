"""Where a stage's table values live: the port and its two adapters.

The stages write their Faust tables with explicit partitions (the key's changelog
partition is its source partition: stream.stages.envelopes.partition_for) and send the
changelog records themselves (stream.agents.context.store), so they only need get,
put-in-partition, delete and iterate. Faust's memory store is a dict; its RocksDB store
(driver rocksdict) keeps the values in one local database per partition under the
worker's data dir, so the values do not live in RSS (docs/reliability.md "Bounded
state": about half of the memory per open journey). Faust's RocksDB `__setitem__` takes the
partition from the current event, which a batch write outside an event does not have:
hence `put(partition, ...)` here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol


class TableStore(Protocol):
    """A table's values, written by partition."""

    def get(self, key: bytes) -> bytes | None: ...

    def put(self, partition: int, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> bool:
        """Remove the key; False when it was not there."""
        ...

    def items(self) -> Iterator[tuple[bytes, bytes]]: ...


class MemoryTableStore:
    """Faust's memory store (a dict; rebuilt from the changelog at every start)."""

    def __init__(self, data: Any) -> None:
        self._data = data

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self._data.get(key)
        return value

    def put(self, partition: int, key: bytes, value: bytes) -> None:
        self._data[key] = value

    def delete(self, key: bytes) -> bool:
        return self._data.pop(key, None) is not None

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        # a copy: the caller may write while it iterates
        return iter(list(self._data.items()))


class RocksTableStore:
    """Faust's RocksDB store: one database per partition (faust.stores.rocksdb.Store)."""

    def __init__(self, data: Any) -> None:
        self._data = data

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self._data.get(key)  # the key index, else every partition
        return value

    def put(self, partition: int, key: bytes, value: bytes) -> None:
        self._data._db_for_partition(partition).put(key, value)
        self._data._key_index[key] = partition

    def delete(self, key: bytes) -> bool:
        if self._data.get(key) is None:
            return False
        del self._data[key]
        return True

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        it: Iterator[tuple[bytes, bytes]] = iter(self._data.items())  # streams from disk
        return it


def table_store(table: Any) -> TableStore:
    """The adapter for a Faust table's store."""
    data = table.data
    if hasattr(data, "_db_for_partition"):
        return RocksTableStore(data)
    return MemoryTableStore(data)
