"""Identity stitching: links, first link wins, placeholder ids never link."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.engine.identity import JUNK_IDS, IdentityMap, MergeRecord, is_junk_id, link_of

BASE = 1_700_000_000_000


@dataclass(frozen=True)
class Ev:
    event_id: str
    type: str
    channel: str
    occurred_at: int
    customer_id: str | None
    anonymous_id: str | None


def ev(i: int, cust: str | None, anon: str | None, typ: str = "page") -> Ev:
    return Ev(f"e{i}", typ, "web", BASE + i, cust, anon)


@pytest.mark.parametrize("junk", [None, "", " ", "NULL", "Undefined", "none", "Guest",
                                  "ANONYMOUS", "0", "-", " null "])
def test_junk_ids_never_link(junk: str | None) -> None:
    assert is_junk_id(junk)
    ids = IdentityMap()
    assert ids.observe(ev(1, junk, "dev1", "identify")) is None
    assert ids.observe(ev(2, "cust1", junk, "identify")) is None
    assert ids.aliases == {}
    assert ids.resolve(ev(3, None, "dev1")) == "dev1"


def test_real_ids_are_not_junk() -> None:
    assert not any(is_junk_id(x) for x in ("c1", "00", "null1", "guest-42", "x"))


def test_identify_links_and_records_the_merge() -> None:
    ids = IdentityMap()
    assert ids.resolve(ev(1, None, "dev1")) == "dev1"
    rec = ids.observe(ev(2, "cust1", "dev1", "identify"))
    assert rec == MergeRecord("dev1", "cust1", BASE + 2, "e2", "identify", "web")
    assert rec.to_dict()["customer_id"] == "cust1"
    assert ids.resolve(ev(3, None, "dev1")) == "cust1"
    assert ids.customer_of("dev1") == "cust1"


def test_any_event_with_both_ids_links_and_first_link_wins() -> None:
    ids = IdentityMap()
    assert ids.observe(ev(1, "cust1", "dev1", "add_to_cart")) is not None
    assert ids.observe(ev(2, "cust2", "dev1", "identify")) is None
    assert ids.observe(ev(3, "cust1", "dev1")) is None
    assert ids.resolve(ev(4, None, "dev1")) == "cust1"
    # an event naming its customer is attributed to that customer regardless
    assert ids.resolve(ev(5, "cust2", "dev1")) == "cust2"


def test_only_junk_ids_has_no_key() -> None:
    assert IdentityMap().resolve(ev(1, "guest", "null")) is None
    assert link_of(ev(1, "guest", "dev1")) is None


def test_round_trip_and_external_mapping() -> None:
    table: dict[str, str] = {}
    ids = IdentityMap(table)
    ids.observe(ev(1, "cust1", "dev1"))
    assert table == {"dev1": "cust1"}
    again = IdentityMap.from_bytes(ids.to_bytes())
    assert again.aliases == table
    assert IdentityMap.from_bytes(None).aliases == {}


ID = st.sampled_from(["c1", "c2", "d1", "d2", "d3", *sorted(JUNK_IDS), "NULL"]) | st.none()


@given(st.lists(st.tuples(ID, ID), max_size=30))
def test_property_first_usable_link_wins(pairs: list[tuple[str | None, str | None]]) -> None:
    ids = IdentityMap()
    expected: dict[str, str] = {}
    for i, (cust, anon) in enumerate(pairs):
        rec = ids.observe(ev(i, cust, anon))
        usable = not is_junk_id(cust) and not is_junk_id(anon)
        first = usable and anon not in expected
        if first:
            assert anon is not None and cust is not None
            expected[anon] = cust
        assert (rec is not None) == first
    assert dict(ids.aliases) == expected
    assert not any(is_junk_id(k) or is_junk_id(v) for k, v in ids.aliases.items())
