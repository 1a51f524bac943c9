"""Hypothesis profiles, chosen by HYPOTHESIS_PROFILE:

- `ci` (default): derandomized (the same examples every run, so CI cannot land or fail
  by chance) and no example database;
- `thorough`: random, ten times the examples of each test (tests ask for
  `examples(n)`): run it before resolving stream work (scripts/thorough.sh).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

pytest_plugins = ["tests.services"]  # the real services' fixtures (tests/integration, faults)

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.register_profile("ci", derandomize=True, database=None, deadline=None,
                          print_blob=True)
settings.register_profile("thorough", derandomize=False, deadline=None, print_blob=True,
                          max_examples=1000,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(PROFILE)
