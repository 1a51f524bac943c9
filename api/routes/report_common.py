"""What every journey report route shares: the cohort parameters (name, from, to,
channel, version) resolved and checked, format/limit/offset parameters, paging and CSV
responses, and `run_report`: the report over the cohort (and, with compare=previous,
over the previous period, paired row by row), answered as CSV or as a page.
Used by api/routes/reports_journeys.py and api/routes/reports_pm.py."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Generic, Literal, TypeVar

import pandas as pd
from anyio import to_thread
from fastapi import Depends, Path, Query
from fastapi.responses import Response

from api.deps import ApiState, state
from api.params import IsoDate, date_range, last_data_day
from api.versions import VersionQuery, at_version
from journeys.definitions import JourneyDefinition
from journeys.versions import shown_version
from warehouse.queries import compare, late_events
from warehouse.queries._stats import previous_period
from warehouse.tables import JOURNEY_INSTANCES

Format = Literal["json", "csv"]
NAME = Path(pattern=r"^[A-Za-z0-9_\-]{1,64}$", description="journey definition name",
            examples=["purchase"])
MAX_ROWS = 10_000
T = TypeVar("T")
X = TypeVar("X")
Pairs = Sequence[tuple[Any, compare.Compared | None]]
"""A report's rows, each with its comparison (None without compare=previous)."""


def split_breakdown(values: list[str] | None) -> list[str] | None:
    """Repeated `breakdown=` and comma-separated lists are both accepted."""
    if values is None:
        return None
    return [p.strip() for v in values for p in v.split(",") if p.strip()]


def csv_response(df: pd.DataFrame, name: str) -> Response:
    return Response(df.to_csv(index=False), media_type="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})


class CohortRequest:
    """The cohort parameters every report takes, resolved and checked."""

    def __init__(self, st: ApiState, name: str, date_from: date | None, date_to: date | None,
                 channel: str | None, breakdown: list[str] | None,
                 last_day: date | None = None, version: str | None = None) -> None:
        # 404 if unknown; the definition version the queries select (api.versions): every
        # report, and its compare=previous period, reads that version's rows only
        self.definition: JourneyDefinition = at_version(st.definitions.get(name), version)
        self.lo, self.hi = date_range(date_from, date_to, last_day)
        self.channel = channel
        self.breakdown = split_breakdown(breakdown)
        self.wh = st.warehouse

    def kw(self) -> dict[str, Any]:
        return {"date_from": self.lo, "date_to": self.hi, "channel": self.channel}

    async def cohort(self, default: tuple[str, ...] = ()) -> dict[str, Any]:
        """The report's cohort fields, and how many events of its days arrived late (left
        out of every figure: a report must say so, docs/semantics.md "Event time")."""
        late = await to_thread.run_sync(lambda: late_events.total(self.wh, self.lo, self.hi))
        return {"journey": self.definition.name,
                "version": shown_version(self.definition.version),
                "date_from": self.lo, "date_to": self.hi,
                "channel": self.channel,
                "breakdown": list(default if self.breakdown is None else self.breakdown),
                "late_events": late}


FromQ = Annotated[IsoDate | None, Query(alias="from", description="first UTC day opened (incl.)")]
ToQ = Annotated[IsoDate | None, Query(alias="to", description="last UTC day opened (incl.)")]
ChannelQ = Annotated[str | None, Query(max_length=32, description="entry channel")]


async def common(
    st: Annotated[ApiState, Depends(state)],
    name: Annotated[str, NAME],
    date_from: FromQ = None,
    date_to: ToQ = None,
    channel: ChannelQ = None,
    version: VersionQuery = None,
) -> CohortRequest:
    last = await last_data_day(st, JOURNEY_INSTANCES.name) if date_to is None else None
    return CohortRequest(st, name, date_from, date_to, channel, None, last, version)


Common = Annotated[CohortRequest, Depends(common)]
FormatQ = Annotated[Format, Query(description="json (default) or csv (all rows, unpaged)")]
LimitQ = Annotated[int, Query(ge=1, le=MAX_ROWS, description="rows per page (JSON)")]
OffsetQ = Annotated[int, Query(ge=0, le=1_000_000, description="first row of the page")]


def page(rows: Sequence[T], limit: int, offset: int) -> tuple[list[T], dict[str, Any]]:
    """One page of rows and the page fields of the response."""
    nxt = offset + limit
    return list(rows[offset:nxt]), {"total_rows": len(rows), "limit": limit, "offset": offset,
                                    "next_offset": nxt if nxt < len(rows) else None}


@dataclass
class Outcome(Generic[T, X]):
    """A report's result, its rows paired with their comparisons, what the report pairs
    besides (totals, shares; `unpaired`'s without a comparison) and the previous period."""

    result: T
    pairs: Pairs
    extra: X
    period: tuple[date, date] | None

    def compare_fields(self) -> dict[str, Any]:
        """`compare`, `previous_from`, `previous_to` of the response (none without)."""
        if self.period is None:
            return {}
        return {"compare": "previous", "previous_from": self.period[0],
                "previous_to": self.period[1]}

    def csv(self, frame: Callable[[list[Any]], pd.DataFrame], rates: Sequence[str],
            name: str) -> Response:
        """All rows as CSV, with <figure>_previous/_change(/_p_value for `rates`) columns
        when compared (compare.with_columns)."""
        df = frame([r for r, _ in self.pairs])
        if self.period is not None:
            df = compare.with_columns(df, [c for _, c in self.pairs if c is not None], rates)
        return csv_response(df, name)

    def page(self, limit: int, offset: int) -> tuple[Pairs, dict[str, Any]]:
        return page(self.pairs, limit, offset)


def _unpaired_rows(result: Any) -> tuple[Pairs, None]:
    return [(r, None) for r in result], None


async def run_report(
    req: CohortRequest, run: Callable[..., T], *, how: str | None = None,
    paired: Callable[[T, T], tuple[Pairs, X]] | None = None,
    unpaired: Callable[[T], tuple[Pairs, X]] = _unpaired_rows,  # type: ignore[assignment]
) -> Outcome[T, X]:
    """`run(date_from=, date_to=, channel=)` over the cohort in a worker thread; with
    `how` ('previous', compare=) over the previous period too, checked before any I/O
    (no day/hour breakdown, a period before `from` exists), and `paired(now, before)`;
    else `unpaired(now)` (default: the result's rows, uncompared)."""
    period = None
    if how is not None:
        compare.check_breakdown(req.breakdown)
        period = previous_period(req.lo, req.hi)
    result = await to_thread.run_sync(lambda: run(**req.kw()))
    if period is None or paired is None:
        return Outcome(result, *unpaired(result), None)
    lo, hi = period
    before = await to_thread.run_sync(
        lambda: run(date_from=lo, date_to=hi, channel=req.channel))
    return Outcome(result, *paired(result, before), period)
