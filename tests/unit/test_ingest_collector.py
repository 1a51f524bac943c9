"""The collector's HTTP contract (auth, limits, parsing, per-item reasons, CORS, 503).

The producer here is a recording stand-in so each HTTP rule is checked in isolation;
tests/integration/test_ingest_collector.py runs the same app against the real broker.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from ingest.collector import create_collector_app
from ingest.producer import BrokerUnavailable, Delivery, TouchpointProducer
from journeys import envvars
from journeys.events import Rejection, Touchpoint
from journeys.settings import CollectorSettings, KafkaConfig

EVENT = {"event_id": "e1", "type": "product_view", "channel": "web",
         "occurred_at": "2026-03-01T10:00:00Z", "anonymous_id": "a1"}


class RecordingProducer(TouchpointProducer):
    """Records what would be produced; `down` makes it refuse like a dead broker."""

    def __init__(self) -> None:
        super().__init__(KafkaConfig(bootstrap_servers="127.0.0.1:9"))
        self.sent: list[Touchpoint] = []
        self.dead: list[Rejection] = []
        self.down = False
        self.fail_delivery = False

    def ensure_available(self, count: int = 0) -> None:
        if self.down:
            raise BrokerUnavailable("broker down", 3.2)

    def send_batch(self, touchpoints: Sequence[Touchpoint],
                   rejections: Sequence[Rejection] = (), **_: Any
                   ) -> tuple[Delivery, list[Rejection]]:
        self.ensure_available()
        delivery = Delivery(1 if self.fail_delivery else 0)
        if self.fail_delivery:
            delivery._record(0, TimeoutError("expired"))
            return delivery, []
        self.sent.extend(touchpoints)
        self.dead.extend(rejections)
        return delivery, []

    def ready(self) -> bool:
        return not self.down


@pytest.fixture
def producer() -> RecordingProducer:
    return RecordingProducer()


def client_for(producer: RecordingProducer, **settings: Any) -> Iterator[TestClient]:
    app = create_collector_app(CollectorSettings(**settings), producer)
    with TestClient(app) as client:
        yield client


@pytest.fixture
def client(producer: RecordingProducer) -> Iterator[TestClient]:
    yield from client_for(producer)


@pytest.fixture
def keyed(producer: RecordingProducer) -> Iterator[TestClient]:
    yield from client_for(producer, write_keys={"web": "wk-web", "pos": "wk-pos"})


def test_single_event_batch_and_wrapped_batch(client: TestClient,
                                              producer: RecordingProducer) -> None:
    for body, n in ((EVENT, 1), ([EVENT, {**EVENT, "event_id": "e2"}], 2),
                    ({"batch": [EVENT] * 3}, 3)):
        r = client.post("/v1/events", json=body)
        assert r.status_code == 202
        assert r.json() == {"accepted": n, "rejected": 0, "errors": []}
    assert len(producer.sent) == 6
    assert producer.sent[0].identity_key == "a1"


def test_per_item_reasons_and_dead_letters(client: TestClient,
                                           producer: RecordingProducer) -> None:
    batch = [EVENT, {**EVENT, "event_id": "bad-1", "channel": "fax"}, "oops",
             {**EVENT, "event_id": "bad-2", "anonymous_id": None}]
    r = client.post("/v1/events", json=batch)
    assert r.status_code == 202
    body = r.json()
    assert (body["accepted"], body["rejected"]) == (1, 3)
    assert [(e["index"], e["event_id"]) for e in body["errors"]] == [
        (1, "bad-1"), (2, None), (3, "bad-2")]
    assert body["errors"][0]["reason"].startswith("unknown_channel:")
    assert body["errors"][1]["reason"] == "not_an_object: got str"
    assert body["errors"][2]["reason"].startswith("missing_identity:")
    assert [r.event_id for r in producer.dead] == ["bad-1", None, "bad-2"]
    assert orjson.loads(producer.dead[0].raw)["channel"] == "fax"


@pytest.mark.parametrize(("body", "detail"), [
    (b"", "empty body"), (b"{nope", "not valid JSON"), (b"[]", "empty batch"),
    (b"42", "got int")])
def test_bad_bodies_are_400(client: TestClient, body: bytes, detail: str) -> None:
    r = client.post("/v1/events", content=body)
    assert r.status_code == 400 and detail in r.json()["detail"]


def test_size_limits_are_413(producer: RecordingProducer) -> None:
    for client in client_for(producer, max_batch=5, max_body_bytes=2048):
        assert client.post("/v1/events", json=[EVENT] * 6).status_code == 413
        big = orjson.dumps({**EVENT, "properties": {"x": "y" * 4000}})
        r = client.post("/v1/events", content=big)
        assert r.status_code == 413 and "limit of 2048" in r.json()["detail"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
            yield big[:1500]
            yield big[1500:]

        assert client.post("/v1/events", content=chunks()).status_code == 413
        assert client.post("/v1/events", json=[EVENT] * 5).status_code == 202


def test_compressed_bodies_are_415(client: TestClient) -> None:
    r = client.post("/v1/events", content=b"x", headers={"Content-Encoding": "gzip"})
    assert r.status_code == 415


def test_write_keys(keyed: TestClient, producer: RecordingProducer) -> None:
    assert keyed.post("/v1/events", json=EVENT).status_code == 401
    r = keyed.post("/v1/events", json=EVENT, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    basic = base64.b64encode(b"wk-web:").decode()
    for headers, params in (({"Authorization": "Bearer wk-web"}, {}),
                            ({"Authorization": f"Basic {basic}"}, {}),
                            ({"X-Write-Key": "wk-web"}, {}),
                            ({}, {"write_key": "wk-web"})):
        r = keyed.post("/v1/events", json=EVENT, headers=headers, params=params)
        assert r.status_code == 202, (headers, params)
    assert {tp.source for tp in producer.sent} == {"web"}  # stamped from the key
    r = keyed.post("/v1/events", json={**EVENT, "source": "pos"},
                   headers={"X-Write-Key": "wk-web"})
    assert r.status_code == 403 and "'web'" in r.json()["detail"]
    r = keyed.post("/v1/events", json={**EVENT, "source": "pos"},
                   headers={"X-Write-Key": "wk-pos"})
    assert r.status_code == 202


def test_broker_down_is_503_with_retry_after(client: TestClient,
                                             producer: RecordingProducer) -> None:
    producer.down = True
    r = client.post("/v1/events", json=EVENT)
    assert r.status_code == 503 and r.headers["retry-after"] == "4"
    assert client.get("/readyz").status_code == 503
    producer.down, producer.fail_delivery = False, True
    r = client.post("/v1/events", json=EVENT)
    assert r.status_code == 503 and "resend" in r.json()["detail"]
    producer.fail_delivery = False
    assert client.post("/v1/events", json=EVENT).status_code == 202
    assert client.get("/readyz").status_code == 200


def test_cors_preflight(producer: RecordingProducer) -> None:
    for client in client_for(producer, cors_origins=("https://shop.example",)):
        pre = {"Access-Control-Request-Method": "POST",
               "Access-Control-Request-Headers": "authorization,content-type"}
        ok = client.options("/v1/events", headers={"Origin": "https://shop.example", **pre})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://shop.example"
        assert "Authorization" in ok.headers["access-control-allow-headers"]
        other = client.options("/v1/events", headers={"Origin": "https://evil.example", **pre})
        assert other.status_code == 400
        r = client.post("/v1/events", json=EVENT, headers={"Origin": "https://shop.example"})
        assert r.headers["access-control-allow-origin"] == "https://shop.example"


def test_health_metrics_and_openapi(client: TestClient) -> None:
    client.post("/v1/events", json=[EVENT, {"event_id": "x"}])
    assert client.get("/healthz").json() == {"status": "ok"}
    text = client.get("/metrics").text
    assert "journeys_collector_events_accepted_total 1.0" in text
    assert "journeys_collector_events_rejected_total 1.0" in text
    assert 'journeys_collector_requests_total{status="202"} 1.0' in text
    spec = client.get("/openapi.json").json()
    assert "requestBody" in spec["paths"]["/v1/events"]["post"]


def test_collector_env_vars_map_to_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(envvars.COLLECTOR_WRITE_KEYS, '{"web": "k1"}')
    monkeypatch.setenv(envvars.COLLECTOR_CORS_ORIGINS, '["https://a.example"]')
    monkeypatch.setenv(envvars.COLLECTOR_MAX_BODY_BYTES, "4096")
    monkeypatch.setenv(envvars.COLLECTOR_MAX_BATCH, "50")
    monkeypatch.setenv(envvars.COLLECTOR_MAX_PENDING, "77")
    monkeypatch.setenv(envvars.COLLECTOR_DELIVERY_TIMEOUT, "2.5")
    s = CollectorSettings.build()
    assert s.write_keys["web"].get_secret_value() == "k1"
    assert s.cors_origins == ("https://a.example",)
    assert (s.max_body_bytes, s.max_batch, s.max_pending, s.delivery_timeout_s) == (
        4096, 50, 77, 2.5)


def test_an_internal_error_is_a_counted_500_and_the_connection_lives(
        client: TestClient, producer: RecordingProducer) -> None:
    def broken(*_: Any, **__: Any) -> Any:
        raise RecursionError("a bug of ours")

    real = producer.send_batch
    producer.send_batch = broken  # type: ignore[method-assign]
    r = client.post("/v1/events", json=EVENT)
    assert r.status_code == 500 and "RecursionError" in r.json()["detail"]
    producer.send_batch = real  # type: ignore[method-assign]
    assert client.post("/v1/events", json=EVENT).status_code == 202
    text = client.get("/metrics").text
    assert 'journeys_collector_requests_total{status="500"} 1.0' in text
    assert "500" in client.get("/openapi.json").json()["paths"]["/v1/events"]["post"][
        "responses"]


def test_a_spooled_collector_refuses_until_its_gate_opens(
        producer: RecordingProducer, tmp_path: Any) -> None:
    from ingest.spool import open_gate

    for client in client_for(producer, spool_dir=tmp_path / "spool"):
        for _ in range(2):
            r = client.post("/v1/events", json=EVENT)
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert "starting" in r.json()["detail"]
            assert client.get("/readyz").status_code == 503
        assert producer.sent == []
        open_gate(tmp_path / "spool")  # the launcher: spool replayed, worker running
        assert client.post("/v1/events", json=EVENT).status_code == 202
        assert client.get("/readyz").status_code == 200
        assert [t.event_id for t in producer.sent] == ["e1"]


def test_spool_dir_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(envvars.COLLECTOR_SPOOL_DIR, "/tmp/spool9")
    assert str(CollectorSettings.build().spool_dir) == "/tmp/spool9"
