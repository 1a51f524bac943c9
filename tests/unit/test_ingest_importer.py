"""File parsing and every rejection reason, through the importer's dry run (no broker)."""

from __future__ import annotations

import gc
from pathlib import Path

import orjson
import pandas as pd
import pytest

from ingest.importer import ImportOptions, detect_format, import_file
from ingest.mapping import ColumnMapping
from ingest.writers import write_events
from journeys.errors import ConfigError

GOOD = {"event_id": "e1", "type": "product_view", "channel": "web",
        "occurred_at": "2026-03-01T10:00:00Z", "anonymous_id": "a1"}

# One bad line per DESIGN.md rule, with the reason code the report must show.
BAD_LINES: list[tuple[bytes, str]] = [
    (b"{not json", "invalid_json"),
    (b"[1, 2]", "not_an_object"),
    (orjson.dumps({**GOOD, "event_id": None}), "missing_field"),
    (orjson.dumps({**GOOD, "type": "  "}), "empty_field"),
    (orjson.dumps({**GOOD, "properties": [1, 2]}), "wrong_type"),
    (orjson.dumps({**GOOD, "event_id": "x" * 129}), "too_long"),
    (orjson.dumps({**GOOD, "channel": "telepathy"}), "unknown_channel"),
    (orjson.dumps({**GOOD, "occurred_at": "yesterday"}), "bad_timestamp"),
    (orjson.dumps({**GOOD, "occurred_at": 1772359200}), "bad_timestamp"),
    (orjson.dumps({**GOOD, "anonymous_id": None}), "missing_identity"),
    (orjson.dumps({**GOOD, "properties": {"blob": "x" * 40_000}}), "too_large"),
    (orjson.dumps({**GOOD, "context": "mobile"}), "wrong_type"),
]


def _jsonl(tmp_path: Path, lines: list[bytes]) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_every_rejection_reason_is_reported_and_written(tmp_path: Path) -> None:
    good = [orjson.dumps({**GOOD, "event_id": f"g{i}"}) for i in range(3)]
    lines = [good[0], *[b for b, _ in BAD_LINES], good[1], b"", good[2]]
    rejects = tmp_path / "rejects.jsonl"
    report = import_file(_jsonl(tmp_path, lines), None,
                         ImportOptions(rejects_path=rejects, chunk_rows=4, max_reasons=50))
    assert (report.rows, report.accepted, report.rejected) == (15, 3, len(BAD_LINES))
    codes = [reason.partition(":")[0] for _, reason in report.first_rejections]
    assert codes == [code for _, code in BAD_LINES]
    # rows are 1-based data rows in file order (the blank line is not a row)
    assert [row for row, _ in report.first_rejections] == list(range(2, 2 + len(BAD_LINES)))
    written = [orjson.loads(line) for line in rejects.read_bytes().splitlines()]
    assert len(written) == len(BAD_LINES)
    assert written[0]["original"] == "{not json" and written[0]["row"] == 2
    assert report.rejects_path == rejects


