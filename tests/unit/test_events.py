"""Every rejection reason of the DESIGN.md event rules, and the accepted shapes."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from journeys.events import EventValidator, Rejection, Touchpoint, event_value

GOOD = {
    "event_id": "e-1",
    "type": "product_view",
    "channel": "web",
    "occurred_at": "2026-03-01T10:00:00+01:00",
    "anonymous_id": "anon-1",
}
V = EventValidator()


def parse(**changes: object) -> Touchpoint | Rejection:
    body = {**GOOD, **changes}
    body = {k: v for k, v in body.items() if v is not _DROP}
    return V.parse(orjson.dumps(body))


_DROP = object()


def test_good_event_parses_with_epoch_ms() -> None:
    ev = parse()
    assert isinstance(ev, Touchpoint)
    assert ev.occurred_at == 1772355600000  # 09:00Z
    assert ev.identity_key == "anon-1"


def test_epoch_millis_and_numeric_string_accepted() -> None:
    assert parse(occurred_at=1772355600000).occurred_at == 1772355600000  # type: ignore[union-attr]
    assert parse(occurred_at="1772355600000").occurred_at == 1772355600000  # type: ignore[union-attr]


def test_customer_id_preferred_as_identity() -> None:
    ev = parse(customer_id="c-9")
    assert isinstance(ev, Touchpoint) and ev.identity_key == "c-9"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"event_id": _DROP}, "missing_field: event_id"),
        ({"type": _DROP}, "missing_field: type"),
        ({"channel": _DROP}, "missing_field: channel"),
        ({"occurred_at": _DROP}, "missing_field: occurred_at"),
        ({"event_id": ""}, "empty_field: event_id"),
        ({"type": "   "}, "empty_field: type"),
        ({"event_id": 12}, "wrong_type: event_id"),
        ({"customer_id": 5}, "wrong_type: customer_id"),
        ({"event_id": "x" * 129}, "too_long: event_id"),
        ({"type": "t" * 65}, "too_long: type"),
        ({"channel": "c" * 33}, "too_long: channel"),
        ({"anonymous_id": "a" * 129}, "too_long: anonymous_id"),
        ({"source": "s" * 65}, "too_long: source"),
        ({"channel": "carrier_pigeon"}, "unknown_channel"),
        ({"occurred_at": "yesterday"}, "bad_timestamp"),
        ({"occurred_at": "2026-03-01T10:00:00"}, "bad_timestamp: occurred_at '2026-03-01T10:00:00' has no time zone"),
        ({"occurred_at": 1772355600}, "bad_timestamp"),  # seconds, not ms
        ({"occurred_at": True}, "bad_timestamp"),
        ({"occurred_at": [1]}, "bad_timestamp"),
        # each of these raised ValueError and stopped the collector or the worker
        ({"occurred_at": "²"}, "bad_timestamp"),
        ({"occurred_at": "--1772323200000"}, "bad_timestamp"),
        ({"occurred_at": "9" * 4500}, "bad_timestamp"),
        ({"occurred_at": "١٧٧٢٣٥٥٦٠٠٠٠٠"}, "bad_timestamp"),  # Arabic-Indic digits
        ({"anonymous_id": _DROP}, "missing_identity"),
        ({"anonymous_id": None, "customer_id": None}, "missing_identity"),
        ({"properties": [1, 2]}, "wrong_type: properties"),
        ({"properties": {"blob": "x" * 40_000}}, "too_large: properties"),
        ({"context": "web"}, "wrong_type: context"),
        ({"context": {"blob": "x" * 9000}}, "too_large: context"),
    ],
)
def test_rejection_reasons(changes: dict[str, object], reason: str) -> None:
    result = parse(**changes)
    assert isinstance(result, Rejection), result
    assert result.reason.startswith(reason), result.reason
    assert result.raw  # original bytes kept for the dead letter


def test_invalid_json_and_non_object() -> None:
    bad = V.parse(b"{not json")
    assert isinstance(bad, Rejection) and bad.reason.startswith("invalid_json")
    assert bad.raw == b"{not json"
    arr = V.parse(b"[1,2]")
    assert isinstance(arr, Rejection) and arr.reason.startswith("not_an_object")


def test_dead_letter_keeps_reason_and_original() -> None:
    bad = V.parse(b'{"event_id": "e-2"}')
    assert isinstance(bad, Rejection)
    dl = orjson.loads(bad.to_dead_letter(stage="validate", received_at_ms=1772355600000))
    assert dl["reason"].startswith("missing_field: type")
    assert dl["original"] == '{"event_id": "e-2"}'
    assert dl["event_id"] == "e-2"
    assert dl["stage"] == "validate"


def test_channel_list_is_configurable() -> None:
    custom = EventValidator(channels=["kiosk"])
    assert isinstance(custom.validate({**GOOD, "channel": "kiosk"}), Touchpoint)
    assert isinstance(custom.validate(GOOD), Rejection)
    assert isinstance(EventValidator(channels=None).validate({**GOOD, "channel": "x"}), Touchpoint)


def test_wire_round_trip() -> None:
    ev = parse(properties={"sku": "A1"}, context={"country": "DE"}, customer_id="c")
    assert isinstance(ev, Touchpoint)
    again = V.parse(ev.to_json())
    assert again == ev


@given(st.dictionaries(st.text(max_size=8), st.none() | st.integers() | st.text(max_size=8)))
def test_validator_never_raises(obj: dict[str, object]) -> None:
    assert isinstance(V.validate(obj), Touchpoint | Rejection)
    assert isinstance(V.validate({**GOOD, **obj}), Touchpoint | Rejection)


@given(st.text(max_size=30) | st.floats() | st.integers())
def test_any_timestamp_is_parsed_or_rejected_with_a_reason(value: object) -> None:
    """Regression (issue "Nothing halts it"): a timestamp never raises."""
    result = V.validate({**GOOD, "occurred_at": value})
    assert isinstance(result, Touchpoint | Rejection)


def _nested(levels: int) -> dict[str, object]:
    value: dict[str, object] = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize("field", ["context", "properties"])
def test_deep_nesting_is_rejected_not_a_crash(field: str) -> None:
    """Regression (issue "Nothing halts it" #2): a context nested 300 levels passed
    validation and then stopped the collector and the worker."""
    raw = json.dumps({**GOOD, field: _nested(300)}).encode()  # orjson would refuse
    result = V.parse(raw)
    assert isinstance(result, Rejection) and result.reason.startswith("too_deep"), result
    assert isinstance(parse(**{field: _nested(16)}), Touchpoint)
    assert isinstance(parse(**{field: {"list": [[[[1]]]]}}), Touchpoint)


def test_a_rule_that_raises_is_a_rejection_not_an_exception(monkeypatch: Any) -> None:
    """The poison rule: whatever a rule misses ends as an `unprocessable` rejection
    naming the exception class, with the original bytes, never as an exception."""
    import journeys.events as events

    def broken(obj: Any, channels: Any) -> Any:
        raise RecursionError("a rule nobody foresaw")

    monkeypatch.setattr(events, "_check", broken)
    raw = b'{"event_id":"e1","type":"page_view"}'
    got = EventValidator().parse(raw)
    assert isinstance(got, Rejection)
    assert (got.code, got.reason, got.raw, got.event_id) == (
        "unprocessable", "unprocessable: RecursionError", raw, "e1")


@pytest.mark.parametrize(("props", "want"), [
    ({}, (None, None)),
    ({"other": 1}, (None, None)),
    ({"value": None}, (None, None)),
    ({"value": 12}, (12.0, None)),
    ({"value": -3.5}, (-3.5, None)),
    ({"value": 1e15}, (1e15, None)),
    ({"value": "12.50"}, (None, "not_a_number")),
    ({"value": True}, (None, "not_a_number")),
    ({"value": {"amount": 3}}, (None, "not_a_number")),
    ({"value": float("nan")}, (None, "not_finite")),
    ({"value": float("inf")}, (None, "not_finite")),
    ({"value": 10**16}, (None, "out_of_range")),
    ({"value": -2e15}, (None, "out_of_range")),
])
def test_event_value_rule(props, want) -> None:
    """docs/semantics.md "Journey value": a finite number within +-1e15, else ignored
    with a reason (the event itself stays valid)."""
    assert event_value(props) == want


def test_unusable_value_keeps_the_event() -> None:
    ok = EventValidator().validate({"event_id": "e", "type": "t", "channel": "web",
                                    "occurred_at": "2026-01-01T00:00:00Z",
                                    "customer_id": "c", "properties": {"value": "lots"}})
    assert isinstance(ok, Touchpoint) and ok.properties == {"value": "lots"}
