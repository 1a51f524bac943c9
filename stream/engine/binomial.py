"""Binomial upper tail P(X >= k), X ~ Binomial(n, p), without scipy.

Why not 1 - CDF: the alert decision compares the tail with tiny levels (1 - 0.999), where
1 - (something close to 1) has no correct digits left. So the smaller tail is always summed
directly: terms start at the tail's edge (computed in log space, exact log-binomial for
moderate n) and are extended by the term ratio until they stop contributing. Beyond the
mode the terms decrease monotonically, so the loop stops early (~O(sqrt(n)) terms).
"""

from __future__ import annotations

import math

_EXACT_COMB_MAX_N = 4096  # math.comb is exact and fast enough up to here
_NEGLIGIBLE = 1e-17


def log_comb(n: int, k: int) -> float:
    """log C(n, k): exact big-integer binomial for moderate n, lgamma beyond."""
    if n <= _EXACT_COMB_MAX_N:
        return math.log(math.comb(n, k))
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _log_pmf(i: int, n: int, p: float) -> float:
    return log_comb(n, i) + i * math.log(p) + (n - i) * math.log1p(-p)


def _sum_up(k: int, n: int, p: float) -> float:
    """P(X >= k) for k above the mean: terms decrease from k upwards."""
    odds = p / (1.0 - p)
    total, term = 1.0, 1.0
    for i in range(k, n):
        term *= (n - i) / (i + 1) * odds
        total += term
        if term < total * _NEGLIGIBLE:
            break
    return math.exp(_log_pmf(k, n, p) + math.log(total))


def _sum_down(j: int, n: int, p: float) -> float:
    """P(X <= j) for j below the mean: terms decrease from j downwards."""
    inv_odds = (1.0 - p) / p
    total, term = 1.0, 1.0
    for i in range(j, 0, -1):
        term *= i / (n - i + 1) * inv_odds
        total += term
        if term < total * _NEGLIGIBLE:
            break
    return math.exp(_log_pmf(j, n, p) + math.log(total))


def binom_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), accurate to ~1e-12 relative in the small tail.

    Degenerate cases follow the distribution exactly: p = 0 means X = 0, p = 1 means
    X = n; k <= 0 is certain and k > n impossible.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    if not 0.0 <= p <= 1.0:
        raise ValueError("p must be within [0, 1]")
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p == 0.0:
        return 0.0
    if p == 1.0:
        return 1.0
    if k > n * p:
        return min(1.0, _sum_up(k, n, p))
    # k <= mean: P(X >= k) >= 1/2 (the median is at least floor(np)), so the complement
    # of the small lower tail is accurate.
    return max(0.0, min(1.0, 1.0 - _sum_down(k - 1, n, p)))
