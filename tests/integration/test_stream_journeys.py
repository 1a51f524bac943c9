"""Journeys end to end: two workers in one group on the real broker and ClickHouse server,
one SIGKILLed mid-stream and restarted; the warehouse, the journeys-closed topic and the
identity merges must equal the reference exactly.

Traffic: customers and anonymous devices on several channels walking two journeys, with
detours, abandonments, conversions, duplicates, out-of-order arrival, placeholder ids,
and devices that log in (identify) right after browsing, so their open journeys and
sessions are stitched to the customer. At the end, events of filler customers far in
the future move every partition's watermark past every deadline, so every instance is
closed and the comparison is total.

Traffic is produced by arrival time in slices (live traffic), each slice waited for, so
the kill lands mid-stream with work in flight in every stage; arrival jitter stays
within the allowed lateness, so no event is late and the result must be exactly the
reference (docs/semantics.md "Event time"). tests/integration/test_stream_matrix.py
covers backlogs, more partitions and workers.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from deploy.local.broker import LocalBroker
from deploy.local.clickhouse import LocalClickHouse
from journeys.definitions import load_definitions
from journeys.settings import KafkaConfig, WarehouseConfig
from journeys.topics import ensure_journey_topics
from stream.engine.identity import JUNK_IDS
from tests.integration.ingest_support import read_topic
from tests.integration.stream_support import (
    journeys_in,
    produce,
    produce_fillers,
    row_view,
    sessions_in,
    start_worker,
    stop_worker,
    wait_pipeline,
    worker_env,
)
from tests.reference.stitching_ref import split_reference
from warehouse.connect import connect

PARTITIONS = 4
BASE_MS = 1_772_323_200_000  # 2026-03-01T00:00Z
M = 60_000
LATENESS_MS = 120 * M  # JOURNEYS_ALLOWED_LATENESS_MS of the workers
JITTER_MS = 20 * M  # arrival after occurred_at
SLICE_MS = 60 * M  # produced together; slice + jitter < lateness
DEFINITIONS = """
journeys:
  - name: purchase
    steps: [product_view, add_to_cart, cart, payment_details, purchase]
    abandon_after: 40m
    conversion_window: 3h
    off_path: [support_chat, error_page]
  - name: onboarding
    steps: [signup_start, signup_complete, first_order]
    abandon_after: 2h
    conversion_window: 1d
