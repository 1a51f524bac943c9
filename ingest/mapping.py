"""Map exported rows (store, call-centre, email-platform files) to DESIGN.md touchpoints.

Exports name things their own way: `ColumnMapping` says which column holds the customer
id, the event type, the time and the channel (or a constant for the whole file), and
how to read naive times. Unmapped columns become `properties`; `context.x` columns go
to `context`. A row that cannot be mapped becomes a reason, never an exception, so a
bad row is reported and dead-lettered while the rest of the file goes on.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from journeys.errors import ConfigError
from journeys.events import KNOWN_FIELDS
from journeys.timeutil import datetime_to_ms, ms_to_iso

# Event ids derived from row content are stable, so re-importing a file is idempotent.
ROW_ID_NAMESPACE = uuid.UUID("6f2b8f0e-5d1c-4b7e-9a57-3c1e0f4d2a11")


@dataclass(frozen=True, slots=True)
class ColumnMapping:
    """Which column feeds which touchpoint field; None = the file has no such column."""

    event_id: str | None = "event_id"  # None, or absent from the file: ids from row content
    type: str | None = "type"
    channel: str | None = "channel"
    occurred_at: str = "occurred_at"
    customer_id: str | None = "customer_id"
    anonymous_id: str | None = "anonymous_id"
    source: str | None = "source"
    properties: str | None = "properties"
    context: str | None = "context"
    # Constants for a whole file (e.g. every row of a POS export is channel "store").
    constant_type: str | None = None
    constant_channel: str | None = None
    constant_source: str | None = None
    timezone: str = "UTC"  # for times without a zone
    time_format: str | None = None  # strptime format, for non-ISO exports
    time_unit: Literal["ms", "s"] = "ms"  # for numeric times
    extra_columns: Literal["properties", "ignore"] = "properties"

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"unknown time zone {self.timezone!r} (use e.g. "
                              "Europe/Berlin or UTC)") from None
        if self.type is None and self.constant_type is None:
            raise ConfigError("no event type: give a type column or a constant type")
        if self.channel is None and self.constant_channel is None:
            raise ConfigError("no channel: give a channel column or a constant channel")


_EPOCH = re.compile(r"-?[0-9]{1,19}(\.[0-9]{1,9})?")  # epoch numbers in text columns


_NUMBERS = (int, float, Decimal)  # a tuple: `int | float | Decimal` is built per call


class _RowError(Exception):
    pass


def _blank(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def _jsonable(value: Any) -> Any:
    """Parquet/pandas values orjson cannot take as they are."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, time):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    return value


