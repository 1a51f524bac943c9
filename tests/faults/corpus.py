"""The poison corpus: hostile and malformed inputs, each with the reason code it must be
dead-lettered with (docs/ingest.md "event rules"), written down by hand, and valid
neighbours that must get through. Used by the fault suite on every entry point:
the raw topic (stream worker), the collector and the importer."""

from __future__ import annotations

from typing import Any

import orjson

BASE: dict[str, Any] = {"type": "page_view", "channel": "web",
                        "occurred_at": "2026-03-01T10:00:00Z", "customer_id": "c-poison"}


def _nest(depth: int) -> dict[str, Any]:
    v: dict[str, Any] = {}
    for _ in range(depth - 1):
        v = {"a": v}
    return {"a": v} if depth else {}


def _event(eid: str, **changes: Any) -> bytes:
    body = {"event_id": eid, **BASE, **changes}
    return orjson.dumps({k: v for k, v in body.items() if v is not _DROP})


class _Drop:
    pass


_DROP = _Drop()


def poison(prefix: str) -> list[tuple[str, bytes, str]]:
    """(label, raw message, expected reason code). Event ids start with `prefix` where an
    event id can be read, so a test can find its rows."""
    p = prefix
    raw: list[tuple[str, bytes, str]] = [
        # not JSON at all, or not UTF-8
        ("truncated", b'{"event_id": "x"', "invalid_json"),
        ("empty", b"", "invalid_json"),
        ("whitespace", b"   \n", "invalid_json"),
        ("bare word", b"nul", "invalid_json"),
        ("trailing comma", b'{"event_id": "x",}', "invalid_json"),
        ("invalid utf-8", b"\xff\xfe\xfd", "invalid_json"),
        ("invalid utf-8 in a string", b'{"event_id": "\xc3\x28"}', "invalid_json"),
        ("byte order mark", b"\xef\xbb\xbf" + _event(f"{p}-bom"), "invalid_json"),
        ("NaN", b"NaN", "invalid_json"),
        ("NaN in a field", b'{"event_id": "x", "occurred_at": NaN}', "invalid_json"),
        ("Infinity in a field", b'{"event_id": "x", "occurred_at": Infinity}', "invalid_json"),
        ("integer over 64 bits", _event(f"{p}-i64", occurred_at="HUGE").replace(
            b'"HUGE"', b"1" + b"0" * 30), "bad_timestamp"),
        ("integer of 5,000 digits", _event(f"{p}-i5k", occurred_at="HUGE").replace(
            b'"HUGE"', b"9" * 5000), "invalid_json"),
        ("single quotes", b"{'event_id': 'x'}", "invalid_json"),
        # JSON, but not an object
        ("array", b"[1, 2]", "not_an_object"),
        ("string", b'"an event"', "not_an_object"),
        ("number", b"123", "not_an_object"),
        ("null", b"null", "not_an_object"),
        ("true", b"true", "not_an_object"),
        # required fields
        ("no event_id", _event(_DROP), "missing_field"),  # type: ignore[arg-type]
        ("null event_id", orjson.dumps({**BASE, "event_id": None}), "missing_field"),
        ("no type", _event(f"{p}-nt", type=_DROP), "missing_field"),
        ("no channel", _event(f"{p}-nc", channel=_DROP), "missing_field"),
        ("no occurred_at", _event(f"{p}-no", occurred_at=_DROP), "missing_field"),
        ("null occurred_at", _event(f"{p}-nuo", occurred_at=None), "missing_field"),
        ("no identity", _event(f"{p}-ni", customer_id=_DROP), "missing_identity"),
        ("null identities", _event(f"{p}-nn", customer_id=None, anonymous_id=None),
         "missing_identity"),
        ("empty event_id", _event(""), "empty_field"),
        ("blank type", _event(f"{p}-bt", type="   "), "empty_field"),
        # wrong types, every field
        ("event_id number", _event(123), "wrong_type"),  # type: ignore[arg-type]
        ("event_id object", _event({"a": 1}), "wrong_type"),  # type: ignore[arg-type]
        ("type list", _event(f"{p}-tl", type=[]), "wrong_type"),
        ("type number", _event(f"{p}-tn", type=5), "wrong_type"),
        ("channel object", _event(f"{p}-co", channel={}), "wrong_type"),
        ("channel bool", _event(f"{p}-cb", channel=True), "wrong_type"),
        ("customer_id number", _event(f"{p}-cn", customer_id=5), "wrong_type"),
        ("anonymous_id list", _event(f"{p}-al", anonymous_id=["a"]), "wrong_type"),
        ("source number", _event(f"{p}-sn", source=7), "wrong_type"),
        ("properties string", _event(f"{p}-ps", properties="x"), "wrong_type"),
        ("properties list", _event(f"{p}-pl", properties=[1]), "wrong_type"),
        ("context list", _event(f"{p}-cl", context=[1]), "wrong_type"),
        ("context number", _event(f"{p}-cx", context=3), "wrong_type"),
        # too long / too large / too deep
        ("event_id 129 chars", _event("e" * 129), "too_long"),
        ("type 65 chars", _event(f"{p}-t65", type="t" * 65), "too_long"),
        ("type 10k chars", _event(f"{p}-t10k", type="t" * 10_000), "too_long"),
        ("channel 33 chars", _event(f"{p}-c33", channel="c" * 33), "too_long"),
        ("customer_id 129 chars", _event(f"{p}-cid", customer_id="c" * 129), "too_long"),
        ("anonymous_id 129 chars", _event(f"{p}-aid", anonymous_id="a" * 129), "too_long"),
        ("source 65 chars", _event(f"{p}-s65", source="s" * 65), "too_long"),
        ("properties 40 KiB", _event(f"{p}-p40", properties={"x": "y" * 40_000}),
         "too_large"),
        ("context 9 KiB", _event(f"{p}-c9", context={"x": "y" * 9_000}), "too_large"),
        ("context 1.5 MiB", _event(f"{p}-c15", context={"x": "y" * 1_500_000}), "too_large"),
        ("properties 17 levels", _event(f"{p}-p17", properties=_nest(17)), "too_deep"),
        ("context 300 levels", _event(f"{p}-c300", context={"deep": "DEEP"}).replace(
            b'"DEEP"', b'{"a":' * 299 + b"{}" + b"}" * 299), "too_deep"),
        ("properties list 20 levels",
         _event(f"{p}-pl20", properties={"a": orjson.loads(b"[" * 20 + b"]" * 20)}),
         "too_deep"),
        # channel
        ("unknown channel", _event(f"{p}-fax", channel="fax"), "unknown_channel"),
        # timestamps
        ("superscript two", _event(f"{p}-sup", occurred_at="²"), "bad_timestamp"),
        ("double minus", _event(f"{p}-dm", occurred_at="--1772323200000"), "bad_timestamp"),
        ("5,000 digits", _event(f"{p}-5k", occurred_at="9" * 5000), "bad_timestamp"),
        ("Arabic-Indic digits", _event(f"{p}-ar", occurred_at="١٧٧٢٣٢٣٢٠٠٠٠٠"),
         "bad_timestamp"),
        ("fullwidth digits", _event(f"{p}-fw", occurred_at="１７７２３２３２００００００"),
         "bad_timestamp"),
        ("month 13", _event(f"{p}-m13", occurred_at="2026-13-45T00:00:00Z"), "bad_timestamp"),
        ("no zone", _event(f"{p}-nz", occurred_at="2026-03-01T10:00:00"), "bad_timestamp"),
        ("negative epoch", _event(f"{p}-neg", occurred_at=-1), "bad_timestamp"),
        ("epoch seconds", _event(f"{p}-sec", occurred_at=1_772_323_200), "bad_timestamp"),
        ("float 1e300", _event(f"{p}-big", occurred_at=1e300), "bad_timestamp"),
        ("year 1899", _event(f"{p}-1899", occurred_at="1899-01-01T00:00:00Z"),
         "bad_timestamp"),
        ("year 2101", _event(f"{p}-2101", occurred_at="2101-01-01T00:00:00Z"),
         "bad_timestamp"),
        ("empty timestamp", _event(f"{p}-et", occurred_at=""), "bad_timestamp"),
        ("word timestamp", _event(f"{p}-now", occurred_at="now"), "bad_timestamp"),
        ("bool timestamp", _event(f"{p}-bool", occurred_at=True), "bad_timestamp"),
        ("object timestamp", _event(f"{p}-obj", occurred_at={"ms": 1}), "bad_timestamp"),
    ]
    return raw


def valid(prefix: str, n: int, start_ms: int) -> list[bytes]:
    """Valid neighbours: n events of one customer a minute apart."""
    return [orjson.dumps({"event_id": f"{prefix}-ok-{i}", "type": "product_view",
                          "channel": "web", "occurred_at": start_ms + i * 60_000,
                          "customer_id": f"{prefix}-cust"}) for i in range(n)]
