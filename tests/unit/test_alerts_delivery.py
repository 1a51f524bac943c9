"""Webhook payloads, signing and the dispatcher's retry / dead-letter / spool behaviour.

HTTP is simulated with httpx.MockTransport here; tests/integration/test_alerts_e2e.py
uses a real receiver on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from journeys.settings import AlertingConfig
from stream.agents.alerting import webhooks
from stream.agents.alerting.delivery import (
    DeadLetter,
    RetryPolicy,
    WebhookDispatcher,
    WebhookTarget,
)
from stream.agents.alerting.service import AlertSink, AlertSinkError, alert_message
from stream.engine.alert_verdict import AlertRecord, alert_id

SECRET = b"s3cret"
FAST = RetryPolicy(max_attempts=4, initial_s=0.001, max_s=0.005)


def rec(ws: int = 1_704_153_600_000, kind: str = "fired", channel: str = "app") -> AlertRecord:
    return AlertRecord(
        alert_id=alert_id("purchase", "payment_details", channel, ws), kind=kind,  # type: ignore[arg-type]
        journey="purchase", step="payment_details", step_index=4, channel=channel,
        window_start_ms=ws, window_end_ms=ws + 3_600_000, horizon_ms=1_800_000,
        population=80, dropped=60, rate=0.75, baseline=0.12, baseline_windows=24,
        threshold=0.15, confidence=0.999, p_value=1e-30,
        resolves=None if kind == "fired" else "abc",
    )


def test_sign_and_verify() -> None:
    body = webhooks.render(rec(), "generic")
    h = webhooks.headers("id1", "fired", body, SECRET, now=1000)
    ts, sig = h[webhooks.TIMESTAMP_HEADER], h[webhooks.SIGNATURE_HEADER]
    assert sig.startswith("sha256=") and ts == "1000"
    assert webhooks.verify(SECRET, body, ts, sig, now=1100)
    assert not webhooks.verify(SECRET, body + b" ", ts, sig, now=1100)  # tampered body
    assert not webhooks.verify(b"other", body, ts, sig, now=1100)
    assert not webhooks.verify(SECRET, body, ts, sig, now=1000 + 301)  # replayed later
    assert not webhooks.verify(SECRET, body, "x", sig, now=1000)
    assert not webhooks.verify(SECRET, body, None, sig)
    assert webhooks.SIGNATURE_HEADER not in webhooks.headers("id1", "fired", body, None)


def test_payloads() -> None:
    generic = orjson.loads(webhooks.render(rec(), "generic"))
    assert generic["type"] == "journeys.dropoff.fired" and generic["version"] == 1
    assert generic["alert"]["alert_id"] == rec().alert_id
    assert generic["window_start"] == "2024-01-02T00:00:00.000Z"
    assert "75.0% dropped (60/80) vs baseline 12.0%" in generic["summary"]
    slack = orjson.loads(webhooks.render(rec(kind="recovered"), "slack"))
    assert slack["text"].startswith(":white_check_mark: Recovered: purchase / payment_details")
    assert [b["type"] for b in slack["blocks"]] == ["section", "section", "context"]


Handler = Callable[[httpx.Request], httpx.Response]


def dispatcher(handler: Handler, letters: list[DeadLetter], **kw: Any) -> WebhookDispatcher:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    kw.setdefault("targets", [WebhookTarget("http://127.0.0.1:9/hook")])
    kw.setdefault("policy", FAST)
    return WebhookDispatcher(on_dead_letter=letters.append, secret=SECRET, client=client,
                             rng=random.Random(1), **kw)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_delivers_signed_and_retries_transient_failures() -> None:
    seen: list[httpx.Request] = []
    answers = iter([503, 429, 200])

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        if len(seen) == 1:
            raise httpx.ConnectError("refused")
        return httpx.Response(next(answers), headers={"Retry-After": "0"})

    letters: list[DeadLetter] = []

    async def go() -> WebhookDispatcher:
        async with dispatcher(handler, letters) as d:
            assert await d.submit([rec()]) == 1
            await d.join()
            return d

    d = run(go())
    assert len(seen) == 4 and letters == []
    assert (d.stats.delivered, d.stats.retries) == (1, 3)
    last = seen[-1]
    assert last.headers[webhooks.ALERT_ID_HEADER] == rec().alert_id
    assert webhooks.verify(SECRET, last.content, last.headers[webhooks.TIMESTAMP_HEADER],
                           last.headers[webhooks.SIGNATURE_HEADER])


def test_client_errors_and_exhausted_retries_are_dead_lettered() -> None:
    letters: list[DeadLetter] = []
    calls = {"bad": 0, "down": 0}

    def handler(req: httpx.Request) -> httpx.Response:
        which = "bad" if req.url.path == "/bad" else "down"
        calls[which] += 1
        return httpx.Response(404 if which == "bad" else 500)

    targets = [WebhookTarget("http://127.0.0.1:9/bad"),
               WebhookTarget("https://hooks.example/services/T0/B0/SECRET", "slack")]

    async def go() -> None:
        async with dispatcher(handler, letters, targets=targets) as d:
            await d.submit([rec()])
            await d.join()

    run(go())
    assert calls == {"bad": 1, "down": FAST.max_attempts}
    by = {dl.reason.split(":")[0].split(" (")[0]: dl for dl in letters}
    assert set(by) == {"HTTP 404", "gave up"}
    assert by["gave up"].attempts == FAST.max_attempts
    assert "SECRET" not in by["gave up"].target and "SECRET" not in by["gave up"].rejection.reason
    assert orjson.loads(by["HTTP 404"].to_bytes())["stage"] == "alert_webhook"
    assert by["HTTP 404"].rejection.event_id == rec().alert_id


def test_duplicates_skipped_and_queue_bound() -> None:
    letters: list[DeadLetter] = []
    gate = asyncio.Event()

    async def go() -> WebhookDispatcher:
        async def handler(req: httpx.Request) -> httpx.Response:
            await gate.wait()
            return httpx.Response(200)

        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        d = WebhookDispatcher([WebhookTarget("http://127.0.0.1:9/h")], letters.append,
                              client=client, queue_size=2, policy=FAST)
        async with d:
            records = [rec(ws=i * 3_600_000) for i in range(5)]
            await d.submit(records[:1])
            await asyncio.sleep(0.01)  # the worker holds the first one
            assert await d.submit(records) == 2  # 1 duplicate, 2 queued, 2 overflow
            gate.set()
            await d.join()
        return d

    d = run(go())
    assert d.stats.delivered == 3 and d.stats.skipped_duplicates == 1
    assert [dl.reason for dl in letters] == ["delivery queue full"] * 2


def test_shutdown_without_spool_dead_letters_and_with_spool_resumes(tmp_path: Path) -> None:
    letters: list[DeadLetter] = []
    received: list[bytes] = []

    def down(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    def up(req: httpx.Request) -> httpx.Response:
        received.append(req.content)
        return httpx.Response(204)

    slow = RetryPolicy(max_attempts=50, initial_s=5, max_s=5)

    async def first(spool: Path | None) -> None:
        d = dispatcher(down, letters, policy=slow, spool_dir=spool)
        async with d:
            await d.submit([rec(), rec(kind="recovered", ws=0)])
            await asyncio.sleep(0.05)
            await d.stop(drain_s=0.05)

    run(first(None))
    assert sorted(dl.reason for dl in letters) == ["not delivered before shutdown"] * 2
    letters.clear()
    run(first(tmp_path))
    assert letters == [] and len(list(tmp_path.glob("*.json"))) == 2  # kept for the next start

    async def second() -> None:
        async with dispatcher(up, letters, spool_dir=tmp_path, targets=[]) as d:
            await d.join()

    run(second())
    assert len(received) == 2 and list(tmp_path.glob("*.json")) == []
    assert orjson.loads(received[0])["alert"]["alert_id"] == rec().alert_id  # oldest first


def test_failing_dead_letter_sink_keeps_the_spool(tmp_path: Path) -> None:
    def broken(_: DeadLetter) -> None:
        raise RuntimeError("kafka down")

    async def go() -> None:
        client = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(400)))
        d = WebhookDispatcher([WebhookTarget("http://127.0.0.1:9/h")], broken, client=client,
                              spool_dir=tmp_path, policy=FAST)
        async with d:
            await d.submit([rec()])
            await d.join()

    run(go())
    assert len(list(tmp_path.glob("*.json"))) == 1


def test_from_settings_and_policy() -> None:
    cfg = AlertingConfig(webhook_urls=("http://127.0.0.1:1/a",),  # type: ignore[arg-type]
                         slack_webhook_urls="https://hooks.example/x",  # type: ignore[arg-type]
                         signing_secret="k", max_attempts=3)  # type: ignore[arg-type]
    d = WebhookDispatcher.from_settings(cfg, on_dead_letter=lambda _: None)
    assert [(t.kind, t.url) for t in d.targets] == [
        ("generic", "http://127.0.0.1:1/a"), ("slack", "https://hooks.example/x")]
    assert d.secret == b"k" and d.policy.max_attempts == 3
    rng = random.Random(0)
    p = RetryPolicy(max_attempts=9, initial_s=1, max_s=8)
    for attempt, cap in ((1, 1), (2, 2), (3, 4), (4, 8), (7, 8)):
        assert cap / 2 <= p.delay(attempt, rng) <= cap
    assert p.delay(1, rng, retry_after=30) == 8  # Retry-After honoured, capped
    with pytest.raises(ValueError):
        WebhookTarget("ftp://x/y")


def test_sink_fans_out_and_reports_failures() -> None:
    published: list[tuple[bytes, bytes]] = []
    stored: list[Any] = []

    async def publish(k: bytes, v: bytes) -> None:
        published.append((k, v))

    def broken_store(rows: Any) -> None:
        raise RuntimeError("warehouse down")

    async def go() -> None:
        await AlertSink(store=stored.extend, publish=publish).emit([rec()])
        with pytest.raises(AlertSinkError, match="warehouse down"):
            await AlertSink(store=broken_store, publish=publish).emit([rec()])

    run(go())
    assert stored[0]["alert_id"] == rec().alert_id
    assert published[0] == alert_message(rec()) and len(published) == 2
    assert AlertRecord.from_dict(orjson.loads(published[0][1])) == rec()
