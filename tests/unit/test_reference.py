"""The reference semantics on hand-checked stories (so the reference itself is trusted)."""

from __future__ import annotations

from journeys.definitions import parse_definitions
from tests.reference.journeys_ref import Ev, all_journeys, funnel, sessions

H = 3_600_000
M = 60_000
DEFS = parse_definitions(
    {
        "journeys": [
            {"name": "buy", "steps": ["view", "cart", "pay", "done"],
             "abandon_after": "1h", "conversion_window": "1d"}
        ],
        "sessions": {"gap": "30m"},
    }
)
BUY = DEFS.get("buy")


def ev(i: int, t: int, typ: str, ch: str = "web", c: str = "c1") -> Ev:
    return Ev(f"e{i:03d}", c, typ, ch, t)


def test_converted_with_detours() -> None:
    evs = [ev(1, 0, "view"), ev(2, 1 * M, "cart"), ev(3, 2 * M, "help", "chat"),
           ev(4, 3 * M, "cart", "chat"), ev(5, 4 * M, "view"), ev(6, 5 * M, "pay"),
           ev(7, 6 * M, "done", "store")]
    [inst] = all_journeys([BUY], evs, watermark=10 * H)
    assert inst.status == "converted" and inst.closed_at == 6 * M
    kinds = [(d.kind, d.step, d.channel) for d in inst.detours]
    assert kinds == [
        ("channel_switch", "cart", "chat"), ("off_path", "cart", "chat"),
        ("loop", "cart", "chat"),
        ("channel_switch", "cart", "web"), ("backtrack", "cart", "web"),
        ("channel_switch", "pay", "store"),
    ]


def test_abandon_by_inactivity_then_reopen_and_duplicates() -> None:
    evs = [ev(1, 0, "view"), ev(2, 10 * M, "cart"), ev(2, 10 * M, "cart"),
           ev(3, 10 * M + H, "view"), ev(4, 10 * M + H + M, "cart")]
    a, b = all_journeys([BUY], evs, watermark=None)
    assert (a.status, a.closed_at, a.dropped_at(BUY)) == ("abandoned", 10 * M + H, "cart")
    assert len(a.path) == 2  # duplicate counted once
    assert b.status == "open" and b.furthest == 1
    [_, b2] = all_journeys([BUY], evs, watermark=10 * M + 2 * H + M)
    assert b2.status == "abandoned" and b2.closed_at == 10 * M + 2 * H + M


def test_conversion_window_caps_active_journeys() -> None:
    evs = [ev(i, i * 50 * M, "view" if i == 0 else "cart") for i in range(40)]
    first = all_journeys([BUY], evs, watermark=None)[0]
    assert first.status == "abandoned" and first.closed_at == 24 * H


def test_skip_counts_as_reached_and_funnel() -> None:
    evs = [ev(1, 0, "view"), ev(2, M, "pay"), ev(3, 0, "view", c="c2")]
    insts = all_journeys([BUY], evs, watermark=None)
    assert funnel(BUY, insts) == {"view": 2, "cart": 1, "pay": 1, "done": 0}
    assert insts[0].reached[1] == (M, "web")


def test_events_before_entry_are_ignored_and_ties_by_event_id() -> None:
    evs = [ev(2, 0, "cart"), ev(1, 0, "view")]  # same time: e001 (view) first
    [inst] = all_journeys([BUY], evs, watermark=None)
    assert [e.type for e in inst.path] == ["view", "cart"]


def test_sessions_split_on_gap() -> None:
    evs = [ev(1, 0, "a"), ev(2, 29 * M, "a"), ev(3, 59 * M, "a"), ev(4, 59 * M, "a", c="c2")]
    assert sessions(evs, 30 * M) == [("c1", 0, 29 * M, 2), ("c1", 59 * M, 59 * M, 1),
                                     ("c2", 59 * M, 59 * M, 1)]
