"""The identity stage's Kafka side: by-identity envelopes -> by-customer envelopes.

A Faust agent (stream.agents.app) hands each batch to the pure
`stream.stages.identity.IdentityStage`; this sends the by-customer envelopes (the
events, links, holds and this stage's watermark claims), writes the identity merges,
then stores the new aliases and applied offsets in the `identity-aliases` table and
waits for their changelog records. Only then is the batch committed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from stream.agents.context import (
    Record,
    StageContext,
    byte_chunks,
    isolating,
    send_all,
    store,
    write_with_retry,
)
from stream.stages.identity import IdentityBatch, IdentityStage

log = logging.getLogger(__name__)


class IdentityAgent:
    def __init__(self, ctx: StageContext, stage: IdentityStage) -> None:
        self.ctx = ctx
        self.stage = stage
        self.table: Any = None  # the Faust table, set by create_app

    def _get(self, key: bytes) -> bytes | None:
        value: bytes | None = self.table.data.get(key)
        return value

    async def handle(self, events: list[Any]) -> None:
        records = [(e.message.partition, e.message.offset, e.message.value) for e in events]
        topic = self.ctx.settings.kafka.by_identity_topic
        for chunk in byte_chunks(records):
            await isolating(self.ctx, "identity", topic, chunk, self._prepare, self._emit)

    async def _prepare(self, records: list[Record]) -> IdentityBatch:
        try:
            return await asyncio.to_thread(self.stage.prepare, records, self._get)  # off loop
        except Exception:
            self.stage.drop_cached_offsets()  # those of the failed batch were never stored
            raise

    async def _emit(self, batch: IdentityBatch) -> None:
        ctx, st = self.ctx, self.ctx.stats
        if batch.undecodable:
            log.warning("identity: skipped %d undecodable envelopes", batch.undecodable)
        await send_all(ctx, ctx.settings.kafka.by_customer_topic,
                       ((p, None, v) for p, v in batch.envelopes.messages()))
        merges = batch.merges
        if merges and ctx.sink.enabled:
            await write_with_retry(ctx, lambda: ctx.sink.write_merges(merges), len(merges))
        await store(ctx, self.table, dict(batch.states))
        st.events_identity += batch.events
        st.identity_merges += len(merges)
        st.events_stitched += batch.stitched
        st.redelivered += batch.redelivered
        st.identity_watermarks.update(batch.watermarks)

    async def on_recovered(self) -> None:
        """Partitions may have moved: re-read applied offsets from the table."""
        self.stage.forget()
