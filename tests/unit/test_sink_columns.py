"""The sink's columnar builders against the row builders they replace in the stream:
the same rows (values and Python types), the same in-batch dedup, the same refusals."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from journeys.errors import WarehouseError
from journeys.events import Touchpoint
from stream.engine.outputs import InstanceRow
from stream.engine.session_state import SessionRow
from warehouse._columns import row_count, transpose
from warehouse.tables import JOURNEY_INSTANCES, SESSIONS, TOUCHPOINTS
from warehouse.writers import session_columns, session_rows, touchpoint_columns, touchpoint_rows
from warehouse.writers_journeys import (
    DETOUR_KINDS,
    STATUSES,
    _walk_context,
    flatten_context,
    journey_instance_columns,
    journey_instance_row,
    journey_instance_rows,
    journey_retraction_row,
)


def _typed(rows: list[tuple[Any, ...]]) -> list[tuple[tuple[type, Any], ...]]:
    """Rows with each value's type beside it (1 == 1.0 == True must not pass)."""
    def typed(v: Any) -> Any:
        if isinstance(v, list):
            return (list, [typed(x) for x in v])
        return (type(v), v)
    return [tuple(typed(v) for v in r) for r in rows]


def _rows(columns: list[list[Any]]) -> list[tuple[Any, ...]]:
    return list(zip(*columns, strict=True))


text = st.text(st.characters(codec="utf-8"), max_size=6)
small = st.integers(0, 3)


@st.composite
def instances(draw: st.DrawFn) -> InstanceRow:
    n = draw(st.integers(1, 5))
    status = draw(st.sampled_from(STATUSES))
    opened = draw(st.integers(0, 2**40))
    times = [opened + draw(st.integers(0, 10**6)) for _ in range(n)]
    chans = draw(st.lists(st.sampled_from(["web", "app", "email", ""]), min_size=n, max_size=n))
    d = draw(st.integers(0, 3))
    c = draw(st.integers(0, 2))
    ctx = draw(st.one_of(
        st.none(), st.just({}),
        st.dictionaries(text, text, max_size=4),
        st.dictionaries(text, st.recursive(
            st.one_of(st.none(), st.booleans(), st.integers(-5, 5), text),
            lambda inner: st.one_of(st.lists(inner, max_size=2),
                                    st.dictionaries(text, inner, max_size=2)),
            max_leaves=5), max_size=4)))
    return InstanceRow(
        instance_id=draw(st.sampled_from(["i1", "i2", "i3"])),
        journey=draw(st.sampled_from(["purchase", "onboarding"])),
        customer_id=draw(text), status=status, opened_at_ms=opened,
        closed_at_ms=0 if status == "open" else times[-1] + 1,
        last_event_at_ms=draw(st.sampled_from([0, times[-1]])),
        furthest_step=draw(small), furthest_step_name=draw(text),
        dropped_at=draw(text) if status == "abandoned" else "",
        entry_channel=draw(st.sampled_from(["", chans[0]])),
        channels=draw(st.sampled_from([[], list(dict.fromkeys(chans))])),
        path_types=draw(st.lists(text, min_size=n, max_size=n)), path_channels=chans,
        path_times=times,
        detour_kinds=draw(st.lists(st.sampled_from(DETOUR_KINDS), min_size=d, max_size=d)),
        detour_steps=draw(st.lists(text, min_size=d, max_size=d)),
        detour_channels=draw(st.lists(text, min_size=d, max_size=d)),
        detour_times=draw(st.lists(st.integers(0, 2**40), min_size=d, max_size=d)),
        detour_positions=[0] * d, reached_times=[opened],
        events=draw(st.sampled_from([0, n, n + 7])), path_truncated=draw(st.integers(0, 1)),
        capped_detour_kinds=draw(st.lists(st.sampled_from(DETOUR_KINDS), min_size=c,
                                          max_size=c)),
        capped_detour_steps=draw(st.lists(text, min_size=c, max_size=c)),
        capped_detour_channels=draw(st.lists(text, min_size=c, max_size=c)),
        capped_detour_counts=draw(st.lists(st.integers(1, 99), min_size=c, max_size=c)),
        version=draw(st.integers(0, 3)), definitions_version=draw(st.sampled_from(["", "v1"])),
        definition_version=draw(st.sampled_from(["", "d2"])), entry_context=ctx,
        value=draw(st.one_of(st.none(), st.integers(-9, 9), st.floats(-1e6, 1e6))),
    )


retractions = st.lists(st.builds(
    journey_retraction_row, st.sampled_from(["i1", "i9"]), st.just("purchase"), text,
    st.integers(0, 2**40), st.integers(0, 2**62), st.sampled_from(["", "d2"])), max_size=2)


@settings(max_examples=300, deadline=None)
@given(st.lists(instances(), max_size=8), retractions)
def test_instance_columns_are_the_rows_of_the_records(batch: list[InstanceRow],
                                                      tombstones: list[tuple[Any, ...]]) -> None:
    expected = journey_instance_rows([r.as_record() for r in batch]) + tombstones
    columns = journey_instance_columns(batch, tombstones)
    assert len(columns) == len(JOURNEY_INSTANCES.columns)
    assert _typed(_rows(columns)) == _typed(expected)


