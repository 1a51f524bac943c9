"""Journey definitions (DESIGN.md): loaded from YAML at start, validated, versioned.

Two versions (docs/semantics.md "Definition versions"): each definition has its own
`version` (an explicit `version:` in the YAML, else a content hash of that one
definition without its description), stored with every result row it produces, so a
changed definition's results sit beside the old ones and reports pick one; the file's
`version` (a hash of the whole file) says which file a worker or the API loaded.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from journeys.errors import ConfigError, DefinitionNotFound
from journeys.timeutil import parse_duration_ms
from journeys.versions import UNVERSIONED

DEFAULT_DEFINITIONS_FILE = "default_definitions.yaml"


def _ms(value: Any) -> int:
    try:
        return parse_duration_ms(value)
    except ValueError as exc:
        raise ValueError(str(exc)) from None


class AlertRule(BaseModel):
    """Drop-off alert parameters for one journey definition."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window_ms: int = Field(default=3_600_000, alias="window")
    horizon_ms: int = Field(default=1_800_000, alias="horizon")
    baseline_windows: int = Field(default=24, ge=3)
    min_volume: int = Field(default=30, ge=1)
    threshold: float = Field(default=0.15, gt=0, lt=1)
    confidence: float = Field(default=0.999, gt=0, lt=1)

    @field_validator("window_ms", "horizon_ms", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> int:
        return _ms(v)

    @field_validator("window_ms")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v <= 0:
            raise ValueError("window must be positive")
        return v


class JourneyDefinition(BaseModel):
    """One journey: ordered steps (first = entry, last = goal) and its timing rules."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    description: str = ""
    steps: tuple[str, ...]
    abandon_after_ms: int = Field(default=86_400_000, alias="abandon_after")
    conversion_window_ms: int = Field(default=7 * 86_400_000, alias="conversion_window")
    off_path: tuple[str, ...] | None = None
    alert: AlertRule = AlertRule()
    version: str = Field(default="", pattern=r"^$|^[A-Za-z0-9_.\-]{1,40}$")
    """Explicit (`version:` in the YAML) or, when absent, `definition_fingerprint`."""

    @field_validator("abandon_after_ms", "conversion_window_ms", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> int:
        return _ms(v)

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, v: Any) -> Any:
        if isinstance(v, int | float) and not isinstance(v, bool):
            return str(v)  # `version: 2` in YAML
        if v == UNVERSIONED:
            raise ValueError(f"{UNVERSIONED!r} names rows written before versions existed")
        return v

    @model_validator(mode="after")
    def _check(self) -> JourneyDefinition:
        if len(self.steps) < 2:
            raise ValueError(f"journey {self.name!r}: needs at least two steps (entry and goal)")
        if len(set(self.steps)) != len(self.steps):
            raise ValueError(f"journey {self.name!r}: steps must be distinct")
        if self.abandon_after_ms <= 0 or self.conversion_window_ms <= 0:
            raise ValueError(f"journey {self.name!r}: abandon_after/conversion_window must be > 0")
        if self.off_path and set(self.off_path) & set(self.steps):
            raise ValueError(f"journey {self.name!r}: off_path types must not be steps")
        if not self.version:
            object.__setattr__(self, "version", definition_fingerprint(self))
        return self

    @property
    def entry(self) -> str:
        return self.steps[0]

    @property
    def goal(self) -> str:
        return self.steps[-1]

    def step_index(self, event_type: str) -> int:
        """Index of the step this event type is, or -1."""
        try:
            return self.steps.index(event_type)
        except ValueError:
            return -1


class SessionsConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    gap_ms: int = Field(default=1_800_000, alias="gap")

    @field_validator("gap_ms", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> int:
        return _ms(v)


class Definitions(BaseModel):
    """The whole definitions file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    journeys: tuple[JourneyDefinition, ...]
    sessions: SessionsConfig = SessionsConfig()
    version: str = ""

    @model_validator(mode="after")
    def _unique(self) -> Definitions:
        names = [j.name for j in self.journeys]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"journey names must be unique, repeated: {dupes}")
        if not self.version:
            object.__setattr__(self, "version", _fingerprint(self))
        return self

    def get(self, name: str) -> JourneyDefinition:
        for j in self.journeys:
            if j.name == name:
                return j
        raise DefinitionNotFound(
            f"unknown journey {name!r}; defined: {', '.join(j.name for j in self.journeys)}"
        )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.journeys)


def definition_fingerprint(d: JourneyDefinition) -> str:
    """Content hash of one definition: everything that shapes its results (steps,
    timing, off-path types, alert rule), not its description or version."""
    body = orjson.dumps(d.model_dump(mode="json", exclude={"version", "description"}),
                        option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(body).hexdigest()[:12]


def _fingerprint(defs: Definitions) -> str:
    body = orjson.dumps(
        defs.model_dump(mode="json", exclude={"version"}), option=orjson.OPT_SORT_KEYS
    )
    return hashlib.sha256(body).hexdigest()[:12]


def parse_definitions(data: Any, *, origin: str = "<definitions>") -> Definitions:
    if not isinstance(data, dict) or "journeys" not in data:
        raise ConfigError(f"{origin}: expected a mapping with a 'journeys' list")
    try:
        return Definitions.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"{origin}: invalid journey definitions: {problems}") from None


def load_definitions(path: str | Path | None = None) -> Definitions:
    """Load a definitions YAML file; `None` loads the packaged default."""
    if path is None:
        text = resources.files("journeys").joinpath(DEFAULT_DEFINITIONS_FILE).read_text()
        origin = f"(default) {DEFAULT_DEFINITIONS_FILE}"
    else:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read journey definitions {p}: {exc.strerror}") from None
        origin = str(p)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: not valid YAML: {exc}") from None
    return parse_definitions(data, origin=origin)
