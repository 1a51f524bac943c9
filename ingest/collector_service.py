"""What the collector does with one `POST /v1/events` request, without HTTP: the write
key's source, parsing and validation per item, producing (ingest.producer), the response
body and the counters behind /metrics.

Why a module of its own: it is the collector's logic, kept free of FastAPI so the HTTP
adapter (ingest.collector: the route, the standalone app) stays thin and the embedded
process can mount the same route next to the query API.
"""

from __future__ import annotations

import hmac
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from ingest.delivery import Delivery
from ingest.producer import TouchpointProducer
from ingest.spool import gate_is_open
from journeys.events import EventValidator, Rejection, Touchpoint
from journeys.settings import CollectorSettings

STAGE = "collector"


class RequestRefused(Exception):
    """A request-level refusal with its HTTP status (401, 403, 400, 413, 415, 503)."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


@dataclass
class Prepared:
    """One request's items after validation, in request order."""

    count: int
    touchpoints: list[Touchpoint] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    rejected_index: list[int] = field(default_factory=list)
    accepted_index: list[int] = field(default_factory=list)


class CollectorService:
    """Auth, parsing, validation and producing for POST /v1/events."""

    def __init__(self, settings: CollectorSettings, producer: TouchpointProducer) -> None:
        self.settings = settings
        self.producer = producer
        self.validator = EventValidator(settings.channels)
        self._keys = [(k.get_secret_value().encode(), src) for src, k in
                      settings.write_keys.items()]
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self._gate_open = settings.spool_dir is None

    def accepting(self) -> bool:
        """False until a spooled collector's gate opens (spool replayed, worker running)."""
        if not self._gate_open and self.settings.spool_dir is not None:
            self._gate_open = gate_is_open(self.settings.spool_dir)  # stays open
        return self._gate_open

    # -- request steps --------------------------------------------------------------

    def authorize(self, write_key: str | None) -> str | None:
        """The source the key belongs to; None when auth is off. 401 if missing/unknown."""
        if not self._keys:
            return None
        if not write_key:
            raise RequestRefused(401, "a write key is required (Authorization: Bearer <key> "
                                 "or X-Write-Key)", {"WWW-Authenticate": "Bearer"})
        given = write_key.encode()
        source = None
        for key, src in self._keys:  # compare with every key: no timing hint which matched
            if hmac.compare_digest(key, given):
                source = src
        if source is None:
            raise RequestRefused(401, "unknown write key", {"WWW-Authenticate": "Bearer"})
        return source

    def prepare(self, body: bytes, source: str | None) -> Prepared:
        """Parse and validate the body: one event, a JSON array or {"batch": [...]}."""
        if not body.strip():
            raise RequestRefused(400, "empty body: send one event object or a batch array")
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise RequestRefused(400, f"body is not valid JSON: {exc}") from None
        if isinstance(doc, dict) and isinstance(doc.get("batch"), list):
            items: list[Any] = doc["batch"]
        elif isinstance(doc, list):
            items = doc
        elif isinstance(doc, dict):
            items = [doc]
        else:
            raise RequestRefused(400, f"body must be an event object or an array, "
                                 f"got {type(doc).__name__}")
        if not items:
            raise RequestRefused(400, "empty batch")
        if len(items) > self.settings.max_batch:
            raise RequestRefused(413, f"batch of {len(items)} events exceeds the limit of "
                                 f"{self.settings.max_batch}; split it")
        prepared = Prepared(count=len(items))
        for i, item in enumerate(items):
            if source is not None and isinstance(item, dict):
                claimed = item.get("source")
                if claimed is None:
                    item["source"] = source
                elif claimed != source:
                    raise RequestRefused(403, f"item {i}: this write key may only send events "
                                         f"of source {source!r}, not {claimed!r}")
            result = self.validator.validate(item)
            if isinstance(result, Rejection):
                prepared.rejections.append(result)
                prepared.rejected_index.append(i)
            else:
                prepared.touchpoints.append(result)
                prepared.accepted_index.append(i)
        return prepared

    def submit(self, prepared: Prepared) -> tuple[Delivery, list[Rejection]]:
        """Produce accepted items and dead letters; blocking (run it off the event loop)."""
        return self.producer.send_batch(prepared.touchpoints, prepared.rejections, stage=STAGE)

    def handle(
        self, body: bytes, source: str | None
    ) -> tuple[Prepared, Delivery, list[Rejection]]:
        """prepare + submit in one call, so a request costs one thread hop."""
        prepared = self.prepare(body, source)
        delivery, oversized = self.submit(prepared)
        return prepared, delivery, oversized

    def response(self, prepared: Prepared, oversized: list[Rejection]) -> dict[str, Any]:
        errors: list[dict[str, Any]] = [
            {"index": i, "event_id": r.event_id, "reason": r.reason}
            for i, r in zip(prepared.rejected_index, prepared.rejections, strict=True)]
        if oversized:
            by_id = {r.event_id: r for r in oversized}
            for i, tp in zip(prepared.accepted_index, prepared.touchpoints, strict=True):
                if tp.event_id in by_id:
                    errors.append({"index": i, "event_id": tp.event_id,
                                   "reason": by_id[tp.event_id].reason})
            errors.sort(key=lambda e: e["index"])
        rejected = len(errors)
        self.count(accepted=prepared.count - rejected, rejected=rejected)
        return {"accepted": prepared.count - rejected, "rejected": rejected, "errors": errors}

    # -- metrics --------------------------------------------------------------------

    def count(self, **increments: int) -> None:
        with self._lock:
            self.counts.update(increments)

    def metrics(self) -> dict[str, Any]:
        """Samples in the shape journeys.metrics takes (this /metrics, and the embedded
        API's)."""
        with self._lock:
            c = dict(self.counts)
        statuses = {(("status", k[7:]),): v for k, v in c.items() if k.startswith("status_")}
        return {
            "journeys_collector_requests_total": statuses,
            "journeys_collector_events_accepted_total": c.get("accepted", 0),
            "journeys_collector_events_rejected_total": c.get("rejected", 0),
            "journeys_collector_pending_records": self.producer.pending,
        }
