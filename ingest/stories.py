"""The stories the generator (ingest.generator) injects: what they are, where the demo
puts them, and how `journeys generate --story` spells one.

Why a module of its own: a story is a behaviour in a time window (a detour loop at a
checkout step, a payment incident that collapses conversion, a switch to the call
centre), placed and parsed apart from how visitors are simulated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from journeys.timeutil import parse_duration_ms

StoryKind = Literal["checkout_loop", "payment_incident", "call_center_switch"]
STORY_KINDS: tuple[str, ...] = ("checkout_loop", "payment_incident", "call_center_switch")
_HOUR, _DAY = 3_600_000, 86_400_000
_DEFAULT_STEP: dict[str, str] = {"checkout_loop": "shipping_details",
                                 "payment_incident": "payment_details",
                                 "call_center_switch": "payment_details"}


@dataclass(frozen=True, slots=True)
class Story:
    """A behaviour injected for journeys that reach `step` inside the window.

    `at_ms` is the offset from the generator's start; `share` the fraction of matching
    journeys affected; `channel` limits it to journeys on one channel (None: all).
    """

    kind: StoryKind
    at_ms: int
    duration_ms: int
    share: float = 0.8
    step: str | None = None
    channel: str | None = None

    @property
    def target_step(self) -> str:
        return self.step or _DEFAULT_STEP[self.kind]


def demo_settle_ms() -> int:
    """How much data `journeys demo` wants after a story so that the journeys it ended
    are *abandoned* within the sample: the packaged purchase journey's `abandon_after`
    (24 h: a journey is abandoned only after that long without activity) plus an hour
    (the journeys' last events after the story, the allowed lateness)."""
    from journeys.definitions import load_definitions

    return load_definitions().get("purchase").abandon_after_ms + _HOUR


def demo_stories(duration_ms: int = 3 * _DAY, start_ms: int = 0,
                 settle_ms: int | None = None) -> tuple[Story, ...]:
    """One of each story, placed after enough normal history for alert baselines.

    Each starts at a fixed UTC hour (09:00, 14:00, 18:00: the daily cycle's busy part,
    where the payment incident has the volume to fire its alert) wherever the sample
    starts (`start_ms`; the default 0 is a midnight start): on the last day that leaves
    2 h of data after it (its alerts and their recovery become final in the data), else
    1 h (its alerts do; the recovery follows on the wall clock, ~35 min after the data
    ends), else at that hour's offset from the start of the last day. The payment
    incident first tries to leave `settle_ms` (default demo_settle_ms()): the journeys
    it ends are then abandoned within the data, so it shows as an abandonment spike, not
    only as a conversion dip. (The checkout loop and the call-centre switch keep their
    day: earlier, with less baseline history, the loop's drop-off fires an alert of its
    own and muddles the incident's story.)"""
    day = max(duration_ms // _DAY, 1)
    last = (day - 1) * _DAY
    settle = demo_settle_ms() if settle_ms is None else settle_ms

    def at(hour: int, length_ms: int, *margins: int) -> int:
        first = (hour * _HOUR - start_ms) % _DAY  # first offset at that UTC hour
        for margin in (*margins, 2 * _HOUR, _HOUR):
            fits = [o for o in range(first, duration_ms, _DAY)
                    if o + length_ms + margin <= duration_ms]
            if fits:
                return fits[-1]
        return last + hour * _HOUR

    return (
        Story("checkout_loop", at(9, 4 * _HOUR), 4 * _HOUR, share=0.6),
        Story("payment_incident", at(14, 2 * _HOUR, settle), 2 * _HOUR, share=0.85),
        Story("call_center_switch", at(18, 3 * _HOUR), 3 * _HOUR, share=0.5),
    )


def unsettled(stories: tuple[Story, ...], duration_ms: int,
              settle_ms: int | None = None) -> list[Story]:
    """The payment incident when the journeys it ends are not abandoned within the
    sample (too little data after it): `journeys demo` warns that they show as open."""
    settle = demo_settle_ms() if settle_ms is None else settle_ms
    return [s for s in stories if s.kind == "payment_incident"
            and s.at_ms + s.duration_ms + settle > duration_ms]


def parse_story(text: str) -> Story:
    """`kind@offset+duration[,share=0.8][,step=cart][,channel=app]`, e.g.
    `payment_incident@36h+2h,channel=app`."""
    head, *opts = [p.strip() for p in text.split(",")]
    kind, _, when = head.partition("@")
    if kind not in STORY_KINDS:
        raise ValueError(f"unknown story {kind!r}: one of {', '.join(STORY_KINDS)}")
    at, _, length = when.partition("+")
    if not at or not length:
        raise ValueError(f"story {text!r}: write kind@OFFSET+DURATION, e.g. {kind}@36h+2h")
    extra: dict[str, Any] = {}
    for opt in opts:
        key, _, value = opt.partition("=")
        if key == "share":
            extra["share"] = float(value)
        elif key in ("step", "channel"):
            extra[key] = value
        else:
            raise ValueError(f"story option {key!r}: use share=, step= or channel=")
    return Story(kind, parse_duration_ms(at), parse_duration_ms(length), **extra)  # type: ignore[arg-type]
