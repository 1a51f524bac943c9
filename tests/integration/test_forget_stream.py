"""`journeys forget` against a running worker (real broker, ClickHouse 18.16 server): the
customer's and its linked device's rows are gone from every table, and the worker's
state with them: a new event of the id opens a fresh journey, with no old path."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from deploy.commands import forget as forget_command
from deploy.local.broker import LocalBroker
from deploy.local.clickhouse import LocalClickHouse
from tests.integration.ingest_support import Worker, kafka_config
from tests.integration.stream_support import produce, wait_pipeline
from tests.integration.test_forget_warehouse import _traces
from warehouse.connect import connect
from warehouse.sql import qualified

T = 1_772_323_200_000  # 2026-03-01T00:00Z
M = 60_000


def ev(eid: str, typ: str, t: int, cust: str | None, anon: str | None) -> dict[str, Any]:
    return {"event_id": eid, "type": typ, "channel": "web", "occurred_at": t,
            "customer_id": cust, "anonymous_id": anon}


@pytest.fixture
def worker(broker: LocalBroker, clickhouse_server: LocalClickHouse,
           unique_name: Callable[[str], str], tmp_path: Path) -> Iterator[Worker]:
    kafka = kafka_config(broker.bootstrap_servers, unique_name("fgs"), partitions=2)
    w = Worker(kafka, clickhouse_server, unique_name("fgs"), unique_name("fgs-worker"),
               tmp_path).start()
    try:
        yield w
    finally:
        w.stop()


def _wait(w: Worker) -> None:
    assert w.proc is not None
    wait_pipeline(w.kafka, w.app_id, [w.proc], w.log)


def _forget(w: Worker, monkeypatch: pytest.MonkeyPatch, *ids: str) -> str:
    for k, v in w.env.items():
        if k.startswith("JOURNEYS_"):
            monkeypatch.setenv(k, v)
    app = typer.Typer()
    forget_command.register(app)
    app.command("noop")(lambda: None)  # a group, so `forget` is a subcommand
    result = CliRunner().invoke(app, ["forget", *ids, "--wait-timeout", "120"])
    assert result.exit_code == 0, result.output
    return result.output


def test_forget_clears_warehouse_and_live_state(worker: Worker,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    produce(worker.kafka, [
        ev("a1", "product_view", T, None, "dev-1"),
        ev("a2", "add_to_cart", T + M, None, "dev-1"),
        ev("c1", "cart", T + 2 * M, "cust-1", "dev-1"),  # links dev-1 to cust-1
        ev("k1", "product_view", T, "cust-2", None),
    ])
    _wait(worker)
    wh = connect(worker.warehouse_config)
    try:
        assert _traces(wh, ("cust-1", "dev-1"))["journey_instances"] > 0
        out = _forget(worker, monkeypatch, "cust-1")
        assert "1 linked anonymous id(s)" in out and "forgotten:" in out
        traces = _traces(wh, ("cust-1", "dev-1"))
        assert traces == dict.fromkeys(traces, 0)
        assert _traces(wh, ("cust-2",))["journey_instances"] == 1
        # the worker forgot too: new events start afresh (no old path, no old link)
        produce(worker.kafka, [ev("n1", "add_to_cart", T + 3 * M, "cust-1", None),
                               ev("n2", "product_view", T + 4 * M, "cust-1", None),
                               ev("n3", "cart", T + 5 * M, None, "dev-1")])
        _wait(worker)
        rows = wh.query(
            f"SELECT customer_id, path_types FROM {qualified(wh.database, 'journey_instances')}"
            " FINAL WHERE deleted = 0 AND journey = 'purchase' AND customer_id IN "
            "('cust-1', 'dev-1') ORDER BY customer_id")
        assert [(r[0], list(r[1])) for r in rows] == [("cust-1", ["product_view"])]
        again = _forget(worker, monkeypatch, "cust-1")  # safe to run twice
        assert "forgotten:" in again
    finally:
        wh.close()
