"""HTTP collector: `POST /v1/events` for websites, apps and server-side senders.

A 202 means every item is durably in Kafka (acks=all): valid events on the raw topic,
invalid ones on the dead-letter topic with their reason; with a `spool_dir` (`journeys
up`) also fsync'd there first, and nothing is accepted before the gate opens (ingest.spool).
When the broker cannot confirm, the whole request gets 503 + Retry-After and the client
resends it; duplicates are harmless because everything downstream deduplicates on event_id.

`CollectorService` (ingest.collector_service) holds the logic without FastAPI so the
embedded process can mount `create_collector_router` next to the query API;
`create_collector_app` is the standalone role (adds CORS, health and metrics).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool

from ingest.collector_service import CollectorService, RequestRefused
from ingest.delivery import Delivery
from ingest.producer import BrokerUnavailable, TouchpointProducer
from ingest.spool import SpoolFailed, SpoolWriter
from ingest.tuning import ProducerTuning
from journeys.metrics import CONTENT_TYPE, exposition
from journeys.settings import CollectorSettings

log = logging.getLogger(__name__)
_PROBE_EVERY = 1.0  # seconds a delivery may wait before the broker is probed


def _write_key(request: Request) -> str | None:
    """Bearer token, Basic (key as user name, as browser SDKs send it), X-Write-Key,
    or ?write_key= (navigator.sendBeacon cannot set headers)."""
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic" and value.strip():
        try:
            return base64.b64decode(value.strip(), validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            return None
    return request.headers.get("x-write-key") or request.query_params.get("write_key")


async def _read_body(request: Request, limit: int) -> bytes:
    """Read at most `limit` bytes; refuse early on Content-Length, else while streaming."""
    encoding = request.headers.get("content-encoding", "identity").lower()
    if encoding != "identity":
        raise RequestRefused(415, f"Content-Encoding {encoding!r} is not supported")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise RequestRefused(413, f"body of {declared} bytes exceeds the limit of {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestRefused(413, f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _settled(
    delivery: Delivery, timeout: float, producer: TouchpointProducer | None = None
) -> bool:
    """Await a Delivery from the event loop without tying up a thread.

    Every `_PROBE_EVERY` seconds without an answer the producer probes the broker, so a
    dead broker costs the waiting clients about a second, not the delivery timeout.
    """
    if delivery.done:
        return True
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake(_: Delivery) -> None:
        def _set() -> None:
            if not waiter.done():
                waiter.set_result(None)
        with contextlib.suppress(RuntimeError):  # loop closed during shutdown
            loop.call_soon_threadsafe(_set)

    delivery.add_done_callback(wake)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - loop.time()
        if left <= 0:
            return False
        try:
            await asyncio.wait_for(asyncio.shield(waiter), min(left, _PROBE_EVERY))
            return True
        except TimeoutError:
            if producer is not None:
                await run_in_threadpool(producer.probe_stalled)


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json",
                    headers=headers)


def _unavailable(service: CollectorService, detail: str, retry_after: float) -> Response:
    seconds = str(max(1, math.ceil(retry_after)))
    service.count(status_503=1)
    return _json(503, {"detail": detail, "retry_after": int(seconds)}, {"Retry-After": seconds})


_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["event_id", "type", "channel", "occurred_at"],
    "properties": {
        "event_id": {"type": "string", "maxLength": 128},
        "type": {"type": "string", "maxLength": 64},
        "channel": {"type": "string", "maxLength": 32},
        "occurred_at": {"oneOf": [{"type": "string", "format": "date-time"},
                                  {"type": "integer", "description": "epoch ms"}]},
        "customer_id": {"type": ["string", "null"], "maxLength": 128},
        "anonymous_id": {"type": ["string", "null"], "maxLength": 128},
        "source": {"type": "string", "maxLength": 64},
        "properties": {"type": "object"},
        "context": {"type": "object"},
    },
}
_BODY_DOC = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "oneOf": [_EVENT_SCHEMA, {"type": "array", "items": _EVENT_SCHEMA, "maxItems": 1000},
              {"type": "object", "properties": {"batch": {"type": "array",
                                                          "items": _EVENT_SCHEMA}}}]}}}}}


_STARTING = ("the pipeline is starting (replaying the spool, waiting for the worker); "
             "retry after Retry-After")


def create_collector_router(service: CollectorService) -> APIRouter:
    """The POST /v1/events route alone, for mounting into another app (embedded mode)."""
    router = APIRouter()
    timeout = service.producer.tuning.delivery_timeout_ms / 1000 + 2.0

    @router.post(
        "/v1/events", status_code=202, openapi_extra=_BODY_DOC, tags=["collector"],
        responses={202: {"description": "every item is in Kafka: accepted ones on the raw "
                         "topic, rejected ones on the dead-letter topic (see `errors`)"},
                   401: {"description": "missing or unknown write key"},
                   403: {"description": "the write key may not send this source"},
                   413: {"description": "body or batch too large"},
                   500: {"description": "a bug of ours (counted in /metrics, logged); "
                         "resend the request"},
                   503: {"description": "broker (or spool) unavailable, or the embedded "
                         "pipeline still starting; retry after Retry-After"}},
    )
    async def post_events(request: Request) -> Response:
        """Accept one touchpoint, a JSON array of them, or {"batch": [...]} (≤ max_batch)."""
        if not service.accepting():
            return _unavailable(service, _STARTING, 1.0)
        try:
            source = service.authorize(_write_key(request))
            body = await _read_body(request, service.settings.max_body_bytes)
            prepared, delivery, oversized = await run_in_threadpool(service.handle, body, source)
        except RequestRefused as exc:
            service.count(**{f"status_{exc.status}": 1})
            return _json(exc.status, {"detail": exc.detail}, exc.headers)
        except (BrokerUnavailable, SpoolFailed) as exc:
            return _unavailable(service, str(exc), exc.retry_after)
        except Exception as exc:  # a bug of ours: counted, logged, answered, never a reset
            log.exception("collector: request failed")
            service.count(status_500=1)
            return _json(500, {"detail": f"internal error ({type(exc).__name__}); resend "
                               "the request (duplicates are dropped by event_id)"})
        if not await _settled(delivery, timeout, service.producer) or not delivery.ok:
            err = service.producer.last_error or delivery.first_error() or "no answer in time"
            return _unavailable(service, f"the broker did not confirm delivery ({err}); resend "
                                "the request (duplicates are dropped by event_id)",
                                service.producer.tuning.retry_after_s)
        service.count(status_202=1)
        return _json(202, service.response(prepared, oversized))

    return router


def collector_tuning(settings: CollectorSettings) -> ProducerTuning:
    ms = int(settings.delivery_timeout_s * 1000)
    return ProducerTuning(delivery_timeout_ms=ms, request_timeout_ms=min(5000, ms),
                          max_pending=settings.max_pending)


def create_collector_app(
    settings: CollectorSettings, producer: TouchpointProducer | None = None
) -> FastAPI:
    """The collector role. A passed-in producer is not closed on shutdown (its owner does)
    and brings its own spool, if any."""
    owns = producer is None
    spool = SpoolWriter(settings.spool_dir) if owns and settings.spool_dir else None
    prod = producer or TouchpointProducer(settings.kafka, collector_tuning(settings),
                                          client_id="journeys-collector", spool=spool)
    service = CollectorService(settings, prod)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:  # connect early; a broker that is still down only means 503s for now
            await run_in_threadpool(prod.ensure_available)
        except BrokerUnavailable as exc:
            log.warning("collector starting without a broker: %s", exc)
        if not settings.write_keys:
            log.warning("no write keys configured: POST /v1/events accepts anyone")
        try:
            yield
        finally:
            if owns:
                await run_in_threadpool(prod.close, 5.0)
            if spool is not None:
                spool.close()

    app = FastAPI(title="Journey pipeline collector", lifespan=lifespan,
                  description="Touchpoint intake: POST /v1/events (one event or a batch).")
    app.state.collector = service
    app.add_middleware(
        CORSMiddleware, allow_origins=list(settings.cors_origins),
        allow_methods=["POST", "OPTIONS"], allow_headers=["Authorization", "Content-Type",
                                                          "X-Write-Key"],
        expose_headers=["Retry-After"], max_age=86_400,
    )
    app.include_router(create_collector_router(service))

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> Response:
        if not service.accepting():
            return _json(503, {"status": "starting", "error": _STARTING}, {"Retry-After": "1"})
        if await run_in_threadpool(prod.ready):
            return _json(200, {"status": "ready", "pending": prod.pending})
        return _json(503, {"status": "broker unavailable", "error": prod.last_error},
                     {"Retry-After": str(math.ceil(prod.tuning.retry_after_s))})

    @app.get("/metrics", tags=["health"])
    async def metrics() -> Response:
        return Response(exposition({"collector": service.metrics}), media_type=CONTENT_TYPE)

    return app


def app_from_env() -> FastAPI:
    """Zero-argument factory for `uvicorn --factory` / multi-process workers."""
    return create_collector_app(CollectorSettings.build())
