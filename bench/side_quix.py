"""The peer of bench/bench_side_by_side.py: Quix Streams doing a comparable stateful
per-customer job on the product's raw topic, in one process.

Runs under its own interpreter (`.venv-quix/bin/python`: Quix Streams pins older
pydantic and confluent-kafka than the product uses, so it cannot share `.venv`); it
imports nothing from the product. The job: re-key every touchpoint by its customer id
(else its anonymous id) through a repartition topic, then 30-minute inactivity sessions
per key in a RocksDB-backed session window (event time = `occurred_at`, grace = the
product's allowed lateness) counting the events of each session, emitted when a later message of the
same key closes it (Quix's default closing strategy; its "partition" strategy, closer to
the product's, scans every key's windows on every message in quixstreams 3.28 and did
not finish 200,000 events in 10 minutes). The bench's far-future fillers are counted but kept out of the windows (one
would move a repartition partition's watermark days ahead of raw partitions not read
yet, and Quix would drop their events as late); so the sessions still open at the end
are not emitted and the count printed is not the product's. Events dropped as late are
counted. It stops once every expected event has reached the session stage and prints
one JSON line: wall-clock times (epoch seconds), its own CPU seconds (/proc/self/stat,
every thread: librdkafka's and RocksDB's included), events seen, sessions emitted, late.

    .venv-quix/bin/python bench/side_quix.py BOOTSTRAP TOPIC EXPECTED STATE_DIR
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from quixstreams import Application

GAP_MS = 30 * 60_000
GRACE_MS = 300_000  # bench_stream.LATENESS_MS: the product's allowed lateness there
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> float:
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def occurred_ms(value: Any, _headers: Any, timestamp: int, _kind: Any) -> int:
    """Event time from the touchpoint (ISO-8601 or epoch ms), the record's time otherwise."""
    at = value.get("occurred_at") if isinstance(value, dict) else None
    if isinstance(at, int):
        return at
    if isinstance(at, str):
        return int(datetime.fromisoformat(at).timestamp() * 1000)
    return timestamp


def main() -> None:
    bootstrap, topic_name, expected, state_dir = (sys.argv[1], sys.argv[2],
                                                  int(sys.argv[3]), sys.argv[4])
    timeout = float(sys.argv[5]) if len(sys.argv) > 5 else 1800.0
    app = Application(broker_address=bootstrap, consumer_group=f"side-quix-{os.getpid()}",
                      auto_offset_reset="earliest", state_dir=state_dir, loglevel="WARNING")
    topic = app.topic(topic_name, value_deserializer="json", timestamp_extractor=occurred_ms)
    seen = {"events": 0, "sessions": 0, "late": 0, "first": 0.0, "done": 0.0}

    def arrived(_value: Any) -> None:
        if not seen["events"]:
            seen["first"] = time.time()
        seen["events"] += 1
        if seen["events"] >= expected:  # this event still goes through its window
            seen["done"] = time.time()
            app.stop()

    def closed(_value: Any) -> None:
        seen["sessions"] += 1

    def late(*_args: Any, **_kwargs: Any) -> bool:
        seen["late"] += 1
        return False  # counted and printed once, not logged per record

    sdf = app.dataframe(topic)
    sdf = sdf.group_by(lambda v: v.get("customer_id") or v.get("anonymous_id") or "-",
                       name="customer")
    sdf = sdf.update(arrived)
    # the bench's far-future fillers close the product's sessions; here they would push
    # a repartition partition's watermark ahead of the raw partitions not yet read
    sdf = sdf.filter(lambda v: not str(v.get("event_id", "")).startswith("fill-"))
    sdf = sdf.session_window(inactivity_gap_ms=GAP_MS, grace_ms=GRACE_MS, on_late=late
                             ).count().final()
    # Quix's default closing strategy ("key": a key's sessions close on its next
    # message). "partition" (closing on the partition's time, as the product does) scans
    # every key's windows on every message in quixstreams 3.28 (SessionWindow.
    # expire_by_partition): 200,000 events had not finished after 10 minutes at 100% CPU.
    sdf = sdf.update(closed)
    watchdog = threading.Timer(timeout, app.stop)
    watchdog.daemon = True
    watchdog.start()
    app.run()
    watchdog.cancel()
    print(json.dumps({"events": seen["events"], "sessions": seen["sessions"],
                      "late": seen["late"],
                      "first": seen["first"], "done": seen["done"] or time.time(),
                      "cpu_s": cpu_seconds(), "complete": seen["events"] >= expected}),
          flush=True)


if __name__ == "__main__":
    main()
