"""The report parameters' schema states what the handlers accept (api/params.py): the
breakdown names of each report come from its query module, and report dates from the
range a ClickHouse Date holds."""

from __future__ import annotations

import re
from typing import Any, get_args

import pytest

from api.params import MAX_DATE, MIN_DATE, IsoDate, breakdown_query
from warehouse.queries import abandonment, detours, funnel


def _pattern(allowed: Any) -> re.Pattern[str]:
    annotated = get_args(breakdown_query(allowed, "", None))[0]  # list[...] | None
    item = get_args(get_args(annotated)[0])[0]  # Annotated[str, WithJsonSchema]
    return re.compile(get_args(item)[1].json_schema["pattern"])


@pytest.mark.parametrize("module", [funnel, abandonment, detours])
def test_each_report_schema_takes_its_own_dimensions_and_no_other(module: Any) -> None:
    pattern = _pattern(module.ALLOWED)
    names = [n for n in module.ALLOWED if n != "context"]
    for name in names:
        assert pattern.fullmatch(name)
    assert pattern.fullmatch(",".join(names) + ", context.plan.tier")
    for other in {"step", "detour_channel"} - set(names):
        assert not pattern.fullmatch(other)
    for bad in ("country", "context.", "context.a.b.c.d", "context.1x", "channel,,day", ""):
        assert not pattern.fullmatch(bad), bad


def test_report_dates_schema_is_the_clickhouse_date_range() -> None:
    schema = get_args(IsoDate)[2].json_schema
    pattern = re.compile(schema["pattern"])
    assert pattern.fullmatch(MIN_DATE.isoformat()) and pattern.fullmatch(MAX_DATE.isoformat())
    assert not pattern.fullmatch("1969-12-31") and not pattern.fullmatch("2106-01-01")
