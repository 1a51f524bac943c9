"""What each fault test records before it asserts (docs/reliability.md "Figures");
tests/faults/conftest.py prints the table at the end of the run."""

from __future__ import annotations

from typing import Any

ROWS: list[dict[str, Any]] = []
COLUMNS = ("fault", "acknowledged", "lost", "doubled", "recovery_s", "note")


class FaultFigures:
    def __call__(self, fault: str, *, acknowledged: int, lost: int, doubled: int,
                 recovery_s: float | None = None, note: str = "") -> None:
        ROWS.append({"fault": fault, "acknowledged": acknowledged, "lost": lost,
                     "doubled": doubled,
                     "recovery_s": "" if recovery_s is None else f"{recovery_s:.1f}",
                     "note": note})
