"""The worker's /healthz, /readyz and /metrics (stream.agents.web), served by a real
worker."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from journeys.settings import KafkaConfig
from journeys.timeutil import now_ms
from journeys.topics import ensure_journey_topics
from tests.integration.ingest_support import journey_events
from tests.integration.stream_support import produce, start_worker, stop_worker, worker_env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, repr(exc)


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def _wait_metrics(port: int, events: int, kafka: KafkaConfig, proc: Any, log: Path
                  ) -> dict[str, list[tuple[dict[str, str], float]]]:
    """/metrics once the validate stage has read every event with no lag left, and
    the later stages report lag too (their topics keep receiving watermark claims, so
    their lag moves: only its presence is awaited)."""
    stages = {kafka.raw_topic, kafka.by_identity_topic, kafka.by_customer_topic}
    deadline, samples = time.monotonic() + 90, {}
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        status, text = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200, text
        samples = _samples(text)
        read = sum(v for _l, v in samples.get("journeys_events_in_total", []))
        lag = samples.get("journeys_consumer_lag_records", [])
        raw = [v for labels, v in lag if labels["topic"] == kafka.raw_topic]
        if (read >= events and raw and not any(raw)
                and stages <= {labels["topic"] for labels, _v in lag}):
            return samples
        time.sleep(0.5)
    raise AssertionError(f"metrics never showed {events} events read with no lag: {samples}")


def test_worker_pages_and_json_logs(
    broker: Any, clickhouse_server: Any, unique_name: Callable[[str], str], tmp_path: Path,
) -> None:
    kafka = KafkaConfig(bootstrap_servers=broker.bootstrap_servers,
                        topic_prefix=unique_name("hz"), partitions=2)
    ensure_journey_topics(kafka)
    port = _free_port()
    env = worker_env(kafka, clickhouse_server.host, clickhouse_server.tcp_port,
                     unique_name("hz"), unique_name("hzw"),
                     WEB_ENABLED="true", WEB_BIND="127.0.0.1", WEB_PORT=str(port),
                     LOG_FORMAT="json")
    log = tmp_path / "worker.log"
    proc = start_worker(env, log)
    try:
        deadline, seen = time.monotonic() + 90, []
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            status, body = _get(f"http://127.0.0.1:{port}/readyz")
            seen.append(status)
            if status == 200:
                break
            if status == 503:
                assert "not ready" in body
            time.sleep(0.5)
        assert seen[-1] == 200, (seen[-5:], log.read_text()[-3000:])
        assert _get(f"http://127.0.0.1:{port}/healthz") == (200, '{"status":"ok"}')
        events = journey_events(unique_name("hze"), seed=3, customers=20,
                                start_ms=now_ms() - 3_600_000)
        produce(kafka, events)
        samples = _wait_metrics(port, len(events), kafka, proc, log)
        assert {"journeys_late_events_total", "journeys_event_time_lag_seconds",
                "journeys_flush_seconds_max"} <= set(samples), samples
        assert samples["journeys_customer_states"][0][1] > 0
        assert samples["journeys_flush_rows_total"][0][1] >= len(events)
        lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
        records = [json.loads(ln) for ln in lines]  # every line is a JSON object
        assert {"time", "level", "logger", "message"} <= set(records[0])
    finally:
        stop_worker(proc)
