"""How many examples a property test runs under the active Hypothesis profile
(tests/conftest.py): the test's own count in CI, ten times it when thorough."""

from __future__ import annotations

import os

MULTIPLIER = 10 if os.environ.get("HYPOTHESIS_PROFILE", "ci") == "thorough" else 1


def examples(n: int) -> int:
    return n * MULTIPLIER
