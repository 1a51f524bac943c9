"""Counters of the stream stage, kept in memory for /metrics and logs.

Plain integers updated on the worker's event loop (no locks needed there); readers in
other threads get a consistent-enough copy from `snapshot()`. One object per app
(`create_app(...).journeys.stats`), never a module global.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from journeys.timeutil import ms_to_iso
from stream.eventtime.watermarks import NO_WATERMARK


def _slowest(marks: dict[int, int]) -> str:
    """The slowest partition's event time (ISO, to the second), '-' before any."""
    known = [m for m in marks.values() if m > NO_WATERMARK]
    return ms_to_iso(min(known))[:19] if known else "-"


def stats_line(st: StreamStats) -> str:
    """The worker's INFO progress line (stream.agents.app `log_progress`): counters,
    then each stage's event time over the partitions this worker owns (the slowest:
    a stage far behind the one before it is where a backlog sits)."""
    return (f"stream: in={st.events_in} valid={st.events_valid} "
            f"rejected={st.rejected_total} customers={st.events_sessionized} "
            f"late={st.late_events} dup={st.duplicates} redelivered={st.redelivered} "
            f"merges={st.identity_merges} journeys={st.journey_rows_written} "
            f"closed={st.journeys_closed} flushes={st.batches_flushed} "
            f"failures={st.flush_failures} event_time: source={_slowest(st.source_watermarks)} "
            f"identity={_slowest(st.identity_watermarks)} "
            f"customers={_slowest(st.customer_watermarks)}")


def late_in_stats_line(line: str) -> int | None:
    """The cumulative `late=` count of a worker's INFO stats line (stream.agents.app
    `log_progress`), None for any other line: tests and benches read it from logs."""
    if "stream: in=" not in line or " late=" not in line:
        return None
    return int(line.split(" late=", 1)[1].split()[0])


