"""The dead-letter archiver's reading of `<prefix>.dead-letter` records (stream.agents.dead_letters)."""

from __future__ import annotations

from types import SimpleNamespace

import orjson

from journeys.events import Rejection
from stream.agents.dead_letters import DeadLetterArchiver, parse_letter
from warehouse.writers import dead_letter_rows

T0 = 1_772_323_200_000


def letter(stage: str) -> bytes:
    return Rejection("unknown_channel: fax", b'{"event_id": "x1"}', "x1").to_dead_letter(
        stage=stage, received_at_ms=T0)


def test_ingest_letters_become_rows_with_the_dead_letter_coordinates() -> None:
    d = parse_letter(letter("collector"), "p.dead-letter", 2, 41, T0 + 5)
    assert d is not None
    assert (d.stage, d.rejection.reason, d.rejection.event_id, d.received_at_ms) == (
        "collector", "unknown_channel: fax", "x1", T0)
    [row] = dead_letter_rows([d])
    assert row[1:] == ("collector", "unknown_channel: fax", "x1", '{"event_id": "x1"}',
                       "p.dead-letter", 2, 41)


def test_the_workers_own_letters_are_skipped_they_are_in_the_table_already() -> None:
    assert parse_letter(letter("validate"), "t", 0, 0, T0) is None
    assert parse_letter(letter("alert_webhook"), "t", 0, 0, T0) is None


def test_a_record_that_is_no_dead_letter_is_archived_as_unknown() -> None:
    for value in (b"\xff not json", b"[1, 2]", orjson.dumps({"received_at": 5}), None):
        d = parse_letter(value, "t", 1, 7, T0)
        assert d is not None and d.stage == "unknown" and d.offset == 7
        assert d.received_at_ms == T0


def test_records_at_or_below_the_stored_offset_are_not_written_again() -> None:
    archiver = DeadLetterArchiver.__new__(DeadLetterArchiver)  # no service machinery
    archiver.written = {0: 10}
    records = [SimpleNamespace(topic="t", partition=p, offset=o, value=letter("import"),
                               timestamp=T0) for p, o in ((0, 9), (0, 10), (0, 11), (1, 0))]
    assert [(d.partition, d.offset) for d in archiver.letters(records)] == [(0, 11), (1, 0)]
