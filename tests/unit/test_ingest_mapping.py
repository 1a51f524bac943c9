"""Column mapping: exported rows → DESIGN.md wire dicts, or a reason."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from ingest.mapping import ColumnMapping, RowMapper, row_bytes
from journeys.errors import ConfigError
from journeys.events import EventValidator, Touchpoint

V = EventValidator()
ROW = {"event_id": "e1", "type": "purchase", "channel": "store",
       "occurred_at": "2026-03-01T10:00:00Z", "customer_id": "c1"}


def mapped(row: dict, **mapping: object) -> dict | str:
    return RowMapper(ColumnMapping(**mapping)).map(row)  # type: ignore[arg-type]


def test_wire_format_row_passes_through() -> None:
    out = mapped(ROW)
    assert isinstance(out, dict)
    tp = V.validate(out)
    assert isinstance(tp, Touchpoint)
    assert (tp.event_id, tp.type, tp.channel, tp.customer_id) == ("e1", "purchase", "store", "c1")
    assert tp.occurred_at == 1772359200000


def test_renamed_columns_and_constants() -> None:
    row = {"txn": "T-9", "loyalty_card": "L-1", "ts": "2026-03-01 11:00:00",
           "store_id": "S-4", "amount": "19.90"}
    out = mapped(row, event_id="txn", customer_id="loyalty_card", occurred_at="ts",
                 type=None, channel=None, constant_type="purchase", constant_channel="store",
                 constant_source="pos-export", timezone="Europe/Berlin")
    assert isinstance(out, dict)
    assert out["event_id"] == "T-9" and out["customer_id"] == "L-1"
    assert out["type"] == "purchase" and out["channel"] == "store"
    assert out["source"] == "pos-export"
    assert out["occurred_at"] == "2026-03-01T10:00:00.000Z"  # Berlin is UTC+1 in March
    assert out["properties"] == {"store_id": "S-4", "amount": "19.90"}


def test_naive_times_use_the_zone_across_dst() -> None:
    summer = mapped({**ROW, "occurred_at": "2026-07-01T10:00:00"}, timezone="Europe/Berlin")
    assert isinstance(summer, dict) and summer["occurred_at"] == "2026-07-01T08:00:00.000Z"
    zoned = mapped({**ROW, "occurred_at": "2026-07-01T10:00:00+02:00"}, timezone="Asia/Tokyo")
    assert isinstance(zoned, dict) and zoned["occurred_at"] == "2026-07-01T08:00:00.000Z"


def test_time_format_and_units() -> None:
    out = mapped({**ROW, "occurred_at": "01/03/2026 10:30"}, time_format="%d/%m/%Y %H:%M")
    assert isinstance(out, dict) and out["occurred_at"] == "2026-03-01T10:30:00.000Z"
    bad = mapped({**ROW, "occurred_at": "2026-03-01"}, time_format="%d/%m/%Y %H:%M")
    assert isinstance(bad, str) and bad.startswith("bad_timestamp:")
    secs = mapped({**ROW, "occurred_at": "1772359200"}, time_unit="s")
    assert isinstance(secs, dict) and secs["occurred_at"] == 1772359200000
    secs_num = mapped({**ROW, "occurred_at": 1772359200.5}, time_unit="s")
    assert isinstance(secs_num, dict) and secs_num["occurred_at"] == 1772359200500
    ms = mapped({**ROW, "occurred_at": 1772359200000})
    assert isinstance(ms, dict) and ms["occurred_at"] == 1772359200000


def test_datetime_values_from_parquet() -> None:
    aware = mapped({**ROW, "occurred_at": datetime(2026, 3, 1, 10, tzinfo=UTC)})
    naive = mapped({**ROW, "occurred_at": datetime(2026, 3, 1, 11)}, timezone="Europe/Paris")
    day = mapped({**ROW, "occurred_at": date(2026, 3, 1)})
    assert isinstance(aware, dict) and aware["occurred_at"] == "2026-03-01T10:00:00.000Z"
    assert isinstance(naive, dict) and naive["occurred_at"] == "2026-03-01T10:00:00.000Z"
    assert isinstance(day, dict) and day["occurred_at"] == "2026-03-01T00:00:00.000Z"


def test_properties_and_context_columns() -> None:
    row = {**ROW, "properties": '{"sku": "A"}', "context.country": "DE",
           "properties.price": Decimal("9.5"), "note": "gift", "empty": ""}
    out = mapped(row)
    assert isinstance(out, dict)
    assert out["properties"] == {"sku": "A", "price": 9.5, "note": "gift"}
    assert out["context"] == {"country": "DE"}
    ignored = mapped(row, extra_columns="ignore")
    assert isinstance(ignored, dict) and ignored["properties"] == {"sku": "A", "price": 9.5}
    bad = mapped({**ROW, "properties": "{not json"})
    assert bad == "wrong_type: properties column holds invalid JSON"
    not_obj = mapped({**ROW, "context": "[1, 2]"})
    assert not_obj == "wrong_type: context must be a JSON object"


def test_missing_event_id_column_derives_a_stable_id() -> None:
    row = {k: v for k, v in ROW.items() if k != "event_id"}
    derive = RowMapper(ColumnMapping(), row.keys())
    first, again = derive.map(row), derive.map(dict(reversed(list(row.items()))))
    assert isinstance(first, dict) and isinstance(again, dict)
    assert first["event_id"] == again["event_id"]  # column order does not matter
    other = derive.map({**row, "customer_id": "c2"})
    assert isinstance(other, dict) and other["event_id"] != first["event_id"]
    assert mapped(row, event_id=None) == first  # --event-id-column "": always derive


def test_blank_id_in_an_id_column_is_an_error() -> None:
    strict = RowMapper(ColumnMapping(), ROW.keys())
    out = strict.map({**ROW, "event_id": ""})
    assert isinstance(out, dict) and out["event_id"] is None  # validator: missing_field
    assert mapped({**ROW, "event_id": None})["event_id"] is None  # type: ignore[index]


def test_blank_and_float_ids() -> None:
    out = mapped({**ROW, "customer_id": 1234.0, "anonymous_id": float("nan")})
    assert isinstance(out, dict)
    assert out["customer_id"] == "1234" and out["anonymous_id"] is None
    empty = mapped({**ROW, "customer_id": "", "anonymous_id": ""})
    assert isinstance(empty, dict)
    assert "missing_identity" in V.validate(empty).reason  # type: ignore[union-attr]


def test_missing_columns_fail_before_reading() -> None:
    with pytest.raises(ConfigError, match="time column 'when'"):
        RowMapper(ColumnMapping(occurred_at="when"), ROW.keys())
    with pytest.raises(ConfigError, match="customer/anonymous id"):
        RowMapper(ColumnMapping(customer_id="cid", anonymous_id=None), ROW.keys())
    RowMapper(ColumnMapping(channel="nope", constant_channel="store"), ROW.keys())


@pytest.mark.parametrize("kwargs", [{"timezone": "Mars/Olympus"},
                                    {"type": None}, {"channel": None}])
def test_bad_mapping_options(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        ColumnMapping(**kwargs)


def test_row_bytes_is_json_without_nan() -> None:
    assert row_bytes({"a": 1, "b": float("nan"), "c": Decimal("1.5")}) == b'{"a":1,"c":1.5}'
