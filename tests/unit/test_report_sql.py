"""Snapshots of the journey report SQL: structure from fixed lists, values only as params.

A change here is a change to what every report counts: review it against
docs/reports.md and the integration tests (tests/integration/test_journey_reports.py).
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from journeys.definitions import load_definitions
from journeys.errors import InvalidQuery
from warehouse.queries import _settled, abandonment, customer_journeys, detours, funnel, paths
from warehouse.sql import render
from warehouse.tables import JOURNEY_INSTANCES
from warehouse.writers_journeys import journey_instance_row, journey_instance_rows

D = load_definitions().get("purchase")
KW: dict[str, Any] = {"date_from": date(2024, 1, 2), "date_to": date(2024, 1, 3)}
VERSION = f"definition_version = '{D.version}'"
COHORT = (f"WHERE journey = 'purchase' AND {VERSION} AND deleted = 0 AND toDate(opened_at) >= "
          "'2024-01-02' AND toDate(opened_at) <= '2024-01-03'")


def test_funnel_sql() -> None:
    sql = render(*funnel.build("db", D, channel="web", breakdown=["hour"], **KW))
    assert sql == (
        "SELECT toUInt32(toStartOfHour(opened_at)) AS hour, furthest_step, "
        "count() AS instances,\n"
        "    countIf(status = 'converted') AS converted,\n"
        "    countIf(status = 'abandoned') AS abandoned\n"
        "FROM db.journey_instances FINAL\n"
        f"{COHORT} AND entry_channel = 'web'\n"
        "GROUP BY hour, furthest_step\n"
        "ORDER BY hour, furthest_step"
    )


def test_abandonment_sql() -> None:
    assert render(*abandonment.build("db", D, **KW)) == (
        "SELECT dropped_at AS step, status, count() AS instances\n"
        "FROM db.journey_instances FINAL\n"
        f"{COHORT}\n"
        "GROUP BY step, status\n"
        "ORDER BY step, status"
    )
    assert render(*abandonment.build("db", D, breakdown=[], **KW)) == (
        "SELECT status, count() AS instances\n"
        "FROM db.journey_instances FINAL\n"
        f"{COHORT}\n"
        "GROUP BY status\n"
        "ORDER BY status"
    )


def test_detours_sql() -> None:
    assert render(*detours.build("db", D, breakdown=["detour_channel"], **KW)) == (
        "SELECT aj_kind AS kind, aj_channel AS detour_channel, sum(aj_count) AS detours, "
        "uniqExact(instance_id) AS instances\n"
        "FROM db.journey_instances FINAL\n"
        "ARRAY JOIN arrayConcat(detour_kinds, capped_detour_kinds) AS aj_kind, "
        "arrayConcat(detour_steps, capped_detour_steps) AS aj_step, "
        "arrayConcat(detour_channels, capped_detour_channels) AS aj_channel, "
        "arrayConcat(arrayMap(x -> toUInt32(1), detour_kinds), capped_detour_counts)"
        " AS aj_count\n"
        f"{COHORT}\n"
        "GROUP BY kind, detour_channel\n"
        "ORDER BY kind, detour_channel"
    )
    shares = render(*detours.build_shares("db", D, **KW))
    assert ("countIf(has(detour_kinds, 'channel_switch')"
            " OR has(capped_detour_kinds, 'channel_switch')) AS with_3") in shares
    assert shares.endswith("AND status IN ('abandoned', 'converted')\nGROUP BY status\n"
                           "ORDER BY status")


def test_paths_sql() -> None:
    assert render(*paths.build("db", D, limit=5, dropped_at="cart", **KW)) == (
        "SELECT arrayFilter(x -> x IN ('product_view', 'add_to_cart', 'cart', "
        "'shipping_details', 'payment_details', 'purchase'), path_types) AS path, "
        "dropped_at, count() AS instances\n"
        "FROM db.journey_instances FINAL\n"
        f"{COHORT} AND status = 'abandoned' AND dropped_at = 'cart'\n"
        "GROUP BY path, dropped_at\n"
        "ORDER BY instances DESC, arrayStringConcat(path, ','), dropped_at\n"
        "LIMIT 5"
    )
    assert render(*paths.build_summary("db", D, steps_only=False, **KW)) == (
        "SELECT count(), uniqExact(path_types, dropped_at)\n"
        "FROM db.journey_instances FINAL\n"
        f"{COHORT} AND status = 'abandoned'"
    )


def test_customer_journeys_sql_escapes_values() -> None:
    sql = render(*customer_journeys.build("db", "c'1", journey="purchase", limit=10, offset=20))
    assert sql.endswith(
        "FROM db.journey_instances FINAL\n"
        "WHERE customer_id = 'c\\'1' AND deleted = 0 AND journey = 'purchase'\n"
        "ORDER BY opened_at_ms DESC, journey, instance_id\n"
        "LIMIT 10 OFFSET 20"
    )


def test_context_breakdown_sql_passes_the_key_as_a_parameter() -> None:
    sql, params = abandonment.build("db", D, breakdown=["context.country", "step",
                                                        "context.device.os"], **KW)
    assert params["context_key0"] == "country" and params["context_key1"] == "device.os"
    assert render(sql, params) == (
        "SELECT context_values[indexOf(context_keys, 'country')] AS ctx0, dropped_at AS step, "
        "context_values[indexOf(context_keys, 'device.os')] AS ctx1, status, "
        "count() AS instances\n"
        "FROM db.journey_instances FINAL\n"
        f"{COHORT}\n"
        "GROUP BY ctx0, step, ctx1, status\n"
        "ORDER BY ctx0, step, ctx1, status"
    )
    funnel_sql = render(*funnel.build("db", D, breakdown=["context.utm-source"], **KW))
    assert funnel_sql.startswith(
        "SELECT context_values[indexOf(context_keys, 'utm-source')] AS ctx0, furthest_step,")
    assert funnel_sql.endswith("GROUP BY ctx0, furthest_step\nORDER BY ctx0, furthest_step")
    detours_sql = render(*detours.build("db", D, breakdown=["context.campaign"], **KW))
    assert "GROUP BY kind, ctx0\nORDER BY kind, ctx0" in detours_sql


@pytest.mark.parametrize("key", [
    "context.", "context.a b", "context.x'y", "context.a)--", "context.a.b.c.d", "context.1x",
    "context." + "k" * 65,
])
def test_context_keys_are_validated(key: str) -> None:
    with pytest.raises(InvalidQuery, match="bad context breakdown"):
        funnel.build("db", D, breakdown=[key], **KW)


def test_context_breakdowns_are_limited() -> None:
    with pytest.raises(InvalidQuery, match="at most 2 context"):
        funnel.build("db", D, breakdown=["context.a", "context.b", "context.c"], **KW)
    with pytest.raises(InvalidQuery, match="unknown breakdown 'context'"):
        funnel.build("db", D, breakdown=["context"], **KW)


@pytest.mark.parametrize(("module", "breakdown", "message"), [
    (funnel, ["step"], "unknown breakdown 'step'"),
    (funnel, ["channel", "channel"], "repeats"),
    (abandonment, ["day", "hour"], "redundant"),
    (detours, ["country"], "allowed: step, detour_channel, channel, day, hour, context.<key>"),
    (abandonment, ["x) OR 1=1 --"], "unknown breakdown"),
])
def test_breakdown_only_from_fixed_lists(module: Any, breakdown: list[str], message: str) -> None:
    with pytest.raises(InvalidQuery, match=message):
        module.build("db", D, breakdown=breakdown, **KW)


@pytest.mark.parametrize("call", [
    lambda: funnel.build("db", D, date_from=date(2024, 2, 1), date_to=date(2024, 1, 1)),
    lambda: funnel.build("db", D, date_from=date(2000, 1, 1), date_to=date(2024, 1, 1)),
    lambda: funnel.build("db", D, date_from=date(1969, 12, 31), date_to=date(1970, 1, 2)),
    lambda: abandonment.build("db", D, date_from=date(2106, 1, 1), date_to=date(2106, 1, 2)),
    lambda: paths.build("db", D, limit=0, **KW),
    lambda: paths.build("db", D, dropped_at="nope", **KW),
    lambda: customer_journeys.build("db", ""),
    lambda: customer_journeys.build("db", "c", offset=-1),
])
def test_bad_requests_are_invalid_queries(call: Any) -> None:
    with pytest.raises(InvalidQuery):
        call()


def test_bad_database_name_is_refused() -> None:
    with pytest.raises(ValueError, match="identifier"):
        funnel.build("db; DROP", D, **KW)


def _instance(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "instance_id": "i1", "journey": "purchase", "customer_id": "c1", "status": "abandoned",
        "opened_at_ms": 1_704_153_600_123, "closed_at_ms": 1_704_240_000_123,
        "furthest_step": 1, "furthest_step_name": "add_to_cart",
        "path_types": ["product_view", "add_to_cart"], "path_channels": ["web", "app"],
        "path_times": [1_704_153_600_123, 1_704_153_700_000],
        "detour_kinds": ["channel_switch"], "detour_steps": ["product_view"],
        "detour_channels": ["app"], "detour_times": [1_704_153_700_000], "version": 3,
    }
    return base | kw


def test_writer_derives_columns() -> None:
    row = journey_instance_row(_instance())
    assert row[6:12] == (1_704_153_700_000, 1_704_153_600, 1, "add_to_cart", "add_to_cart",
                         "web")
    named = dict(zip(JOURNEY_INSTANCES.columns, row, strict=True))
    assert row[12] == ["web", "app"]
    assert (named["version"], named["definitions_version"], named["deleted"],
            named["context_keys"], named["context_values"]) == (3, "", 0, [], [])
    assert journey_instance_row(_instance(status="converted"))[10] == ""
    assert len(journey_instance_rows([_instance(), _instance(), _instance(version=4)])) == 2
    ctx = {"country": "DE", "device": {"os": "ios", "v": 17}, "ab": [1, 2], "vip": True}
    with_ctx = dict(zip(JOURNEY_INSTANCES.columns, journey_instance_row(
        _instance(entry_context=ctx)), strict=True))
    assert (with_ctx["context_keys"], with_ctx["context_values"]) == (
        ["ab", "country", "device.os", "device.v", "vip"], ["[1,2]", "DE", "ios", "17", "true"])
    # capped paths (0008): events default to the path's length, counts go through
    assert (named["events"], named["path_truncated"], named["capped_detour_counts"]) == (
        len(_instance()["path_times"]), 0, [])
    capped = dict(zip(JOURNEY_INSTANCES.columns, journey_instance_row(_instance(
        events=5000, path_truncated=1, capped_detour_kinds=["loop"], capped_detour_steps=["cart"],
        capped_detour_channels=["app"], capped_detour_counts=[7])), strict=True))
    assert (capped["events"], capped["path_truncated"], capped["capped_detour_kinds"],
            capped["capped_detour_counts"]) == (5000, 1, ["loop"], [7])


@pytest.mark.parametrize("bad", [
    {"status": "lost"}, {"status": "open"}, {"path_times": [1]}, {"detour_kinds": ["warp"]},
    {"path_types": [], "path_channels": [], "path_times": []}, {"version": "drop"},
])
def test_writer_rejects_bad_rows(bad: dict[str, Any]) -> None:
    rec = _instance(**bad)
    if rec["version"] == "drop":
        del rec["version"]
    with pytest.raises(ValueError):
        journey_instance_row(rec)


def test_settled_months_are_read_without_final() -> None:
    both = _settled.Split(settled=(202312,), dirty=(202401,))
    sql, params = abandonment.build("db", D, split=both, **KW)
    cols = "instance_id, opened_at, entry_channel, status, furthest_step, dropped_at"
    assert render(sql, params) == (
        "SELECT dropped_at AS step, status, count() AS instances\n"
        "FROM (\n"
        f"    SELECT {cols} FROM db.journey_instances\n"
        f"    {COHORT} AND toYYYYMM(opened_at) IN (202312)\n"
        "    UNION ALL\n"
        f"    SELECT {cols} FROM db.journey_instances FINAL\n"
        f"    {COHORT} AND toYYYYMM(opened_at) IN (202401)\n"
        ")\nGROUP BY step, status\nORDER BY step, status"
    )
    only = _settled.Split(settled=(202312, 202401))
    assert render(*abandonment.build("db", D, split=only, **KW)) == (
        "SELECT dropped_at AS step, status, count() AS instances\n"
        "FROM db.journey_instances\n"
        f"{COHORT} AND toYYYYMM(opened_at) IN (202312, 202401)\n"
        "GROUP BY step, status\nORDER BY step, status"
    )
    detours_sql = render(*detours.build("db", D, breakdown=["context.country"], split=both,
                                        **KW))
    assert "context_keys, context_values, detour_kinds, detour_steps, detour_channels" in (
        detours_sql)
    assert detours_sql.count("FINAL") == 1 and (
        ")\nARRAY JOIN arrayConcat(detour_kinds, capped_detour_kinds) AS aj_kind") in detours_sql
    plain_detours = render(*detours.build("db", D, split=only, **KW))
    assert "FROM db.journey_instances\nARRAY JOIN arrayConcat(detour_kinds" in plain_detours
    assert render(*funnel.build("db", D, split=_settled.FINAL_EVERYWHERE, **KW)) == render(
        *funnel.build("db", D, **KW))


class _FakeParts:
    """A warehouse whose system.parts answers change between calls (an insert landed)."""

    database = "db"

    def __init__(self, answers: list[list[tuple[Any, ...]]]) -> None:
        self.answers = answers

    def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        assert "system.parts" in sql
        return self.answers.pop(0)


def test_parts_that_change_during_a_report_make_it_run_again_with_final() -> None:
    parts = [("202401", 1, 1, ["202401_1_4_1"], 0), ("202402", 2, 0, ["a", "b"], 0),
             ("202312", 1, 1, ["old"], 0)]
    calls: list[_settled.Split] = []

    def run(split: _settled.Split) -> str:
        calls.append(split)
        return "fast" if split.settled else "final"

    jan_feb = (date(2024, 1, 1), date(2024, 2, 28))
    assert _settled.consistent(_FakeParts([parts, parts]), *jan_feb, run) == "fast"
    assert calls == [_settled.Split(settled=(202401,), dirty=(202402,))]
    calls.clear()
    inserted = [parts[0], ("202402", 3, 0, ["a", "b", "c"], 0), parts[2]]
    assert _settled.consistent(_FakeParts([parts, inserted]), *jan_feb, run) == "final"
    assert calls[1] == _settled.FINAL_EVERYWHERE
    calls.clear()
    calls.clear()
    rolled = [("202401", 1, 1, ["202401_1_4_1"], 1), *parts[1:]]
    assert _settled.consistent(_FakeParts([rolled, rolled]), *jan_feb, run) == "fast"
    assert calls == [_settled.Split(settled=(202401,), dirty=(202402,), rolled=(202401,),
                                    rolled_parts=("202401_1_4_1",))]
    calls.clear()  # a rollup deleted (or written) meanwhile: run again with FINAL
    assert _settled.consistent(_FakeParts([rolled, parts]), *jan_feb, run) == "final"
    calls.clear()
    only_feb = (date(2024, 2, 1), date(2024, 2, 28))
    assert _settled.consistent(_FakeParts([parts]), *only_feb, run) == "final"
    assert calls == [_settled.Split(dirty=(202402,))]



def test_rolled_up_months_are_read_from_rollups() -> None:
    split = _settled.Split(settled=(202312, 202401), dirty=(202402,), rolled=(202312,),
                           rolled_parts=("202312_1_9_2",))
    kw = {"date_from": date(2023, 12, 1), "date_to": date(2024, 2, 29)}
    cohort = (f"WHERE journey = 'purchase' AND {VERSION} AND deleted = 0 AND toDate(opened_at) >= "
              "'2023-12-01' AND toDate(opened_at) <= '2024-02-29' AND entry_channel = 'web'")
    cols = "instance_id, opened_at, entry_channel, status, furthest_step, dropped_at"
    assert render(*funnel.build("db", D, channel="web", breakdown=["day"], split=split,
                                **kw)) == (
        "SELECT day, furthest_step, sum(m_instances) AS instances, sum(m_converted) AS "
        "converted, sum(m_abandoned) AS abandoned\nFROM (\n"
        "SELECT toDate(opened_at) AS day, furthest_step, count() AS m_instances, "
        "countIf(status = 'converted') AS m_converted, countIf(status = 'abandoned') AS "
        "m_abandoned\nFROM (\n"
        f"    SELECT {cols} FROM db.journey_instances\n"
        f"    {cohort} AND toYYYYMM(opened_at) IN (202401)\n"
        "    UNION ALL\n"
        f"    SELECT {cols} FROM db.journey_instances FINAL\n"
        f"    {cohort} AND toYYYYMM(opened_at) IN (202402)\n)\n"
        "GROUP BY day, furthest_step\nUNION ALL\n"
        "SELECT day AS day, furthest_step, sum(instances) AS m_instances, "
        "sumIf(instances, status = 'converted') AS m_converted, "
        "sumIf(instances, status = 'abandoned') AS m_abandoned\n"
        "FROM db.journey_rollups FINAL\n"
        f"WHERE journey = 'purchase' AND {VERSION} AND day >= '2023-12-01' AND day <= '2024-02-29' AND "
        "source_part IN ('202312_1_9_2') AND entry_channel = 'web'\n"
        "GROUP BY day, furthest_step\n)\n"
        "GROUP BY day, furthest_step\nORDER BY day, furthest_step"
    )
    only_dirty = split._replace(settled=(202312,))
    assert render(*abandonment.build("db", D, split=only_dirty, **kw)) == (
        "SELECT step, status, sum(m_instances) AS instances\nFROM (\n"
        "SELECT dropped_at AS step, status, count() AS m_instances\n"
        "FROM db.journey_instances FINAL\n"
        f"WHERE journey = 'purchase' AND {VERSION} AND deleted = 0 AND toDate(opened_at) >= '2023-12-01' "
        "AND toDate(opened_at) <= '2024-02-29' AND toYYYYMM(opened_at) IN (202402)\n"
        "GROUP BY step, status\nUNION ALL\n"
        "SELECT dropped_at AS step, status, sum(instances) AS m_instances\n"
        "FROM db.journey_rollups FINAL\n"
        f"WHERE journey = 'purchase' AND {VERSION} AND day >= '2023-12-01' AND day <= '2024-02-29' AND "
        "source_part IN ('202312_1_9_2')\nGROUP BY step, status\n)\n"
        "GROUP BY step, status\nORDER BY step, status"
    )
    all_rolled = _settled.Split(settled=(202312,), rolled=(202312,),
                                rolled_parts=("202312_1_9_2",))
    assert "journey_instances" not in render(*funnel.build("db", D, split=all_rolled, **kw))
    for breakdown in (["hour"], ["context.country"]):  # not rolled up: read the instances
        sql = render(*abandonment.build("db", D, breakdown=breakdown, split=all_rolled, **kw))
        assert "journey_rollups" not in sql and "toYYYYMM(opened_at) IN (202312)" in sql
