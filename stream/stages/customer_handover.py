"""The customer stage's handover steps (stream.stages.customers): a linked device
settled to its link time releasing what is not final as a handover, a customer
absorbing handovers exactly at their link times, and a handover sent again by a device
that crashed told from a first one (docs/stream.md "Identity stitching").

Why a module of its own: these steps are the stitching half of the stage, and the rules
that keep it exact after crashes live here together (the repeat rule, the device's
release position, handovers in pieces travel in stream.stages.envelopes). The stage
inherits them (`HandoverSteps`), with `_settle` and `_take`, which both halves use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stream.engine.journey_state import CustomerJourneys
from stream.engine.journeys import JourneyEngine
from stream.engine.outputs import JourneyDelta
from stream.engine.runs import TailEvent
from stream.engine.session_state import session_events
from stream.engine.sessions import Sessionizer
from stream.eventtime.watermarks import NO_WATERMARK, Claim
from stream.stages.customer_batch import CustomerBatch
from stream.stages.customer_progress import PartitionProgress
from stream.stages.customer_state import (
    PEER_BASE,
    RECORDS,
    Committed,
    CustomerValue,
    CustomerWork,
)
from stream.stages.duplicates import handed_over
from stream.stages.envelopes import partition_for


class HandoverSteps:
    """Release and absorb; the stage (`CustomerStage`) provides what they use."""

    engine: JourneyEngine
    sessionizer: Sessionizer
    partitions: int
    committed: Committed
    progress_for: Callable[[int], PartitionProgress]

    def _absorb_ready(self, batch: CustomerBatch, key: str, w: CustomerWork) -> None:
        """Absorb pending handovers, earliest link first, each once the customer's event
        time has reached its link time and nothing earlier is still awaited: the
        customer is settled exactly up to the link time first, so the split at the
        link is the same whatever the timing (docs/stream.md "Identity stitching")."""
        v = w.value
        frontier = self.progress_for(w.partition).watermark
        while v.pending:
            source, item = min(v.pending.items(), key=lambda kv: (kv[1][4], kv[0]))
            at = item[4]
            awaited = [a for s, (a, _wall) in v.journeys.waiting.items()
                       if s not in v.pending]
            if frontier < at or any(a < at for a in awaited):
                return
            self._settle(batch, w.partition, key, v, at)
            del v.pending[source]
            if self._repeated(v, source, item):
                batch.redelivered += 1
                continue
            v.journeys.waiting.pop(source, None)
            v.journeys.gave_up.pop(source, None)
            anon, _into, jevents, spayload, linked_at, openings = item[:6]
            runs = item[6] if len(item) > 6 else None  # capped runs (older: none)
            closed = item[7] if len(item) > 7 else None  # per definition (older: none)
            if len(item) > 8:  # the device's release may come again until committed
                peer, offset = item[8]
                pos = v.positions.get(PEER_BASE - peer)
                if pos is None or offset > pos[0]:
                    v.positions[PEER_BASE - peer] = (offset, 0)
            # of two copies of an id the one of smaller rank wins, the other is left out
            # of sessions and journeys alike (stream.stages.duplicates, docs/semantics.md
            # "Ordering and duplicates")
            paths = self.engine.path_events(v.journeys)
            seen = v.sessions.seen()
            replaceable = (self.engine.replayable_ids(v.journeys) & v.sessions.timed_ids(seen)
                           if paths else set())
            screened = handed_over(key, anon, w.partition, v.journeys.tail, paths,
                                   seen, [tuple(e) for e in jevents],
                                   session_events(spayload) if v.journeys.tail else (),
                                   replaceable=replaceable)
            batch.duplicates += screened.duplicates
            batch.conflicts.extend(screened.conflicts)
            # the customer's outranked copies: out of its tail, or (settled) out of its
            # runs' replay, and out of its open sessions either way
            unsettled = {e[1] for e in screened.unsettled}
            taken_out = take_out_of_tail(v.journeys, screened.replaced) | unsettled
            sd = self.sessionizer.absorb(key, v.sessions, spayload, watermark=at,
                                         versions=v.journeys,
                                         left_out={*screened.left_out,
                                                   *(e[1] for e in paths)} - unsettled,
                                         taken_out=taken_out)
            jd = self.engine.absorb(key, v.journeys, source, screened.kept,
                                    watermark=at, linked_at=linked_at, openings=openings,
                                    runs=runs, closed=closed, dropped=unsettled)
            batch.session_rows.extend(sd.rows())
            self._take(batch, w.partition, jd)
            batch.absorbed += 1
            wm = min(frontier, v.journeys.hold() or frontier)
            self._settle(batch, w.partition, key, v, wm)

    @staticmethod
    def _repeated(v: CustomerValue, source: str, item: list[Any]) -> bool:
        """A handover this customer absorbed already: a device that crashed after
        sending it, before its release was stored, sends it again. Known while its
        source is `merged`; after that by the customer's settle point: the customer
        settled to the link time before it absorbed the first copy, and it settles past
        a link time only after the handover came (it holds for it) or after it gave the
        hold up (`gave_up`: that late handover is absorbed). The value is kept until the
        device's release is committed (PEER_BASE), so a repeat finds it. Absorbed twice,
        a repeat replayed final events into closed instances and sessions (found by
        crashing the stages in a backlog: docs/reliability.md "Repeated handovers")."""
        j = v.journeys
        if source in j.merged:
            return True
        # past the link time: the first copy's `merged` memory ends only a conversion
        # window after it, so a repeat is strictly past; a first handover that overtook
        # its hold finds the customer settled at most to the link time (claims covering
        # the link time come after the hold), and `_absorb_ready` settled it exactly there
        return source not in j.waiting and source not in j.gave_up and j.checkpoint > item[4]

    def _settle(self, batch: CustomerBatch, partition: int, key: str, v: CustomerValue,
                watermark: int) -> None:
        sd = self.sessionizer.apply(key, v.sessions, (), watermark=watermark, versions=v.journeys)
        batch.session_rows.extend(sd.rows())
        self._take(batch, partition, self.engine.advance(key, v.journeys, watermark=watermark))

    def _release(self, batch: CustomerBatch, partition: int, v: CustomerValue, anon: str,
                 cust: str, at: int) -> None:
        """A linked device, settled up to the link's time, hands what is not final then
        over to the customer (sent even when empty: the customer is holding for it)."""
        v.linked = None
        spayload, sd = self.sessionizer.release(anon, v.sessions, versions=v.journeys)
        openings = self.engine.openings(v.journeys)
        runs = self.engine.capped_runs(v.journeys)
        closed = self.engine.closed_events(v.journeys)
        jevents, jd = self.engine.release(anon, v.journeys)
        batch.session_rows.extend(sd.rows())
        self._take(batch, partition, jd)
        prog = self.progress_for(partition)
        committed = self.committed(RECORDS, partition)
        read_to = max(prog.read_to, -1 if committed is None else committed - 1)
        # [partition, offset]: the group's commit past `offset` means this release is
        # stored (a later batch began after it): the customer keeps its value till then
        batch.handovers.handover(partition_for(cust, self.partitions),
                                 [anon, cust, jevents, spayload, at, openings, runs, closed,
                                  [partition, read_to + 1]])
        batch.released += 1

    @staticmethod
    def _take(batch: CustomerBatch, partition: int, delta: JourneyDelta) -> None:
        batch.instance_rows.extend(delta.upserts)
        batch.retractions.extend(delta.retractions)
        batch.closed.extend(delta.closed)
        if delta.reached:
            batch.reached.setdefault(partition, ([], Claim(partition, NO_WATERMARK)))[0].extend(
                delta.reached)


def take_out_of_tail(journeys: CustomerJourneys, replaced: list[TailEvent]) -> set[str]:
    """Remove outranked applied copies from the journey tail; their ids (for the
    sessions)."""
    if not replaced:
        return set()
    ids = {e[1] for e in replaced}
    journeys.tail = [e for e in journeys.tail if e[1] not in ids]
    return ids
