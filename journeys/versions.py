"""Row versions shared by the stream (which writes rows) and the warehouse (which keeps
the highest version per key: ReplacingMergeTree(version)), and how definition versions
are named (docs/semantics.md "Definition versions")."""

TOMBSTONE_VERSION = 2**62
"""The version of a row that says "this id no longer exists": above any real version,
so it wins in FINAL (sessions merged away, journey instances retracted)."""

UNVERSIONED = "unversioned"
"""How the API names the definition version of result rows written before definitions
had versions (migration 0009 stores them as ''): `version=unversioned` reads them."""


def stored_version(shown: str) -> str:
    """The `definition_version` column value of a version as the API names it."""
    return "" if shown == UNVERSIONED else shown


def shown_version(stored: str) -> str:
    """The API's name of a stored `definition_version`."""
    return stored or UNVERSIONED