class RowMapper:
    """Compiled once per file from its columns; `map(row)` returns a wire dict."""

    def __init__(self, mapping: ColumnMapping, columns: Iterable[str] | None = None) -> None:
        self.m = mapping
        self.zone = ZoneInfo(mapping.timezone)
        self.columns = list(columns) if columns is not None else None
        if self.columns is not None:
            self._check_columns(self.columns)
        # No event id column in the file: derive ids. A file that has the column (or
        # JSONL, whose lines are events) must fill it: a blank id is an error there.
        self.derive_ids = mapping.event_id is None or (
            self.columns is not None and mapping.event_id not in self.columns)
        mapped = {mapping.event_id, mapping.type, mapping.channel, mapping.occurred_at,
                  mapping.customer_id, mapping.anonymous_id, mapping.source,
                  mapping.properties, mapping.context} - {None}
        self._mapped = frozenset(mapped)

    def _check_columns(self, columns: list[str]) -> None:
        have = set(columns)
        required = {"time": self.m.occurred_at}
        if self.m.constant_type is None and self.m.type:
            required["type"] = self.m.type
        if self.m.constant_channel is None and self.m.channel:
            required["channel"] = self.m.channel
        missing = {f: c for f, c in required.items() if c not in have}
        ids = [c for c in (self.m.customer_id, self.m.anonymous_id) if c]
        if ids and not have.intersection(ids):
            missing["customer/anonymous id"] = " or ".join(ids)
        if missing:
            detail = ", ".join(f"{f} column {c!r}" for f, c in missing.items())
            raise ConfigError(f"the file has no {detail}; its columns are {sorted(have)}. "
                              "Map them with --type-column/--time-column/... or constants")

    # -- per row --------------------------------------------------------------------

    def map(self, row: Mapping[str, Any]) -> dict[str, Any] | str:
        """The DESIGN.md wire dict for one row, or the reason it cannot be mapped."""
        try:
            return self._map(row)
        except _RowError as exc:
            return str(exc)
        except Exception as exc:  # the poison rule (docs/ingest.md): a row never raises
            return f"unprocessable: {type(exc).__name__}"

    def _map(self, row: Mapping[str, Any]) -> dict[str, Any]:
        m = self.m
        out: dict[str, Any] = {
            "type": m.constant_type if m.constant_type is not None else self._text(row, m.type),
            "channel": (m.constant_channel if m.constant_channel is not None
                        else self._text(row, m.channel)),
            "occurred_at": self._time(row.get(m.occurred_at)),
            "customer_id": self._text(row, m.customer_id),
            "anonymous_id": self._text(row, m.anonymous_id),
        }
        source = m.constant_source if m.constant_source is not None else self._text(row, m.source)
        if source is not None:
            out["source"] = source
        props = self._object(row, m.properties, "properties")
        context = self._object(row, m.context, "context")
        for col, value in row.items():
            if col in self._mapped or _blank(value):
                continue
            if col.startswith("context."):
                context[col[8:]] = _jsonable(value)
            elif col.startswith("properties."):
                props[col[11:]] = _jsonable(value)
            elif m.extra_columns == "properties" and col not in KNOWN_FIELDS:
                props[col] = _jsonable(value)
        out["properties"] = props
        out["context"] = context
        event_id = self._text(row, m.event_id)
        if event_id is None and self.derive_ids:
            key = orjson.dumps({k: _jsonable(v) for k, v in row.items()},
                               option=orjson.OPT_SORT_KEYS, default=str)
            event_id = str(uuid.uuid5(ROW_ID_NAMESPACE, key.decode()))
        out["event_id"] = event_id
        return out

    @staticmethod
    def _text(row: Mapping[str, Any], column: str | None) -> Any:
        if column is None:
            return None
        value = row.get(column)
        if type(value) is str:  # the common case first: 5 calls per row
            return value.strip() if value else None
        if _blank(value):
            return None
        if isinstance(value, float) and value.is_integer():
            return str(int(value))  # ids that pandas/parquet stored as floats
        if isinstance(value, _NUMBERS):
            return str(value)
        return value.strip() if isinstance(value, str) else value

    @staticmethod
    def _object(row: Mapping[str, Any], column: str | None, name: str) -> dict[str, Any]:
        if column is None:
            return {}
        value = row.get(column)
        if _blank(value):
            return {}
        if isinstance(value, str):
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError:
                raise _RowError(f"wrong_type: {name} column holds invalid JSON") from None
        if isinstance(value, list) and all(isinstance(p, tuple) for p in value):
            value = dict(value)  # a parquet map column
        if not isinstance(value, Mapping):
            raise _RowError(f"wrong_type: {name} must be a JSON object")
        return {str(k): _jsonable(v) for k, v in value.items()}

    def _time(self, value: Any) -> Any:
        """ISO with zone / epoch numbers pass through; naive times get the file's zone."""
        if _blank(value):
            return None  # the validator says missing_field
        if isinstance(value, datetime):
            return self._aware_iso(value)
        if isinstance(value, date):
            return self._aware_iso(datetime(value.year, value.month, value.day))
        if isinstance(value, bool):
            return value
        if isinstance(value, _NUMBERS):
            if not math.isfinite(value):
                return str(value)  # the validator says bad_timestamp
            return int(float(value) * 1000) if self.m.time_unit == "s" else int(value)
        text = str(value).strip()
        if self.m.time_format:
            try:
                return self._aware_iso(datetime.strptime(text, self.m.time_format))
            except ValueError:
                raise _RowError(f"bad_timestamp: {text!r} does not match "
                                f"{self.m.time_format!r}") from None
        if _EPOCH.fullmatch(text):  # ASCII digits only: str.isdigit takes "²", "٣"
            number = float(text)
            return int(number * 1000) if self.m.time_unit == "s" else int(number)
        try:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            return text  # the validator explains what is wrong with it
        return self._aware_iso(dt)

    def _aware_iso(self, dt: datetime) -> str:
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=self.zone)
        return ms_to_iso(datetime_to_ms(dt.astimezone(UTC)))


def row_bytes(row: Mapping[str, Any]) -> bytes:
    """The row as JSON, kept as the 'original' of a dead letter when no line bytes exist."""
    return orjson.dumps({k: _jsonable(v) for k, v in row.items()
                         if not (isinstance(v, float) and math.isnan(v))}, default=str)