def test_csv_with_mapping_and_broken_lines(tmp_path: Path) -> None:
    path = tmp_path / "pos.csv"
    path.write_text(
        "receipt;card;when;sku\n"
        "r1;c1;2026-03-01 10:00;A\n"
        "r2;c2;2026-03-01 10:05;B;surplus\n"  # one field too many: pandas skips it
        "r3;;2026-03-01 10:10;C\n"  # no identity
        "r4;c4;2026-03-01 10:15;D\n"
    )
    mapping = ColumnMapping(event_id="receipt", customer_id="card", occurred_at="when",
                            type=None, channel=None, constant_type="purchase",
                            constant_channel="store", timezone="Europe/Berlin")
    report = import_file(path, None, ImportOptions(mapping=mapping, delimiter=";",
                                                   rejects_path=tmp_path / "r.jsonl"))
    assert (report.rows, report.accepted, report.rejected) == (4, 2, 2)
    assert report.first_rejections[0][0] == 2
    assert report.first_rejections[0][1].startswith("bad_csv_line: line 3")
    assert report.first_rejections[1] == (
        3, "missing_identity: customer_id or anonymous_id is required")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_generated_files_round_trip_in_chunks(tmp_path: Path, suffix: str) -> None:
    from ingest.generator import GeneratorConfig, generate_events

    config = GeneratorConfig(seed=5, start_ms=1_772_323_200_000, duration_ms=3_600_000,
                             visitors_per_hour=300)
    events = list(generate_events(config))
    path = tmp_path / f"gen{suffix}"
    assert write_events(events, path, chunk_rows=97) == len(events)
    seen: list[int] = []
    inside: list[int] = []
    threshold = gc.get_threshold()
    report = import_file(path, None, ImportOptions(chunk_rows=101),
                         on_progress=lambda p: (seen.append(p.rows),
                                                inside.append(gc.get_freeze_count())))
    assert (report.rows, report.accepted, report.rejected) == (len(events), len(events), 0)
    assert seen == sorted(seen) and seen[-1] == len(events) and len(seen) > 1
    assert report.rejects_path is None
    # the collector is held back during the import only (ingest.heap)
    assert min(inside) > 0
    assert gc.get_threshold() == threshold and gc.get_freeze_count() == 0


@pytest.mark.parametrize("suffix", [".csv.gz", ".jsonl.bz2", ".csv.xz"])
def test_compressed_exports_stream_with_progress_on_the_file(tmp_path: Path,
                                                             suffix: str) -> None:
    import bz2
    import gzip
    import lzma

    plain = tmp_path / f"plain{suffix.rsplit('.', 1)[0]}"
    good = [{**GOOD, "event_id": f"z{i}", "anonymous_id": f"a{i % 7}"} for i in range(500)]
    write_events([*good, {**GOOD, "event_id": "bad", "channel": "fax"}], plain)
    path = tmp_path / f"export{suffix}"
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}[path.suffix]
    with opener(path, "wb") as out:
        out.write(plain.read_bytes())
    progress: list[tuple[int, int | None]] = []
    report = import_file(path, None, ImportOptions(chunk_rows=100, rejects_path=tmp_path / "r"),
                         on_progress=lambda p: progress.append((p.done, p.total)))
    assert (report.rows, report.accepted, report.rejected) == (501, 500, 1)
    assert progress[-1] == (path.stat().st_size, path.stat().st_size)  # compressed bytes


def test_parquet_with_typed_columns(tmp_path: Path) -> None:
    frame = pd.DataFrame({
        "id": ["p1", "p2"], "kind": ["email_open", "email_open"],
        "ts": pd.to_datetime(["2026-03-01 10:00", "2026-03-01 11:00"]).tz_localize("UTC"),
        "user": [101, 102], "campaign": ["spring", None]})
    path = tmp_path / "esp.parquet"
    frame.to_parquet(path)
    mapping = ColumnMapping(event_id="id", type="kind", occurred_at="ts", customer_id="user",
                            anonymous_id=None, channel=None, constant_channel="email")
    report = import_file(path, None, ImportOptions(mapping=mapping))
    assert (report.accepted, report.rejected) == (2, 0)


def test_mapping_that_does_not_fit_fails_fast(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="no time column"):
        import_file(path, None)
    with pytest.raises(ConfigError, match="no such file"):
        import_file(tmp_path / "missing.csv", None)


def test_detect_format() -> None:
    assert detect_format(Path("a.CSV")) == "csv"
    assert detect_format(Path("a.ndjson")) == "jsonl"
    assert detect_format(Path("a.tar.parquet")) == "parquet"
    assert detect_format(Path("a.jsonl.gz")) == "jsonl"
    assert detect_format(Path("a.csv.xz")) == "csv"
    assert detect_format(Path("a.dat"), "jsonl") == "jsonl"
    with pytest.raises(ConfigError):
        detect_format(Path("a.dat"))
    with pytest.raises(ConfigError):
        detect_format(Path("a.csv"), "xml")
