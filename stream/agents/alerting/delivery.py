"""Async webhook delivery: at least once, retried with backoff, never silently lost.

Why this shape: a receiver that is down must not delay the stream or other receivers,
so each target has its own bounded queue and worker task; the stream only enqueues.
Each delivery is retried on network errors, timeouts, 408/425/429 and 5xx with
exponential backoff and jitter (honouring Retry-After), up to `max_attempts`; other
answers (4xx: wrong URL or secret) and exhausted attempts go to the dead-letter
callback, as does anything that finds its queue full or is still pending at shutdown
without a spool. With `spool_dir`, every pending delivery is also a file until it is
delivered or dead-lettered, so a restart resumes it. Receivers dedupe on the alert id.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import logging
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from journeys.events import Rejection
from journeys.settings import AlertingConfig
from journeys.timeutil import now_ms
from stream.agents.alerting import webhooks
from stream.agents.alerting.webhooks import PayloadKind
from stream.engine.alert_verdict import AlertRecord

log = logging.getLogger(__name__)

DEAD_LETTER_STAGE = "alert_webhook"
_RETRY_STATUS = frozenset({408, 425, 429})
_REMEMBER = 10_000  # (alert, target) pairs remembered as done, to skip re-emissions


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    url: str
    kind: PayloadKind = "generic"

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"webhook URL must be http(s)://host/...: {self.display}")

    @property
    def display(self) -> str:
        """Safe for logs: Slack-style URLs carry their secret in the path."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}/… ({self.kind})"


