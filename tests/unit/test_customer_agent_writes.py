"""The customer agent's write order over a batch prepared in chunks (stream/agents/
customers.py, docs/stream.md "Exactly once in effect"): final rows before a chunk's
store, provisional rows only after it, and one insert per table per chunk (a chunk's
provisional rows go with the next chunk's final rows; the last chunk's before the
batch returns)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from journeys.definitions import load_definitions
from journeys.settings import WorkerSettings
from stream.agents import customers as agent_module
from stream.agents.context import StageContext
from stream.agents.customers import CustomerAgent
from stream.agents.stats import StreamStats
from stream.engine.session_state import SessionRow
from stream.stages.customer_batch import CustomerBatch, ProvisionalCarry


def _session(sid: str) -> SessionRow:
    return SessionRow(sid, "c1", 0, 0, datetime(2026, 1, 1, tzinfo=UTC), 1, ["web"], "web",
                      1, 0)


def _batch(final: list[str], open_: list[str]) -> CustomerBatch:
    b = CustomerBatch(session_rows=[_session(s) for s in [*final, *open_]])
    b.open_sessions.update(open_)
    b.states[f"key-{final}{open_}".encode()] = (0, b"v")
    return b


class _Sink:
    enabled = True

    def __init__(self, log: list[tuple[str, list[str]]]) -> None:
        self.log = log

    def write_customers(self, sessions: Any, instances: Any, retractions: Any,
                        late: Any = ()) -> None:
        self.log.append(("write", [s.session_id for s in sessions]))


def _run(batches: list[CustomerBatch], monkeypatch: pytest.MonkeyPatch
         ) -> list[tuple[str, list[str]]]:
    log: list[tuple[str, list[str]]] = []

    async def store_parted(ctx: Any, table: Any, states: Any) -> None:
        log.append(("store", [k.decode() for k in states]))

    async def send_all(ctx: Any, topic: str, messages: Any) -> int:
        return len(list(messages))

    monkeypatch.setattr(agent_module, "store_parted", store_parted)
    monkeypatch.setattr(agent_module, "send_all", send_all)
    monkeypatch.setattr(agent_module, "byte_chunks", lambda records: [[r] for r in records])
    settings = WorkerSettings.build()
    ctx = StageContext(settings=settings, definitions=load_definitions(), stats=StreamStats(),
                       sink=_Sink(log), send=lambda *a: None,  # type: ignore[arg-type]
                       crash=lambda exc: None)
    stage = SimpleNamespace(prepare=lambda chunk, get, wall, lane: batches[chunk[0][1]])
    agent = CustomerAgent(ctx, stage, lambda: None)  # type: ignore[arg-type]
    events = [SimpleNamespace(message=SimpleNamespace(partition=0, offset=i, value=b"x"))
              for i in range(len(batches))]
    asyncio.run(agent.handle(events))
    return log


def test_one_insert_per_chunk_and_provisional_rows_after_their_store(
        monkeypatch: pytest.MonkeyPatch) -> None:
    log = _run([_batch(["f1"], ["o1"]), _batch(["f2"], ["o2"]), _batch([], ["o3"])],
               monkeypatch)
    assert log == [
        ("write", ["f1"]), ("store", ["key-['f1']['o1']"]),
        ("write", ["o1", "f2"]), ("store", ["key-['f2']['o2']"]),
        ("write", ["o2"]), ("store", ["key-[][\'o3\']"]),
        ("write", ["o3"]),  # the last chunk's: before the batch returns (and is committed)
    ]


def test_one_chunk_writes_final_then_store_then_provisional(
        monkeypatch: pytest.MonkeyPatch) -> None:
    log = _run([_batch(["f1"], ["o1"])], monkeypatch)
    assert log == [("write", ["f1"]), ("store", ["key-['f1']['o1']"]), ("write", ["o1"])]


def test_carry_keeps_order_and_empties() -> None:
    carry = ProvisionalCarry()
    assert not carry
    carry.add([_session("a")], [])
    carry.add([_session("b")], [])
    assert carry
    sessions, instances = carry.take()
    assert [s.session_id for s in sessions] == ["a", "b"] and instances == []
    assert not carry and carry.take() == ([], [])
