"""journeys.metrics: plain samples rendered by prometheus_client."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from journeys.metrics import exposition


def _broken() -> dict[str, int]:
    raise RuntimeError("source down")


def test_counters_gauges_labels_and_a_broken_source() -> None:
    text = exposition({
        "a": lambda: {"x_events_total": 3, "x_pending": 2,
                      "x_requests_total": {(("status", '20"2'),): 5,
                                           (("status", "503"),): 1}},
        "b": _broken,
    }).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["x_events"].type == "counter"
    assert families["x_pending"].type == "gauge"
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    assert samples[("x_events_total", ())] == 3
    assert samples[("x_pending", ())] == 2
    assert samples[("x_requests_total", (("status", '20"2'),))] == 5  # escaped, parsed back
    assert samples[("x_requests_total", (("status", "503"),))] == 1