@dataclass(slots=True)
class Delivery:
    target: WebhookTarget
    alert_id: str
    alert_kind: str
    body: bytes
    attempts: int = 0
    last_error: str = ""

    @property
    def key(self) -> str:
        url = hashlib.blake2b(self.target.url.encode(), digest_size=6).hexdigest()
        return f"{self.alert_id}-{url}"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An undeliverable alert; fits warehouse.writers.write_dead_letters (DeadLetterLike)."""

    target: str  # WebhookTarget.display, never the secret URL
    alert_id: str
    alert_kind: str
    body: bytes
    attempts: int
    reason: str
    received_at_ms: int
    stage: str = DEAD_LETTER_STAGE

    @property
    def rejection(self) -> Rejection:
        return Rejection(f"{self.reason} [{self.target}, {self.attempts} attempts]",
                         self.body, self.alert_id)

    def to_bytes(self) -> bytes:
        """The dead-letter topic message (same shape as other stages' dead letters)."""
        return self.rejection.to_dead_letter(stage=self.stage, received_at_ms=self.received_at_ms)


DeadLetterSink = Callable[[DeadLetter], Awaitable[None] | None]
DeliveredHook = Callable[[Delivery, int], None]


@dataclass(slots=True)
class DeliveryStats:
    delivered: int = 0
    retries: int = 0
    dead_lettered: int = 0
    skipped_duplicates: int = 0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 8
    initial_s: float = 0.5
    max_s: float = 60.0

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Exponential with "equal jitter": half fixed, half random, so retries spread out."""
        cap = min(self.max_s, self.initial_s * 2 ** (attempt - 1))
        wait = cap / 2 + rng.uniform(0, cap / 2)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_s))
        return wait


@dataclass(slots=True)
class _Lane:
    queue: asyncio.Queue[Delivery]
    task: asyncio.Task[None] | None = None
    current: Delivery | None = None


@dataclass
class WebhookDispatcher:
    """Enqueue alert records for every target; workers POST them. Use `async with`."""

    targets: Sequence[WebhookTarget]
    on_dead_letter: DeadLetterSink
    secret: bytes | None = None
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_s: float = 10.0
    queue_size: int = 10_000
    spool_dir: Path | None = None
    on_delivered: DeliveredHook | None = None
    client: httpx.AsyncClient | None = None
    rng: random.Random = field(default_factory=random.Random)
    stats: DeliveryStats = field(default_factory=DeliveryStats)

    def __post_init__(self) -> None:
        self._lanes: dict[str, _Lane] = {}
        self._pending: set[str] = set()
        self._done: OrderedDict[str, None] = OrderedDict()
        self._owns_client = self.client is None
        self._started = False

    @classmethod
    def from_settings(cls, cfg: AlertingConfig, *, on_dead_letter: DeadLetterSink,
                      spool_dir: Path | None = None, **kw: Any) -> WebhookDispatcher:
        targets = [WebhookTarget(u, "generic") for u in cfg.webhook_urls]
        targets += [WebhookTarget(u, "slack") for u in cfg.slack_webhook_urls]
        secret = cfg.signing_secret.get_secret_value().encode() or None
        policy = RetryPolicy(cfg.max_attempts, cfg.backoff_initial_s, cfg.backoff_max_s)
        return cls(targets, on_dead_letter, secret=secret, policy=policy,
                   timeout_s=cfg.timeout_s, queue_size=cfg.queue_size, spool_dir=spool_dir, **kw)

    async def __aenter__(self) -> WebhookDispatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Open the HTTP client and resume spooled deliveries (a previous run's)."""
        if self._started:
            return
        self._started = True
        if self.client is None:
            self.client = httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False)
        if self.spool_dir is not None:
            for d in await asyncio.to_thread(_read_spool, self.spool_dir):
                await self._enqueue(d, spool=False)

    async def submit(self, records: Iterable[AlertRecord]) -> int:
        """Queue each record for every target; returns deliveries queued. Never waits on HTTP."""
        if not self._started:
            await self.start()
        queued = 0
        for r in records:
            for t in self.targets:
                d = Delivery(t, r.alert_id, r.kind, webhooks.render(r, t.kind))
                queued += await self._enqueue(d, spool=True)
        return queued

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def join(self) -> None:
        """Wait until everything queued so far is delivered or dead-lettered."""
        for lane in list(self._lanes.values()):
            await lane.queue.join()

    async def stop(self, drain_s: float = 5.0) -> None:
        """Drain for up to `drain_s`, then stop; what is left stays spooled or is dead-lettered."""
        if not self._started:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.join(), drain_s)
        left: list[Delivery] = []
        for lane in self._lanes.values():
            if lane.current is not None:  # read before cancelling: the worker clears it
                left.append(lane.current)
            if lane.task is not None:
                lane.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await lane.task
            while not lane.queue.empty():
                left.append(lane.queue.get_nowait())
        self._lanes.clear()
        self._pending.clear()
        if self.spool_dir is None:
            for d in left:
                await self._dead_letter(d, "not delivered before shutdown")
        if self._owns_client and self.client is not None:
            await self.client.aclose()
            self.client = None
        self._started = False

    async def _enqueue(self, d: Delivery, *, spool: bool) -> int:
        if d.key in self._pending or d.key in self._done:
            self.stats.skipped_duplicates += 1
            return 0
        lane = self._lane(d.target)
        if lane.queue.full():
            await self._dead_letter(d, "delivery queue full")
            return 0
        if spool and self.spool_dir is not None:
            await asyncio.to_thread(_write_spool, self.spool_dir, d)
        self._pending.add(d.key)
        lane.queue.put_nowait(d)
        return 1

    def _lane(self, target: WebhookTarget) -> _Lane:
        lane = self._lanes.get(target.url)
        if lane is None:
            lane = self._lanes[target.url] = _Lane(asyncio.Queue(self.queue_size))
            lane.task = asyncio.create_task(self._work(lane), name=f"webhook {target.display}")
        return lane

    async def _work(self, lane: _Lane) -> None:
        while True:
            d = await lane.queue.get()
            lane.current = d
            try:
                await self._deliver(d)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not kill the lane: dead-letter, keep going
                log.exception("webhook delivery to %s failed unexpectedly", d.target.display)
                await self._dead_letter(d, "internal error")
            finally:
                lane.current = None
                lane.queue.task_done()

    async def _deliver(self, d: Delivery) -> None:
        assert self.client is not None
        while True:
            d.attempts += 1
            retry_after: float | None = None
            headers = webhooks.headers(d.alert_id, d.alert_kind, d.body, self.secret)
            try:
                resp = await self.client.post(d.target.url, content=d.body, headers=headers)
            except httpx.HTTPError as exc:
                d.last_error = f"{type(exc).__name__}: {exc}"[:300]
            else:
                if 200 <= resp.status_code < 300:
                    self.stats.delivered += 1
                    if self.on_delivered is not None:
                        self.on_delivered(d, resp.status_code)
                    await self._finish(d)
                    return
                d.last_error = f"HTTP {resp.status_code}"
                if resp.status_code not in _RETRY_STATUS and resp.status_code < 500:
                    await self._dead_letter(d, f"{d.last_error} (not retried)")
                    return
                retry_after = _retry_after(resp.headers.get("Retry-After"))
            if d.attempts >= self.policy.max_attempts:
                await self._dead_letter(d, f"gave up: {d.last_error}")
                return
            self.stats.retries += 1
            wait = self.policy.delay(d.attempts, self.rng, retry_after)
            log.warning("webhook %s: %s; retry %d in %.2fs", d.target.display, d.last_error,
                        d.attempts, wait)
            await asyncio.sleep(wait)

    async def _dead_letter(self, d: Delivery, reason: str) -> None:
        self.stats.dead_lettered += 1
        letter = DeadLetter(d.target.display, d.alert_id, d.alert_kind, d.body, d.attempts,
                            reason, now_ms())
        log.error("alert %s undeliverable to %s: %s", d.alert_id, d.target.display, reason)
        try:
            result = self.on_dead_letter(letter)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("dead-letter sink failed for alert %s", d.alert_id)
            return  # keep the spool file: the next start retries it
        await self._finish(d)

    async def _finish(self, d: Delivery) -> None:
        self._pending.discard(d.key)
        self._done[d.key] = None
        while len(self._done) > _REMEMBER:
            self._done.popitem(last=False)
        if self.spool_dir is not None:
            await asyncio.to_thread(_remove_spool, self.spool_dir, d)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _write_spool(spool: Path, d: Delivery) -> None:
    spool.mkdir(parents=True, exist_ok=True)
    tmp = spool / f".{d.key}.tmp"
    tmp.write_bytes(orjson.dumps({
        "url": d.target.url, "kind": d.target.kind, "alert_id": d.alert_id,
        "alert_kind": d.alert_kind, "body": d.body.decode(),
    }))
    tmp.replace(spool / f"{d.key}.json")


def _remove_spool(spool: Path, d: Delivery) -> None:
    (spool / f"{d.key}.json").unlink(missing_ok=True)


def _read_spool(spool: Path) -> list[Delivery]:
    if not spool.is_dir():
        return []
    out = []
    files = sorted(spool.glob("*.json"), key=lambda f: (f.stat().st_mtime_ns, f.name))
    for f in files:  # oldest first: a firing before its recovery
        try:
            o = orjson.loads(f.read_bytes())
            out.append(Delivery(WebhookTarget(o["url"], o["kind"]), o["alert_id"],
                                o["alert_kind"], o["body"].encode()))
        except (OSError, ValueError, KeyError) as exc:
            log.error("unreadable alert spool file %s: %s", f, exc)
    return out