sessions: {gap: 30m}
"""
PURCHASE = ("product_view", "add_to_cart", "cart", "payment_details", "purchase")
OTHER = ("support_chat", "error_page", "page_view", "signup_start", "signup_complete",
         "first_order")
CHANNELS = ("web", "app", "email", "store", "call_center", "chat")


def traffic(seed: int, people: int) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    events: list[dict[str, Any]] = []

    def add(t: int, typ: str, ch: str, cust: str | None, anon: str | None) -> None:
        events.append({"event_id": f"ev-{len(events):05d}", "type": typ, "channel": ch,
                       "occurred_at": t, "customer_id": cust, "anonymous_id": anon,
                       "context": {"campaign": rnd.choice(("spring", "brand"))}})

    for k in range(people):
        cust, dev = f"cust-{k}", f"dev-{k}"
        t = BASE_MS + rnd.randrange(0, 4 * 60 * M)
        ch = rnd.choice(CHANNELS)
        if k % 3 == 0:  # browses anonymously, then logs in: the device gets stitched
            for typ in PURCHASE[:rnd.randint(1, 3)]:
                t += rnd.choice((20_000, 40_000))
                add(t, typ, ch, None, dev)
            t += 30_000
            add(t, "identify", rnd.choice(CHANNELS), cust, dev)
        for _burst in range(rnd.randint(1, 3)):
            step = -1
            for _ in range(rnd.randint(1, 9)):
                t += rnd.choice((20_000, 2 * M, 7 * M, 12 * M))
                if rnd.random() < 0.2:
                    ch = rnd.choice(CHANNELS)
                r = rnd.random()
                if step < 0 or r < 0.45:
                    step = min(step + 1, len(PURCHASE) - 1)
                    typ = PURCHASE[step]
                elif r < 0.6:
                    typ = PURCHASE[rnd.randint(0, step)]
                else:
                    typ = rnd.choice(OTHER)
                device_only = k % 3 == 0 and rnd.random() < 0.3  # after the link
                add(t, typ, ch, None if device_only else cust, dev if device_only else None)
                if typ == "purchase":
                    step = -1
            t += rnd.choice((45 * M, 90 * M, 3 * 60 * M))
        if k % 7 == 0:
            add(t, "page_view", "web", None, rnd.choice(sorted(JUNK_IDS - {""})))
    return events


def arrival_order(events: list[dict[str, Any]], seed: int) -> list[tuple[int, dict[str, Any]]]:
    """(arrival time, event): late by up to JITTER_MS, with some duplicates."""
    rnd = random.Random(seed)
    dups = rnd.sample(events, len(events) // 12)
    keyed = sorted(((e["occurred_at"] + rnd.randrange(JITTER_MS), i, e)
                    for i, e in enumerate([*events, *dups])), key=lambda x: x[:2])
    return [(t, e) for t, _, e in keyed]


def slices(order: list[tuple[int, dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    out: list[list[dict[str, Any]]] = []
    start = None
    for t, e in order:
        if start is None or t >= start + SLICE_MS:
            out.append([])
            start = t
        out[-1].append(e)
    return out


@pytest.mark.parametrize("store", ["memory", pytest.param("rocksdb", marks=pytest.mark.kafka_only)])
def test_two_workers_one_killed_journeys_equal_reference(
    broker: LocalBroker, clickhouse_server: LocalClickHouse,
    unique_name: Callable[[str], str], tmp_path: Path, store: str,
) -> None:
    """Both state stores (JOURNEYS_STATE_STORE): with RocksDB the killed worker restarts
    on its local database (written ahead of the changelog, then caught up from it)."""
    defs_path = tmp_path / "definitions.yaml"
    defs_path.write_text(DEFINITIONS)
    defs = load_definitions(defs_path)
    prefix, app_id, db = unique_name("jr"), unique_name("jrw"), unique_name("jr")
    kafka = KafkaConfig(bootstrap_servers=broker.bootstrap_servers, topic_prefix=prefix,
                        partitions=PARTITIONS)
    ensure_journey_topics(kafka)
    base_env = worker_env(kafka, clickhouse_server.host, clickhouse_server.tcp_port, db,
                          app_id, DEFINITIONS_PATH=str(defs_path), FLUSH_INTERVAL_S="0.2",
                          ALLOWED_LATENESS_MS=str(LATENESS_MS), STATE_STORE=store)
    envs = [{**base_env, "JOURNEYS_DATA_DIR": str(tmp_path / f"w{i}")} for i in range(2)]
    log = tmp_path / "workers.log"

    events = traffic(seed=5, people=90)
    order = arrival_order(events, seed=6)
    parts = slices(order)
    end = max(e["occurred_at"] for e in events) + 3 * 24 * 60 * M
    kill_at, restart_at = len(parts) // 3, len(parts) // 2

    workers = [start_worker(envs[0], log), start_worker(envs[1], log)]
    try:
        for i, part in enumerate(parts):
            produce(kafka, part)
            if i == kill_at:  # while the slice is in flight
                time.sleep(float(os.environ.get("KILL_AFTER", "0.3")))
                os.kill(workers[0].pid, signal.SIGKILL)
                workers[0].wait(10)
                workers_alive = [workers[1]]
            elif i == restart_at:
                workers[0] = start_worker(envs[0], log)
                workers_alive = workers
            else:
                workers_alive = [w for w in workers if w.poll() is None]
            wait_pipeline(kafka, app_id, workers_alive, log, timeout=180)
        produce_fillers(kafka, end)
        wait_pipeline(kafka, app_id, workers, log, timeout=120)

        wh = connect(WarehouseConfig(backend="server", host=clickhouse_server.host,
                                     port=clickhouse_server.tcp_port, database=db),
                     create_database=False)
        try:
            want, want_sessions = split_reference(defs, events, set(JUNK_IDS),
                                                  end - LATENESS_MS)
            got = {iid: row_view(r) for iid, r in journeys_in(wh).items()}
            assert len(want) > 100 and {w[2] for w in want.values()} == {
                "converted", "abandoned"}
            missing, extra = set(want) - set(got), set(got) - set(want)
            for iid in sorted(missing | extra)[:6]:
                cust = (want.get(iid) or got[iid])[1]
                print("MISSING" if iid in missing else "EXTRA", iid, want.get(iid) or got[iid])
                for other, row in got.items():
                    if row[1] == cust and other not in want:
                        print("  got for the customer:", other, row)
                for r in wh.query(f"SELECT instance_id, version, deleted, status, "
                                  f"length(path_types) FROM {db}.journey_instances "
                                  f"WHERE customer_id = %(c)s ORDER BY instance_id, version",
                                  {"c": cust}):
                    print("  row versions:", r)
                print("  touchpoints:", wh.query(
                    f"SELECT count() FROM {db}.touchpoints FINAL WHERE customer_id = %(c)s",
                    {"c": cust}), "sessions:", wh.query(
                    f"SELECT count(), sum(events) FROM {db}.sessions FINAL "
                    f"WHERE customer_id = %(c)s AND deleted = 0", {"c": cust}))
            assert not missing and not extra, f"missing {len(missing)}, extra {len(extra)}"
            bad = [iid for iid in want if got[iid] != want[iid]]
            for iid in bad[:5]:
                print("BAD", iid)
                print("  want", want[iid])
                print("  got ", got[iid])
            assert not bad, f"{len(bad)} of {len(want)} instances differ"
            assert sessions_in(wh) == want_sessions
            merges = wh.query(f"SELECT anonymous_id, customer_id, event_id "
                              f"FROM {db}.identity_merges FINAL")
            links: dict[str, tuple[int, str, str, str]] = {}  # the earliest link wins
            for e in events:  # (every device here links to one customer)
                anon, cust = e["anonymous_id"], e["customer_id"]
                if cust and anon and anon not in JUNK_IDS and cust not in JUNK_IDS:
                    link = (e["occurred_at"], e["event_id"], anon, cust)
                    links[anon] = min(links.get(anon, link), link)
            assert {tuple(r) for r in merges} == {(a, c, eid) for _t, eid, a, c in
                                                  links.values()}
            assert int(wh.query(f"SELECT count() FROM {db}.touchpoints FINAL")[0][0]) == (
                len(events) + PARTITIONS)  # and a filler per raw partition
        finally:
            wh.close()
        closed = read_topic(kafka.bootstrap_servers, kafka.closed_journeys_topic,
                            expected=len(want))
        assert {m.key.decode() for m in closed} == set(want)  # at least once, no extra
    finally:
        for w in workers:
            stop_worker(w)
