"""A small hand-made set of `purchase` instances for the product-manager reports, whose
figures the tests state by hand (tests/integration/test_pm_reports.py, test_pm_designed.py).

All open on Monday 2024-03-04 at 10:00 UTC (the "current" week), except the two of
PREVIOUS_DAY (Tuesday 2024-02-27), which a compare / trend over 2024-03-04..2024-03-10
meets as the previous period / the previous week. Minutes are offsets from opening.

| id | entry | status | step events (minute) | notes |
|----|-------|--------|----------------------|-------|
| A | web   | converted | pv 0, atc 1, cart 2, ship 5, pay 10, purchase 20 | error_page at 6 |
| B | app   | converted | pv 0, atc 3, pay 4, purchase 60 | jumps cart, ship |
| C | web   | abandoned at cart | pv 0, atc 2, cart 30 | support_chat at 1 |
| D | email | abandoned at pv | pv 0 | |
| E | web   | converted | pv 0, atc 1 | path capped after 2 events, closed at 120 |
| F | web   | open at atc | pv 0, pv 1, atc 7 | newsletter_open at 8 |
| I | web   | abandoned at atc | pv 0, atc 1, pv 2, atc 3 | a backtrack |

Every row is of the current version of its definition (load_definitions()), as the API
reads by default; `definition_version=` writes one of another version
(tests/integration/test_pm_versions.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from functools import cache
from typing import Any

import pytest

from journeys.definitions import Definitions, load_definitions
from journeys.settings import WarehouseConfig
from tests.integration.journey_report_support import loaded, open_warehouse
from tests.reference.journeys_ref import Instance
from warehouse import compaction
from warehouse.backend import Warehouse
from warehouse.connect import connect
from warehouse.schema import migrate
from warehouse.writers_alerts import write_alerts
from warehouse.writers_identity import write_identity_merges
from warehouse.writers_journeys import write_journey_instances

M = 60_000
T0 = 1_709_546_400_000  # 2024-03-04T10:00:00Z
PREV_T0 = T0 - 6 * 86_400_000  # 2024-02-27T10:00:00Z
DAY, PREVIOUS_DAY = date(2024, 3, 4), date(2024, 2, 27)
WEEK_END = date(2024, 3, 10)
STEPS = ("product_view", "add_to_cart", "cart", "shipping_details", "payment_details",
         "purchase")
PV, ATC, CART, SHIP, PAY, BUY = STEPS
ABANDON_AFTER = 24 * 60 * M

Touch = tuple[str, int, str]  # type, minute, channel


@cache
def current_version(journey: str) -> str:
    """The version the API reads by default (the packaged definitions)."""
    return load_definitions().get(journey).version


def instance(iid: str, status: str, touches: list[Touch], *, t0: int = T0,
             context: dict[str, Any] | None = None, closed_minute: int | None = None,
             detours: list[tuple[str, str, int]] = (),  # type: ignore[assignment]
             truncated_events: int = 0, furthest: int | None = None,
             definition_version: str | None = None,
             value: float | None = None) -> dict[str, Any]:
    """A `journey_instances` record; `detours`: (kind, step, minute); furthest step and
    closing time follow the touches unless given (a capped path does not show them);
    of the current definition version unless another is given; `value`: its journey
    value (docs/semantics.md "Journey value")."""
    reached = [STEPS.index(t) for t, _, _ in touches if t in STEPS]
    top = max(reached) if furthest is None else furthest
    last = touches[-1][1]
    closed = {"open": 0, "converted": t0 + (last if closed_minute is None else closed_minute) * M,
              "abandoned": t0 + last * M + ABANDON_AFTER}[status]
    chans = {m: c for _, m, c in touches}
    return {
        "instance_id": iid, "journey": "purchase", "customer_id": f"c-{iid}", "status": status,
        "opened_at_ms": t0, "closed_at_ms": closed, "furthest_step": top,
        "furthest_step_name": STEPS[top], "path_types": [t for t, _, _ in touches],
        "path_channels": [c for _, _, c in touches], "path_times": [t0 + m * M for _, m, _ in touches],
        "detour_kinds": [k for k, _, _ in detours], "detour_steps": [s for _, s, _ in detours],
        "detour_channels": [chans[m] for _, _, m in detours],
        "detour_times": [t0 + m * M for _, _, m in detours], "version": 1,
        "entry_context": context or {}, "events": truncated_events or len(touches),
        "path_truncated": 1 if truncated_events else 0,
        "definition_version": definition_version or current_version("purchase"),
        "value": value,
    }


def hand_instances() -> list[dict[str, Any]]:
    w = "web"
    return [
        instance("A", "converted", [(PV, 0, w), (ATC, 1, w), (CART, 2, w), (SHIP, 5, w),
                                    ("error_page", 6, w), (PAY, 10, w), (BUY, 20, w)],
                 context={"country": "DE"}, detours=[("off_path", SHIP, 6)], value=120.0),
        instance("B", "converted", [(PV, 0, "app"), (ATC, 3, "app"), (PAY, 4, "app"),
                                    (BUY, 60, "app")], context={"country": "FR"}, value=80.5),
        instance("C", "abandoned", [(PV, 0, w), ("support_chat", 1, w), (ATC, 2, w),
                                    (CART, 30, w)],
                 context={"country": "DE"}, detours=[("off_path", PV, 1)], value=45.0),
        instance("D", "abandoned", [(PV, 0, "email")],
                 context={"country": "FR", "device": "ios"}),
        instance("E", "converted", [(PV, 0, w), (ATC, 1, w)], closed_minute=120,
                 truncated_events=9, furthest=5),
        instance("F", "open", [(PV, 0, w), (PV, 1, w), (ATC, 7, w), ("newsletter_open", 8, w)],
                 context={"country": "DE"}, value=99.0),  # open: in neither sum
        instance("I", "abandoned", [(PV, 0, w), (ATC, 1, w), (PV, 2, w), (ATC, 3, w)],
                 context={"country": "DE"},
                 detours=[("backtrack", ATC, 2), ("loop", ATC, 3)], value=30.0),
        instance("G", "converted", [(PV, 0, w), (ATC, 1, w), (CART, 2, w), (SHIP, 3, w),
                                    (PAY, 4, w), (BUY, 5, w)], t0=PREV_T0, value=50.0),
        instance("H", "abandoned", [(PV, 0, w)], t0=PREV_T0),
    ]


def alert(alert_id: str, kind: str, window_start_ms: int, channel: str = "all",
          journey: str = "purchase", definition_version: str | None = None) -> dict[str, Any]:
    return {"definition_version": definition_version or current_version(journey),
            "alert_id": alert_id, "kind": kind, "journey": journey, "step": CART,
            "step_index": 2, "channel": channel, "window_start_ms": window_start_ms,
            "window_end_ms": window_start_ms + 60 * M, "horizon_ms": 30 * M,
            "population": 40, "dropped": 30, "rate": 0.75, "baseline": 0.3,
            "baseline_windows": 24, "threshold": 0.15, "confidence": 0.999, "p_value": 1e-6}


def hand_alerts() -> list[dict[str, Any]]:
    """Fired this week: 2 (one overall, one on web), plus a recovery that does not count;
    fired the week before: 1; and one of onboarding."""
    return [alert("a1", "fired", T0), alert("a2", "fired", T0 + 60 * M, channel="web"),
            alert("a3", "recovered", T0 + 120 * M), alert("a0", "fired", PREV_T0),
            alert("o1", "fired", T0, journey="onboarding")]


def hand_merges() -> list[dict[str, Any]]:
    """Anonymous ids stitched to customers: two devices of c-A, one of c-X (a customer
    with no journey instance); the customer search finds customers through them."""
    return [{"anonymous_id": a, "customer_id": c, "merged_at_ms": T0 + m * M,
             "event_id": f"link-{a}", "event_type": "login", "channel": "web"}
            for a, c, m in (("dev-a1", "c-A", 1), ("dev-a2", "c-A", 3), ("dev-x", "c-X", 5))]


def hand_loaded(config: WarehouseConfig) -> Iterator[Warehouse]:
    wh = connect(config)
    try:
        migrate(wh)
        write_journey_instances(wh, hand_instances())
        write_alerts(wh, hand_alerts())
        write_alerts(wh, hand_alerts()[:1])  # re-emitted: counts once
        write_identity_merges(wh, hand_merges())
        yield wh
    finally:
        wh.execute(f"DROP DATABASE IF EXISTS {config.database}")
        wh.close()


Loaded = tuple[Warehouse, Definitions, list[Instance]]
_COUNT = iter(range(1_000_000))


def reference_data(request: pytest.FixtureRequest, run_id: str) -> Iterator[Loaded]:
    """Body of the test modules' `data` fixture: the replayed reference data on the
    engine `request.param` names; `-compacted`: one part per month (no-FINAL path)."""
    backend, _, compacted = request.param.partition("-")
    config = open_warehouse(request, backend, f"pm_{run_id}_{next(_COUNT)}")
    for wh, defs, instances in loaded(config):
        if compacted:
            compaction.compact(wh)
        yield wh, defs, instances


def hand_data(request: pytest.FixtureRequest, run_id: str) -> Iterator[Warehouse]:
    """Body of the test modules' `hand` fixture: the hand-made instances and alerts."""
    yield from hand_loaded(open_warehouse(request, request.param,
                                          f"pmh_{run_id}_{next(_COUNT)}"))
