"""The internal topics' wire formats (stream.stages.envelopes, docs/stream.md "Wire
formats"): this version writes MessagePack (format 3) and reads it and the JSON of
format 2 alike, told apart by the first byte, so a worker upgraded mid-stream reads what
an older worker left on the internal topics; both decode to the same values."""

from __future__ import annotations

import base64
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from journeys.control import forget_envelopes
from stream.engine.outputs import StepReached
from stream.eventtime.watermarks import Claim
from stream.stages.alerts import AlertStage, StepReachedRouter
from stream.stages.customer_state import CustomerValue
from stream.stages.envelopes import (
    FORMAT,
    JSON_FORMAT,
    MAX_HANDOVER_BYTES,
    EnvelopeBuilder,
    decode,
    decode_body,
    encode,
    joined,
    pieces,
    readable,
)
from tests.profiles import examples
from tests.unit.stream_harness import Pipeline
from tests.unit.test_alert_stage import PURCHASE
from tests.unit.test_stream_stages import check, run, scenario

# What the stages put in a body: JSON's value space (string keys, 64-bit integers,
# finite floats), which MessagePack holds exactly too.
scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=5), max_leaves=30)
bodies = st.dictionaries(st.sampled_from(["e", "p", "m", "h", "f", "w", "o"]), values)


def as_json(value: bytes) -> bytes:
    """The same record as a worker of format 2 wrote it."""
    body = decode_body(value)
    assert body is not None
    return orjson.dumps({**body, "v": JSON_FORMAT})


@settings(max_examples=examples(300), deadline=None)
@given(bodies)
def test_both_formats_decode_to_the_same_values(body: dict[str, Any]) -> None:
    binary = encode({**body, "v": FORMAT})
    text = orjson.dumps({**body, "v": JSON_FORMAT})
    assert binary[0] != ord("{") and text[:1] == b"{"
    want = orjson.loads(text)  # what the JSON reader always gave the stages
    got = decode_body(binary)
    assert got is not None and {**got, "v": JSON_FORMAT} == want
    assert decode_body(text) == want
    assert decode_body(b" \n" + text) == want  # JSON text may start with whitespace


def test_a_body_must_carry_its_formats_version() -> None:
    assert decode_body(orjson.dumps({"v": FORMAT, "e": []})) is None  # JSON is format 2
    assert decode_body(encode({"v": JSON_FORMAT, "e": []})) is None  # MessagePack is 3
    assert decode_body(encode({"e": []})) is None
    for junk in (b"", None, b"\x00", b"\x93\x01\x02\x03", b"{not json", b"\x81\xa1v",
                 msgspec.msgpack.encode([FORMAT]), b"[2]"):
        assert decode_body(junk) is None, junk
    assert decode(encode({"v": FORMAT, "e": {"not": "a list"}})) is None
    assert decode(orjson.dumps({"v": JSON_FORMAT, "e": 1})) is None


def test_envelopes_are_written_as_messagepack_and_read_back() -> None:
    b = EnvelopeBuilder()
    b.hold(1, "cust", "dev", 5)
    b.event(1, ["cust", "e1", "view", "web", 10, {"utm": "x"}, 0, 7, 0, 12.5])
    b.link(1, "dev", "cust", 5)
    b.forget(1, "gone")
    b.claims([0, 1], [2, [[0, 9, 0]]])
    msgs = list(b.messages())
    assert [p for p, _ in msgs] == [0, 1]
    assert all(0x80 <= v[0] <= 0x8F for _, v in msgs)  # a MessagePack map
    assert decode(msgs[0][1]) == {"v": FORMAT, "e": [], "w": [2, [[0, 9, 0]]]}
    body = decode(msgs[1][1])
    assert body == {"v": FORMAT, "e": [["cust", "e1", "view", "web", 10, {"utm": "x"},
                                        0, 7, 0, 12.5]],
                    "p": [["cust", "dev", 5]], "m": [["dev", "cust", 5]], "f": ["gone"],
                    "w": [2, [[0, 9, 0]]]}
    assert len(msgs[1][1]) < len(orjson.dumps(body))
    # and the journeys.control forget, still sent as JSON by commands and the API
    (_p, forget), = forget_envelopes("cust", [], 1)
    assert decode(forget) == {"v": JSON_FORMAT, "e": [], "f": [["cust", []]]}


