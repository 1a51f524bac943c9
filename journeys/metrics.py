"""Prometheus exposition, through prometheus_client, of counters that components report
as plain samples: zero-argument callables returning {metric_name: value | {labels:
value}} (labels: a tuple of (name, value) pairs). Names ending in `_total` are counters,
the others gauges. The API's and the collector's /metrics both render through here, so
api/ needs no import from stream/ or ingest/ to expose the embedded worker's counters."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

log = logging.getLogger(__name__)

Samples = Mapping[str, Any]
Source = Callable[[], Samples]
CONTENT_TYPE = CONTENT_TYPE_LATEST


def _family(name: str, value: Any) -> Metric:
    kind = CounterMetricFamily if name.endswith("_total") else GaugeMetricFamily
    if not isinstance(value, Mapping):
        return kind(name, name.replace("_", " "), value=float(value))
    label_names = [k for k, _v in next(iter(value), ())]
    family = kind(name, name.replace("_", " "), labels=label_names)
    for labels, v in sorted(value.items()):
        family.add_metric([str(val) for _k, val in labels], float(v))
    return family


class _Samples:
    """A prometheus_client collector over the sources' samples, read at scrape time."""

    def __init__(self, sources: Mapping[str, Source]) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        for source, collect in sorted(self._sources.items()):
            try:
                samples = collect()
            except Exception:  # a broken source must not break /metrics
                log.warning("metrics source %r failed", source, exc_info=True)
                continue
            for name, value in sorted(samples.items()):
                yield _family(name, value)


def exposition(sources: Mapping[str, Source]) -> bytes:
    """The Prometheus text format of every source's samples (CONTENT_TYPE)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Samples(sources))
    return generate_latest(registry)
