"""History in export order through the product as a user runs it: a JSONL file with each
customer's whole history together (the order most exports have), `journeys ingest`
into a running `journeys up` (embedded: Tansu broker, chdb, the worker in-process,
default lateness), then every customer's journeys read back over the API must equal
the reference exactly: the importer produces in event-time order, so nothing is late
(docs/semantics.md "Event time"). Before, 68 % of such a file's events were late.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from kafka.partitioner.default import murmur2

from journeys.definitions import parse_definitions
from stream.engine.identity import JUNK_IDS
from tests.integration.ingest_support import ROOT, free_port
from tests.integration.test_stream_journeys import DEFINITIONS, traffic
from tests.reference.stitching_ref import split

PARTITIONS = 4  # the embedded stack's default


def fillers(at_ms: int) -> list[dict[str, Any]]:
    """One event far in the future per raw partition (the importer keys by customer, as
    kafka-python's default partitioner does): every partition's watermark passes
    every deadline."""
    out: list[dict[str, Any]] = []
    k = 0
    while len(out) < PARTITIONS:
        key = f"filler-{k}"
        if (murmur2(key.encode()) & 0x7FFFFFFF) % PARTITIONS == len(out):
            out.append({"event_id": f"fill-{k}", "type": "page_view", "channel": "web",
                        "occurred_at": at_ms, "customer_id": key, "anonymous_id": None})
        k += 1
    return out


def grouped_by_customer(events: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    owners = sorted({e["customer_id"] or e["anonymous_id"] or "" for e in events})
    rnd.shuffle(owners)
    rank = {o: i for i, o in enumerate(owners)}
    return sorted(events, key=lambda e: (rank[e["customer_id"] or e["anonymous_id"] or ""],
                                         e["occurred_at"]))


def expected(events: list[dict[str, Any]], watermark: int) -> dict[str, set[tuple[Any, ...]]]:
    defs = parse_definitions(yaml.safe_load(DEFINITIONS))
    out: dict[str, set[tuple[Any, ...]]] = {}
    for i in split(defs, events, set(JUNK_IDS), watermark)[0]:
        out.setdefault(i.customer, set()).add((
            i.instance_id, i.status, i.furthest, tuple(e.type for e in i.path),
            tuple(e.t for e in i.path), tuple((d.kind, d.t) for d in i.detours)))
    return out


def got(body: dict[str, Any]) -> set[tuple[Any, ...]]:
    def ms(iso: str) -> int:
        from datetime import datetime
        return round(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)

    return {(j["instance_id"], j["status"], j["furthest_step_index"],
             tuple(p["type"] for p in j["path"]), tuple(ms(p["at"]) for p in j["path"]),
             tuple((d["kind"], ms(d["at"])) for d in j["detours"])) for j in body["journeys"]}


def test_history_grouped_by_customer_ingested_into_up_is_exact(tmp_path: Path) -> None:
    events = traffic(seed=21, people=60)
    end = max(e["occurred_at"] for e in events) + 3 * 86_400_000
    history = tmp_path / "history.jsonl"
    history.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in
                                 [*grouped_by_customer(events, seed=4), *fillers(end)]))
    defs = tmp_path / "definitions.yaml"
    defs.write_text(DEFINITIONS)
    api, broker_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEYS_")}
    env.update({"JOURNEYS_BROKER_PORT": str(broker_port),
                "JOURNEYS_DEFINITIONS_PATH": str(defs)})
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "deploy.cli", "up", "--port", str(api), "--no-collector",
             "--data-dir", str(tmp_path / "up")], cwd=ROOT, env=env, stdout=out,
            stderr=subprocess.STDOUT)
    try:
        want = expected(events, end - 5 * 60_000)
        with httpx.Client(timeout=30) as http:
            deadline = time.monotonic() + 120
            while True:  # the stack is up once the API answers
                assert up.poll() is None, log.read_text()[-4000:]
                assert time.monotonic() < deadline, log.read_text()[-4000:]
                try:
                    if http.get(f"http://127.0.0.1:{api}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.5)
            ingest = subprocess.run(
                [sys.executable, "-m", "deploy.cli", "ingest", str(history), "-b",
                 f"127.0.0.1:{broker_port}", "--rejects", str(tmp_path)],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
            assert ingest.returncode == 0, ingest.stdout + ingest.stderr
            assert "sorted by event time" in ingest.stdout, ingest.stdout
            assert "late" not in ingest.stderr, ingest.stderr
            pending = dict(want)
            while pending:  # until every customer's journeys are the reference's
                assert up.poll() is None, log.read_text()[-4000:]
                for customer in list(pending):
                    r = http.get(f"http://127.0.0.1:{api}/v1/customers/{customer}/journeys",
                                 params={"limit": 500})
                    if r.status_code == 200 and got(r.json()) == pending[customer]:
                        del pending[customer]
                if pending and time.monotonic() > deadline + 120:
                    customer = sorted(pending)[0]
                    body = http.get(f"http://127.0.0.1:{api}/v1/customers/{customer}/journeys",
                                    params={"limit": 500}).json()
                    raise AssertionError(f"{len(pending)} customers differ, e.g. {customer}: "
                                         f"want {sorted(pending[customer])}\ngot "
                                         f"{sorted(got(body)) if 'journeys' in body else body}")
                time.sleep(1.0)
            late = http.get(f"http://127.0.0.1:{api}/v1/late-events").json()
            assert late["total"] == 0, late
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait(10)
