"""Synthetic multi-channel traffic with known stories, deterministic by seed.

`generate_events(config)` is pure (no Kafka, no clock when `start_ms` is given): it
yields DESIGN.md wire dicts in occurred_at order, so the demo and tests can load days of
history and know what the numbers must show. Visitors arrive as a Poisson process with
a daily cycle; each walks the default definitions (purchase, onboarding) across web,
app, email, store, call centre, chat and ads, with natural detours, and anonymous
visitors are linked to customers by `identify` events. Stories (ingest.stories) are
injected for a time window: a detour loop at a checkout step, a payment incident that
collapses conversion, and a switch to the call centre.
"""

from __future__ import annotations

import heapq
import math
import random
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ingest.stories import Story
from journeys.timeutil import ms_to_iso, now_ms

PURCHASE_STEPS = ("product_view", "add_to_cart", "cart", "shipping_details",
                  "payment_details", "purchase")
ONBOARDING_STEPS = ("signup_start", "signup_complete", "profile_complete", "first_order")
# Probability of going on from each purchase step to the next (normal days).
STEP_CONTINUE = {"product_view": 0.42, "add_to_cart": 0.82, "cart": 0.78,
                 "shipping_details": 0.86, "payment_details": 0.88}
_MIN, _HOUR, _DAY = 60_000, 3_600_000, 86_400_000


@dataclass(frozen=True)
class GeneratorConfig:
    """Volume, mix and stories. Same config (with `start_ms` set) → same events."""

    seed: int = 42
    start_ms: int | None = None  # None: now − duration, aligned to the hour
    duration_ms: int = _DAY
    visitors_per_hour: float = 200.0
    max_events: int | None = None
    known_share: float = 0.45  # visitors who are existing customers
    customers: int = 5_000  # size of the existing-customer pool
    signup_share: float = 0.10  # new visitors who start onboarding
    entry_channels: Mapping[str, float] = field(default_factory=lambda: {
        "web": 0.42, "app": 0.25, "ads": 0.12, "email": 0.10, "store": 0.08,
        "call_center": 0.03})
    stories: tuple[Story, ...] = ()
    id_prefix: str = ""  # keeps ids of separate runs apart (customers, anonymous ids)
    source: str = "generator"
    daily_cycle: bool = True

    def resolved_start(self) -> int:
        if self.start_ms is not None:
            return self.start_ms
        return (now_ms() - self.duration_ms) // _HOUR * _HOUR


# Visitors per hour for the demo. The drop-off alerts need volume: min_volume 30
# journeys per hour at a step and >= 3 such earlier hours as baseline. About 23% of
# visitors reach payment_details, so at 150/h that step sees ~27 an hour (median;
# 10-80 over the daily cycle, ~60 in the incident hours) and the incident fires; at 60/h
# it cannot. tests/unit/test_ingest_generator.py checks it with the reference semantics.
DEMO_VISITORS_PER_HOUR = 150.0


def story_windows(config: GeneratorConfig) -> list[tuple[Story, int, int]]:
    """Each story with its absolute [start, end) in epoch ms."""
    start = config.resolved_start()
    return [(s, start + s.at_ms, start + s.at_ms + s.duration_ms) for s in config.stories]


def _daily(ms: int) -> float:
    """Traffic multiplier by hour of day (UTC): quiet nights, busy afternoons/evenings.
    Scaled so its daily mean is 1 (the raw curve's mean is 0.62838)."""
    hour = (ms % _DAY) / _HOUR
    return (0.3 + 0.9 * math.exp(-(((hour - 16.0) / 5.0) ** 2))) / 0.62838


_DAILY_PEAK = 1.2 / 0.62838


