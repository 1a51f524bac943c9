"""Identity stitching in the identity stage (stream.stages.identity): links, first link
wins, placeholder ids never link, routing by log position, re-delivery."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.engine.identity import JUNK_IDS, MergeRecord, is_junk_id, link_of
from stream.stages.envelopes import FORMAT, decode, encode
from stream.stages.identity import Alias, IdentityStage, applied_key

BASE = 1_700_000_000_000


class Ev:
    def __init__(self, i: int, cust: str | None, anon: str | None, typ: str = "page",
                 t: int | None = None) -> None:
        self.event_id, self.type, self.channel = f"e{i}", typ, "web"
        self.occurred_at = BASE + (i if t is None else t)
        self.customer_id, self.anonymous_id = cust, anon


class Identity:
    """One by-identity partition (0) through the stage, with its table; every raw event
    from raw partition 0 at the offset it was given."""

    def __init__(self, partitions: int = 1) -> None:
        self.stage = IdentityStage(partitions, 1)
        self.table: dict[bytes, bytes] = {}
        self.offset = 0
        self.raw = 0
        self.sent: list[dict[str, Any]] = []
        self.merges: list[MergeRecord] = []

    def envelope(self, events: list[Ev]) -> bytes:
        items = []
        for e in events:
            items.append([e.event_id, e.type, e.channel, e.occurred_at, e.customer_id,
                          e.anonymous_id, None, 0, self.raw])
            self.raw += 1
        return encode({"v": FORMAT, "e": items})

    def feed(self, *events: Ev, value: bytes | None = None, offset: int | None = None,
             store: bool = True) -> Any:
        off = self.offset if offset is None else offset
        self.offset = max(self.offset, off + 1)
        batch = self.stage.prepare([(0, off, value or self.envelope(list(events)))],
                                   self.table.get)
        if store:
            self.table.update({k: v for k, (_p, v) in batch.states.items()})
        self.sent.extend(decode(v) for _p, v in batch.envelopes.messages())
        self.merges.extend(batch.merges)
        return batch

    def routed(self) -> list[tuple[str, str]]:
        """(key, event id) of every forwarded event, in order."""
        return [(e[0], e[1]) for body in self.sent for e in body["e"]]

    def alias(self, anon: str) -> Alias | None:
        return Alias.loads(self.table.get(anon.encode()))


@pytest.mark.parametrize("junk", [None, "", " ", "NULL", "Undefined", "none", "Guest",
                                  "ANONYMOUS", "0", "-", " null "])
def test_junk_ids_never_link(junk: str | None) -> None:
    assert is_junk_id(junk)
    ids = Identity()
    ids.feed(Ev(1, junk, "dev1", "identify"), Ev(2, "cust1", junk, "identify"),
             Ev(3, None, "dev1"))
    assert ids.merges == [] and ids.alias("dev1") is None
    assert ids.routed()[-1] == ("dev1", "e3")


def test_real_ids_are_not_junk() -> None:
    assert not any(is_junk_id(x) for x in ("c1", "00", "null1", "guest-42", "x"))


def test_identify_links_and_records_the_merge() -> None:
    ids = Identity()
    ids.feed(Ev(1, None, "dev1"))
    ids.feed(Ev(2, "cust1", "dev1", "identify"), Ev(3, None, "dev1"))
    assert ids.merges == [MergeRecord("dev1", "cust1", BASE + 2, "e2", "identify", "web")]
    assert ids.merges[0].to_dict()["customer_id"] == "cust1"
    assert ids.routed() == [("dev1", "e1"), ("cust1", "e2"), ("cust1", "e3")]
    links = [m for body in ids.sent for m in body.get("m", ())]
    holds = [h for body in ids.sent for h in body.get("p", ())]
    assert links == [["dev1", "cust1", BASE + 2]] and holds == [["cust1", "dev1", BASE + 2]]


def test_any_event_with_both_ids_links_and_first_link_wins() -> None:
    ids = Identity()
    ids.feed(Ev(1, "cust1", "dev1", "add_to_cart"), Ev(2, "cust2", "dev1", "identify"),
             Ev(3, "cust1", "dev1"), Ev(4, None, "dev1"), Ev(5, "cust2", "dev1"))
    assert [(m.anonymous_id, m.customer_id) for m in ids.merges] == [("dev1", "cust1")]
    # an event naming its customer is attributed to that customer regardless
    assert ids.routed() == [("cust1", "e1"), ("cust2", "e2"), ("cust1", "e3"), ("cust1", "e4"),
                          ("cust2", "e5")]


def test_only_junk_ids_has_no_link() -> None:
    assert link_of(Ev(1, "guest", "dev1")) is None
    assert link_of(Ev(1, "c", "d")) == ("d", "c")


def test_an_earlier_link_to_the_same_customer_read_later_moves_the_link_back() -> None:
    ids = Identity()
    ids.feed(Ev(5, "cust1", "dev1", t=50))
    ids.feed(Ev(2, "cust1", "dev1", t=20), Ev(3, "cust1", "dev1", t=30))
    a = ids.alias("dev1")
    assert a is not None and (a.customer, a.linked_at, a.event_id) == ("cust1", BASE + 20, "e2")
    assert [(m.event_id, m.merged_at_ms) for m in ids.merges] == [("e5", BASE + 50),
                                                                   ("e2", BASE + 20)]
    holds = [h[2] for body in ids.sent for h in body.get("p", ())]
    assert holds == [BASE + 50, BASE + 20]  # the customer's hold moves back too


def test_a_record_read_again_goes_where_it_went_the_first_time() -> None:
    """Crash after the outputs, before the commit: the record comes again with the
    alias already stored. Routing is by log position, so a device event read before
    the link still goes to the device (the customer stage recognises it as read)."""
    ids = Identity()
    value = ids.envelope([Ev(1, None, "dev1"), Ev(2, "cust1", "dev1"), Ev(3, None, "dev1")])
    ids.feed(value=value, offset=7, store=False)
    first = ids.routed()
    ids.sent.clear()
    ids.stage.forget()  # the worker restarted
    ids.feed(value=value, offset=7, store=False)  # nothing stored: exactly the same
    assert ids.routed() == first == [("dev1", "e1"), ("cust1", "e2"), ("cust1", "e3")]
    ids.stage.forget()
    ids.table[b"dev1"] = Alias("cust1", BASE + 2, "e2", (7, 1)).dumps()  # alias stored
    ids.sent.clear()
    ids.feed(value=value, offset=7, store=False)
    assert ids.routed() == first
    assert [e[6:] for body in ids.sent for e in body["e"]] == [[0, 7, 0], [0, 7, 1], [0, 7, 2]]


def test_events_read_again_from_the_raw_topic_are_skipped() -> None:
    ids = Identity()
    ids.feed(Ev(1, None, "dev1"), Ev(2, None, "dev1"))
    again = encode({"v": FORMAT, "e": [["e2", "page", "web", BASE + 2, None, "dev1", None, 0, 1],
                                        ["e9", "page", "web", BASE + 9, None, "dev1", None, 0, 2]]})
    batch = ids.feed(value=again)
    assert batch.redelivered == 1 and ids.routed()[-1] == ("dev1", "e9")
    assert orjson.loads(ids.table[applied_key(0)]) == {"0": 2}
    restarted = Identity()
    restarted.table = ids.table
    assert restarted.feed(value=again).redelivered == 2  # the applied offsets were stored


def test_aliases_of_an_older_worker_still_resolve() -> None:
    ids = Identity()
    ids.table[b"dev1"] = b"cust1"  # stored as the customer id alone
    ids.feed(Ev(1, None, "dev1"))
    assert ids.routed() == [("cust1", "e1")]


ID = st.sampled_from(["c1", "c2", "d1", "d2", "d3", *sorted(JUNK_IDS), "NULL"]) | st.none()


@given(st.lists(st.tuples(ID, ID), max_size=30))
def test_property_first_usable_link_wins(pairs: list[tuple[str | None, str | None]]) -> None:
    ids = Identity()
    expected: dict[str, str] = {}
    want: list[str] = []
    for i, (cust, anon) in enumerate(pairs):
        ids.feed(Ev(i, cust, anon))
        if not is_junk_id(cust) and not is_junk_id(anon):
            assert anon is not None and cust is not None
            expected.setdefault(anon, cust)
        if not is_junk_id(cust):
            want.append(cust or "")
        elif not is_junk_id(anon):
            want.append(expected.get(anon or "", anon or ""))
    assert {m.anonymous_id: m.customer_id for m in ids.merges} == expected
    for anon, cust in expected.items():
        a = ids.alias(anon)
        assert a is not None and a.customer == cust
    assert [key for key, _eid in ids.routed()] == want
