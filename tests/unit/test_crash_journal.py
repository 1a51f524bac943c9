"""The quarantine (stream.agents.crash_journal): a record that kills the worker process
outright is handled alone after the first death and dead-lettered as quarantined after
it killed the process twice alone; its neighbours are processed. Deaths are real: each
"process lifetime" is a forked child that the fault injection ends with os._exit."""

from __future__ import annotations

import asyncio
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import orjson
import pytest

from journeys.definitions import load_definitions
from journeys.settings import WorkerSettings
from stream.agents.context import Record, StageContext, isolating
from stream.agents.crash_journal import FAULT_EXIT_CODE, CrashJournal
from stream.agents.sink import WarehouseSink
from stream.agents.stats import StreamStats

TOPIC = "t.by-customer"


def _ctx(journal: CrashJournal, out: Path) -> StageContext:
    async def send(topic: str, key: bytes | None, value: bytes | None, partition: int | None,
                   timestamp: int | None, headers: Any) -> Any:
        with out.open("ab") as f:
            f.write(orjson.dumps({"dead": orjson.loads(value or b"")}) + b"\n")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def crash(exc: BaseException) -> None:
        raise AssertionError("the worker must not crash")

    settings = WorkerSettings.build()
    return StageContext(settings=settings, definitions=load_definitions(), stats=StreamStats(),
                        sink=WarehouseSink(settings.warehouse), send=send, crash=crash,
                        journal=journal)


def _lifetime(directory: Path, records: list[Record], out: Path) -> int:
    """One worker process handling `records` (a forked child); returns its exit code.
    The fault injection kills it on any record whose value contains b"kill"."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            ctx = _ctx(CrashJournal(directory, "customers:kill"), out)

            async def prepare(chunk: list[Record]) -> list[Record]:
                return chunk

            async def emit(batch: list[Record]) -> None:
                with out.open("ab") as f:
                    f.write(orjson.dumps({"emitted": [r[1] for r in batch]}) + b"\n")

            asyncio.run(isolating(ctx, "customers", TOPIC, records, prepare, emit))
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _outputs(out: Path) -> tuple[list[list[int]], list[dict[str, Any]]]:
    lines = [orjson.loads(x) for x in out.read_bytes().splitlines()] if out.exists() else []
    return ([x["emitted"] for x in lines if "emitted" in x],
            [x["dead"] for x in lines if "dead" in x])


def test_a_killing_record_is_quarantined_after_two_deaths_alone(tmp_path: Path) -> None:
    records: list[Record] = [(0, i, b"kill" if i == 3 else b"ok") for i in range(6)]
    codes = []
    for life in range(4):
        out = tmp_path / f"out{life}.jsonl"
        codes.append(_lifetime(tmp_path / "journal", records, out))
        if codes[-1] == 0:
            break
    # dies in the chunk, then alone (1), then alone again (2): quarantined on the 4th start
    assert codes == [FAULT_EXIT_CODE] * 3 + [0]
    emitted, dead = _outputs(tmp_path / "out1.jsonl")
    assert emitted == [[0], [1], [2]] and dead == []  # handled alone, in order, up to it
    emitted, dead = _outputs(tmp_path / "out3.jsonl")
    assert emitted == [[0], [1], [2], [4], [5]]  # still one at a time: all were suspects
    assert [d["reason"] for d in dead] == [
        f"quarantined: killed the worker 2 times at {TOPIC}[0]@3"]
    assert dead[0]["stage"] == "customers" and dead[0]["original"] == "kill"
    assert not list((tmp_path / "journal").glob("*.inflight"))


def test_after_the_suspects_batches_are_whole_again(tmp_path: Path) -> None:
    journal = CrashJournal(tmp_path)
    first: list[Record] = [(0, 1, b"a"), (1, 7, b"b")]
    cm = journal.computing("customers", TOPIC, first)
    cm.__enter__()  # the process "dies" holding the marker (it is never exited)
    reader = CrashJournal(tmp_path)
    assert reader.verdicts("customers", TOPIC, [(0, 1), (1, 7), (1, 8), (2, 1)]) == [
        0, 0, None, None]
    reader.cleared("customers", TOPIC, [(0, 1), (1, 7)])
    assert reader.verdicts("customers", TOPIC, [(0, 1), (1, 7)]) == [None, None]
    assert reader.verdicts("identity", TOPIC, [(0, 1)]) == [None]  # per stage
    cm.__exit__(None, None, None)


@pytest.mark.parametrize("ending", ["normal", "exception", "cancelled"])
def test_only_a_death_leaves_a_marker(tmp_path: Path, ending: str) -> None:
    journal = CrashJournal(tmp_path)

    async def work() -> None:
        with journal.computing("alerts", TOPIC, [(0, 1, b"x")]):
            assert list(tmp_path.glob("*.inflight"))
            if ending == "exception":
                raise KeyError("boom")
            if ending == "cancelled":
                raise asyncio.CancelledError

    expect = pytest.raises((KeyError, asyncio.CancelledError))
    with expect if ending != "normal" else nullcontext():
        asyncio.run(work())
    assert not list(tmp_path.glob("*.inflight"))


def test_a_torn_marker_is_ignored(tmp_path: Path) -> None:
    (tmp_path / f"customers--{TOPIC}.inflight").write_bytes(b'{"ranges": [[0, 1')
    assert CrashJournal(tmp_path).verdicts("customers", TOPIC, [(0, 1)]) == [None]


def test_fault_setting_is_checked() -> None:
    with pytest.raises(ValueError, match="stage one of"):
        WorkerSettings.build(fault_exit_on="nowhere:x")
    assert WorkerSettings.build(fault_exit_on="validate:x").fault_exit_on == "validate:x"

