"""Snapshots of the product-manager report SQL (issue #16) and the small statistics and
comparison helpers they rest on. Values reach SQL only as parameters (the rendered text
shows them inlined); structure comes from fixed lists and the definition's step count.
A change here changes what a report counts: review it against docs/reports.md and
tests/integration/test_pm_reports.py."""

from __future__ import annotations

import math
from datetime import date
from typing import Any

import pandas as pd
import pytest

from api.versions import at_version
from journeys.definitions import load_definitions
from journeys.errors import InvalidQuery
from warehouse.queries import (
    _settled,
    compare,
    dropoff_drivers,
    non_step_types,
    scorecard,
    sequences,
    time_to_convert,
    trend,
)
from warehouse.queries._stats import (
    change,
    exact_quantile,
    previous_period,
    two_proportion_p,
)
from warehouse.sql import render

D = load_definitions().get("onboarding")
KW: dict[str, Any] = {"date_from": date(2024, 1, 2), "date_to": date(2024, 1, 3)}
STEPS = "['signup_start', 'signup_complete', 'profile_complete', 'first_order']"
VERSION = f"definition_version = '{D.version}'"  # the definition's own (current) version


def test_time_to_convert_sql() -> None:
    sql, params = time_to_convert.build("db", D, breakdown=["context.country"], **KW)
    assert params["step0"] == "signup_start" and "signup_start" not in sql  # a parameter
    assert render(sql, params) == (
        'SELECT ctx0, tr, count() AS instances, countIf(ok) AS measured, countIf(ok AND same) AS same_event,\n'
        '    quantilesExactIf(0.5, 0.9)(ms, ok) AS q, avgIf(ms, ok) AS mean,\n'
        '    countIf(ok AND ms >= 0 AND ms < 60000) AS b0, countIf(ok AND ms >= 60000 AND ms < 300000) AS b1, countIf(ok AND ms >= 300000 AND ms < 900000) AS b2, countIf(ok AND ms >= 900000 AND ms < 3600000) AS b3, countIf(ok AND ms >= 3600000 AND ms < 14400000) AS b4, countIf(ok AND ms >= 14400000 AND ms < 86400000) AS b5, countIf(ok AND ms >= 86400000 AND ms < 259200000) AS b6, countIf(ok AND ms >= 259200000 AND ms < 604800000) AS b7, countIf(ok AND ms >= 604800000) AS b8\n'
        'FROM (\n'
        "SELECT context_values[indexOf(context_keys, 'country')] AS ctx0, tr, arrayFirstIndex(ty -> indexOf(['signup_start', 'signup_complete', 'profile_complete', 'first_order'], ty) > tr - 1, path_types) AS p0, arrayFirstIndex(ty -> indexOf(['signup_start', 'signup_complete', 'profile_complete', 'first_order'], ty) > tr, path_types) AS p1,\n"
        '    p1 > 0 AS ok, p1 = p0 AS same, if(ok, toInt64(path_times[p1]) - toInt64(path_times[p0]), 0) AS ms\n'
        'FROM db.journey_instances FINAL\n'
        'ARRAY JOIN range(toUInt32(least(furthest_step, 3) + 1)) AS tr\n'
        f"WHERE journey = 'onboarding' AND {VERSION} AND deleted = 0 AND toDate(opened_at) >= '2024-01-02' AND toDate(opened_at) <= '2024-01-03'\n"
        ')\n'
        'GROUP BY ctx0, tr\n'
        'ORDER BY ctx0, tr'
    )
    end = render(*time_to_convert.build_end_to_end("db", D, channel="web", **KW))
    assert "SELECT 1 AS ok, 0 AS same, toInt64(closed_at_ms) - toInt64(opened_at_ms) AS ms" in end
    assert end.endswith("AND status = 'converted' AND entry_channel = 'web'\n)")


def test_dropoff_drivers_sql() -> None:
    assert render(*dropoff_drivers.build("db", D, step="signup_complete", **KW)) == (
        'SELECT feature, value, countIf(NOT went_on) AS dropped_with, countIf(went_on) AS went_on_with\n'
        'FROM (\n'
        "SELECT furthest_step > 1 AS went_on, arrayFirstIndex(ty -> indexOf(['signup_start', 'signup_complete', 'profile_complete', 'first_order'], ty) > 1 + 1, path_types) AS p_next,\n"
        "    arrayConcat(['entry_channel', 'last_channel'], arrayMap(x -> concat('context.', x), context_keys), arrayMap(x -> 'detour', arrayDistinct(arrayFilter((kd, st) -> st = 'signup_complete', arrayConcat(detour_kinds, capped_detour_kinds), arrayConcat(detour_steps, capped_detour_steps))))) AS names,\n"
        "    arrayConcat([entry_channel, if(went_on, if(p_next > 0, path_channels[p_next - 1], ''), if(path_truncated = 1, '', path_channels[-1]))], context_values, arrayDistinct(arrayFilter((kd, st) -> st = 'signup_complete', arrayConcat(detour_kinds, capped_detour_kinds), arrayConcat(detour_steps, capped_detour_steps)))) AS vals\n"
        'FROM db.journey_instances FINAL\n'
        f"WHERE journey = 'onboarding' AND {VERSION} AND deleted = 0 AND toDate(opened_at) >= '2024-01-02' AND toDate(opened_at) <= '2024-01-03' AND furthest_step >= 1 AND (furthest_step > 1 OR status = 'abandoned')\n"
        ')\n'
        'ARRAY JOIN names AS feature, vals AS value\n'
        "WHERE NOT (feature = 'last_channel' AND value = '')\n"
        'GROUP BY feature, value\n'
        'ORDER BY feature, value'
    )
    totals = render(*dropoff_drivers.build_totals("db", D, step="signup_complete", **KW))
    assert totals.startswith("SELECT countIf(furthest_step = 1), countIf(furthest_step > 1)")


