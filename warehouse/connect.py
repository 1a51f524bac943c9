"""`connect(config)`: the one place that picks the backend named by WarehouseConfig."""

from __future__ import annotations

from journeys.errors import WarehouseError
from journeys.settings import WarehouseConfig
from warehouse.backend import Warehouse
from warehouse.sql import check_identifier


def connect(config: WarehouseConfig, *, create_database: bool = True) -> Warehouse:
    """Open the configured warehouse and make sure its database exists.

    Raises ServiceUnavailable when a server cannot be reached, ConfigError when chdb is
    already bound to another data directory in this process, and WarehouseError when
    the database is missing and `create_database` is False (run `journeys migrate`).
    """
    database = check_identifier(config.database)
    wh: Warehouse
    if config.backend == "server":
        from warehouse.server import ServerWarehouse

        wh = ServerWarehouse(
            database=database,
            host=config.host,
            port=config.port,
            user=config.user,
            password=config.password.get_secret_value(),
        )
    else:
        from warehouse.embedded import EmbeddedWarehouse

        wh = EmbeddedWarehouse(path=config.path, database=database)
    try:
        if create_database:
            wh.execute(f"CREATE DATABASE IF NOT EXISTS {database}")
        elif not wh.query(
            "SELECT count() FROM system.databases WHERE name = %(db)s", {"db": database}
        )[0][0]:
            raise WarehouseError(
                f"database {database!r} does not exist on {wh!r}; run `journeys migrate`"
            )
    except BaseException:
        wh.close()
        raise
    return wh
