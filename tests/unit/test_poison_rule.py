"""The poison rule of the Faust stages (stream.agents.context.isolating): a record that
makes a stage's pure `prepare` raise is dead-lettered and skipped; its neighbours are
processed, in order."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from journeys.definitions import load_definitions
from journeys.settings import WorkerSettings
from stream.agents.context import Record, StageContext, isolating
from stream.agents.sink import WarehouseSink
from stream.agents.stats import StreamStats


def _ctx(sent: list[tuple[str, bytes | None]]) -> StageContext:
    async def send(topic: str, key: bytes | None, value: bytes | None, partition: int | None,
                   timestamp: int | None, headers: Any) -> Any:
        sent.append((topic, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def crash(exc: BaseException) -> None:
        raise AssertionError("the worker must not crash")

    settings = WorkerSettings.build()
    return StageContext(settings=settings, definitions=load_definitions(), stats=StreamStats(),
                        sink=WarehouseSink(settings.warehouse), send=send, crash=crash)


def _run(records: list[Record]) -> tuple[list[list[Record]], list[dict[str, Any]], StageContext]:
    sent: list[tuple[str, bytes | None]] = []
    ctx = _ctx(sent)
    emitted: list[list[Record]] = []

    async def prepare(chunk: list[Record]) -> list[Record]:
        if any(v == b"poison" for _p, _o, v in chunk):
            raise KeyError("boom")
        return chunk

    async def emit(batch: list[Record]) -> None:
        emitted.append(batch)

    asyncio.run(isolating(ctx, "customers", "t.by-customer", records, prepare, emit))
    letters = [orjson.loads(v or b"") for topic, v in sent
               if topic == ctx.settings.kafka.dead_letter_topic]
    return emitted, letters, ctx


@given(st.lists(st.booleans(), max_size=40))
def test_every_poison_record_is_dead_lettered_and_every_other_emitted_in_order(
        poison: list[bool]) -> None:
    records: list[Record] = [(i % 3, i, b"poison" if bad else b"ok")
                             for i, bad in enumerate(poison)]
    emitted, letters, ctx = _run(records)
    assert [r for batch in emitted for r in batch] == [r for r in records if r[2] == b"ok"]
    assert [lt["reason"] for lt in letters] == [
        f"stage_error: KeyError at t.by-customer[{p}]@{o}" for p, o, v in records
        if v == b"poison"]
    assert all(lt["stage"] == "customers" and lt["original"] == "poison" for lt in letters)
    assert ctx.stats.poison_records == ctx.stats.rejected["stage_error"] == sum(poison)


def test_a_clean_batch_is_prepared_once() -> None:
    records: list[Record] = [(0, i, b"ok") for i in range(5)]
    emitted, letters, _ctx = _run(records)
    assert emitted == [records] and letters == []