def test_sequences_and_types_sql() -> None:
    seq = render(*sequences.build("db", D, limit=5, **KW))
    assert ("arrayFilter((x, prev) -> x != prev, s, arrayPushFront(arrayPopBack(s), '')) AS seq"
            in seq)
    assert f"path_truncated = 0 AND seq = arraySlice({STEPS}, 1, length(seq)) AS followed" in seq
    assert seq.endswith("WHERE path_truncated = 0\nGROUP BY seq\n"
                        "ORDER BY instances DESC, arrayStringConcat(seq, ' > ')\nLIMIT 5")
    summary = render(*sequences.build_summary("db", D, **KW))
    assert summary.count("countIf(status = ") == 9 and "uniqExactIf(seq, path_truncated = 0)" in summary
    types = render(*non_step_types.build("db", D, **KW))
    assert "ARRAY JOIN path_types AS type, afters AS after\n" in types
    assert types.endswith(f"WHERE indexOf({STEPS}, type) = 0\nGROUP BY type, after\n"
                          "ORDER BY type, after")
    assert "GROUP BY type\nORDER BY type" in render(*non_step_types.build(
        "db", D, by_position=False, **KW))


def test_trend_and_scorecard_sql() -> None:
    assert render(*trend.build("db", D, breakdown=["channel"], interval="week", **KW)) == (
        "SELECT toDate(opened_at) AS day, entry_channel AS channel, status, count() AS instances\n"
        "FROM db.journey_instances FINAL\n"
        f"WHERE journey = 'onboarding' AND {VERSION} AND deleted = 0 AND toDate(opened_at) >= '2024-01-02' "
        "AND toDate(opened_at) <= '2024-01-03'\n"
        "GROUP BY day, channel, status\nORDER BY day, channel, status")
    assert render(*scorecard.build_alerts("db", channel="web", **KW)) == (
        "SELECT journey, count() FROM db.alerts FINAL\n"
        "WHERE kind = 'fired' AND window_start_ms >= 1704153600000 AND window_start_ms < "
        "1704326400000 AND channel = 'web'\nGROUP BY journey\nORDER BY journey")
    versions = scorecard.versions([D, D.model_copy(update={"name": "x", "version": "v1"})])
    sql, params = scorecard.build_alerts("db", versions=versions, **KW)
    assert "v1" not in sql and params["versions"] == [f"onboarding:{D.version}", "x:v1"]
    assert render(sql, params).endswith(
        "window_start_ms < 1704326400000 AND concat(journey, ':', definition_version) IN "
        f"('onboarding:{D.version}', 'x:v1')\nGROUP BY journey\nORDER BY journey")


@pytest.mark.parametrize("build", [
    lambda d: time_to_convert.build("db", d, **KW),
    lambda d: time_to_convert.build_end_to_end("db", d, **KW),
    lambda d: trend.build("db", d, interval="day", **KW),
    lambda d: dropoff_drivers.build("db", d, step="signup_complete", **KW),
    lambda d: dropoff_drivers.build_totals("db", d, step="signup_complete", **KW),
    lambda d: sequences.build("db", d, limit=5, **KW),
    lambda d: sequences.build_summary("db", d, **KW),
    lambda d: non_step_types.build("db", d, **KW),
    lambda d: non_step_types.build_totals("db", d, **KW),
])
def test_every_pm_query_reads_one_definition_version(build: Any) -> None:
    """The version the API names (api.versions.at_version: a copy of the definition) is a
    parameter of the cohort filter, never SQL text: the same statement for any version."""
    other = at_version(D, "v-2024.1")
    sql, params = build(other)
    assert "definition_version = %(definition_version)s" in sql and "v-2024.1" not in sql
    assert params["definition_version"] == "v-2024.1"
    assert build(D)[0] == sql and build(D)[1]["definition_version"] == D.version
    assert build(at_version(D, "unversioned"))[1]["definition_version"] == ""


