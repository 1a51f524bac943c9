"""Pure checks of the warehouse's SQL layer: rendering, identifiers, builders, DDL rules."""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pyarrow as pa
import pytest
from clickhouse_driver.util.escape import escape_params

from journeys.errors import InvalidQuery
from journeys.events import Rejection, Touchpoint
from warehouse import _chdb_types as ct
from warehouse._errors import clean_message, statement_error
from warehouse._pool import Pool
from warehouse.migrations import BOOTSTRAP, MIGRATIONS, AddColumn
from warehouse.queries import sessions_per_day
from warehouse.sql import (
    check_identifier,
    column_list,
    escape_value,
    insert_statement,
    is_inline_insert,
    qualified,
    render,
)
from warehouse.tables import ALL_TABLES, SESSIONS, TOMBSTONE_VERSION, TOUCHPOINTS
from warehouse.writers import dead_letter_rows, session_rows, touchpoint_rows


class _DriverContext:
    class server_info:
        @staticmethod
        def get_timezone() -> str:
            return "UTC"


# --- parameter rendering ---------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["plain", "it's", "back\\slash", "new\nline\ttab", "ünï😀", "'; DROP TABLE x; --", 0, -7,
     2**64 - 1, 1.5, date(2024, 2, 29), datetime(2024, 1, 2, 3, 4, 5)],
)
def test_render_matches_clickhouse_driver_escaping(value: object) -> None:
    ours = render("SELECT %(v)s", {"v": value})
    driver = "SELECT {v}".format(**escape_params({"v": value}, _DriverContext()))
    assert ours == driver


def test_render_extras_that_18_16_needs() -> None:
    assert render("%(a)s %(b)s %(n)s", {"a": True, "b": False, "n": None}) == "1 0 NULL"
    assert render("x IN %(v)s", {"v": ["a", "b"]}) == "x IN ('a', 'b')"  # tuple, not [..]
    assert render("x IN %(v)s", {"v": ("a",)}) == "x IN ('a')"
    assert render("%(v)s", {"v": {3, 1}}) == "(1, 3)"
    assert render("%(v)s", {"v": float("nan")}) == "nan"
    assert render("%(v)s", {"v": float("-inf")}) == "-inf"
    assert render("%(v)s", {"v": Decimal("1.25")}) == "1.25"


def test_render_aware_datetimes_in_utc() -> None:
    cet = timezone(timedelta(hours=1))
    assert render("%(t)s", {"t": datetime(2024, 1, 1, 1, 30, tzinfo=cet)}) == (
        "'2024-01-01 00:30:00'"
    )
    assert render("%(t)s", {"t": datetime(2024, 1, 1, 0, 30, tzinfo=UTC)}) == (
        "'2024-01-01 00:30:00'"
    )


def test_render_without_params_leaves_percent_alone() -> None:
    assert render("SELECT '100%' LIKE '%'") == "SELECT '100%' LIKE '%'"
    assert render("SELECT 'a%%' = %(x)s", {"x": "a%"}) == "SELECT 'a%' = 'a%'"


@pytest.mark.parametrize("value", [{"a": 1}, b"bytes", object(), pa.array([1])])
def test_render_refuses_values_without_a_faithful_literal(value: object) -> None:
    with pytest.raises(TypeError):
        render("%(v)s", {"v": value})


def test_render_errors() -> None:
    with pytest.raises(ValueError):
        escape_value([])
    with pytest.raises(KeyError, match="missing"):
        render("%(missing)s", {"other": 1})
    with pytest.raises(TypeError):
        render("%(a)s", [("a", 1)])  # type: ignore[arg-type]


# --- identifiers and statement heads ----------------------------------------------


@pytest.mark.parametrize("name", ["journeys", "_x", "t_r1a2b3_7", "A9"])
def test_identifiers_accepted(name: str) -> None:
    assert check_identifier(name) == name


@pytest.mark.parametrize(
    "name", ["", "1abc", "a-b", "a.b", "a b", "x;DROP", "`x`", "a'", "é", "a" * 129, None]
)
def test_identifiers_refused(name: object) -> None:
    with pytest.raises(ValueError):
        check_identifier(name)  # type: ignore[arg-type]


def test_qualified_and_insert_statement() -> None:
    assert qualified("db", "touchpoints") == "db.touchpoints"
    assert insert_statement("db", "t", ("a", "b")) == "INSERT INTO db.t (a, b)"
    with pytest.raises(ValueError):
        qualified("db", "t; DROP DATABASE db")
    with pytest.raises(ValueError):
        column_list(())


