"""Binomial tail P(X >= k): against exact rational brute force, degenerate cases, extremes."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.engine.binomial import binom_sf, log_comb
from tests.profiles import examples
from tests.reference.alerts_ref import exact_binom_sf


def _close(got: float, exact: Fraction, rel: float = 1e-11) -> bool:
    want = float(exact)
    if want < 1e-290:  # below double range for practical purposes
        return got < 1e-280
    return abs(got - want) <= rel * want


@given(
    n=st.integers(0, 160),
    k=st.integers(-2, 165),
    p=st.one_of(
        st.floats(0.0, 1.0),
        st.floats(1e-9, 1e-3),
        st.floats(0.999, 1.0),
        st.sampled_from([0.0, 1.0, 0.5, 0.25, 1 / 3]),
    ),
)
@settings(max_examples=examples(400), deadline=None)
def test_matches_exact_sum(n: int, k: int, p: float) -> None:
    assert _close(binom_sf(k, n, p), exact_binom_sf(k, n, p))


def test_degenerate_cases() -> None:
    assert binom_sf(0, 10, 0.3) == 1.0
    assert binom_sf(-1, 10, 0.3) == 1.0
    assert binom_sf(11, 10, 0.3) == 0.0
    assert binom_sf(0, 0, 0.5) == 1.0
    # baseline 0: X is always 0, so any drop is impossible under it
    assert binom_sf(1, 50, 0.0) == 0.0
    assert binom_sf(0, 50, 0.0) == 1.0
    # baseline 1: X is always n
    assert binom_sf(50, 50, 1.0) == 1.0
    assert binom_sf(1, 50, 1.0) == 1.0
    with pytest.raises(ValueError):
        binom_sf(1, 10, 1.5)
    with pytest.raises(ValueError):
        binom_sf(1, -1, 0.5)


def test_known_values() -> None:
    # P(X >= 3), X ~ Bin(5, 0.25) = 0.103515625 exactly
    assert binom_sf(3, 5, 0.25) == pytest.approx(0.103515625, rel=1e-14)
    # whole support and single points
    assert binom_sf(10, 10, 0.5) == pytest.approx(0.5**10, rel=1e-14)
    assert binom_sf(1, 10, 0.5) == pytest.approx(1 - 0.5**10, rel=1e-14)


def test_large_n_stays_finite_and_fast() -> None:
    # normal approximation: z = (500500 - 0.5 - 500000) / 500 ~ 0.999 -> ~0.1589
    assert binom_sf(500_500, 1_000_000, 0.5) == pytest.approx(0.15889, abs=2e-4)
    assert binom_sf(600_000, 1_000_000, 0.5) == 0.0  # ~1e-8700, underflows to 0, no error
    assert 0.0 < binom_sf(3, 10**7, 1e-9) < 2e-7
    # a far tail in a large population still has full relative precision
    exact = exact_binom_sf(40, 1000, 0.01)
    assert _close(binom_sf(40, 1000, 0.01), exact, rel=1e-10)


def test_log_comb_both_regimes() -> None:
    assert log_comb(10, 3) == pytest.approx(math.log(120), rel=1e-15)
    n, k = 10_000, 4_321
    assert log_comb(n, k) == pytest.approx(math.log(math.comb(n, k)), rel=1e-12)
