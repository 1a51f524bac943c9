"""Journey-definitions loader: defaults, durations, validation errors that name the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from journeys.definitions import load_definitions, parse_definitions
from journeys.errors import ConfigError, DefinitionNotFound
from journeys.timeutil import format_duration_ms, parse_duration_ms


def test_default_file_loads() -> None:
    defs = load_definitions()
    purchase = defs.get("purchase")
    assert purchase.entry == "product_view" and purchase.goal == "purchase"
    assert purchase.abandon_after_ms == 24 * 3_600_000
    assert purchase.conversion_window_ms == 7 * 86_400_000
    assert purchase.alert.window_ms == 3_600_000 and purchase.alert.horizon_ms == 1_800_000
    assert defs.sessions.gap_ms == 30 * 60_000
    assert len(defs.version) == 12


def test_version_changes_with_content() -> None:
    a = parse_definitions({"journeys": [{"name": "j", "steps": ["a", "b"]}]})
    b = parse_definitions({"journeys": [{"name": "j", "steps": ["a", "c"]}]})
    assert a.version != b.version
    assert a.version == parse_definitions({"journeys": [{"name": "j", "steps": ["a", "b"]}]}).version


def test_each_definition_has_its_own_version() -> None:
    def defs(b_steps: list[str], **a: object) -> list[str]:
        parsed = parse_definitions({"journeys": [{"name": "a", "steps": ["x", "y"], **a},
                                                 {"name": "b", "steps": b_steps}]})
        return [j.version for j in parsed.journeys]

    base = defs(["p", "q"])
    assert len(base[0]) == 12 and base[0] != base[1]
    assert defs(["p", "r"])[0] == base[0] and defs(["p", "r"])[1] != base[1]
    assert defs(["p", "q"], description="words only") == base  # not part of the results
    assert defs(["p", "q"], abandon_after="2h")[0] != base[0]
    assert defs(["p", "q"], alert={"threshold": 0.3})[0] != base[0]
    assert defs(["p", "q"], version="2024-06.b")[0] == "2024-06.b"
    assert defs(["p", "q"], version=3)[0] == "3"  # `version: 3` in YAML


@pytest.mark.parametrize("bad", ["unversioned", "a b", "x" * 41, "ü"])
def test_bad_explicit_versions_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="version"):
        parse_definitions({"journeys": [{"name": "a", "steps": ["x", "y"], "version": bad}]})


def test_defaults_applied() -> None:
    d = parse_definitions({"journeys": [{"name": "j", "steps": ["a", "b"]}]})
    j = d.get("j")
    assert j.abandon_after_ms == 86_400_000 and j.off_path is None
    assert j.alert.confidence == 0.999 and j.alert.min_volume == 30
    assert j.step_index("b") == 1 and j.step_index("zzz") == -1


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"journeys": [{"name": "j", "steps": ["a"]}]}, "at least two steps"),
        ({"journeys": [{"name": "j", "steps": ["a", "a"]}]}, "distinct"),
        ({"journeys": [{"name": "j", "steps": ["a", "b"], "abandon_after": "soon"}]}, "not a duration"),
        ({"journeys": [{"name": "j", "steps": ["a", "b"], "off_path": ["a"]}]}, "must not be steps"),
        ({"journeys": [{"name": "bad name!", "steps": ["a", "b"]}]}, "name"),
        ({"journeys": [{"name": "j", "steps": ["a", "b"], "colour": 1}]}, "colour"),
        (
            {"journeys": [{"name": "j", "steps": ["a", "b"]}, {"name": "j", "steps": ["c", "d"]}]},
            "unique",
        ),
        ({"journeys": [{"name": "j", "steps": ["a", "b"], "alert": {"threshold": 2}}]}, "threshold"),
        ({"nothing": 1}, "'journeys' list"),
    ],
)
def test_invalid_definitions_explain_themselves(body: object, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_definitions(body)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_definitions(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("journeys: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_definitions(bad)


def test_unknown_journey() -> None:
    with pytest.raises(DefinitionNotFound, match="purchase"):
        load_definitions().get("nope")


@pytest.mark.parametrize(
    ("text", "ms"),
    [("30m", 1_800_000), ("24h", 86_400_000), ("7d", 604_800_000), ("90s", 90_000),
     ("500ms", 500), ("1.5h", 5_400_000), (60, 60_000)],
)
def test_durations(text: str | int, ms: int) -> None:
    assert parse_duration_ms(text) == ms


def test_duration_format_round_trip() -> None:
    for ms in (500, 90_000, 1_800_000, 86_400_000):
        assert parse_duration_ms(format_duration_ms(ms)) == ms
    with pytest.raises(ValueError):
        parse_duration_ms("-5m")