def _one(**change: Any) -> InstanceRow:
    base = InstanceRow(
        instance_id="i1", journey="purchase", customer_id="c1", status="open",
        opened_at_ms=1_000, closed_at_ms=0, last_event_at_ms=2_000, furthest_step=1,
        furthest_step_name="cart", dropped_at="", entry_channel="web", channels=["web"],
        path_types=["product_view", "add_to_cart"], path_channels=["web", "web"],
        path_times=[1_000, 2_000], detour_kinds=[], detour_steps=[], detour_channels=[],
        detour_times=[], detour_positions=[], reached_times=[1_000, 2_000], events=2,
        path_truncated=0, capped_detour_kinds=[], capped_detour_steps=[],
        capped_detour_channels=[], capped_detour_counts=[], version=1,
        definitions_version="v1")
    return base._replace(**change)


@pytest.mark.parametrize("change", [
    {"status": "lost"},
    {"closed_at_ms": 5},
    {"status": "converted"},
    {"path_times": [1_000]},
    {"path_types": [], "path_channels": [], "path_times": []},
    {"detour_kinds": ["loop"]},
    {"detour_kinds": ["warp"], "detour_steps": ["x"], "detour_channels": ["web"],
     "detour_times": [1]},
    {"capped_detour_counts": [3]},
    {"capped_detour_kinds": ["warp"], "capped_detour_steps": ["x"],
     "capped_detour_channels": ["web"], "capped_detour_counts": [1]},
])
def test_instance_columns_refuse_what_the_rows_refuse(change: dict[str, Any]) -> None:
    bad = _one(**change)
    with pytest.raises(ValueError):
        journey_instance_row(bad.as_record())
    with pytest.raises(ValueError):
        journey_instance_columns([_one(instance_id="ok"), bad])


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), st.dictionaries(st.one_of(text, st.just("")), text, max_size=70),
                 st.dictionaries(text, st.one_of(text, st.integers(-10**9, 10**9), st.dictionaries(
                     text, st.one_of(text, st.booleans()), max_size=3)), max_size=5)))
def test_flat_context_fast_path_is_the_walk(ctx: dict[str, Any] | None) -> None:
    assert flatten_context(ctx) == _walk_context(ctx or {})


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(
    text, text, st.integers(0, 2**44), st.integers(0, 2**44), st.none(), st.integers(1, 9),
    st.lists(text, max_size=3).map(tuple), text, st.integers(0, 2**62), st.booleans()),
    max_size=6))
def test_session_columns_are_the_rows(rows: list[tuple[Any, ...]]) -> None:
    named = [SessionRow(*r) for r in rows]
    expected = [(sid, cust, start, end, start // 1000, n, list(chans), first, version,
                 1 if deleted else 0)
                for sid, cust, start, end, _s, n, chans, first, version, deleted in rows]
    columns = session_columns(named)
    assert len(columns) == len(SESSIONS.columns)
    assert _typed(_rows(columns)) == _typed(expected) == _typed(session_rows(rows))
    with pytest.raises(ValueError):
        session_columns([*named, rows[0][:-1]] if rows else [("s",)])


def test_touchpoint_columns_send_a_repeated_event_id_once_first_copy_wins() -> None:
    tps = [Touchpoint(event_id=e, type=t, channel="web", occurred_at=1_704_164_645_123,
                      customer_id="c1")
           for e, t in (("e1", "a"), ("e2", "b"), ("e1", "c"), ("e3", "d"), ("e2", "e"))]
    columns = touchpoint_columns(tps, ingested_at_ms=1_704_200_000_999)
    assert len(columns) == len(TOUCHPOINTS.columns)
    assert columns[0] == ["e1", "e2", "e3"] and columns[1] == ["a", "b", "d"]
    assert columns[-1] == [1_704_200_000] * 3
    assert touchpoint_rows(tps, ingested_at_ms=1) == _rows(touchpoint_columns(tps,
                                                                              ingested_at_ms=1))


def test_transpose_and_row_count_name_what_is_wrong() -> None:
    assert transpose("t", ("a", "b"), [(1, 2), (3, 4)]) == [[1, 3], [2, 4]]
    with pytest.raises(WarehouseError, match="row 1 for t has 1 values, expected 2"):
        transpose("t", ("a", "b"), [(1, 2), (3,)])
    assert row_count("t", ("a", "b"), [[1, 3], [2, 4]]) == 2
    assert row_count("t", ("a", "b"), [[], []]) == 0
    with pytest.raises(WarehouseError, match="column b for t has 1 values, expected 2"):
        row_count("t", ("a", "b"), [[1, 3], [2]])
    with pytest.raises(WarehouseError, match="1 columns of data for t, expected 2"):
        row_count("t", ("a", "b"), [[1, 3]])
