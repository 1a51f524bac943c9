"""The demo's stories sit at fixed UTC hours, so `journeys demo` fires the payment-incident
alert whatever the time of day it is started (the sample starts `days` before now, and
the daily cycle makes 07:00 UTC too quiet for an alert)."""

from __future__ import annotations

import pytest

from ingest.generator import (
    DEMO_VISITORS_PER_HOUR,
    GeneratorConfig,
    generate_events,
    story_windows,
)
from ingest.stories import demo_settle_ms, demo_stories, unsettled
from journeys.definitions import load_definitions
from tests.integration.alerts_support import stitch
from tests.reference.alerts_ref import alerts
from tests.reference.journeys_ref import all_journeys

H, D = 3_600_000, 86_400_000
MIDNIGHT = 1_772_323_200_000  # 2026-03-01T00:00Z


def test_midnight_start_layout() -> None:
    """The payment incident a day earlier than the other stories: its journeys are
    abandoned (24 h abandon_after) before the sample ends."""
    assert [(s.kind, s.at_ms) for s in demo_stories(3 * D)] == [
        ("checkout_loop", 57 * H), ("payment_incident", 38 * H),
        ("call_center_switch", 66 * H)]
    assert [s.at_ms for s in demo_stories(D)] == [9 * H, 14 * H, 18 * H]


def test_the_incident_is_settled_in_the_data_when_the_span_allows() -> None:
    settle = demo_settle_ms()
    assert settle == load_definitions().get("purchase").abandon_after_ms + H
    for hour in range(24):
        start = MIDNIGHT + hour * H
        three = demo_stories(3 * D, start)
        assert unsettled(three, 3 * D) == []
        assert three[1].at_ms + three[1].duration_ms + settle <= 3 * D
        one = demo_stories(D, start)
        assert unsettled(one, D) == [one[1]]  # `journeys demo --days 1` warns


@pytest.mark.parametrize("days", [2, 3])
@pytest.mark.parametrize("hour", range(24))
def test_stories_at_their_utc_hour_inside_the_sample(days: int, hour: int) -> None:
    start = MIDNIGHT + hour * H
    for story, want in zip(demo_stories(days * D, start), (9, 14, 18), strict=True):
        assert (start + story.at_ms) % D == want * H
        assert story.at_ms >= 0 and story.at_ms + story.duration_ms + H <= days * D


def test_one_day_places_the_incident_at_14_utc_unless_it_starts_at_15_or_16() -> None:
    for hour in range(24):
        start = MIDNIGHT + hour * H
        incident = demo_stories(D, start)[1]
        at_14 = (start + incident.at_ms) % D == 14 * H
        assert at_14 == (hour not in (15, 16)), hour  # else too close to the end


@pytest.mark.parametrize(("days", "hour"), [(3, 17), (1, 17)])
def test_payment_incident_fires_for_an_afternoon_start(days: int, hour: int) -> None:
    start = MIDNIGHT + hour * H
    cfg = GeneratorConfig(seed=7, start_ms=start, duration_ms=days * D,
                          visitors_per_hour=DEMO_VISITORS_PER_HOUR,
                          stories=demo_stories(days * D, start))
    events = stitch(list(generate_events(cfg)))
    purchase = load_definitions().get("purchase")
    fired = [a for a in alerts(purchase, all_journeys([purchase], events, watermark=None),
                               max(e.t for e in events)) if a.kind == "fired"]
    (_s, begin, end), = [w for w in story_windows(cfg) if w[0].kind == "payment_incident"]
    assert {a.window_start for a in fired if a.step == "payment_details"} == set(
        range(begin, end, H))