@dataclass
class StreamStats:
    """What the stream stage has done since the worker started."""

    events_in: int = 0  # raw messages read by the validate agent
    events_valid: int = 0  # valid touchpoints (late ones too): the raw table
    events_forwarded: int = 0  # valid, on time and attributed: to the by-identity topic
    rejected: Counter[str] = field(default_factory=Counter)  # by reason code
    # properties.value left out of journey value, by reason (the events are kept)
    values_ignored: Counter[str] = field(default_factory=Counter)
    unattributed: int = 0  # only placeholder ids: raw table only
    events_identity: int = 0  # read by the identity stage
    identity_merges: int = 0  # anonymous ids linked to a customer
    events_stitched: int = 0  # anonymous-only events attributed via an alias
    events_sessionized: int = 0  # read by the customer stage (sessions + journeys)
    events_applied: int = 0  # changed journey/session state
    duplicates: int = 0  # event_id already applied
    redelivered: int = 0  # the same input read again (crash, rebalance): skipped
    late_events: int = 0  # older than their source partition's watermark: raw table only
    poison_records: int = 0  # records a stage raised on: dead-lettered (stream.agents.context)
    quarantined_records: int = 0  # records that killed the worker twice (crash_journal)
    handovers_sent: int = 0  # stitched anonymous states handed to their customer
    handovers_absorbed: int = 0
    timer_visits: int = 0  # customers advanced by a watermark move without events
    holds: int = 0  # customers told to wait for a stitched device's handover
    holds_expired: int = 0  # ... that gave up waiting (HOLD_MAX_WAIT_MS)
    journey_rows_written: int = 0
    journey_retractions: int = 0
    journeys_closed: int = 0  # published on the journeys-closed topic
    # event time per partition this worker owns, per stage (stream.eventtime)
    source_watermarks: dict[int, int] = field(default_factory=dict)  # raw partitions
    identity_watermarks: dict[int, int] = field(default_factory=dict)  # by-identity
    customer_watermarks: dict[int, int] = field(default_factory=dict)  # by-customer
    batches_flushed: int = 0
    touchpoints_written: int = 0
    session_rows_written: int = 0
    dead_letters_written: int = 0
    flush_failures: int = 0  # attempts that raised (each retried)
    flush_seconds_total: float = 0.0
    flush_rows_total: int = 0  # rows in the warehouse writes (batch size = rows / batches)
    last_flush_rows: int = 0
    flush_seconds_max: float = 0.0
    last_flush_seconds: float = 0.0
    last_flush_at: float | None = None  # wall clock, epoch seconds
    started_at: float = field(default_factory=time.time)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def record_flush(self, seconds: float, rows: int = 0) -> None:
        self.batches_flushed += 1
        self.flush_rows_total += rows
        self.last_flush_rows = rows
        self.last_flush_seconds = seconds
        self.flush_seconds_total += seconds
        self.flush_seconds_max = max(self.flush_seconds_max, seconds)
        self.last_flush_at = time.time()

    def samples(self) -> dict[str, Any]:
        """The counters in Prometheus naming (journeys.metrics renders them: the
        worker's /metrics, and the embedded API's)."""
        now_ms = time.time() * 1000
        lag = {}
        for stage, marks in (("validate", self.source_watermarks),
                             ("identity", self.identity_watermarks),
                             ("customers", self.customer_watermarks)):
            known = [m for m in marks.values() if m > NO_WATERMARK]
            if known:  # how far the stage's event time is behind the wall clock
                lag[(("stage", stage),)] = max(0.0, (now_ms - min(known)) / 1000)
        return {
            "journeys_events_in_total": self.events_in,
            "journeys_events_valid_total": self.events_valid,
            "journeys_events_forwarded_total": self.events_forwarded,
            "journeys_events_rejected_total": {
                (("reason", r),): n for r, n in self.rejected.items()},
            "journeys_values_ignored_total": {
                (("reason", r),): n for r, n in self.values_ignored.items()},
            "journeys_late_events_total": self.late_events,
            "journeys_poison_records_total": self.poison_records,
            "journeys_quarantined_records_total": self.quarantined_records,
            "journeys_unattributed_events_total": self.unattributed,
            "journeys_identity_events_total": self.events_identity,
            "journeys_identity_merges_total": self.identity_merges,
            "journeys_customer_events_total": self.events_sessionized,
            "journeys_duplicates_total": self.duplicates,
            "journeys_redelivered_total": self.redelivered,
            "journeys_handovers_sent_total": self.handovers_sent,
            "journeys_handovers_absorbed_total": self.handovers_absorbed,
            "journeys_holds_expired_total": self.holds_expired,
            "journeys_journey_rows_written_total": self.journey_rows_written,
            "journeys_journeys_closed_total": self.journeys_closed,
            "journeys_touchpoints_written_total": self.touchpoints_written,
            "journeys_session_rows_written_total": self.session_rows_written,
            "journeys_dead_letters_written_total": self.dead_letters_written,
            "journeys_batches_flushed_total": self.batches_flushed,
            "journeys_flush_failures_total": self.flush_failures,
            "journeys_flush_seconds_total": self.flush_seconds_total,
            "journeys_flush_seconds_max": self.flush_seconds_max,
            "journeys_flush_rows_total": self.flush_rows_total,
            "journeys_last_flush_rows": self.last_flush_rows,
            "journeys_last_flush_seconds": self.last_flush_seconds,
            "journeys_event_time_lag_seconds": lag,
            "journeys_uptime_seconds": time.time() - self.started_at,
        }

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy (Prometheus names are the API's business)."""
        mean = self.flush_seconds_total / self.batches_flushed if self.batches_flushed else 0.0
        return {
            "events_in": self.events_in,
            "events_valid": self.events_valid,
            "rejected_total": self.rejected_total,
            "rejected_by_reason": dict(self.rejected),
            "values_ignored_by_reason": dict(self.values_ignored),
            "unattributed": self.unattributed,
            "events_identity": self.events_identity,
            "identity_merges": self.identity_merges,
            "events_stitched": self.events_stitched,
            "events_sessionized": self.events_sessionized,
            "handovers_sent": self.handovers_sent,
            "handovers_absorbed": self.handovers_absorbed,
            "timer_visits": self.timer_visits,
            "holds": self.holds,
            "holds_expired": self.holds_expired,
            "journey_rows_written": self.journey_rows_written,
            "journey_retractions": self.journey_retractions,
            "journeys_closed": self.journeys_closed,
            "source_watermarks": dict(self.source_watermarks),
            "identity_watermarks": dict(self.identity_watermarks),
            "customer_watermarks": dict(self.customer_watermarks),
            "events_forwarded": self.events_forwarded,
            "redelivered": self.redelivered,
            "events_applied": self.events_applied,
            "duplicates": self.duplicates,
            "late_events": self.late_events,
            "poison_records": self.poison_records,
            "quarantined_records": self.quarantined_records,
            "batches_flushed": self.batches_flushed,
            "touchpoints_written": self.touchpoints_written,
            "session_rows_written": self.session_rows_written,
            "dead_letters_written": self.dead_letters_written,
            "flush_failures": self.flush_failures,
            "flush_seconds_total": self.flush_seconds_total,
            "flush_seconds_mean": mean,
            "flush_seconds_max": self.flush_seconds_max,
            "last_flush_seconds": self.last_flush_seconds,
            "last_flush_at": self.last_flush_at,
            "uptime_seconds": time.time() - self.started_at,
        }
