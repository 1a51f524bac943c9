"""State values stored as several changelog records: one home for the pattern the alert
and customer stages share (docs/reliability.md "Bounded state").

A Kafka record has a size limit (8 MiB on the worker's topics), and one table value is
one changelog record; a value that outgrew it stopped the worker in a crash loop
(measured: an alert state of 155k entries, a customer with ~210k events in a journey).
So a large value is stored as a small *head* under its own key plus *part* records of a
new generation under `part_key(key, gen, i)`; the head names its generation and count.
A batch's records are stored in `store_order`, each group acknowledged before the next:
new parts, then heads, then tombstones of the previous generation's parts. A crash in
between leaves the previous head, which names the previous parts, still stored: the
previous state is restored whole, never a mix. Small values stay one record (atomic,
as before). Parts of a generation a crash left behind without a head are orphans that
the next write of that generation overwrites (alerts: docs/alerting.md).

The alert stage gives each part a generation of its own (arrival chunks: the head
names [chunk, generation] per part, stream/stages/alert_chunks.py), so a batch rewrites
only the parts it changed, in the same order; the customer stage rewrites all of its
value's parts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

PART_MARK = b"\xff"
"""Separates a part key's suffix: never in UTF-8, so no state key (a customer id, an
alert state key) can look like a part key."""

Parts = tuple[int, int]  # (generation, number of part records); (0, 0): none
States = Mapping[bytes, tuple[int, bytes | None]]  # key -> (changelog partition, value)


def part_key(key: bytes, gen: int, i: int) -> bytes:
    """Table key of the i-th part record of generation `gen` of `key`'s value."""
    return key + PART_MARK + f"{gen}.{i}".encode()


def is_part(key: bytes) -> bool:
    return PART_MARK in key


def next_parts(old: Parts, count: int) -> Parts:
    """The parts a new value of `count` part records is stored as (0: one record)."""
    return (old[0] + 1, count) if count else (0, 0)


def records(key: bytes, partition: int, head: bytes | None, parts: Sequence[bytes],
            new: Parts, old: Parts) -> dict[bytes, tuple[int, bytes | None]]:
    """The table records of one value: the head (None: delete the key), its parts as
    generation `new`, and tombstones of the `old` generation's parts."""
    out: dict[bytes, tuple[int, bytes | None]] = {}
    gen, _n = new
    for i, part in enumerate(parts):
        out[part_key(key, gen, i)] = (partition, part)
    out[key] = (partition, head)
    old_gen, old_n = old
    if old_gen != gen:
        for i in range(old_n):
            out[part_key(key, old_gen, i)] = (partition, None)
    return out


def store_order(states: States) -> list[dict[bytes, tuple[int, bytes | None]]]:
    """A batch's state records in the order to store them, each group acknowledged
    before the next: new parts, then heads, then tombstones (a head only ever names
    parts that are stored)."""
    parts = {k: v for k, v in states.items() if is_part(k) and v[1] is not None}
    heads = {k: v for k, v in states.items() if not is_part(k) and v[1] is not None}
    gone = {k: v for k, v in states.items() if v[1] is None}
    return [g for g in (parts, heads, gone) if g]
