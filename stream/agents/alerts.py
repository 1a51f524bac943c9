"""Drop-off alerting wired into the Faust worker (batch logic: stream.stages.alerts).

`AlertWorker` adds, next to the customer stage (wired by stream.agents.app):

- a reached hook on the customer stage: each batch's (and timer tick's) settled
  "step reached" observations and partition watermarks go to `<prefix>.step-reached`,
  acknowledged before the customer batch is committed;
- the `journeys.alerts` agent on that topic, with the `alert-state` table (one value per
  (journey, step) state key plus one per partition for the source watermarks; one
  changelog write per key per batch). Per batch: apply, emit the records of newly final
  windows (warehouse `alerts`, `<prefix>.alerts`, webhooks via a spooled dispatcher),
  then store the states, then commit. A crash anywhere re-runs the batch from the
  stored state; every sink is idempotent on alert_id, so re-emission is harmless
  (a webhook receiver may see a POST twice: delivery is at least once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from journeys.timeutil import ms_to_iso, now_ms
from stream.agents.alerting.delivery import DeadLetter, WebhookDispatcher
from stream.agents.alerting.service import AlertSink, AlertSinkError
from stream.agents.alerting.webhooks import summary
from stream.agents.context import Record, StageContext, isolating, send_all, store_parted
from stream.engine.alert_entries import EntryStore
from stream.engine.alert_verdict import AlertRecord
from stream.stages.alerts import (
    AlertBatch,
    AlertStage,
    Reached,
    StepReachedRouter,
)

log = logging.getLogger(__name__)

ALERT_TABLE = "alert-state"
MESSAGES_PER_BATCH = 64
EMIT_RETRY_DEADLINE_S = 300.0  # then the worker crashes (batch left uncommitted)


def spool_dir(data_dir: Path, app_id: str) -> Path:
    """Pending webhook deliveries of this worker (resumed after a restart)."""
    return Path(data_dir) / "alert-spool" / app_id


class AlertWorker:
    """The alert stage of one worker: router (producer side), stage, sinks, stats."""

    def __init__(self, ctx: StageContext, entries: EntryStore | None = None) -> None:
        self.ctx = ctx
        settings = ctx.settings
        definitions = ctx.definitions.journeys
        parts = settings.kafka.partitions
        self.router = StepReachedRouter(definitions, parts)
        self.stage = AlertStage(definitions, parts, entries)  # None: entries in memory
        self.table: Any = None  # the Faust table, set by create_app
        self.lock = asyncio.Lock()
        self.dispatcher: WebhookDispatcher | None = None
        cfg = settings.alerting
        if cfg.webhook_urls or cfg.slack_webhook_urls:
            self.dispatcher = WebhookDispatcher.from_settings(
                cfg, on_dead_letter=self._dead_letter,
                spool_dir=spool_dir(settings.data_dir, settings.app_id))
        self.sink = AlertSink(store=self._store, publish=self._publish,
                              dispatcher=self.dispatcher)
        self.fired = 0
        self.recovered = 0
        self.late = 0
        self.watermark = 0

    # ----------------------------------------------------------- customer side
    async def publish_reached(self, reached: Reached) -> None:
        """The customer stage's reached hook: returns once the broker has everything."""
        messages, confirm = self.router.route(reached, now_ms())
        if not messages:
            return
        await send_all(self.ctx, self.ctx.settings.kafka.step_reached_topic,
                       ((q, None, value) for q, value in messages))
        self.router.confirm(confirm)

    # -------------------------------------------------------------- alert side
    def samples(self) -> dict[str, Any]:
        """Alert counters in Prometheus naming (journeys.metrics)."""
        out: dict[str, Any] = {
            "journeys_alerts_total": {(("kind", "fired"),): self.fired,
                                      (("kind", "recovered"),): self.recovered},
            "journeys_alert_late_observations_total": self.late,
        }
        if self.dispatcher is not None:
            st = self.dispatcher.stats
            out.update({
                "journeys_webhook_deliveries_total": st.delivered,
                "journeys_webhook_retries_total": st.retries,
                "journeys_webhook_dead_lettered_total": st.dead_lettered,
            })
        return out

    def _get(self, key: bytes) -> bytes | None:
        value: bytes | None = self.table.data.get(key)
        return value

    async def handle(self, events: Sequence[Any]) -> None:
        records = [(e.message.partition, e.message.offset, e.message.value) for e in events]
        async with self.lock:
            await isolating(self.ctx, "alerts", self.ctx.settings.kafka.step_reached_topic,
                            records, self._prepare, self._emit)

    async def _prepare(self, records: list[Record]) -> AlertBatch:
        try:
            return self.stage.prepare(((p, v) for p, _o, v in records), self._get)
        except Exception:
            self.stage.drop_cached_states()
            raise

    async def _emit(self, batch: AlertBatch) -> None:
        if batch.undecodable:
            log.warning("alerts: skipped %d undecodable messages", batch.undecodable)
        if batch.records:
            await self.emit(batch.records)
        await store_parted(self.ctx, self.table, batch.states)  # parts, heads, tombstones
        self.late += batch.late
        if batch.watermarks:
            wm = max(batch.watermarks.values())
            if wm > self.watermark:
                log.info("alerts: windows final up to watermark %s (partitions %s); "
                         "fired %d, recovered %d, late observations %d", ms_to_iso(wm),
                         sorted(batch.watermarks), self.fired, self.recovered, self.late)
                self.watermark = wm

    async def emit(self, records: Sequence[AlertRecord]) -> None:
        """Store, publish, queue webhooks; retried whole (idempotent), then crash."""
        delay, deadline = 0.2, time.monotonic() + EMIT_RETRY_DEADLINE_S
        while True:
            try:
                await self.sink.emit(records)
                break
            except AlertSinkError as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("emitting %d alerts failed (%s); retrying in %.1fs",
                            len(records), exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        for r in records:
            if r.kind == "fired":
                self.fired += 1
                log.warning("%s [alert %s]", summary(r), r.alert_id)
            else:
                self.recovered += 1
                log.info("%s [resolves %s]", summary(r), r.resolves)

    def _store(self, rows: Sequence[Any]) -> None:
        from warehouse.writers_alerts import write_alerts

        if self.ctx.sink.enabled:
            write_alerts(self.ctx.sink.warehouse, rows)

    async def _publish(self, key: bytes, value: bytes) -> None:
        await send_all(self.ctx, self.ctx.settings.kafka.alerts_topic, [(None, key, value)])

    async def _dead_letter(self, letter: DeadLetter) -> None:
        """Undeliverable webhook: dead_letters table (stage alert_webhook) + topic."""
        from warehouse.writers import write_dead_letters

        if self.ctx.sink.enabled:
            wh = self.ctx.sink.warehouse
            await asyncio.to_thread(write_dead_letters, wh, [letter])
        await send_all(self.ctx, self.ctx.settings.kafka.dead_letter_topic,
                       [(None, letter.alert_id.encode(), letter.to_bytes())])

    async def on_recovered(self) -> None:
        """Partitions may have moved: re-read states and watermarks from the table."""
        async with self.lock:
            self.stage.forget()

    # --------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        if self.dispatcher is not None:
            await self.dispatcher.start()  # resumes spooled deliveries

    async def stop(self) -> None:
        if self.dispatcher is not None:
            await self.dispatcher.stop()  # drains briefly; the rest stays spooled
        async with self.lock:
            self.stage.entries.close()