@pytest.mark.parametrize(
    ("sql", "inline"),
    [
        ("INSERT INTO db.t VALUES", True),
        ("  insert into db.t (a, b) values (1, 2)", True),
        ("INSERT INTO db.t (a) FORMAT JSONEachRow", True),
        ("INSERT INTO db.t (a) SELECT a FROM db.u", False),
        ("INSERT INTO db.t SELECT 'VALUES' AS a", False),
        ("SELECT 'INSERT INTO x VALUES'", False),
    ],
)
def test_inline_insert_detection(sql: str, inline: bool) -> None:
    assert is_inline_insert(sql) is inline


# --- the sessions_per_day builder -------------------------------------------------


def test_sessions_per_day_sql_is_structure_plus_params() -> None:
    sql, params = sessions_per_day.build(
        "db", date_from=date(2024, 1, 1), date_to=date(2024, 1, 31), channel="we'b"
    )
    assert "FROM db.sessions FINAL" in sql
    assert "deleted = 0" in sql and "PREWHERE" not in sql
    assert "we'b" not in sql  # values only travel as parameters
    assert params == {"date_from": date(2024, 1, 1), "date_to": date(2024, 1, 31),
                      "channel": "we'b"}
    assert "first_channel = 'we\\'b'" in render(sql, params)


def test_sessions_per_day_builder_validates() -> None:
    sql, params = sessions_per_day.build(
        "db", date_from=datetime(2024, 1, 1, 12), date_to=date(2024, 1, 1)
    )
    assert "channel" not in params and "%(channel)s" not in sql
    assert params["date_from"] == date(2024, 1, 1)
    with pytest.raises(InvalidQuery, match="after"):
        sessions_per_day.build("db", date_from=date(2024, 2, 1), date_to=date(2024, 1, 1))
    with pytest.raises(InvalidQuery):
        sessions_per_day.build("db", date_from="2024-01-01", date_to=date(2024, 1, 1))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        sessions_per_day.build("bad-db", date_from=date(2024, 1, 1), date_to=date(2024, 1, 1))


# --- DDL rules --------------------------------------------------------------------

_FORBIDDEN = re.compile(
    r"LowCardinality|DateTime64|\bTTL\b|\bMap\(|\bJSON\b|^\s*(INDEX|PROJECTION)\s"
    r"|\bWITH\b.*\bAS\s*\(",
    re.IGNORECASE | re.DOTALL | re.MULTILINE,
)


def test_migrations_are_ordered_idempotent_and_18_16_safe() -> None:
    versions = [m.version for m in MIGRATIONS]
    assert versions == sorted(set(versions)) and versions[0] == 1
    assert len({m.name for m in MIGRATIONS}) == len(MIGRATIONS)
    for statement in [BOOTSTRAP, *(s for m in MIGRATIONS for s in m.statements)]:
        if isinstance(statement, AddColumn):  # idempotent by a system.columns check
            assert not _FORBIDDEN.search(statement.type), statement
            assert statement.render("db").startswith(f"ALTER TABLE db.{statement.table} ")
            continue
        assert "IF NOT EXISTS" in statement or "IF EXISTS" in statement
        assert not _FORBIDDEN.search(statement), statement
        assert "{db}." in statement


def test_foundation_ddl_matches_table_constants() -> None:
    """The column lists writers use are the columns the DDL creates (CREATE, then each
    migration's ADD COLUMNs), in order."""
    texts = [s for m in MIGRATIONS for s in m.statements if isinstance(s, str)]
    ddl = {m.group(1): m.group(2) for m in re.finditer(
        r"CREATE TABLE IF NOT EXISTS \{db\}\.(\w+) \((.*?)\n\) ENGINE",
        BOOTSTRAP + "".join(texts), re.DOTALL)}
    added: dict[str, list[tuple[str, str]]] = {}
    for m in MIGRATIONS:
        for s in m.statements:
            if isinstance(s, AddColumn):
                added.setdefault(s.table, []).append((s.column, s.type))
    for table in ALL_TABLES:
        lines = [ln.strip().rstrip(",") for ln in ddl[table.name].strip().splitlines()]
        created = [tuple(ln.split(" ", 1)) for ln in lines]
        assert created + added.get(table.name, []) == list(table.schema)


# --- writers' row conversion ------------------------------------------------------


def _tp(event_id: str, **kw: object) -> Touchpoint:
    base: dict[str, object] = dict(type="product_view", channel="web",
                                   occurred_at=1_704_164_645_123, customer_id="c1")
    return Touchpoint(event_id=event_id, **{**base, **kw})  # type: ignore[arg-type]


def test_touchpoint_rows() -> None:
    rows = touchpoint_rows(
        [_tp("e1", properties={"sku": "A'1"}), _tp("e1"),
         _tp("e2", customer_id=None, anonymous_id="a1")],
        ingested_at_ms=1_704_200_000_999,
    )
    assert len(rows) == 2  # in-batch duplicate sent once
    assert dict(zip(TOUCHPOINTS.columns, rows[0], strict=True)) == {
        "event_id": "e1", "type": "product_view", "channel": "web",
        "occurred_at_ms": 1_704_164_645_123, "occurred_at": 1_704_164_645,
        "customer_id": "c1", "anonymous_id": "", "source": "",
        "properties": '{"sku":"A\'1"}', "context": "{}", "ingested_at": 1_704_200_000,
    }
    assert rows[1][5:7] == ("", "a1")