class _Visitor:
    """One visit: builds its events (with times) from its own RNG."""

    def __init__(self, gen: _Generator, index: int, t0: int, rng: random.Random) -> None:
        self.g, self.rng, self.t = gen, rng, t0
        c = gen.config
        self.events: list[tuple[int, dict[str, Any]]] = []
        self.anonymous_id: str | None = f"{c.id_prefix}anon-{rng.getrandbits(48):012x}"
        self.known = rng.random() < c.known_share
        self.customer_id: str | None = (f"{c.id_prefix}cust-{rng.randrange(c.customers):06d}"
                                         if self.known else None)
        self.new_id = f"{c.id_prefix}cust-v{index:07d}"
        self.logged_in = self.known and rng.random() < 0.5
        self.device = rng.choice(("desktop", "mobile", "tablet"))
        self.country = rng.choices(("DE", "FR", "GB", "US", "NL"), (4, 2, 2, 1, 1))[0]
        self._basket: float | None = None

    # -- emitting -------------------------------------------------------------------

    def emit(self, etype: str, channel: str, props: dict[str, Any] | None = None,
             ctx: dict[str, Any] | None = None) -> None:
        has_customer = self.logged_in or channel in ("store", "call_center", "email")
        event = {
            "event_id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            "type": etype, "channel": channel, "occurred_at": self.t,
            "customer_id": self.customer_id if has_customer else None,
            "anonymous_id": self.anonymous_id if channel in ("web", "app", "ads", "chat")
            else None,
            "source": self.g.config.source,
            "properties": props or {},
            "context": {"device": self.device if channel in ("web", "ads", "chat") else
                        ("app" if channel == "app" else channel), "country": self.country,
                        **(ctx or {})},
        }
        self.events.append((self.t, event))

    def wait(self, median_s: float, spread: float = 0.8) -> None:
        self.t += max(1_000, int(self.rng.lognormvariate(math.log(median_s), spread) * 1000))

    def identify(self, channel: str) -> None:
        if self.customer_id is None:
            self.customer_id = self.new_id
        if not self.logged_in:
            self.logged_in = True
            self.emit("identify", channel, {"method": "login" if self.known else "signup"})

    def story(self, kind: str, step: str, channel: str) -> Story | None:
        for s, start, end in self.g.windows:
            if (s.kind == kind and s.target_step == step and start <= self.t < end
                    and (s.channel is None or s.channel == channel)
                    and self.rng.random() < s.share):
                return s
        return None

    # -- journeys -------------------------------------------------------------------

    def run(self) -> None:
        c, rng = self.g.config, self.rng
        entry = rng.choices(list(c.entry_channels), list(c.entry_channels.values()))[0]
        if entry in ("store", "email", "call_center") and self.customer_id is None:
            entry = "web"  # only known customers are recognised there
        if entry == "store":
            return self.store_visit()
        if entry == "call_center":
            self.emit("call_center_contact", "call_center", {"reason": "order_status"})
            return None
        channel = "app" if entry == "app" else "web"
        if entry == "ads":
            campaign = rng.choice(("spring_sale", "retargeting", "brand"))
            self.emit("ad_click", "ads", {"campaign": campaign}, {"campaign": campaign})
            channel = "web" if rng.random() < 0.7 else "app"
        elif entry == "email":
            self.emit("email_open", "email", {"campaign": "newsletter"})
            self.wait(90)
            self.emit("email_click", "email", {"campaign": "newsletter"})
            channel = "web" if rng.random() < 0.6 else "app"
        self.wait(20)
        if self.customer_id is None and rng.random() < c.signup_share:
            return self.onboarding(channel)
        return self.purchase(channel)

    def store_visit(self) -> None:
        self.emit("product_view", "store", {"sku": self.sku()})
        if self.rng.random() < 0.55:
            self.wait(300)
            self.emit("purchase", "store", self.order())

    def purchase(self, channel: str) -> None:
        rng = self.rng
        for _ in range(1 + min(int(rng.expovariate(0.8)), 6)):
            self.emit("product_view", channel, {"sku": self.sku()})
            self.wait(45)
        for step in PURCHASE_STEPS[1:]:
            prev = PURCHASE_STEPS[PURCHASE_STEPS.index(step) - 1]
            if not self.after_step(prev, channel):
                return
            if rng.random() >= STEP_CONTINUE[prev]:
                return  # abandoned
            if step == "shipping_details" and self.customer_id is not None \
                    and rng.random() < 0.12 and self.logged_in:
                self.t += int(rng.uniform(1, 18) * _HOUR)  # comes back later, other device
                channel = "app" if channel == "web" else "web"
            if step == "shipping_details":
                self.identify(channel)
                self.wait(10)
            self.emit(step, channel, self.order() if step == "purchase" else
                      {"value": self.basket()} if step == "add_to_cart" else {})
            self.wait(35)

    def after_step(self, step: str, channel: str) -> bool:
        """Detours right after reaching `step`; False when the journey ends here."""
        rng = self.rng
        if step == "add_to_cart" and rng.random() < 0.15:  # back to browsing
            self.emit("product_view", channel, {"sku": self.sku()})
            self.wait(30)
            self.emit("add_to_cart", channel, {"sku": self.sku(), "value": self.basket()})
            self.wait(20)
        loop = self.story("checkout_loop", step, channel)
        if loop is not None:
            for _ in range(rng.randint(2, 3)):
                self.emit("error_page", channel, {"code": "address_validation"})
                self.wait(25)
                self.emit(step, channel)
                self.wait(25)
            return rng.random() < 0.7
        if step == "shipping_details" and rng.random() < 0.04:
            self.emit("support_chat", "chat", {"topic": "delivery"})
            self.wait(120)
        if self.story("payment_incident", step, channel) is not None:
            self.emit("payment_error", channel, {"code": "gateway_timeout"})
            self.wait(40)
            if rng.random() < 0.5:
                self.emit(step, channel)  # retries once
                self.wait(20)
                self.emit("payment_error", channel, {"code": "gateway_timeout"})
            return rng.random() < 0.1
        if self.story("call_center_switch", step, channel) is not None:
            self.wait(240)
            self.emit("call_center_contact", "call_center", {"reason": "payment_help"})
            self.wait(300)
            if rng.random() < 0.7:
                self.emit("purchase", "call_center", self.order())
            return False
        if step == "payment_details" and rng.random() < 0.02:
            self.emit("error_page", channel, {"code": "payment_form"})
            self.wait(20)
        return True

    def onboarding(self, channel: str) -> None:
        rng = self.rng
        self.emit("signup_start", channel)
        self.wait(80)
        if rng.random() >= 0.75:
            return
        self.customer_id = self.new_id
        self.logged_in = True
        self.emit("signup_complete", channel)  # carries both ids: the identity link
        if rng.random() >= 0.7:
            return
        self.wait(240)
        self.emit("profile_complete", channel)
        if rng.random() >= 0.5:
            return
        self.t += int(rng.uniform(2, 60) * _HOUR)
        self.emit("first_order", channel, self.order())

    def sku(self) -> str:
        return f"SKU-{self.rng.randrange(1, 400):04d}"

    def basket(self) -> float:
        """The visit's basket value (`properties.value` of add_to_cart, and of the order
        that buys it: docs/semantics.md "Journey value"). From its own RNG seeded by the
        visitor, so adding it left the sample's events and times as they were."""
        if self._basket is None:
            seed = f"{self.anonymous_id}|{self.new_id}"
            self._basket = round(random.Random(seed).lognormvariate(3.8, 0.6), 2)
        return self._basket

    def order(self) -> dict[str, Any]:
        order_id = f"o-{self.rng.getrandbits(40):010x}"
        amount = round(self.rng.lognormvariate(3.8, 0.6), 2)
        if self._basket is not None:  # buys the basket it filled
            amount = self._basket
        return {"order_id": order_id, "amount": amount, "value": amount, "currency": "EUR"}


