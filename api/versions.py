"""Which definition version a report or listing reads (docs/semantics.md "Definition
versions"): each definition's current version unless the request names another with
`version=` (`unversioned`: rows written before versions existed)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from journeys.definitions import Definitions, JourneyDefinition
from journeys.errors import InvalidQuery
from journeys.versions import UNVERSIONED, stored_version

VERSION_PATTERN = r"^[A-Za-z0-9_.\-]{1,40}$"
VersionQuery = Annotated[str | None, Query(
    pattern=VERSION_PATTERN, examples=["259f6e2ec60f", UNVERSIONED],
    description="definition version to read (default: the current one; "
                f"'{UNVERSIONED}': rows written before versions; GET /v1/journeys lists them)")]


def at_version(definition: JourneyDefinition, version: str | None) -> JourneyDefinition:
    """The definition whose `version` the report queries select: itself, or a copy
    naming the stored form of another version (steps as now: reports list the current
    steps, unknown step names last)."""
    if version is None:
        return definition
    return definition.model_copy(update={"version": stored_version(version)})


def current(definitions: Definitions) -> list[tuple[str, str]]:
    """(journey, current version) of every definition."""
    return [(d.name, d.version) for d in definitions.journeys]


def read_versions(definitions: Definitions, journey: str | None,
                  version: str | None) -> list[tuple[str, str]]:
    """The (journey, version) pairs a per-customer read selects: every definition at its
    current version, or `journey` (404 when unknown) at `version` or its current one;
    `version` without `journey` is InvalidQuery (versions are per definition)."""
    if journey is not None:
        return [(journey, at_version(definitions.get(journey), version).version)]
    if version is not None:
        raise InvalidQuery("'version' needs 'journey': versions are per definition")
    return current(definitions)
