"""The Warehouse contract, run against BOTH engines: ClickHouse 18.16 server and chdb.

Each test gets its own database (unique_name); chdb tests share the process's one data
directory (chdb_path). Nothing is skipped: a backend that cannot start makes its
fixture fail.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from journeys.errors import ConfigError, ServiceUnavailable, WarehouseError
from journeys.events import Rejection, Touchpoint
from journeys.settings import WarehouseConfig
from warehouse import writers
from warehouse.backend import Warehouse
from warehouse.connect import connect
from warehouse.embedded import EmbeddedWarehouse, open_paths
from warehouse.migrations import MIGRATIONS
from warehouse.queries import sessions_per_day
from warehouse.schema import applied_migrations, migrate, migrate_from_config
from warehouse.tables import ALL_TABLES, SESSIONS, TOMBSTONE_VERSION, TOUCHPOINTS

DAY_MS = 86_400_000
JAN2 = 1_704_153_600_000  # 2024-01-02T00:00:00Z
ALL_MIGRATIONS = [m.name for m in MIGRATIONS]


@pytest.fixture(params=["server", "chdb"])
def config(request: pytest.FixtureRequest, unique_name: Any) -> WarehouseConfig:
    database = unique_name("wh")
    if request.param == "server":
        server = request.getfixturevalue("clickhouse_server")
        return WarehouseConfig(
            backend="server", host=server.host, port=server.tcp_port, database=database
        )
    path: Path = request.getfixturevalue("chdb_path")
    return WarehouseConfig(backend="chdb", path=path, database=database)


@pytest.fixture
def wh(config: WarehouseConfig) -> Iterator[Warehouse]:
    w = connect(config)
    try:
        yield w
    finally:
        w.execute(f"DROP DATABASE IF EXISTS {config.database}")
        w.close()


@pytest.fixture
def migrated(wh: Warehouse) -> Warehouse:
    migrate(wh)
    return wh


def _tp(event_id: str, at_ms: int, channel: str = "web", **kw: Any) -> Touchpoint:
    return Touchpoint(event_id=event_id, type="product_view", channel=channel,
                      occurred_at=at_ms, customer_id=kw.pop("customer_id", "c1"), **kw)


def _session(sid: str, start_ms: int, channel: str, version: int, deleted: int = 0,
             events: int = 1) -> tuple[Any, ...]:
    return (sid, "c1", start_ms, start_ms + 60_000, None, events, [channel], channel,
            version, deleted)


def test_connect_ping_and_protocol(wh: Warehouse, config: WarehouseConfig) -> None:
    assert isinstance(wh, Warehouse)
    assert wh.ping()
    assert wh.database == config.database
    assert wh.query("SELECT count() FROM system.databases WHERE name = %(db)s",
                    {"db": config.database}) == [(1,)]


def test_connect_without_create_refuses_a_missing_database(wh: Warehouse,
                                                           config: WarehouseConfig) -> None:
    missing = config.model_copy(update={"database": config.database + "_missing"})
    with pytest.raises(WarehouseError, match=r"does not exist.*journeys migrate"):
        connect(missing, create_database=False)
    connect(config, create_database=False).close()  # it exists: fine


def test_migrate_twice_is_idempotent_and_matches_table_constants(wh: Warehouse) -> None:
    assert migrate(wh) == ALL_MIGRATIONS
    assert migrate(wh) == []
    assert applied_migrations(wh) == {m.version: m.name for m in MIGRATIONS}
    for table in ALL_TABLES:
        rows = wh.query(
            "SELECT name, type FROM system.columns WHERE database = %(db)s AND table = %(t)s",
            {"db": wh.database, "t": table.name},
        )
        assert dict(rows) == dict(table.schema), table.name


def test_migrate_from_config(config: WarehouseConfig, wh: Warehouse) -> None:
    assert migrate_from_config(config) == ALL_MIGRATIONS
    assert migrate_from_config(config) == []


def test_touchpoints_roundtrip_and_duplicates_count_once(migrated: Warehouse) -> None:
    wh = migrated
    events = [_tp(f"e{i}", JAN2 + i * 1000, properties={"sku": f"S'{i}"}) for i in range(50)]
    events.append(_tp("anon", JAN2, customer_id=None, anonymous_id="a1", source="pos",
                      context={"country": "DE"}))
    assert writers.write_touchpoints(wh, events + events[:10]) == 51
    assert writers.write_touchpoints(wh, events[20:]) == 31  # a re-delivery
    t = f"{wh.database}.{TOUCHPOINTS.name}"
    assert wh.query(f"SELECT count() FROM {t}") == [(82,)]  # physically duplicated...
    assert wh.query(f"SELECT count() FROM {t} FINAL") == [(51,)]  # ...counted once
    assert wh.query(f"SELECT uniqExact(event_id) FROM {t}") == [(51,)]
    row = wh.query(f"SELECT * FROM {t} FINAL WHERE event_id = %(id)s", {"id": "anon"})[0]
    got = dict(zip(TOUCHPOINTS.columns, row, strict=True))
    assert got["occurred_at"] == datetime(2024, 1, 2, tzinfo=UTC)
    assert (got["occurred_at_ms"], got["customer_id"], got["anonymous_id"]) == (JAN2, "", "a1")
    assert (got["source"], got["properties"], got["context"]) == ("pos", "{}",
                                                                  '{"country":"DE"}')
    assert wh.query(f"SELECT properties FROM {t} FINAL WHERE event_id = 'e7'") == [
        ('{"sku":"S\'7"}',)
    ]


def test_sessions_final_and_deletions(migrated: Warehouse) -> None:
    """Versions as the stream hands them out (the customer's counter, deletions
    included: docs/stream.md "Exactly once in effect"): the highest wins, so a deleted
    id comes back with a higher version, and a pre-2026-12-04 deletion at
    TOMBSTONE_VERSION stays."""
    wh = migrated
    writers.write_sessions(wh, [_session("s1", JAN2, "web", 1), _session("s2", JAN2, "app", 2),
                                _session("s3", JAN2, "web", 3), _session("s4", JAN2, "app", 4)])
    writers.write_sessions(wh, [_session("s1", JAN2, "web", 7, events=3),
                                _session("s1", JAN2, "web", 6, events=2)])  # late, lower
    writers.write_sessions(wh, [_session("s2", JAN2, "app", 8, deleted=1),
                                _session("s3", JAN2, "web", 9, deleted=1),
                                _session("s4", JAN2, "app", TOMBSTONE_VERSION, deleted=1)])
    writers.write_sessions(wh, [_session("s3", JAN2, "web", 10, events=2),  # back
                                _session("s4", JAN2, "app", 11, events=2)])  # not: 2^62
    live = (f"SELECT session_id, events FROM {wh.database}.{SESSIONS.name} FINAL "
            "WHERE deleted = 0 ORDER BY session_id")
    assert wh.query(live) == [("s1", 3), ("s3", 2)]
    wh.execute(f"OPTIMIZE TABLE {wh.database}.{SESSIONS.name} FINAL")
    assert wh.query(live) == [("s1", 3), ("s3", 2)]


def test_sessions_per_day_is_exact(migrated: Warehouse) -> None:
    wh = migrated
    last_second = JAN2 + DAY_MS - 1000  # 2024-01-02 23:59:59
    rows = [
        _session("a", JAN2, "web", 1), _session("a", JAN2, "web", 4, events=4),
        _session("b", JAN2 + 3_600_000, "app", 1),
        _session("c", last_second, "web", 1),
        _session("d", JAN2 + DAY_MS, "web", 2),  # 2024-01-03 00:00:00
        _session("e", JAN2 + DAY_MS, "email", 1),
        _session("e", JAN2 + DAY_MS, "email", 2, deleted=1),  # merged away
        _session("f", JAN2 + 40 * DAY_MS, "web", 1),  # 2024-02-11, other partition
        _session("g", JAN2 - 1000, "web", 1),  # 2024-01-01 23:59:59, out of range
    ]
    writers.write_sessions(wh, rows[:4])
    writers.write_sessions(wh, rows[4:])
    got = sessions_per_day.run(wh, date_from=date(2024, 1, 2), date_to=date(2024, 2, 11))
    assert got == [
        (date(2024, 1, 2), "app", 1), (date(2024, 1, 2), "web", 2),
        (date(2024, 1, 3), "web", 1), (date(2024, 2, 11), "web", 1),
    ]
    assert got[0].day == date(2024, 1, 2) and got[0].sessions == 1
    web = sessions_per_day.run(wh, date_from=date(2024, 1, 1), date_to=date(2024, 1, 3),
                               channel="web")
    assert web == [(date(2024, 1, 1), "web", 1), (date(2024, 1, 2), "web", 2),
                   (date(2024, 1, 3), "web", 1)]
    assert sessions_per_day.run(wh, date_from=date(2024, 1, 2), date_to=date(2024, 1, 2),
                                channel="it's") == []
    df = sessions_per_day.run_df(wh, date_from=date(2024, 1, 3), date_to=date(2024, 1, 3))
    assert df.to_dict("records") == [{"day": date(2024, 1, 3), "channel": "web",
                                      "sessions": 1}]


@pytest.mark.timeout(60)
def test_empty_insert_is_a_noop(migrated: Warehouse) -> None:
    wh = migrated
    assert wh.insert(TOUCHPOINTS.name, TOUCHPOINTS.columns, []) == 0
    assert writers.write_touchpoints(wh, []) == 0
    assert writers.write_sessions(wh, []) == 0
    assert writers.write_dead_letters(wh, []) == 0
    assert wh.query(f"SELECT count() FROM {wh.database}.{TOUCHPOINTS.name}") == [(0,)]
    wh.execute(f"DROP TABLE {wh.database}.{TOUCHPOINTS.name}")  # would block after a hang


def test_bad_sql_raises_warehouse_error_and_the_backend_recovers(migrated: Warehouse) -> None:
    wh = migrated
    with pytest.raises(WarehouseError, match="error 62"):
        wh.query("SELEC 1")
    with pytest.raises(WarehouseError, match="60"):
        wh.query(f"SELECT * FROM {wh.database}.no_such_table")
    with pytest.raises(WarehouseError, match="inline INSERT"):
        wh.execute(f"INSERT INTO {wh.database}.{TOUCHPOINTS.name} (event_id) VALUES ('x')")
    with pytest.raises(WarehouseError, match="expected 2"):
        wh.insert(SESSIONS.name, ("session_id", "customer_id"), [("s",)])
    with pytest.raises(WarehouseError):
        wh.insert(SESSIONS.name, ("session_id", "nope"), [("s", "x")])
    with pytest.raises(WarehouseError):
        wh.insert(SESSIONS.name, ("session_id", "events"), [("s", "not a number")])
    assert wh.ping()
    assert wh.query("SELECT 1 + 1") == [(2,)]


def test_parameters_and_result_types_are_the_same_on_both(wh: Warehouse) -> None:
    tricky = "it's \\ \n\t \"q\" ünï 😀 %(x)s"
    row = wh.query(
        "SELECT %(s)s, %(d)s, toDate(%(d)s), toDateTime(%(t)s, 'UTC'), %(b)s, %(n)s, "
        "'b' IN %(in)s, [toUInt64(%(big)s)], toFloat64(%(f)s), "
        "toDateTime('2024-01-02 03:04:05', 'UTC') = %(aware)s",
        {"s": tricky, "d": date(2024, 2, 29), "t": datetime(2024, 1, 2, 3, 4, 5), "b": True,
         "n": None, "in": ("a", "b"), "big": 2**64 - 1, "f": 0.25,
         "aware": datetime(2024, 1, 2, 4, 4, 5, tzinfo=_cet())},
    )
    assert row == [(tricky, "2024-02-29", date(2024, 2, 29),
                    datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), 1, None, 1, [2**64 - 1], 0.25,
                    1)]


def _cet() -> Any:
    from datetime import timedelta, timezone

    return timezone(timedelta(hours=1))


def test_query_df_shapes(migrated: Warehouse) -> None:
    wh = migrated
    empty = wh.query_df(f"SELECT session_id, channels FROM {wh.database}.{SESSIONS.name}")
    assert isinstance(empty, pd.DataFrame) and list(empty.columns) == ["session_id", "channels"]
    assert len(empty) == 0
    writers.write_sessions(wh, [_session("s1", JAN2, "web", 1)])
    df = wh.query_df(f"SELECT session_id, channels, events FROM {wh.database}.{SESSIONS.name}")
    assert df.to_dict("records") == [{"session_id": "s1", "channels": ["web"], "events": 1}]


def test_dead_letters(migrated: Warehouse) -> None:
    wh = migrated

    class Letter:
        rejection = Rejection("invalid_json: bad", b"{oops", None)
        stage = "stream"
        received_at_ms = JAN2 + 1500
        topic, partition, offset = "journeys.touchpoints", 3, 99

    assert writers.dead_letter_offsets(wh, "journeys.touchpoints") == {}
    assert writers.write_dead_letters(wh, [Letter()]) == 1
    assert wh.query(f"SELECT * FROM {wh.database}.dead_letters") == [
        (datetime(2024, 1, 2, 0, 0, 1, tzinfo=UTC), "stream", "invalid_json: bad", "",
         "{oops", "journeys.touchpoints", 3, 99)
    ]
    later = Letter()
    later.offset, later.partition = 7, 0  # type: ignore[misc]
    writers.write_dead_letters(wh, [later])
    assert writers.dead_letter_offsets(wh, "journeys.touchpoints") == {3: 99, 0: 7}
    assert writers.dead_letter_offsets(wh, "it's other") == {}


def test_threads_share_one_warehouse(migrated: Warehouse) -> None:
    wh = migrated
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for k in range(5):
                batch = [_tp(f"t{n}-{k}-{i}", JAN2 + i) for i in range(20)]
                writers.write_touchpoints(wh, batch)
                wh.query(f"SELECT count() FROM {wh.database}.{TOUCHPOINTS.name}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert wh.query(f"SELECT count() FROM {wh.database}.{TOUCHPOINTS.name} FINAL") == [(600,)]


def test_chdb_refuses_a_second_data_directory(chdb_path: Path, tmp_path: Path,
                                              unique_name: Any) -> None:
    config = WarehouseConfig(backend="chdb", path=chdb_path, database=unique_name("wh"))
    wh = connect(config)
    try:
        assert str(chdb_path.resolve()) in open_paths()
        with pytest.raises(ConfigError, match="one data directory per process"):
            EmbeddedWarehouse(path=tmp_path / "other", database="x")
        with pytest.raises(ConfigError):
            connect(config.model_copy(update={"path": tmp_path / "other"}))
        second = connect(config)  # the same path is shared
        assert second.ping()
        second.close()
        assert wh.ping()
    finally:
        wh.execute(f"DROP DATABASE IF EXISTS {config.database}")
        wh.close()


def test_unreachable_server_is_service_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    config = WarehouseConfig(backend="server", host="127.0.0.1", port=port, database="x")
    with pytest.raises(ServiceUnavailable, match=f"127.0.0.1:{port}"):
        connect(config)


def _instance_record(iid: str, version: int, **kw: Any) -> dict[str, Any]:
    return {"instance_id": iid, "journey": "purchase", "customer_id": "c1 ü'😀",
            "status": "open", "opened_at_ms": JAN2 + 1, "furthest_step": 1,
            "furthest_step_name": "cart", "path_types": ["product_view", "add_to_cart"],
            "path_channels": ["web", "app"], "path_times": [JAN2 + 1, 2**63 + 5],
            "version": version, "entry_context": {"device": "app", "n": {"x": 1}}, **kw}


def test_columnar_inserts_write_the_rows_insert_writes(migrated: Warehouse) -> None:
    """insert_columns (the stream's sink) and insert of the same rows read back alike:
    arrays (empty too), UInt64 beyond 2**63, DateTime from epoch seconds, Float64."""
    from warehouse.tables import JOURNEY_INSTANCES
    from warehouse.writers_journeys import journey_instance_rows, journey_retraction_row

    wh, table = migrated, JOURNEY_INSTANCES
    rows = journey_instance_rows([
        _instance_record("a", 1), _instance_record("b", 2, value=12.5, status="converted",
                                                   closed_at_ms=JAN2 + 9, detour_kinds=["loop"],
                                                   detour_steps=["cart"],
                                                   detour_channels=["web"],
                                                   detour_times=[JAN2 + 2])])
    rows.append(journey_retraction_row("c", "purchase", "c2", JAN2, TOMBSTONE_VERSION, "d2"))
    by_rows = [(f"r-{r[0]}", *r[1:]) for r in rows]
    by_columns = [(f"k-{r[0]}", *r[1:]) for r in rows]
    assert wh.insert(table.name, table.columns, by_rows) == 3
    data = [list(c) for c in zip(*by_columns, strict=True)]
    assert wh.insert_columns(table.name, table.columns, data) == 3
    got = wh.query(f"SELECT * FROM {wh.database}.{table.name} ORDER BY instance_id")
    assert [r[1:] for r in got[:3]] == [r[1:] for r in got[3:]]
    assert [r[0] for r in got] == ["k-a", "k-b", "k-c", "r-a", "r-b", "r-c"]
    assert got[0][table.columns.index("path_times")] == [JAN2 + 1, 2**63 + 5]
    assert got[1][table.columns.index("journey_value")] == 12.5


@pytest.mark.timeout(60)
def test_columnar_insert_refuses_bad_columns_and_sends_nothing(migrated: Warehouse) -> None:
    wh = migrated
    cols = ("session_id", "events")
    assert wh.insert_columns(SESSIONS.name, cols, [[], []]) == 0
    with pytest.raises(WarehouseError, match="column events for sessions has 1 values"):
        wh.insert_columns(SESSIONS.name, cols, [["s", "t"], [1]])
    with pytest.raises(WarehouseError, match="1 columns of data"):
        wh.insert_columns(SESSIONS.name, cols, [["s"]])
    with pytest.raises(WarehouseError):
        wh.insert_columns(SESSIONS.name, cols, [["s"], ["not a number"]])
    assert wh.query(f"SELECT count() FROM {wh.database}.{SESSIONS.name}") == [(0,)]
    wh.execute(f"DROP TABLE {wh.database}.{SESSIONS.name}")  # would block after a hang
