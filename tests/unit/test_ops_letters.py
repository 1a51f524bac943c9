"""Pure parts of `journeys dlq`, `status` and `ingest --wait`: dead letters, filters,
the redrive log, lag figures (deploy.ops.letters, deploy.ops.progress)."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest

from deploy.ops.letters import (
    Letter,
    LetterFilter,
    Mark,
    decode_mark,
    fold,
    late_among,
    parse,
    parse_ref,
    plan,
    raw_partition,
)
from deploy.ops.offsets import Committed
from deploy.ops.progress import caught_up, ranges, source_clock, stage_lag
from journeys.events import EventValidator, Rejection, Touchpoint
from journeys.settings import KafkaConfig
from journeys.stages import stages

T0 = 1_772_323_200_000


def _event(eid: str, channel: str = "web", at: int = T0) -> bytes:
    return orjson.dumps({"event_id": eid, "type": "product_view", "channel": channel,
                         "occurred_at": at, "anonymous_id": f"anon-{eid}"})


def _letter(offset: int, stage: str = "validate", original: bytes | None = None,
            reason: str = "unknown_channel: 'fax'", at: int = T0) -> Letter:
    value = Rejection(reason, original if original is not None else _event(f"e{offset}"),
                      f"e{offset}").to_dead_letter(stage=stage, received_at_ms=at)
    return parse("p.dead-letter", 0, offset, None, value)


def test_a_dead_letter_keeps_its_original_bytes_even_when_not_utf8() -> None:
    raw = b'{"event_id": "x\xff\xfe"}'
    letter = _letter(3, original=raw)
    assert letter.original == raw and letter.stage == "validate"
    assert letter.event_id == "e3" and letter.received_at_ms == T0
    assert letter.key == b"p.dead-letter/0/3" and letter.ref == "0:3"
    text = _letter(4, original=_event("ok"))
    assert text.original == _event("ok")
    assert "original_base64" not in orjson.loads(
        Rejection("r", _event("ok")).to_dead_letter(stage="import", received_at_ms=T0))


def test_a_record_that_is_no_dead_letter_is_shown_as_unknown() -> None:
    letter = parse("t", 1, 9, 1234, b"not json")
    assert (letter.stage, letter.reason, letter.original, letter.received_at_ms) == (
        "unknown", "undecodable dead letter", b"not json", 1234)
    assert parse("t", 1, 9, None, None).original == b""


def test_filters_combine_reason_stage_time_and_refs() -> None:
    a = _letter(1, "import", reason="unknown_channel: 'fax'", at=T0)
    b = _letter(2, "validate", reason="missing_field: type", at=T0 + 60_000)
    c = _letter(3, "customers", reason="conflicting_duplicate", at=T0 + 120_000)
    every = [a, b, c]

    def pick(f: LetterFilter) -> list[int]:
        return [x.offset for x in every if f.matches(x)]

    assert pick(LetterFilter()) == [1, 2, 3]
    assert pick(LetterFilter(reason="FAX")) == [1]
    assert pick(LetterFilter(stages=("validate", "customers"))) == [2, 3]
    assert pick(LetterFilter(since_ms=T0 + 60_000)) == [2, 3]
    assert pick(LetterFilter(until_ms=T0 + 60_000)) == [1]
    assert pick(LetterFilter(refs=((0, 3), (1, 1)))) == [3]
    assert pick(LetterFilter(reason="missing", stages=("import",))) == []


def test_refs_are_partition_and_offset() -> None:
    assert parse_ref("2:17") == (2, 17)
    for bad in ("2", "a:1", "1:-3", ":4"):
        with pytest.raises(ValueError):
            parse_ref(bad)


def test_the_redrive_log_keeps_sent_and_ignores_foreign_records() -> None:
    k = b"t/0/1"
    sending, sent = Mark("sending", 1, "e1"), Mark("sent", 2, "e1", 0, 5)
    assert decode_mark(sent.encode()) == sent
    assert decode_mark(None) is None and decode_mark(b'{"state": "lost"}') is None
    assert fold([(k, sending.encode())]) == {k: sending}
    assert fold([(k, sending.encode()), (k, sent.encode())]) == {k: sent}
    # a racing second redrive's `sending` after the first one's `sent` does not undo it
    assert fold([(k, sent.encode()), (k, sending.encode())]) == {k: sent}
    assert fold([(None, sent.encode()), (k, b"junk"), (k, None)]) == {}


def test_plan_sends_each_letter_at_most_once() -> None:
    validator = EventValidator(["web", "fax"])
    fresh, done, doubt = _letter(1), _letter(2), _letter(3)
    internal = _letter(4, stage="customers")
    invalid = _letter(5, original=_event("e5", channel="telex"))
    marks = {done.key: Mark("sent", 1), doubt.key: Mark("sending", 1)}
    p = plan([fresh, done, doubt, internal, invalid], marks, validator)
    assert [x.offset for x, _tp in p.send] == [1]
    assert isinstance(p.send[0][1], Touchpoint)
    assert [x.offset for x, _m in p.done] == [2]
    assert [x.offset for x, _m in p.in_doubt] == [3]
    assert [x.offset for x in p.not_redrivable] == [4]
    assert [(x.offset, r.split(":")[0]) for x, r in p.still_invalid] == [(5, "unknown_channel")]
    again = plan([fresh, doubt, invalid], marks, validator, force=True, retry_in_doubt=True)
    assert [(x.offset, tp is None) for x, tp in again.send] == [(1, False), (3, False),
                                                                 (5, True)]
    # nothing selected twice is sent twice: once marked sent, a plan skips it
    assert plan([fresh], {fresh.key: Mark("sent", 9)}, validator).send == []


def test_late_among_compares_with_the_head_of_each_partition() -> None:
    validator = EventValidator(["web"])
    items = []
    for i, at in enumerate((T0, T0 + 600_000)):
        tp = validator.parse(_event(f"x{i}", at=at))
        assert isinstance(tp, Touchpoint)
        items.append((_letter(i), tp))
    heads = {raw_partition(tp.identity_key.encode(), 4): T0 + 400_000 for _l, tp in items}
    assert late_among(items, heads, 4, 300_000) == 1
    assert late_among(items, {}, 4, 300_000) == 0
    assert late_among([(_letter(9), None)], heads, 4, 0) == 0


def test_stage_lag_and_caught_up() -> None:
    layout = stages(KafkaConfig(topic_prefix="p"), "app")
    raw = layout[0]
    ends = {(raw.topic, 0): 10, (raw.topic, 1): 5, ("other", 0): 99}
    lag = stage_lag(raw, ends, {(raw.topic, 0): Committed(7, None)})
    assert (lag.lag, lag.end, lag.committed, lag.started) == (8, 15, 7, True)
    assert not stage_lag(raw, ends, {}).started
    assert caught_up({0: 10, 1: 0}, {0: 10})
    assert not caught_up({0: 10}, {0: 9})
    assert ranges({0: 5, 1: 3}, {0: 9, 1: 3, 2: 4}) == [(0, 5, 9), (2, 0, 4)]
    assert [s.name for s in layout] == ["validate", "identity", "customers", "handovers",
                                        "alerts", "dead letters"]
    assert layout[3].rounds == 2


def test_source_clock_reads_the_validate_commit_metadata() -> None:
    clock = source_clock(2, orjson.dumps([T0, T0 - 300_000]).decode())
    assert clock is not None and (clock.newest_ms, clock.watermark_ms) == (T0, T0 - 300_000)
    for junk in (None, "", "x", "[1]", '["a", 1]', f"[{-(2**62)}, {-(2**62)}]"):
        assert source_clock(0, junk) is None


def test_periodic_work_never_overlaps_and_a_stall_is_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    from stream.agents import app as stream_app

    class FakeApp:
        should_stop = False

        async def sleep(self, n: float) -> None:
            await asyncio.sleep(min(n, 0.01))

    app = FakeApp()
    running, overlaps, runs = [0], [0], [0]

    async def work() -> None:
        running[0] += 1
        overlaps[0] = max(overlaps[0], running[0])
        await asyncio.sleep(0.02)
        running[0] -= 1
        runs[0] += 1
        if runs[0] == 3:
            app.should_stop = True

    loop = stream_app.periodic(app, 0.001, work, "journeys.test")  # type: ignore[arg-type]
    asyncio.run(loop())
    assert runs[0] == 3 and overlaps[0] == 1

    app.should_stop = False
    stall = pytest.MonkeyPatch()
    stall.setattr(stream_app, "SLOW_TICK_S", 0.0)
    try:
        runs[0] = 2
        with caplog.at_level(logging.WARNING, logger=stream_app.log.name):
            asyncio.run(loop())
    finally:
        stall.undo()
    assert any("journeys.test took" in r.getMessage() for r in caplog.records)