class _Generator:
    def __init__(self, config: GeneratorConfig) -> None:
        self.config = config
        self.start = config.resolved_start()
        self.end = self.start + config.duration_ms
        self.windows = story_windows(config)

    def run(self) -> Iterator[dict[str, Any]]:
        c = self.config
        master = random.Random(c.seed)
        peak = c.visitors_per_hour * (_DAILY_PEAK if c.daily_cycle else 1.0) / _HOUR  # per ms
        heap: list[tuple[int, int, dict[str, Any]]] = []
        seq = emitted = index = 0
        t = self.start
        while True:
            next_arrival = self.end
            while peak > 0:  # thinning: arrivals follow the daily cycle
                t += max(1, int(master.expovariate(peak)))
                if t >= self.end:
                    break
                if not c.daily_cycle or master.random() * _DAILY_PEAK < _daily(t):
                    next_arrival = t
                    break
            while heap and heap[0][0] <= next_arrival:
                ts, _, event = heapq.heappop(heap)
                event["occurred_at"] = ms_to_iso(ts)
                yield event
                emitted += 1
                if c.max_events is not None and emitted >= c.max_events:
                    return
            if next_arrival >= self.end:
                return
            visitor = _Visitor(self, index, next_arrival, random.Random(master.getrandbits(64)))
            index += 1
            visitor.run()
            for ts, event in visitor.events:
                if ts < self.end:
                    heapq.heappush(heap, (ts, seq, event))
                    seq += 1


def generate_events(config: GeneratorConfig) -> Iterator[dict[str, Any]]:
    """DESIGN.md wire dicts (ISO `occurred_at`), ordered by time, deterministic by seed."""
    if config.duration_ms <= 0:
        raise ValueError("duration must be positive")
    if config.visitors_per_hour < 0:
        raise ValueError("visitors_per_hour must not be negative")
    return _Generator(config).run()
