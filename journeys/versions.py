"""Row versions shared by the stream (which writes rows) and the warehouse (which keeps
the highest version per key: ReplacingMergeTree(version)), and how definition versions
are named (docs/semantics.md "Definition versions"). The stream's version scheme
(SEQ_EPOCH, version_floor) lives here because `journeys replay` (deploy/ops) must
outbid it."""

TOMBSTONE_VERSION = 2**62
"""The top of the row version range: above every version the stream or a replay hands
out (`journeys replay` checks its own against it), so a row written at it wins in FINAL
for good. Nothing writes it any more: since 2026-12-04 session deletions, like journey
retractions, carry the customer's counter (docs/stream.md "Exactly once in effect"), so
an id can come back with a higher version."""

UNVERSIONED = "unversioned"
"""How the API names the definition version of result rows written before definitions
had versions (migration 0009 stores them as ''): `version=unversioned` reads them."""


def stored_version(shown: str) -> str:
    """The `definition_version` column value of a version as the API names it."""
    return "" if shown == UNVERSIONED else shown


def shown_version(stored: str) -> str:
    """The API's name of a stored `definition_version`."""
    return stored or UNVERSIONED


SEQ_EPOCH = 1 << 24
"""Version jump per generation: more than one batch hands out to one customer (a
prepared chunk is at most 512 KiB of envelopes, stream.agents.context.PREPARE_BYTES:
some 20k events), and small beside the floor's 2^20 per millisecond. It was 2^32 until
2026-12-05: then a generation that started less than ~4 s after the one before it could
compute the same versions from the same stored value as the attempt that crashed
(both jumps above both floors), and rewrite a session id at versions it already had
(found by a property test crashing the stages after every other step,
docs/stream.md "Exactly once in effect"). Now the window is 16 ms: a generation that
starts at least that long after the previous one's start is above all it handed out."""
FLOOR_SHIFT = 20  # version units per millisecond of a generation's start (below)


def version_floor(generation_ns: int) -> int:
    """The lowest version a value first loaded in this generation hands out: its start
    in ms, times 2^20 (2^61 in 2026; TOMBSTONE_VERSION is 2^62, reached in 2109).

    The jump by SEQ_EPOCH only outbids rows of a state that was stored. When the states
    are gone but the rows are not (`journeys up` replaying its spool into a new, empty
    broker, over the warehouse of the run that crashed), counting from 0 again gave
    versions below rows the earlier run wrote (it handed out more versions in smaller
    batches): measured, 7 of 867 instances stayed at the crashed run's provisional row.
    With the floor, a later run outbids an earlier one by 2^20 per millisecond
    between their starts."""
    return (generation_ns // 1_000_000) << FLOOR_SHIFT