def test_settled_months_read_without_final() -> None:
    split = _settled.Split(settled=(202312,), dirty=(202401,))
    sql = render(*time_to_convert.build("db", D, split=split, **KW))
    assert sql.count("FINAL") == 1 and ")\nARRAY JOIN range(" in sql
    assert "path_types, path_times FROM db.journey_instances" in sql


@pytest.mark.parametrize("call", [
    lambda: dropoff_drivers.build("db", D, step="first_order", **KW),
    lambda: dropoff_drivers.build("db", D, step="nope", **KW),
    lambda: sequences.build("db", D, limit=0, **KW),
    lambda: trend.build("db", D, interval="month", **KW),
    lambda: trend.build("db", D, breakdown=["day"], **KW),
    lambda: time_to_convert.build("db", D, breakdown=["step"], **KW),
    lambda: time_to_convert.build("db", D, breakdown=["context.a b"], **KW),
    lambda: compare.check_breakdown(["channel", "hour"]),
    lambda: previous_period(date(1970, 1, 1), date(1970, 1, 5)),
])
def test_bad_requests_are_invalid_queries(call: Any) -> None:
    with pytest.raises(InvalidQuery):
        call()


def test_two_proportion_p() -> None:
    # 45/100 vs 30/100: pooled 0.375, z = 2.1909, two-sided p = 0.02846 (normal tables)
    assert two_proportion_p(45, 100, 30, 100) == pytest.approx(0.02846, abs=1e-5)
    assert two_proportion_p(30, 100, 45, 100) == two_proportion_p(45, 100, 30, 100)
    assert two_proportion_p(5, 10, 50, 100) == pytest.approx(1.0)
    assert two_proportion_p(0, 10, 0, 20) == 1.0 and two_proportion_p(1, 0, 1, 2) is None
    z = (0.6 - 0.4) / math.sqrt(0.5 * 0.5 * (2 / 50))
    assert two_proportion_p(30, 50, 20, 50) == pytest.approx(math.erfc(z / math.sqrt(2)))


def test_exact_quantile_is_clickhouses_rule() -> None:
    assert exact_quantile([4, 1, 3, 2], 0.5) == 3  # upper median, as quantileExact
    assert exact_quantile([5, 1, 3], 0.9) == 5 and exact_quantile([7], 0.9) == 7
    assert exact_quantile(list(range(10)), 0.9) == 9 and exact_quantile([], 0.5) is None


def test_previous_period_and_change() -> None:
    assert previous_period(date(2024, 3, 4), date(2024, 3, 10)) == (date(2024, 2, 26),
                                                                     date(2024, 3, 3))
    assert previous_period(date(2024, 3, 1), date(2024, 3, 1)) == (date(2024, 2, 29),) * 2
    assert previous_period(date(1970, 1, 3), date(1970, 1, 9)) == (date(1970, 1, 1),
                                                                   date(1970, 1, 2))
    assert change(3, 2) == (1, 0.5) and change(1, 0) == (1, None)
    assert change(None, 2) == (None, None)


def test_merge_lists_groups_of_either_period() -> None:
    cur = [trend.TrendRow(date(2024, 1, 1), date(2024, 1, 1), date(2024, 1, 1), False, "web",
                          None, 4, 1, 2, 1, 0.25, 0.5)]
    prev = [cur[0]._replace(channel="app", opened=2), cur[0]._replace(opened=8)]
    counts, rates = ("opened", "converted", "abandoned", "open"), ("conversion_rate",
                                                                    "abandonment_rate")
    pairs = compare.merge(cur, prev, ("channel",),
                          lambda r: compare.zeroed(r, counts, rates), lambda r: r.channel)
    assert [(r.channel, r.opened, p.opened if p else None) for r, p in pairs] == [
        ("app", 0, 2), ("web", 4, 8)]
    got = compare.compared(pairs[1][0], pairs[1][1], ("opened",),
                           {"conversion_rate": ((1, 4), (1, 8))})
    assert got["opened"] == (8, -4, -0.5, None)
    assert got["conversion_rate"][:2] == (0.25, 0.0)
    assert got["conversion_rate"].p_value == two_proportion_p(1, 4, 1, 8)
    df = compare.with_columns(pd.DataFrame({"opened": [4]}), [got], ("conversion_rate",))
    assert list(df.columns) == ["opened", "opened_previous", "opened_change",
                                "conversion_rate_previous", "conversion_rate_change",
                                "conversion_rate_p_value"]


def test_trend_periods() -> None:
    weeks = trend.periods(date(2024, 1, 3), date(2024, 1, 15), "week")
    assert weeks == [(date(2024, 1, 1), date(2024, 1, 3), date(2024, 1, 7)),
                     (date(2024, 1, 8), date(2024, 1, 8), date(2024, 1, 14)),
                     (date(2024, 1, 15), date(2024, 1, 15), date(2024, 1, 15))]
    assert len(trend.periods(date(2024, 1, 3), date(2024, 1, 5), "day")) == 3
