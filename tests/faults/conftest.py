"""The fault suite's figures (docs/reliability.md "Figures"): each fault test records,
before it asserts, what its fault cost — events acknowledged, lost, doubled, recovery
time — and the table is printed at the end of the run, whatever the outcome."""

from __future__ import annotations

from typing import Any

import pytest

from tests.faults.report import COLUMNS, ROWS, FaultFigures


@pytest.fixture
def fault_figures() -> FaultFigures:
    return FaultFigures()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not ROWS:
        return
    tr = terminalreporter
    tr.section("fault suite figures (lost and doubled must be 0)")
    widths = {c: max(len(c), *(len(str(r[c])) for r in ROWS)) for c in COLUMNS}
    tr.write_line(" | ".join(c.ljust(widths[c]) for c in COLUMNS))
    for r in ROWS:
        tr.write_line(" | ".join(str(r[c]).ljust(widths[c]) for c in COLUMNS))
