"""What the dashboard's browser tests share: the API served by uvicorn on a free
127.0.0.1 port (in a thread), headless Chromium from Debian's `chromium` +
`chromium-driver` driven by selenium (never a browser download: a missing browser fails
the test, scripts/test.sh installs it), and a warehouse holding the demo's sample (its
stories: a checkout loop, a payment incident with its alerts, a call-centre switch),
computed with the reference semantics and written with the warehouse writers.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from ingest.generator import DEMO_VISITORS_PER_HOUR, GeneratorConfig, generate_events
from ingest.stories import demo_stories
from journeys.definitions import load_definitions
from journeys.settings import WarehouseConfig
from tests.integration.alerts_support import stitch
from tests.reference.alerts_ref import alerts as reference_alerts
from tests.reference.alerts_ref import exact_binom_sf
from tests.reference.journeys_ref import Instance, all_journeys
from warehouse.backend import Warehouse
from warehouse.connect import connect
from warehouse.schema import migrate
from warehouse.writers_alerts import write_alerts
from warehouse.writers_journeys import write_journey_instances

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
H, D = 3_600_000, 86_400_000
DEMO_START = 1_772_384_400_000  # 2026-03-01T17:00Z
DEMO_DAYS = 2  # the stories on the last day (as `journeys demo` places them), history before


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """The app on http://127.0.0.1:<free port>/ until the block ends."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(),
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="dashboard-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def chromium(downloads: Path) -> Any:
    """Headless Chromium (Debian's) through chromedriver; fails when it is missing."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if shutil.which(p) is None]
    if missing:
        pytest.fail(f"{' and '.join(missing)} missing: `apt-get install -y chromium "
                    "chromium-driver` (scripts/test.sh does it)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1440,1000", "--lang=en-US", "--no-first-run",
                "--disable-extensions", "--disable-background-networking"):
        opts.add_argument(arg)
    opts.add_experimental_option("prefs", {
        "download.default_directory": str(downloads), "download.prompt_for_download": False,
        "safebrowsing.enabled": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior",
                           {"behavior": "allow", "downloadPath": str(downloads)})
    return driver


def screenshot(driver: Any, path: Path) -> Path:
    """The whole page (the window grown to the document's height), as PNG."""
    width = driver.execute_script("return document.documentElement.scrollWidth")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(max(1440, width), min(max(1000, height + 120), 8000))
    time.sleep(0.3)
    driver.save_screenshot(str(path))
    driver.set_window_size(1440, 1000)
    print(f"screenshot: {path}")
    return path


def wait_for(what: Callable[[], Any], timeout: float = 30.0, message: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = what()
        except Exception as e:  # a stale element while the page re-renders
            last = e
        else:
            if last:
                return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {message or what}: last {last!r}")


# ---- the demo's sample ----------------------------------------------------------------

def demo_sample() -> tuple[GeneratorConfig, list[dict[str, Any]]]:
    cfg = GeneratorConfig(seed=7, start_ms=DEMO_START, duration_ms=DEMO_DAYS * D,
                          visitors_per_hour=DEMO_VISITORS_PER_HOUR,
                          stories=demo_stories(DEMO_DAYS * D, DEMO_START))
    return cfg, list(generate_events(cfg))


def _row(inst: Instance, steps: tuple[str, ...], version: str,
         contexts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "instance_id": inst.instance_id, "journey": inst.journey, "customer_id": inst.customer,
        "status": inst.status, "opened_at_ms": inst.opened_at,
        "closed_at_ms": inst.closed_at or 0, "furthest_step": inst.furthest,
        "furthest_step_name": steps[inst.furthest],
        "path_types": [e.type for e in inst.path], "path_channels": [e.channel for e in inst.path],
        "path_times": [e.t for e in inst.path],
        "detour_kinds": [x.kind for x in inst.detours], "detour_steps": [x.step for x in inst.detours],
        "detour_channels": [x.channel for x in inst.detours],
        "detour_times": [x.t for x in inst.detours], "version": 1,
        "entry_context": contexts.get(inst.path[0].event_id, {}), "events": len(inst.path),
        "path_truncated": 0, "definition_version": version, "value": inst.value,
    }


def _alert_row(a: Any, d: Any) -> dict[str, Any]:
    rule = d.alert
    key = f"{a.kind}|{a.journey}|{a.step}|{a.channel}|{a.window_start}"
    return {"definition_version": d.version, "alert_id": hashlib.sha256(key.encode()).hexdigest()[:24],
            "kind": a.kind, "journey": a.journey, "step": a.step, "step_index": d.steps.index(a.step),
            "channel": a.channel, "window_start_ms": a.window_start,
            "window_end_ms": a.window_start + rule.window_ms, "horizon_ms": rule.horizon_ms,
            "population": a.population, "dropped": a.dropped,
            "rate": a.dropped / a.population if a.population else 0.0, "baseline": a.baseline,
            "baseline_windows": rule.baseline_windows, "threshold": rule.threshold,
            "confidence": rule.confidence,
            "p_value": float(exact_binom_sf(a.dropped, a.population, Fraction(a.baseline)))}


def demo_loaded(config: WarehouseConfig) -> Iterator[tuple[Warehouse, GeneratorConfig]]:
    """A migrated database with the demo sample's journey instances and alerts."""
    cfg, events = demo_sample()
    defs = load_definitions()
    evs = stitch(events)
    watermark = max(e.t for e in evs)
    instances = all_journeys(defs.journeys, evs, watermark=watermark)
    contexts = {e["event_id"]: e.get("context") or {} for e in events}
    wh = connect(config)
    try:
        migrate(wh)
        write_journey_instances(wh, [_row(i, defs.get(i.journey).steps,
                                          defs.get(i.journey).version, contexts)
                                     for i in instances])
        rows = [_alert_row(a, d) for d in defs.journeys
                for a in reference_alerts(d, [i for i in instances if i.journey == d.name],
                                          watermark)]
        if rows:
            write_alerts(wh, rows)
        yield wh, cfg
    finally:
        wh.execute(f"DROP DATABASE IF EXISTS {config.database}")
        wh.close()
