"""One memory budget for every RocksDB database of a worker (`JOURNEYS_STATE_MEMORY_BYTES`).

With `JOURNEYS_STATE_STORE=rocksdb` a worker opens one database per table and partition
(Faust's store: 3 tables x P partitions), one timer index per by-customer partition and
one alert-entry index, each with memtables and a block cache of its own: with 4
partitions 17 databases, up to ~170 MiB between them, filling as a backlog arrives
(measured: docs/reliability.md "What grows per open journey"). Here they share one LRU
block cache and one write buffer manager, half the budget each, so RocksDB's memory is
bounded by one setting whatever the partition count. The budget is soft for the
memtables (RocksDB flushes when they reach it; writers do not stall).
"""

from __future__ import annotations

from typing import Any

from faust.stores.rocksdb import RocksDBOptions
from faust.stores.rocksdb import Store as FaustRocksStore
from rocksdict import BlockBasedIndexType, BlockBasedOptions, Cache, Options, WriteBufferManager

STORE_SCHEME = "journeys-rocksdb"
"""The Faust store URL scheme of `BudgetedStore` (registered by `register_store`)."""


class RocksMemory:
    """The worker's shared block cache and write buffer manager."""

    def __init__(self, budget_bytes: int) -> None:
        if budget_bytes < 2:
            raise ValueError(f"RocksDB memory budget must be >= 2 bytes, got {budget_bytes}")
        self.budget_bytes = budget_bytes
        self.cache = Cache(budget_bytes // 2)
        self.writes = WriteBufferManager(budget_bytes - budget_bytes // 2, False)

    def table_options(self) -> BlockBasedOptions:
        """Block-based table options reading through the shared cache."""
        table = BlockBasedOptions()
        table.set_block_cache(self.cache)
        return table

    def apply(self, opts: Options, table: BlockBasedOptions | None = None) -> Options:
        """`opts` with its memtables charged to the shared write buffer manager and its
        blocks cached in the shared cache (`table`: options of its own to keep)."""
        if table is None:
            table = self.table_options()
        else:
            table.set_block_cache(self.cache)
        opts.set_block_based_table_factory(table)
        opts.set_write_buffer_manager(self.writes)
        return opts


class _BudgetedOptions(RocksDBOptions):
    """Faust's options (its bloom filter and index type), with the shared memory."""

    def as_options(self) -> Options:
        opts = super().as_options()
        memory: RocksMemory = self.extra_options["memory"]
        table = BlockBasedOptions()
        table.set_bloom_filter(self.bloom_filter_size, block_based=True)
        table.set_index_type(BlockBasedIndexType.binary_search())
        return memory.apply(opts, table)


class BudgetedStore(FaustRocksStore):
    """Faust's RocksDB store whose databases share the worker's `RocksMemory` (passed as
    the table option `memory`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rocksdb_options = _BudgetedOptions(**(self.options or {}), use_rocksdict=True)


def register_store() -> str:
    """Make `journeys-rocksdb://` name `BudgetedStore` for Faust; returns the URL."""
    from faust.stores import STORES

    STORES.data[STORE_SCHEME] = f"{__name__}:BudgetedStore"
    return f"{STORE_SCHEME}://"

