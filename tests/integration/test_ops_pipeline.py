"""Operating the data on the broker under test and a ClickHouse server, with a real
worker (issue #15): `journeys status` shows the lag going to 0, `ingest --wait` returns
with the run queryable, dead letters are listed, shown, and redriven after the fix,
each once."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaProducer

from deploy.local.clickhouse import LocalClickHouse
from journeys.events import DEFAULT_CHANNELS, parse_occurred_at
from journeys.timeutil import ms_to_iso
from tests.integration.ingest_support import (
    ROOT,
    Worker,
    end_offsets,
    journey_events,
    kafka_config,
)

T0 = 1_772_323_200_000


class Cli:
    """`python -m deploy.cli` configured like the worker, by environment only."""

    def __init__(self, worker: Worker, tmp_path: Path) -> None:
        self.env = {k: v for k, v in worker.env.items() if k != "JOURNEYS_DATA_DIR"}
        self.env["JOURNEYS_STACK_REGISTRY"] = str(tmp_path / "reg")  # no stack to find
        self.cwd = tmp_path

    def run(self, *args: str, channels: tuple[str, ...] = DEFAULT_CHANNELS
            ) -> subprocess.CompletedProcess[str]:
        env = {**self.env, "JOURNEYS_CHANNELS": orjson.dumps(list(channels)).decode(),
               "PYTHONPATH": str(ROOT)}
        return subprocess.run([sys.executable, "-m", "deploy.cli", *args], cwd=self.cwd,
                              env=env, capture_output=True, text=True, timeout=300)

    def json(self, *args: str, **kw: Any) -> Any:
        r = self.run(*args, "--json", **kw)
        assert r.returncode == 0, r.stdout + r.stderr
        return orjson.loads(r.stdout)


def _produce(servers: str, topic: str, events: list[dict[str, Any]]) -> list[bytes]:
    producer = KafkaProducer(bootstrap_servers=servers, acks="all")
    values = [orjson.dumps(e) for e in events]
    try:
        for e, v in zip(events, values, strict=True):
            producer.send(topic, key=(e["customer_id"] or e["anonymous_id"]).encode(), value=v)
        producer.flush(30)
    finally:
        producer.close()
    return values


def _until(check: Callable[[], Any], what: str, timeout: float = 180) -> Any:
    import time

    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what}: not after {timeout}s"
        time.sleep(1.0)


def test_status_wait_and_redrive_on_a_real_pipeline(
        broker: Any, clickhouse_server: LocalClickHouse, unique_name: Callable[[str], str],
        tmp_path: Path) -> None:
    kafka = kafka_config(broker.bootstrap_servers, unique_name("ops"), partitions=3)
    worker = Worker(kafka, clickhouse_server, unique_name("opsdb"), unique_name("opsapp"),
                    tmp_path)
    cli = Cli(worker, tmp_path)
    good = journey_events("g", seed=3, customers=40, start_ms=T0)
    after_good = max(parse_occurred_at(e["occurred_at"]) for e in good) + 60_000
    more = journey_events("m", seed=4, customers=15, start_ms=after_good)  # none late
    newest = max(parse_occurred_at(e["occurred_at"]) for e in [*good, *more])
    fax = [{"event_id": f"fax-{i}", "type": "product_view", "channel": "fax",
            "occurred_at": ms_to_iso(newest), "customer_id": f"g-cust-{i + 1}",
            "anonymous_id": None} for i in range(3)]
    bad_bytes = _produce(kafka.bootstrap_servers, kafka.raw_topic, [*good, *fax])
    total = len(good) + len(fax)

    before = cli.json("status")  # no worker yet: the whole raw topic is behind
    raw = before["stages"][0]
    assert (raw["stage"], raw["lag"], raw["committed"]) == ("validate", total, 0), before
    assert all(p["committed"] is None for p in raw["partitions"])

    worker.start()
    try:
        after = _until(lambda: (s := cli.json("status"))["caught_up"] and s, "lag to 0")
        assert after["warehouse"]["dead_letters"] == {"validate": 3}, after
        wh = worker.warehouse()
        db = wh.database
        try:
            count = f"SELECT count() FROM {db}.touchpoints FINAL"
            assert wh.query(count)[0][0] == len(good)

            (tmp_path / "more.jsonl").write_bytes(b"".join(orjson.dumps(e) + b"\n"
                                                           for e in more))
            waited = cli.run("ingest", "more.jsonl", "--wait", "--rejects", str(tmp_path))
            assert waited.returncode == 0, waited.stdout + waited.stderr
            assert wh.query(count)[0][0] == len(good) + len(more)  # queryable on return
            assert "late: 0; dead-lettered by the worker: 0; refused before producing: 0" \
                in waited.stdout, waited.stdout

            letters = cli.json("dlq", "list", "--stage", "validate", "--reason", "unknown_chan")
            assert sorted(x["event_id"] for x in letters) == ["fax-0", "fax-1", "fax-2"]
            ref = next(x["ref"] for x in letters if x["event_id"] == "fax-1")
            shown = cli.run("dlq", "show", ref, "--raw")
            assert shown.stdout.encode() == bad_bytes[len(good) + 1] + b"\n", shown.stderr

            refused = cli.run("dlq", "redrive", "--stage", "validate")  # not fixed yet
            assert "still invalid" in refused.stdout and "to send: 0" in refused.stdout
            ends = end_offsets(kafka.bootstrap_servers, kafka.raw_topic)

            worker.stop()  # the fix: the worker accepts the new channel
            with_fax = (*DEFAULT_CHANNELS, "fax")
            worker.env["JOURNEYS_CHANNELS"] = orjson.dumps(list(with_fax)).decode()
            worker.start()
            dry = cli.run("dlq", "redrive", "--stage", "validate", "--dry-run",
                          channels=with_fax)
            assert "would send 3" in dry.stdout, dry.stdout + dry.stderr
            assert end_offsets(kafka.bootstrap_servers, kafka.raw_topic) == ends
            sent = cli.run("dlq", "redrive", "--stage", "validate", channels=with_fax)
            assert sent.returncode == 0 and "redriven: 3" in sent.stdout, (
                sent.stdout + sent.stderr)
            assert "warning" not in sent.stderr, sent.stderr  # none of them late
            worker.wait_processed()
            fax_rows = wh.query(f"SELECT event_id, count() FROM {db}.touchpoints FINAL "
                                "WHERE channel = 'fax' GROUP BY event_id ORDER BY event_id")
            assert [tuple(r) for r in fax_rows] == [("fax-0", 1), ("fax-1", 1), ("fax-2", 1)]
            sessions = wh.query(f"SELECT sum(events) FROM {db}.sessions FINAL "
                                "WHERE deleted = 0")[0][0]
            assert sessions == len(good) + len(more) + len(fax)  # each counted once

            grown = end_offsets(kafka.bootstrap_servers, kafka.raw_topic)
            again = cli.run("dlq", "redrive", "--stage", "validate", channels=with_fax)
            assert again.returncode == 0, again.stdout + again.stderr
            assert "already redriven (skipped): 3" in again.stdout, again.stdout
            assert "nothing to redrive" in again.stdout
            assert end_offsets(kafka.bootstrap_servers, kafka.raw_topic) == grown
            listed = cli.json("dlq", "list", "--stage", "validate", channels=with_fax)
            assert {x["redriven"] for x in listed} == {"sent"}
        finally:
            wh.close()
    finally:
        worker.stop()