def test_handovers_are_grouped_by_encoded_size_in_order() -> None:
    b = EnvelopeBuilder()
    big = "x" * (MAX_HANDOVER_BYTES // 3 - 100)
    items = [[f"dev{i}", "cust", [[i, big]], {"s": i}, i, []] for i in range(5)]
    for item in items:
        b.handover(0, item)
    msgs = list(b.messages())
    groups = [decode(v) for _p, v in msgs[1:]]  # after the (empty) event envelope
    assert [len(g["h"]) for g in groups if g] == [3, 2]
    assert [h for g in groups if g for h in g["h"]] == items
    assert all(len(v) <= MAX_HANDOVER_BYTES for _p, v in msgs)
    assert not any("hp" in g for g in groups if g)


def test_a_handover_over_the_limit_travels_as_pieces_that_make_it_again() -> None:
    """One item larger than an envelope (a device's long open session) is cut into
    pieces, one per record, each about `handover_bytes`; the items around it keep their
    order; the pieces, joined in order, are the item."""
    item = ["dev", "cust", [[1, "y" * 5000]], {"s": 1}, 7, []]
    b = EnvelopeBuilder(handover_bytes=1000)
    b.handover(0, ["dev0", "cust", [], [], 1, []])
    b.handover(0, item)
    b.handover(0, ["dev2", "cust", [], [], 2, []])
    bodies = [decode(v) or {} for _p, v in b.messages()][1:]
    assert all(len(v) <= 1000 + 100 for _p, v in b.messages())
    assert [len(x.get("h", [])) for x in bodies] == [1, 0, 0, 0, 0, 0, 0, 1]
    cuts = [x["hp"][0] for x in bodies if "hp" in x]
    assert [(c[0], c[1], c[3], c[4]) for c in cuts] == [("dev", "cust", i, 6) for i in range(6)]
    assert joined(cuts[0][2], [c[5] for c in cuts]) == item
    with pytest.raises(ValueError, match="do not make"):  # pieces of another encoding
        joined(cuts[0][2], [c[5] for c in reversed(cuts)])


def test_a_customer_keeps_pieces_until_one_encoding_is_whole() -> None:
    """Pieces in any order, across stored values (pack/unpack), make the item once;
    a piece of another attempt (the device re-sent after a crash) starts afresh."""
    item = ["dev", "cust", [[1, "z" * 300]], [], 5, []]
    raw = encode(item)  # what the builder cuts: the item's own encoding
    cuts = pieces("dev", "cust", raw, 64)
    other = pieces("dev", "cust", encode([*item[:4], 6, []]), 64)
    v = CustomerValue()
    assert v.piece(other[0][0], *other[0][2:]) is None  # an attempt cut short
    for c in reversed(cuts[1:]):
        assert v.piece(c[0], *c[2:]) is None
        v = CustomerValue.unpack(v.pack(None))
        assert not v.is_idle()
    assert v.piece(cuts[0][0], *cuts[0][2:]) == item
    assert v.pieces == {} and v.is_idle()


def test_dead_letter_original_of_a_binary_record_is_readable_and_exact() -> None:
    text = orjson.dumps({"v": JSON_FORMAT, "e": [[1, 2]]})
    assert readable(text) == (text.decode(), True)
    binary = encode({"v": FORMAT, "e": [[1, 2]]})
    shown, exact = readable(binary)
    assert not exact and orjson.loads(shown) == {"v": FORMAT, "e": [[1, 2]]}
    assert base64.b64decode(base64.b64encode(binary)) == binary
    shown, exact = readable(b"\xff\xfe not anything")
    assert not exact and shown.endswith(" not anything")


@settings(max_examples=examples(60), deadline=None)
@given(scenario(links=True), st.sampled_from([0.5, 1.0]))
def test_a_stream_of_mixed_formats_equals_the_reference(case: Any, legacy: float) -> None:
    """A worker upgraded mid-stream: internal records written in either format (JSON
    as older workers wrote them), with crashes and re-delivery, give exactly the
    journeys and sessions of the reference."""

    def older_writers(pipe: Pipeline) -> Any:
        pipe.legacy = legacy
        return None

    pipe, events, final = run(case, restarts=True, attach=older_writers)
    check(pipe, events, final)


def test_step_reached_messages_of_either_format_give_the_same_alerts() -> None:
    H = 3_600_000
    router = StepReachedRouter([PURCHASE], 2)
    messages: list[tuple[int, bytes]] = []
    for w in range(12):
        obs = [StepReached("purchase", f"i{w}-{k}", step, w * H + k * 1000, "web")
               for k in range(10) for step in (0, 1) if k % 3 or step == 0]
        msgs, confirm = router.route({0: (obs, Claim(0, w * H)),
                                      1: ([], Claim(1, w * H))}, w * 60_000)
        router.confirm(confirm)
        messages.extend(msgs)
    assert all(v[0] != ord("{") for _q, v in messages)
    outcomes = []
    for records in (messages, [(q, as_json(v)) for q, v in messages],
                    [(q, as_json(v) if i % 2 else v) for i, (q, v) in enumerate(messages)]):
        stage, table, got = AlertStage([PURCHASE], 2), {}, []
        for i in range(0, len(records), 3):
            batch = stage.prepare(records[i:i + 3], table.get)
            for k, (_q, v) in batch.states.items():
                if v is None:
                    table.pop(k, None)
                else:
                    table[k] = v
            got.append((batch.records, batch.states, batch.watermarks, batch.undecodable))
        outcomes.append(got)
    assert outcomes[0] == outcomes[1] == outcomes[2]
    assert any(batch[0] for batch in outcomes[0]) or any(batch[1] for batch in outcomes[0])
