"""A backfill through the real worker: a day of generated multi-channel traffic (the
demo's sample, with its checkout loop, payment incident and call-centre switch) is
produced to the raw topic *at once*, as `journeys demo` and a bulk `journeys import`
do, then a `python -m stream` subprocess processes it into a real ClickHouse server.

The customer stage then sees hours of event time per batch: a device's browsing, its
login and the customer's later steps settle in the same batch unless the customer
waits for the device's handover (stream.stages.envelopes "hold"). Before holds, this load
split every stitched journey in two (the demo showed 710 conversions of 2,086) and
fired none of the reference's drop-off alerts. Here the warehouse must equal the
reference exactly (tests/reference/stitching_ref.py `split`): journeys, sessions, and
the alerts (fired and recovered).

Four partitions: before watermarks travelled with the data, the identity stage's skew
between partitions made 4,583 and 8,112 events late in 2 of ~15 runs with 4 partitions
(docs/stream.md "Event time"); the test then had to run on one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from deploy.local.broker import LocalBroker
from deploy.local.clickhouse import LocalClickHouse
from journeys.definitions import load_definitions
from journeys.settings import KafkaConfig, WarehouseConfig
from journeys.timeutil import datetime_to_ms
from journeys.topics import ensure_journey_topics
from stream.engine.alert_verdict import alert_id
from stream.engine.identity import JUNK_IDS
from tests.integration.alerts_support import streamed_alerts
from tests.integration.stream_support import (
    demo_day,
    journeys_in,
    late_events,
    produce,
    produce_fillers,
    row_view,
    sessions_in,
    start_worker,
    stop_worker,
    wait_pipeline,
    worker_env,
)
from tests.reference.stitching_ref import split, view_of
from warehouse.connect import connect
from warehouse.queries import alerts as alerts_query

PARTITIONS = 4  # see above
DAY = 86_400_000
START_MS = datetime_to_ms(datetime(2026, 3, 1, 17, tzinfo=UTC))  # an afternoon start
LATENESS_MS = 300_000  # the default


@pytest.mark.timeout(600)
def test_bulk_backfill_equals_reference_journeys_and_alerts(
    broker: LocalBroker, clickhouse_server: LocalClickHouse,
    unique_name: Callable[[str], str], tmp_path: Path,
) -> None:
    defs = load_definitions()
    prefix, db = unique_name("bf"), unique_name("bf")
    kafka = KafkaConfig(bootstrap_servers=broker.bootstrap_servers, topic_prefix=prefix,
                        partitions=PARTITIONS)
    ensure_journey_topics(kafka)
    env = worker_env(kafka, clickhouse_server.host, clickhouse_server.tcp_port, db,
                     unique_name("bfw"), DATA_DIR=str(tmp_path / "data"),
                     ALLOWED_LATENESS_MS=str(LATENESS_MS))
    events = demo_day(START_MS)
    end = max(e["occurred_at"] for e in events) + 10 * DAY  # past every deadline and window
    instances, want_sessions = split(defs, events, set(JUNK_IDS), end - LATENESS_MS)
    stitched = sum(1 for e in events if e.get("customer_id") and e.get("anonymous_id"))
    assert len(events) > 10_000 and stitched > 1_000

    produce(kafka, events)  # all of it before the worker starts: one backlog
    produce_fillers(kafka, end)
    log = tmp_path / "worker.log"
    worker = start_worker(env, log, loglevel="info")  # stats lines: late=
    try:
        wait_pipeline(kafka, env["JOURNEYS_APP_ID"], [worker], log, timeout=300)
        wh = connect(WarehouseConfig(backend="server", host=clickhouse_server.host,
                                     port=clickhouse_server.tcp_port, database=db),
                     create_database=False)
        try:
            want = view_of(instances)
            got = {iid: row_view(r) for iid, r in journeys_in(wh).items()}
            late = late_events(log)
            missing, extra = set(want) - set(got), set(got) - set(want)
            for iid in sorted(missing)[:3]:
                print("missing", want[iid])
            for iid in sorted(extra)[:3]:
                print("extra", got[iid])
            assert not missing and not extra, (
                f"missing {len(missing)}, extra {len(extra)}; late events {late}")
            bad = [iid for iid in want if got[iid] != want[iid]]
            for iid in bad[:3]:
                print("want", want[iid], "\ngot ", got[iid])
            assert not bad, f"{len(bad)} of {len(want)} instances differ, e.g. {bad[:3]}"
            assert sessions_in(wh) == want_sessions

            # each window as known at its final point (docs/alerting.md)
            expected = {alert_id(a.journey, a.step, a.channel, a.window_start): a.kind
                        for a in streamed_alerts(defs, events, end - LATENESS_MS)}
            assert sum(k == "fired" for k in expected.values()) >= 2  # the incident at least
            rows, _total = alerts_query.run(wh, limit=1000)
            assert {r.alert_id: r.kind for r in rows} == expected
        finally:
            wh.close()
    finally:
        stop_worker(worker)
    text = log.read_text()
    assert "gave up waiting" not in text  # every hold was released by its handover
