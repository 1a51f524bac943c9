"""Which definition version a report or listing reads (docs/semantics.md "Definition
versions"): each definition's current version unless the request names another with
`version=` (`unversioned`: rows written before versions existed)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from journeys.definitions import Definitions, JourneyDefinition
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
