"""Small statistics the product-manager reports share: exact quantiles' definition, the
two-proportion z-test and period arithmetic. Plain `math`: no scipy dependency.

Quantiles are computed in SQL with `quantileExact(level)`, which on ClickHouse 18.16 and
chdb alike returns the value at 0-based rank floor(level * n) of the n sorted values (the
upper median for an even n); `exact_quantile` is the same rule in Python, for tests and
docs (docs/reports.md "Time to convert").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date, timedelta

from journeys.errors import InvalidQuery
from warehouse.queries._journeys import MIN_DATE


def exact_quantile(values: Sequence[float], level: float) -> float | None:
    """ClickHouse's quantileExact: sorted(values)[floor(level * n)], None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(int(level * len(ordered)), len(ordered) - 1)]


def two_proportion_p(x1: int, n1: int, x2: int, n2: int) -> float | None:
    """Two-sided p-value of H0 "x1/n1 and x2/n2 come from one proportion" (pooled
    two-proportion z-test, normal approximation): erfc(|z| / sqrt 2). None when either
    sample is empty; 1.0 when the pooled proportion is 0 or 1 (no variation at all)."""
    if n1 <= 0 or n2 <= 0:
        return None
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    z = (x1 / n1 - x2 / n2) / se
    return math.erfc(abs(z) / math.sqrt(2))


def previous_period(date_from: date, date_to: date) -> tuple[date, date]:
    """The period of the same length that ends the day before `date_from`."""
    days = (date_to - date_from).days
    prev_to = date_from - timedelta(days=1)
    if prev_to < MIN_DATE:
        raise InvalidQuery(f"no previous period: 'from' ({date_from}) is the first day a "
                           f"report can cover ({MIN_DATE})")
    return max(prev_to - timedelta(days=days), MIN_DATE), prev_to


def change(current: float | None, previous: float | None) -> tuple[float | None, float | None]:
    """(current - previous, that relative to previous); None where undefined."""
    if current is None or previous is None:
        return None, None
    diff = current - previous
    return diff, (diff / previous if previous else None)
