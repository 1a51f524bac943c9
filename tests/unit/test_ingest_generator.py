"""The synthetic generator: valid, ordered, deterministic, and its stories show."""

from __future__ import annotations

from collections import Counter, defaultdict
from functools import cache
from typing import Any

import pytest

from ingest.generator import (
    DEMO_VISITORS_PER_HOUR,
    ONBOARDING_STEPS,
    PURCHASE_STEPS,
    GeneratorConfig,
    generate_events,
    story_windows,
)
from ingest.stories import Story, demo_stories, parse_story
from journeys.definitions import load_definitions
from journeys.events import EventValidator, Touchpoint, parse_occurred_at
from tests.reference.alerts_ref import alerts
from tests.reference.journeys_ref import Ev, all_journeys

START = 1_772_323_200_000  # 2026-03-01T00:00Z
HOUR, DAY = 3_600_000, 86_400_000


@cache
def demo() -> tuple[GeneratorConfig, tuple[dict[str, Any], ...]]:
    config = GeneratorConfig(seed=11, start_ms=START, duration_ms=3 * DAY,
                             visitors_per_hour=250, stories=demo_stories(3 * DAY))
    return config, tuple(generate_events(config))


def ms(event: dict[str, Any]) -> int:
    return parse_occurred_at(event["occurred_at"])


def test_events_are_valid_ordered_and_in_range() -> None:
    config, events = demo()
    validator = EventValidator()
    assert len(events) > 40_000
    assert all(isinstance(validator.validate(e), Touchpoint) for e in events)
    times = [ms(e) for e in events]
    assert times == sorted(times)
    assert times[0] >= START and times[-1] < START + config.duration_ms
    assert len({e["event_id"] for e in events}) == len(events)
    assert {e["channel"] for e in events} >= {"web", "app", "email", "store", "call_center",
                                              "chat", "ads"}


def test_deterministic_by_seed() -> None:
    config = GeneratorConfig(seed=3, start_ms=START, duration_ms=6 * HOUR)
    assert list(generate_events(config)) == list(generate_events(config))
    other = GeneratorConfig(seed=4, start_ms=START, duration_ms=6 * HOUR)
    assert list(generate_events(other)) != list(generate_events(config))


def test_steps_match_the_default_definitions() -> None:
    defs = {d.name: d for d in load_definitions(None).journeys}
    assert tuple(defs["purchase"].steps) == PURCHASE_STEPS
    assert tuple(defs["onboarding"].steps) == ONBOARDING_STEPS
    _, events = demo()
    types = Counter(e["type"] for e in events)
    for step in (*PURCHASE_STEPS, *ONBOARDING_STEPS):
        assert types[step] > 0, step
    for off_path in defs["purchase"].off_path or ():
        assert types[off_path] > 0, off_path
    # a funnel: every purchase step is rarer than the one before it
    counts = [types[s] for s in PURCHASE_STEPS[1:]]
    assert counts == sorted(counts, reverse=True)


def test_identify_links_anonymous_visitors_to_customers() -> None:
    _, events = demo()
    links = [e for e in events if e["type"] == "identify"]
    assert links and all(e["customer_id"] and e["anonymous_id"] for e in links)
    linked = {e["anonymous_id"]: e["customer_id"] for e in links}
    before = [e for e in events if e["anonymous_id"] in linked and not e["customer_id"]]
    assert before, "linked visitors have anonymous-only events before identify"
    signups = [e for e in events if e["type"] == "signup_complete"]
    assert signups and all(e["customer_id"] and e["anonymous_id"] for e in signups)
    known = [e for e in events if e["channel"] == "store"]
    assert known and all(e["customer_id"] and not e["anonymous_id"] for e in known)


def _hourly_drop_at_payment(events: tuple[dict[str, Any], ...]) -> dict[int, tuple[int, float]]:
    pay: dict[str, list[int]] = defaultdict(list)
    bought: dict[str, list[int]] = defaultdict(list)
    for e in events:
        if e["type"] == "payment_details":
            pay[e["customer_id"]].append(ms(e))
        elif e["type"] == "purchase":
            bought[e["customer_id"]].append(ms(e))
    per_hour: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for cid, times in pay.items():
        first = min(times)
        hour = (first - START) // HOUR
        per_hour[hour][0] += 1
        if not any(first <= t <= first + 30 * 60_000 for t in bought[cid]):
            per_hour[hour][1] += 1
    return {h: (n, d / n) for h, (n, d) in per_hour.items()}


