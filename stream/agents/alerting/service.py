"""Where evaluator output goes: the warehouse (history), the alerts topic, the webhooks.

Faust-free so the stream worker (stream/app.py) and the embedded runner can both wire
it: they pass a blocking `store` (run in a thread), an async `publish` (e.g. a Faust
topic's send) and a started WebhookDispatcher. Every sink is idempotent on alert_id, so
the caller retries a failed batch whole: re-emission is harmless by construction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from journeys.errors import JourneysError
from stream.agents.alerting.delivery import WebhookDispatcher
from stream.engine.alert_verdict import AlertRecord

log = logging.getLogger(__name__)

StoreFn = Callable[[Sequence[Mapping[str, Any]]], object]
PublishFn = Callable[[bytes, bytes], Awaitable[object]]


class AlertSinkError(JourneysError):
    """Storing or publishing a batch of alerts failed; retry the batch (it is idempotent)."""


def alert_message(r: AlertRecord) -> tuple[bytes, bytes]:
    """(key, value) for the alerts topic: keyed by alert_id, the record as JSON."""
    return r.alert_id.encode(), orjson.dumps(r.to_dict())


@dataclass
class AlertSink:
    """Fan a batch of records out; webhooks are queued even when storing fails."""

    store: StoreFn | None = None  # e.g. lambda recs: write_alerts(wh, recs)
    publish: PublishFn | None = None  # e.g. lambda k, v: alerts_topic.send(key=k, value=v)
    dispatcher: WebhookDispatcher | None = None

    async def emit(self, records: Sequence[AlertRecord]) -> None:
        if not records:
            return
        failures: list[str] = []
        if self.store is not None:
            rows = [r.to_dict() for r in records]
            store = self.store
            try:
                await asyncio.to_thread(store, rows)
            except Exception as exc:
                log.exception("storing %d alerts failed", len(records))
                failures.append(f"store: {exc}")
        if self.publish is not None:
            try:
                for r in records:
                    await self.publish(*alert_message(r))
            except Exception as exc:
                log.exception("publishing alerts failed")
                failures.append(f"publish: {exc}")
        if self.dispatcher is not None:
            await self.dispatcher.submit(records)
        if failures:
            raise AlertSinkError("; ".join(failures))
