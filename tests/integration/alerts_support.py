"""Helpers for the alerting integration tests and bench: incident traffic and a webhook receiver.

Expected alerts come from the reference semantics: a naive batch stitch (every anonymous
id linked to the customer id it ever appears with), tests/reference/journeys_ref.py
instances, then one "step reached" observation per reached step (also replayed in
event-time order for in-process evaluator tests); `Traffic.raw` holds the generated wire
events for runs through a real worker.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
from aiohttp import web

from ingest.generator import GeneratorConfig, generate_events
from ingest.stories import Story
from journeys.definitions import Definitions, load_definitions
from journeys.events import event_value
from journeys.timeutil import datetime_to_ms
from stream.agents.alerting import webhooks
from stream.engine.alert_verdict import AlertRecord, alert_id
from stream.engine.dropoff import DropoffEvaluator
from stream.engine.identity import JUNK_IDS
from stream.engine.outputs import StepReached
from tests.reference import alerts_ref
from tests.reference.journeys_ref import Ev, Instance
from tests.reference.stitching_ref import split

HOUR = 3_600_000
START_MS = datetime_to_ms(datetime(2024, 3, 4, tzinfo=UTC))


@dataclass
class Traffic:
    definitions: Definitions
    start_ms: int
    incident: tuple[int, int]  # [start, end) epoch ms
    channel: str
    step: str
    instances: list[Instance]
    observations: list[StepReached]  # in event-time order
    final_watermark: int
    expected: list[alerts_ref.RefAlert]  # of the final stitching (observations replayed)
    events: list[Ev] = field(default_factory=list)  # stitched, in event-time order
    raw: list[dict[str, Any]] = field(default_factory=list)  # wire events, as generated
    # what the stream says: each window as known at its final point (links made before)
    streamed: list[alerts_ref.RefAlert] = field(default_factory=list)

    def expected_ids(self, *, streamed: bool = False) -> dict[str, str]:
        """alert_id -> kind of every alert the reference says must be delivered
        (`streamed`: by a pipeline that stitches as it goes, `streamed_alerts`)."""
        return {alert_id(a.journey, a.step, a.channel, a.window_start): a.kind
                for a in (self.streamed if streamed else self.expected)}


def stitch(events: list[dict[str, Any]]) -> list[Ev]:
    link: dict[str, str] = {}
    for e in events:
        if e.get("customer_id") and e.get("anonymous_id"):
            link.setdefault(e["anonymous_id"], e["customer_id"])
    out = []
    for e in events:
        who = e.get("customer_id") or link.get(e["anonymous_id"]) or f"anon:{e['anonymous_id']}"
        t = e["occurred_at"]
        if not isinstance(t, int):
            t = datetime_to_ms(datetime.fromisoformat(t.replace("Z", "+00:00")))
        out.append(Ev(e["event_id"], who, e["type"], e["channel"], t,
                      event_value(e.get("properties") or {})[0]))
    return out


def observations(instances: list[Instance]) -> list[StepReached]:
    obs = [StepReached(i.journey, i.instance_id, k, t, ch)
           for i in instances for k, (t, ch) in i.reached.items()]
    obs.sort(key=lambda o: (o.reached_at_ms, o.instance_id, o.step_index))
    return obs


def incident_traffic(*, seed: int = 7, hours: int = 20, incident_at_h: int = 14,
                     incident_h: int = 2, channel: str = "app",
                     visitors_per_hour: float = 900) -> Traffic:
    """Steady traffic with a payment incident on one channel (ingest.generator story)."""
    defs = load_definitions()
    story = Story("payment_incident", incident_at_h * HOUR, incident_h * HOUR, share=0.85,
                  channel=channel)
    cfg = GeneratorConfig(seed=seed, start_ms=START_MS, duration_ms=hours * HOUR,
                          visitors_per_hour=visitors_per_hour, daily_cycle=False,
                          stories=(story,))
    raw = list(generate_events(cfg))
    events = stitch(raw)
    instances, _sessions = split(defs, raw, set(JUNK_IDS), None)
    final = max(e.t for e in events)
    expected = [a for d in defs.journeys for a in alerts_ref.alerts(d, instances, final)]
    start = START_MS + incident_at_h * HOUR
    return Traffic(defs, START_MS, (start, start + incident_h * HOUR), channel,
                   story.target_step, instances, observations(instances), final, expected,
                   sorted(events, key=lambda e: (e.t, e.event_id)), raw,
                   streamed_alerts(defs, raw, final))


def streamed_alerts(defs: Definitions, raw: list[dict[str, Any]], watermark: int
                    ) -> list[alerts_ref.RefAlert]:
    """Alerts of windows final at `watermark` as the stream evaluates them: each window
    counts the instances as stitched with the links made before its final point
    (docs/alerting.md "Stitching and observations")."""
    def at(events: list[dict[str, Any]], cutoff: int) -> list[Instance]:
        return split(defs, events, set(JUNK_IDS), watermark, links_before=cutoff)[0]

    return [a for d in defs.journeys for a in alerts_ref.alerts(
        d, [], watermark, alerts_ref.windows_as_of(d, raw, set(JUNK_IDS), watermark, at))]


def replay(ev: DropoffEvaluator, obs: list[StepReached], *, lateness_ms: int = 300_000,
           every: int = 500) -> Iterator[list[AlertRecord]]:
    """Feed observations in order; every `every`, advance to newest - lateness; yield records."""
    newest = None
    for i, o in enumerate(obs, 1):
        newest = o.reached_at_ms if newest is None else max(newest, o.reached_at_ms)
        ev.observe(o)
        if i % every == 0:
            records = ev.advance(newest - lateness_ms)
            if records:
                yield records


class _EngineEvent(NamedTuple):
    event_id: str
    type: str
    channel: str
    occurred_at: int


def engine_replay(
    defs: Definitions, events: list[Ev], final_watermark: int, *,
    lateness_ms: int = 300_000, batch: int = 1000,
) -> Iterator[tuple[int, list[StepReached]]]:
    """Drive stream.engine.journeys like a worker: batches per customer, the partition
    watermark, timers for idle customers; yield (watermark, observations emitted)."""
    from stream.engine.journeys import CustomerJourneys, JourneyEngine

    engine = JourneyEngine(defs.journeys, definitions_version=defs.version)
    states: dict[str, CustomerJourneys] = {}
    wake: dict[str, int] = {}

    def step(by_customer: dict[str, list[_EngineEvent]], wm: int) -> list[StepReached]:
        out: list[StepReached] = []
        due = set(by_customer) | {c for c, w in wake.items() if w <= wm}
        for c in sorted(due):
            st = states.setdefault(c, CustomerJourneys())
            out.extend(engine.apply(c, st, by_customer.get(c, ()), watermark=wm).reached)
            w = engine.wake_at(st)
            if w is None:
                wake.pop(c, None)
            else:
                wake[c] = w
        return out

    for i in range(0, len(events), batch):
        chunk = events[i:i + batch]
        by_customer: dict[str, list[_EngineEvent]] = {}
        for e in chunk:
            by_customer.setdefault(e.customer, []).append(
                _EngineEvent(e.event_id, e.type, e.channel, e.t))
        wm = chunk[-1].t - lateness_ms
        yield wm, step(by_customer, wm)
    yield final_watermark, step({}, final_watermark)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.perf_counter() on arrival


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1 that records requests and checks signatures.

    `fail_first`: answer that many requests with 503 before accepting (a flaky receiver).
    """

    secret: bytes
    port: int = 0
    fail_first: int = 0
    received: list[Received] = field(default_factory=list)
    rejected: int = 0
    bad_signatures: int = 0

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._arrived = asyncio.Condition()
        return self

    async def stop(self) -> None:
        await self._runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.fail_first > 0:
            self.fail_first -= 1
            self.rejected += 1
            return web.Response(status=503, headers={"Retry-After": "0"})
        if not webhooks.verify(self.secret, body, request.headers.get(webhooks.TIMESTAMP_HEADER),
                               request.headers.get(webhooks.SIGNATURE_HEADER)):
            self.bad_signatures += 1
            return web.Response(status=401)
        self.received.append(Received(request.path, dict(request.headers), body,
                                      time.perf_counter()))
        async with self._arrived:
            self._arrived.notify_all()
        return web.Response(status=204)

    async def wait_for(self, n: int, timeout: float = 30.0) -> None:
        async def enough() -> None:
            async with self._arrived:
                await self._arrived.wait_for(lambda: len(self.received) >= n)

        await asyncio.wait_for(enough(), timeout)