def test_payment_incident_collapses_conversion_in_its_window() -> None:
    config, events = demo()
    (_story, begin, end), = [w for w in story_windows(config) if w[0].kind == "payment_incident"]
    drop = _hourly_drop_at_payment(events)
    inside = [drop[h][1] for h in range((begin - START) // HOUR, (end - START) // HOUR)]
    outside = [r for h, (n, r) in drop.items()
               if n >= 20 and not begin - 2 * HOUR <= START + h * HOUR < end + HOUR]
    assert min(inside) > 0.6
    assert max(outside) < 0.4
    errors = [ms(e) for e in events if e["type"] == "payment_error"]
    assert sum(begin <= t < end + HOUR for t in errors) > 0.9 * len(errors)


def test_demo_volume_makes_the_payment_incident_alert_fire() -> None:
    """The `journeys demo` sample, judged by the reference semantics (DESIGN.md
    "Drop-off alert", default definitions): the incident must fire, and only then."""
    config = GeneratorConfig(seed=7, start_ms=START, duration_ms=3 * DAY,
                             visitors_per_hour=DEMO_VISITORS_PER_HOUR,
                             stories=demo_stories(3 * DAY))
    events = list(generate_events(config))
    linked = {e["anonymous_id"]: e["customer_id"] for e in reversed(events)
              if e["anonymous_id"] and e["customer_id"]}  # first link wins
    purchase = load_definitions(None).get("purchase")
    instances = all_journeys([purchase], [
        Ev(e["event_id"], e["customer_id"] or linked.get(e["anonymous_id"], e["anonymous_id"]),
           e["type"], e["channel"], ms(e)) for e in events], START + 5 * DAY)
    (_s, begin, end), = [w for w in story_windows(config) if w[0].kind == "payment_incident"]
    fired = [a for a in alerts(purchase, instances, START + 5 * DAY)
             if a.kind == "fired" and a.channel == "all"]
    assert fired and all(a.step == "payment_details" for a in fired)
    assert {a.window_start for a in fired} == set(range(begin, end, HOUR))
    assert min(a.population for a in fired) >= purchase.alert.min_volume


def test_checkout_loop_repeats_the_step_with_errors_between() -> None:
    config, events = demo()
    (_story, begin, end), = [w for w in story_windows(config) if w[0].kind == "checkout_loop"]
    per_customer: dict[str, list[str]] = defaultdict(list)
    for e in events:
        if begin <= ms(e) < end + HOUR and e["customer_id"]:
            per_customer[e["customer_id"]].append(e["type"])
    loops = [p for p in per_customer.values()
             if p.count("shipping_details") >= 2 and "error_page" in p]
    assert len(loops) > 50
    errors = [ms(e) for e in events if e["type"] == "error_page"]
    assert sum(begin <= t < end + HOUR for t in errors) > 0.8 * len(errors)


def test_call_center_switch_moves_purchases_to_the_call_center() -> None:
    config, events = demo()
    (_story, begin, end), = [w for w in story_windows(config)
                            if w[0].kind == "call_center_switch"]
    cc = [ms(e) for e in events if e["type"] == "purchase" and e["channel"] == "call_center"]
    assert len(cc) > 30 and all(begin <= t < end + HOUR for t in cc)


def test_story_limited_to_one_channel() -> None:
    story = Story("payment_incident", 0, 6 * HOUR, share=1.0, channel="app")
    config = GeneratorConfig(seed=2, start_ms=START, duration_ms=6 * HOUR,
                             visitors_per_hour=300, stories=(story,))
    errors = [e for e in generate_events(config) if e["type"] == "payment_error"]
    assert errors and {e["channel"] for e in errors} == {"app"}


def test_max_events_and_prefix() -> None:
    config = GeneratorConfig(seed=1, start_ms=START, max_events=123, id_prefix="x-")
    events = list(generate_events(config))
    assert len(events) == 123
    assert all((e["customer_id"] or "x-").startswith("x-") for e in events)
    assert all((e["anonymous_id"] or "x-").startswith("x-") for e in events)


def test_volume_follows_visitors_per_hour() -> None:
    def visitors(vph: float) -> int:
        config = GeneratorConfig(seed=9, start_ms=START, duration_ms=DAY, visitors_per_hour=vph)
        return len({e["anonymous_id"] or e["customer_id"] for e in generate_events(config)})

    low, high = visitors(50), visitors(200)
    assert 3.3 < high / low < 4.7


def test_parse_story() -> None:
    s = parse_story("payment_incident@36h+2h,share=0.5,channel=app,step=payment_details")
    assert s == Story("payment_incident", 36 * HOUR, 2 * HOUR, 0.5, "payment_details", "app")
    assert parse_story("checkout_loop@90m+30m").target_step == "shipping_details"
    for bad in ("teleport@1h+1h", "checkout_loop@1h", "checkout_loop@1h+1h,colour=red"):
        with pytest.raises(ValueError):
            parse_story(bad)


def test_bad_config() -> None:
    with pytest.raises(ValueError):
        generate_events(GeneratorConfig(duration_ms=0))
    with pytest.raises(ValueError):
        generate_events(GeneratorConfig(visitors_per_hour=-1))
