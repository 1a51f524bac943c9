"""The DESIGN.md event rules stated again as a pydantic model, the reference the hand-
written fast path (journeys.events.EventValidator) is checked against.

Kept apart from the product on purpose: the product validates without building a
pydantic model per event (docs/performance.md); this model is the slow, declarative
statement of the same rules. Fields are declared in the order the rules are checked, so
the first error pydantic reports is the reason the fast path gives.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo
from pydantic import field_validator as check
from pydantic_core import PydanticCustomError

from journeys.events import (
    DEFAULT_CHANNELS,
    MAX_CHANNEL,
    MAX_CONTEXT_BYTES,
    MAX_EVENT_ID,
    MAX_ID,
    MAX_NESTING,
    MAX_PROPERTIES_BYTES,
    MAX_SOURCE,
    MAX_TIME_MS,
    MAX_TYPE,
    MIN_TIME_MS,
)


def _no(code: str, field: str) -> PydanticCustomError:
    return PydanticCustomError(code, "{code}: {field}", {"code": code, "field": field})


def _text(value: Any, field: str, limit: int, required: bool) -> str | None:
    if value is None:
        if required:
            raise _no("missing_field", field)
        return None
    if not isinstance(value, str):
        raise _no("wrong_type", field)
    if required and value.strip() == "":
        raise _no("empty_field", field)
    if len(value) > limit:
        raise _no("too_long", field)
    return value


def _nesting(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_nesting(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_nesting(v) for v in value), default=0)
    return 0


def _object(value: Any, field: str, limit: int) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _no("wrong_type", field)
    if _nesting(value) > MAX_NESTING:
        raise _no("too_deep", field)
    if len(orjson.dumps(value)) > limit:
        raise _no("too_large", field)
    return value


def _millis(value: Any) -> int:
    if value is None:
        raise _no("missing_field", "occurred_at")
    if isinstance(value, bool):
        raise _no("bad_timestamp", "occurred_at")
    if isinstance(value, float) and not math.isfinite(value):
        raise _no("bad_timestamp", "occurred_at")
    if isinstance(value, int | float):
        ms = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-?[0-9]{1,19}", text):
            ms = int(text)
        else:
            try:
                if not text.isascii() or len(text) > 64:
                    raise ValueError(text)
                dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            except ValueError:
                raise _no("bad_timestamp", "occurred_at") from None
            if dt.utcoffset() is None:
                raise _no("bad_timestamp", "occurred_at")
            ms = round(dt.timestamp() * 1000)
    else:
        raise _no("bad_timestamp", "occurred_at")
    if not MIN_TIME_MS <= ms < MAX_TIME_MS:
        raise _no("bad_timestamp", "occurred_at")
    return ms


class ReferenceTouchpoint(BaseModel):
    """Every field `Any` before its rule, so the rule (not pydantic's coercion) decides."""

    model_config = ConfigDict(extra="ignore")

    event_id: Any = Field(None, validate_default=True)
    type: Any = Field(None, validate_default=True)
    channel: Any = Field(None, validate_default=True)
    occurred_at: Any = Field(None, validate_default=True)
    customer_id: Any = Field(None, validate_default=True)
    anonymous_id: Any = Field(None, validate_default=True)
    source: Any = Field(None, validate_default=True)
    properties: Any = Field(None, validate_default=True)
    context: Any = Field(None, validate_default=True)

    @check("event_id")
    @classmethod
    def _event_id(cls, v: Any) -> Any:
        return _text(v, "event_id", MAX_EVENT_ID, True)

    @check("type")
    @classmethod
    def _type(cls, v: Any) -> Any:
        return _text(v, "type", MAX_TYPE, True)

    @check("channel")
    @classmethod
    def _channel(cls, v: Any) -> Any:
        v = _text(v, "channel", MAX_CHANNEL, True)
        if v not in DEFAULT_CHANNELS:
            raise _no("unknown_channel", "channel")
        return v

    @check("occurred_at")
    @classmethod
    def _occurred_at(cls, v: Any) -> Any:
        return _millis(v)

    @check("customer_id")
    @classmethod
    def _customer_id(cls, v: Any) -> Any:
        return _text(v, "customer_id", MAX_ID, False) or None

    @check("anonymous_id")
    @classmethod
    def _anonymous_id(cls, v: Any, info: ValidationInfo) -> Any:
        v = _text(v, "anonymous_id", MAX_ID, False) or None
        if v is None and info.data.get("customer_id") is None and len(info.data) == 5:
            raise _no("missing_identity", "customer_id")  # only when all before passed
        return v

    @check("source")
    @classmethod
    def _source(cls, v: Any) -> Any:
        return _text(v, "source", MAX_SOURCE, False)

    @check("properties")
    @classmethod
    def _properties(cls, v: Any) -> Any:
        return _object(v, "properties", MAX_PROPERTIES_BYTES)

    @check("context")
    @classmethod
    def _context(cls, v: Any) -> Any:
        return _object(v, "context", MAX_CONTEXT_BYTES)


def reference_verdict(raw: bytes) -> tuple[str, str] | ReferenceTouchpoint:
    """The model, or (reason code, field) of the first rule the input breaks."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ("invalid_json", "")
    if not isinstance(obj, Mapping):
        return ("not_an_object", "")
    try:
        return ReferenceTouchpoint.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        ctx = first.get("ctx") or {}
        return (str(first["type"]), str(ctx.get("field", "")))
