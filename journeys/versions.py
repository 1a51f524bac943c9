"""Row versions shared by the stream (which writes rows) and the warehouse (which keeps
the highest version per key: ReplacingMergeTree(version))."""

TOMBSTONE_VERSION = 2**62
"""The version of a row that says "this id no longer exists": above any real version,
so it wins in FINAL (sessions merged away, journey instances retracted)."""