def test_session_rows_recompute_started_at_and_flags() -> None:
    row = ("s1", "c1", 1_704_164_645_999, 1_704_164_745_000, None, 2, ("web", "app"), "web",
           TOMBSTONE_VERSION, True)
    (out,) = session_rows([row])
    assert dict(zip(SESSIONS.columns, out, strict=True)) == {
        "session_id": "s1", "customer_id": "c1", "started_at_ms": 1_704_164_645_999,
        "ended_at_ms": 1_704_164_745_000, "started_at": 1_704_164_645, "events": 2,
        "channels": ["web", "app"], "first_channel": "web", "version": 2**62, "deleted": 1,
    }
    with pytest.raises(ValueError):
        session_rows([row[:-1]])


def test_dead_letter_rows() -> None:
    class Letter:
        rejection = Rejection("missing_field: type is required", b'{"event_id":"x"}', "x")
        stage = "stream"
        received_at_ms = 1_704_164_645_500
        topic = "journeys.touchpoints"
        partition = 2
        offset = 41

    class Bare:
        rejection = Rejection("invalid_json: x", b"\xff{", None)
        stage = "collector"
        received_at_ms = 1_000

    assert dead_letter_rows([Letter(), Bare()]) == [
        (1_704_164_645, "stream", "missing_field: type is required", "x",
         '{"event_id":"x"}', "journeys.touchpoints", 2, 41),
        (1, "collector", "invalid_json: x", "", "\ufffd{", "", -1, -1),
    ]


# --- chdb value conversion --------------------------------------------------------


def test_chdb_rows_convert_like_the_driver() -> None:
    payload = (
        b'["d","t","tn","a","n","f","x","tu"]\n'
        b'["Date","DateTime(\'UTC\')","DateTime","Array(Nullable(Date))","Nullable(UInt64)",'
        b'"Float64","Decimal(18, 2)","Tuple(a UInt8, b String)"]\n'
        b'["2024-01-02","2024-01-02 03:04:05","2024-01-02 03:04:05",["2024-01-03",null],'
        b'null,null,1.25,[1,"z"]]\n'
    )
    names, rows = ct.parse_rows(payload)
    assert names == ["d", "t", "tn", "a", "n", "f", "x", "tu"]
    (row,) = rows
    assert row[0] == date(2024, 1, 2)
    assert row[1] == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert row[2] == datetime(2024, 1, 2, 3, 4, 5) and row[2].tzinfo is None
    assert row[3] == [date(2024, 1, 3), None]
    assert row[4] is None and row[5] != row[5]  # NaN
    assert row[6] == Decimal("1.25") and row[7] == (1, "z")
    assert ct.parse_rows(b'["x"]\n["UInt64"]\n') == (["x"], [])
    assert ct.parse_rows(b"") == ([], [])


def test_arrow_types_follow_clickhouse_types() -> None:
    assert ct.arrow_type("Array(String)") == pa.list_(pa.string())
    assert ct.arrow_type("DateTime('UTC')") == pa.timestamp("s", tz="UTC")
    assert ct.arrow_type("Nullable(UInt64)") == pa.uint64()
    assert ct.arrow_type("SomethingNew") is None
    assert ct.arrow_column([True, 0, 2], pa.uint8()).to_pylist() == [1, 0, 2]
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        ct.arrow_column(["x"], pa.uint64())


# --- small helpers ----------------------------------------------------------------


def test_error_messages_drop_stack_traces() -> None:
    text = "Code: 60.\nDB::Exception: Table db.x doesn't exist.. Stack trace:\n\n0. foo"
    assert clean_message(text) == "Table db.x doesn't exist"
    err = statement_error("ClickHouse server", "SELECT *  FROM db.x\nWHERE a = 1", text)
    assert err.code == 60
    assert str(err) == (
        "ClickHouse server error 60: Table db.x doesn't exist [SQL: SELECT * FROM db.x WHERE a = 1]"
    )


def test_pool_limits_concurrency_and_closes() -> None:
    made: list[int] = []
    disposed: list[int] = []
    pool: Pool[int] = Pool(lambda: made.append(len(made)) or len(made), disposed.append, 2)
    active, peak, lock = [0], [0], threading.Lock()

    def work() -> None:
        with pool.connection():
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            time.sleep(0.01)
            with lock:
                active[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 2 and len(made) == 2
    pool.close()
    assert sorted(disposed) == [1, 2]
    with pytest.raises(RuntimeError), pool.connection():
        pass
