"""SQL fragments that read step progress off a stored path (`path_types`, `path_times`,
`path_channels`), shared by the product-manager reports.

Step reach times are not a column of `journey_instances`; they follow from the path: the
first path event whose step index is >= s is the one that first reached step s (a jump
counts skipped steps as reached by it, docs/semantics.md). A capped path holds its first
events only, so a position of 0 ("not on the stored path") means "not known", never "not
reached": callers count such instances apart (docs/semantics.md "Capped paths").

Step names are values: each is a parameter (`%(step0)s`, ...) of an array literal whose
length is the definition's (structure from the definition, values as parameters; the
driver renders a list parameter as a tuple, which `indexOf` does not take).
"""

from __future__ import annotations

from typing import Any

from journeys.definitions import JourneyDefinition


def steps_array(journey: JourneyDefinition) -> tuple[str, dict[str, Any]]:
    """`[%(step0)s, %(step1)s, ...]` and its parameters."""
    params = {f"step{i}": s for i, s in enumerate(journey.steps)}
    return "[" + ", ".join(f"%({k})s" for k in params) + "]", params


def step_index(expr: str, steps: str) -> str:
    """1-based step index of the event type `expr` (0: not a step)."""
    return f"indexOf({steps}, {expr})"


def reach_position(step: str, steps: str) -> str:
    """1-based path position of the event that first reached 0-based step `step` (an SQL
    expression), 0 when that is not on the stored path."""
    return f"arrayFirstIndex(ty -> {step_index('ty', steps)} > {step}, path_types)"
