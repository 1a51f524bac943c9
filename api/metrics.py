"""Prometheus text exposition of the counters other components register.

Components put zero-argument callables returning {metric_name: value | {labels: value}}
into ApiState.metrics; this keeps api/ free of imports from stream/ or ingest/ while the
embedded process can still expose the worker's counters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Sample = float | int | Mapping[tuple[tuple[str, str], ...], float | int]


def _fmt_labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    inner = ",".join(
        f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in labels
    )
    return "{" + inner + "}"


def render_metrics(sources: Mapping[str, Callable[[], Mapping[str, Any]]]) -> str:
    lines: list[str] = []
    for _source, collect in sorted(sources.items()):
        try:
            samples = collect()
        except Exception:  # a broken collector must not break /metrics
            continue
        for name, value in sorted(samples.items()):
            lines.append(f"# TYPE {name} {'counter' if name.endswith('_total') else 'gauge'}")
            if isinstance(value, Mapping):
                for labels, v in sorted(value.items()):
                    lines.append(f"{name}{_fmt_labels(labels)} {v}")
            else:
                lines.append(f"{name} {value}")
    return "\n".join(lines) + "\n"