class ThreadedReceiver:
    """A `Receiver` on its own event loop thread, for tests that block (subprocess
    workers, polling the warehouse). `received` is appended to from that thread."""

    def __init__(self, secret: bytes, *, port: int = 0, fail_first: int = 0) -> None:
        self.receiver = Receiver(secret, port=port, fail_first=fail_first)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> ThreadedReceiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.receiver.start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.receiver.stop(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    @property
    def received(self) -> list[Received]:
        return list(self.receiver.received)

    def url(self, path: str) -> str:
        return self.receiver.url(path)

    def wait_until(self, done: Callable[[list[Received]], bool], timeout: float,
                   what: str = "") -> list[Received]:
        deadline = time.monotonic() + timeout
        while not done(got := self.received):
            if time.monotonic() > deadline:
                raise TimeoutError(f"receiver: {what} not after {timeout}s ({len(got)} received)")
            time.sleep(0.05)
        return got


def produce_events(bootstrap_servers: str, topic: str, events: Sequence[dict[str, Any]]) -> None:
    """Wire events to the raw topic, keyed by customer (else anonymous) id, acks=1."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap_servers, acks=1, linger_ms=5)
    try:
        for e in events:
            key = (e.get("customer_id") or e.get("anonymous_id") or "").encode() or None
            producer.send(topic, key=key, value=orjson.dumps(e))
        producer.flush(60)
    finally:
        producer.close()


def occurred_ms(event: dict[str, Any]) -> int:
    t = event["occurred_at"]
    if isinstance(t, int):
        return t
    return datetime_to_ms(datetime.fromisoformat(t.replace("Z", "+00:00")))
