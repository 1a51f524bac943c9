"""byte_chunks: the pieces a batch is prepared in (stream.agents.context)."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from stream.agents.context import byte_chunks

values = st.one_of(st.none(), st.binary(max_size=300))


@given(st.lists(values, max_size=40), st.integers(1, 500))
def test_chunks_keep_order_and_respect_the_limit(vals: list[bytes | None], limit: int) -> None:
    records = [(i % 3, i, v) for i, v in enumerate(vals)]
    chunks = byte_chunks(records, limit)
    assert [r for c in chunks for r in c] == records
    for chunk in chunks:
        assert chunk
        size = sum(len(r[2] or b"") for r in chunk)
        assert size <= limit or len(chunk) == 1  # only a record larger than the limit
    for a, b in itertools.pairwise(chunks):  # not cut earlier than needed
        assert sum(len(r[2] or b"") for r in a) + len(b[0][2] or b"") > limit


def test_a_record_larger_than_the_limit_is_a_chunk_of_its_own() -> None:
    records = [(0, 0, b"a" * 10), (0, 1, b"b" * 1000), (0, 2, b"c")]
    assert byte_chunks(records, 100) == [[records[0]], [records[1]], [records[2]]]
