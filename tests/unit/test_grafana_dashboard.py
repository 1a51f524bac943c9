"""deploy/grafana/journeys-dashboard.json asks only for metrics the product exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXPOSED_BY = ["stream/agents/stats.py", "stream/agents/app.py", "stream/agents/alerts.py",
              "ingest/collector_service.py"]


def _exposed() -> set[str]:
    names: set[str] = set()
    for path in EXPOSED_BY:
        names |= set(re.findall(r'"(journeys_[a-z_]+)"', (ROOT / path).read_text()))
    return names


def test_every_query_names_an_exposed_metric_and_every_panel_has_one() -> None:
    dash = json.loads((ROOT / "deploy/grafana/journeys-dashboard.json").read_text())
    exposed = _exposed()
    assert {"journeys_events_in_total", "journeys_event_time_lag_seconds",
            "journeys_alerts_total", "journeys_collector_requests_total"} <= exposed
    used = set()
    for panel in dash["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used |= set(re.findall(r"\bjourneys_[a-z_]+", target["expr"]))
    assert used and used <= exposed, used - exposed
