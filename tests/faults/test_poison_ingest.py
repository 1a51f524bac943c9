"""The poison corpus through the collector (a real HTTP server on one keep-alive
connection) and the importer, onto the real broker: each bad item is refused with its
reason and dead-lettered, each valid neighbour lands on the raw topic, nothing answers
500 and no connection is reset."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import typer
from typer.testing import CliRunner

from deploy.commands import ingest as ingest_commands
from journeys.events import EventValidator, Touchpoint
from journeys.settings import CollectorSettings
from journeys.timeutil import now_ms
from tests.faults.corpus import poison, valid
from tests.faults.report import FaultFigures
from tests.integration.ingest_support import free_port, kafka_config, read_topic, serve_collector


def _json_or_none(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _dead_letter_codes(bootstrap: str, topic: str, expected: int) -> Counter[str]:
    letters = [orjson.loads(r.value) for r in read_topic(bootstrap, topic, expected=expected)]
    return Counter(lt["reason"].split(":", 1)[0] for lt in letters)


def test_the_collector_refuses_each_bad_item_and_keeps_its_neighbours(
        broker: Any, unique_name: Callable[[str], str], fault_figures: FaultFigures) -> None:
    prefix = unique_name("pc")
    kafka = kafka_config(broker.bootstrap_servers, prefix)
    bad = poison(prefix)
    good = valid(prefix, len(bad), now_ms() - 3_600_000)
    settings = CollectorSettings(kafka=kafka, port=free_port())
    item_codes: list[str] = []
    statuses: Counter[int] = Counter()
    with serve_collector(settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        for ok, (label, raw, code) in zip(good, bad, strict=True):
            item = _json_or_none(raw)
            if item is None and raw.strip() not in (b"null",):
                # not JSON: the whole body is refused, with a reason, never a 500
                r = client.post("/v1/events", content=raw,
                                headers={"Content-Type": "application/json"})
                statuses[r.status_code] += 1
                assert r.status_code == 400 and r.json()["detail"], (label, r.text)
                r = client.post("/v1/events", content=ok,
                                headers={"Content-Type": "application/json"})
                assert r.status_code == 202 and r.json()["accepted"] == 1, (label, r.text)
                continue
            body = b"[" + ok + b"," + raw + b"]"
            r = client.post("/v1/events", content=body,
                            headers={"Content-Type": "application/json"})
            statuses[r.status_code] += 1
            assert r.status_code == 202, (label, r.status_code, r.text[:300])
            doc = r.json()
            assert (doc["accepted"], doc["rejected"]) == (1, 1), (label, doc)
            assert doc["errors"][0]["index"] == 1
            got = doc["errors"][0]["reason"].split(":", 1)[0]
            assert got == code, (label, doc["errors"])
            item_codes.append(code)
        metrics = client.get("/metrics").text
    assert 500 not in statuses and 'status="500"' not in metrics
    raw_records = read_topic(kafka.bootstrap_servers, kafka.raw_topic, expected=len(good))
    validator = EventValidator()
    landed = [validator.parse(r.value) for r in raw_records]
    landed_ids = [t.event_id for t in landed if isinstance(t, Touchpoint)]
    want = {orjson.loads(v)["event_id"] for v in good}
    fault_figures(f"poison corpus through the collector ({len(bad)} bad items)",
                  acknowledged=len(good), lost=len(want - set(landed_ids)),
                  doubled=len(landed_ids) - len(set(landed_ids)),
                  note=f"HTTP statuses {dict(sorted(statuses.items()))}, no 500")
    assert all(isinstance(t, Touchpoint) for t in landed)
    assert sorted(t.event_id for t in landed if isinstance(t, Touchpoint)) == sorted(
        orjson.loads(v)["event_id"] for v in good)
    assert _dead_letter_codes(kafka.bootstrap_servers, kafka.dead_letter_topic,
                              len(item_codes)) == Counter(item_codes)


# The importer reads files whose cells have no JSON types: by its documented rules
# (docs/ingest.md "File import") a number in a text column is text, a time without a
# zone takes the file's zone, and a blank cell is a missing one.
IMPORT_ACCEPTS = {"event_id number", "type number", "customer_id number", "source number",
                  "no zone"}
IMPORT_CODES = {"empty event_id": "missing_field", "empty timestamp": "missing_field",
                "channel bool": "unknown_channel"}


def test_the_importer_dead_letters_each_bad_line_and_imports_the_rest(
        broker: Any, unique_name: Callable[[str], str], tmp_path: Path) -> None:
    prefix = unique_name("pi")
    kafka = kafka_config(broker.bootstrap_servers, prefix)
    corpus = [(label, raw, code) for label, raw, code in poison(prefix)
              if b"\n" not in raw and raw.strip()]  # one line each (JSONL)
    bad = [(label, raw, IMPORT_CODES.get(label, code)) for label, raw, code in corpus
           if label not in IMPORT_ACCEPTS]
    good = valid(prefix, len(corpus), now_ms() - 3_600_000)
    path = tmp_path / "events.jsonl"
    with path.open("wb") as f:
        for ok, (_label, raw, _code) in zip(good, corpus, strict=True):
            f.write(ok + b"\n" + raw + b"\n")
    app = typer.Typer()
    ingest_commands.register(app)
    result = CliRunner().invoke(app, ["ingest", str(path), "--rejects", str(tmp_path), "-b",
                                      kafka.bootstrap_servers, "--topic-prefix",
                                      kafka.topic_prefix], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    accepted = len(good) + len(corpus) - len(bad)
    assert (f"{2 * len(corpus):,} rows, {accepted:,} accepted, {len(bad):,} rejected"
            in result.output), result.output
    raw_records = read_topic(kafka.bootstrap_servers, kafka.raw_topic, expected=accepted)
    landed = {orjson.loads(r.value)["event_id"] for r in raw_records}
    assert len(raw_records) == accepted
    assert {orjson.loads(v)["event_id"] for v in good} <= landed
    codes = _dead_letter_codes(kafka.bootstrap_servers, kafka.dead_letter_topic, len(bad))
    assert codes == Counter(code for _l, _r, code in bad), codes
