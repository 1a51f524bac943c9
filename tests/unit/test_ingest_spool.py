"""The collector's spool (ingest.spool): frames read back in order, a torn or corrupt
tail is ignored (never a crash), and a record is fsync'd before it is produced."""

from __future__ import annotations

import os
import socket
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest import spool as spool_module
from ingest.producer import TouchpointProducer, bulk_producer
from ingest.spool import (
    MAGIC,
    MAGIC_V1,
    SpoolFailed,
    SpoolRecord,
    SpoolStats,
    SpoolWriter,
    close_gate,
    encode_payload,
    gate_is_open,
    open_gate,
    read_spool,
    replay,
    segments,
)
from journeys.events import EventValidator, Touchpoint
from journeys.settings import KafkaConfig


def frame(n: int, tag: str = "r") -> list[SpoolRecord]:
    """n records of every shape: keyed, unkeyed, with and without headers."""
    return [(f"t.{i % 2}", None if i % 3 == 0 else f"k{i}".encode(),
             f'{{"{tag}": {i}}}'.encode() + b"\x00\xff" * i,
             [("h", b"v"), ("\u00e9", b"")] if i % 2 else None) for i in range(n)]


def test_frames_read_back_in_order_across_segments(tmp_path: Path) -> None:
    first = SpoolWriter(tmp_path)
    written = [frame(3, "a"), frame(1, "b"), frame(7, "c")]
    for f in written[:2]:
        first.append(f)
    first.close()
    second = SpoolWriter(tmp_path)  # a restarted collector: a segment of its own
    second.append(written[2])
    second.append([])  # nothing to write: no frame
    second.close()
    assert [p.name for p in segments(tmp_path)] == ["00000001.spool", "00000002.spool"]
    stats = SpoolStats()
    assert list(read_spool(tmp_path, stats)) == written
    assert (stats.frames, stats.records, stats.ignored_bytes) == (3, 11, 0)
    assert stats.frame_bytes == sum(p.stat().st_size - len(MAGIC) for p in segments(tmp_path))


def test_no_segment_before_the_first_record(tmp_path: Path) -> None:
    SpoolWriter(tmp_path / "spool").close()
    assert segments(tmp_path / "spool") == [] and list(read_spool(tmp_path / "spool")) == []


@pytest.mark.parametrize("cut", [1, 4, 8, 9, 20])
def test_a_torn_last_frame_is_ignored(tmp_path: Path, cut: int) -> None:
    writer = SpoolWriter(tmp_path)
    writer.append(frame(2))
    writer.append(frame(5))
    path = writer.path
    writer.close()
    assert path is not None
    size = path.stat().st_size
    os.truncate(path, size - cut)  # the crash came in the middle of the last write
    later = SpoolWriter(tmp_path)
    later.append(frame(1, "after"))
    later.close()
    stats = SpoolStats()
    assert list(read_spool(tmp_path, stats)) == [frame(2), frame(1, "after")]
    assert stats.torn_segments == 1 and stats.ignored_bytes > 0


def test_corrupt_bytes_end_their_segment_without_a_crash(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path)
    for _ in range(3):
        writer.append(frame(2))
    path = writer.path
    writer.close()
    assert path is not None
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # a flipped bit in the last frame's payload: its CRC fails
    path.write_bytes(bytes(data) + b"\xff" * 11)
    assert list(read_spool(tmp_path)) == [frame(2), frame(2)]
    (tmp_path / "00000009.spool").write_bytes(MAGIC[:3])  # died while creating a segment
    (tmp_path / "00000010.spool").write_bytes(MAGIC + b"\xff\xff\xff\x7f" + b"\x00" * 4)
    stats = SpoolStats()
    assert len(list(read_spool(tmp_path, stats))) == 2 and stats.torn_segments == 3


def test_concurrent_appends_never_interleave(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path)

    def write(tag: str) -> None:
        for _ in range(25):
            writer.append(frame(4, tag))

    threads = [threading.Thread(target=write, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    frames = list(read_spool(tmp_path))
    assert len(frames) == 100
    assert all(f in (frame(4, f"w{i}") for i in range(4)) for f in frames)


def test_replay_hands_over_everything_in_chunks(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path)
    for i in range(10):
        writer.append(frame(3, str(i)))
    writer.close()
    sent: list[list[SpoolRecord]] = []
    progress: list[int] = []
    stats = replay(tmp_path, sent.append, chunk=7,
                   on_progress=lambda s: progress.append(s.records))
    assert [r for chunk in sent for r in chunk] == [r for i in range(10)
                                                     for r in frame(3, str(i))]
    assert all(len(c) >= 7 for c in sent[:-1]) and stats.records == 30
    assert progress == sorted(progress) and progress


def test_an_unwritable_spool_refuses(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SpoolFailed):
        SpoolWriter(blocker / "spool").append(frame(1))


def test_the_gate(tmp_path: Path) -> None:
    d = tmp_path / "spool"
    assert not gate_is_open(d)
    open_gate(d)
    assert gate_is_open(d)
    close_gate(d)
    close_gate(d)  # closing a closed gate is fine (a first start)
    assert not gate_is_open(d)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.lists(st.integers(0, 2), min_size=1, max_size=30))
def test_writers_at_once_are_read_back_in_write_order(tmp_path_factory: pytest.TempPathFactory,
                                                      order: list[int]) -> None:
    """Three processes' writers (the collector, an import, a generator) appending in any
    interleaving: the read gives the frames in the order they were written, not one
    segment after another (a replay in segment order could make events late that were
    on time)."""
    d = tmp_path_factory.mktemp("spool")
    writers = [SpoolWriter(d) for _ in range(3)]
    for n, w in enumerate(order):
        writers[w].append(frame(1, tag=f"{w}-{n}"))
    for w in writers:
        w.close()
    got = [f[0][2].split(b'"')[1].decode() for f in read_spool(d)]
    assert got == [f"{w}-{n}" for n, w in enumerate(order)]


def test_first_format_segments_are_read_first_in_segment_order(tmp_path: Path) -> None:
    """A spool written before frames had times (MAGIC_V1) is still replayed, ahead of
    everything written since."""
    SpoolWriter(tmp_path).append(frame(1, "new"))  # segment 1, timed
    payload = encode_payload(frame(2, "old"))
    v1 = struct.pack("<II", len(payload), zlib.crc32(payload)) + payload
    (tmp_path / "00000002.spool").write_bytes(MAGIC_V1 + v1 + v1)
    stats = SpoolStats()
    tags = [f[0][2].split(b'"')[1] for f in read_spool(tmp_path, stats)]
    assert tags == [b"old", b"old", b"new"] and stats.records == 5 and not stats.torn_segments
    (tmp_path / "00000002.spool").write_bytes(MAGIC_V1 + v1 + v1[:-1])  # torn: its frame is ignored
    stats = SpoolStats()
    assert len(list(read_spool(tmp_path, stats))) == 2 and stats.torn_segments == 1


# -- fsync before produce -------------------------------------------------------------

class _Future:
    def add_both(self, fn: Any, *args: Any) -> None:
        fn(*args, object())  # acknowledged at once


class _Client:
    """The Kafka client's side of the producer: notes each send, and what the spool
    held on disk at that moment."""

    def __init__(self, journal: list[str], spool: Path, **_: Any) -> None:
        self.journal, self.spool = journal, spool

    def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    def send(self, topic: str, **_: Any) -> _Future:
        on_disk = sum(len(f) for f in read_spool(self.spool))
        self.journal.append(f"send {topic} with {on_disk} records on disk")
        return _Future()

    def close(self, timeout: float | None = None) -> None:
        self.journal.append("close")


@pytest.fixture
def listener() -> Iterator[str]:
    """Something that accepts TCP on 127.0.0.1 (the producer probes the broker)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield f"127.0.0.1:{s.getsockname()[1]}"


def test_records_are_fsynced_before_they_are_produced(
        tmp_path: Path, listener: str, monkeypatch: pytest.MonkeyPatch) -> None:
    journal: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        journal.append("fsync")

    monkeypatch.setattr(spool_module.os, "fsync", fsync)
    spool = SpoolWriter(tmp_path)
    producer = TouchpointProducer(
        KafkaConfig(bootstrap_servers=listener), spool=spool,
        factory=lambda **kw: _Client(journal, tmp_path, **kw))
    validator = EventValidator(("web",))
    tps = [validator.validate({"event_id": f"e{i}", "type": "view", "channel": "web",
                               "occurred_at": 1_772_323_200_000, "anonymous_id": "a"})
           for i in range(3)]
    assert all(isinstance(t, Touchpoint) for t in tps)
    delivery, _ = producer.send_batch(tps, stage="test")  # type: ignore[arg-type]
    assert delivery.ok
    # the new segment (magic + directory), then the frame, then the three sends
    assert journal == ["fsync", "fsync", "fsync"] + [
        "send journeys.touchpoints with 3 records on disk"] * 3
    assert [r[2] for r in next(read_spool(tmp_path))] == [t.to_json() for t in tps]


def test_the_importers_records_are_fsynced_before_they_are_produced(
        tmp_path: Path, listener: str) -> None:
    """`journeys ingest` into a `journeys up` (send_keyed, the importer's path): each
    group of records is on disk before its first send, and the producer's close closes
    the spool's segment (docs/reliability.md "Events produced straight into")."""
    journal: list[str] = []
    spool = SpoolWriter(tmp_path)
    producer = TouchpointProducer(
        KafkaConfig(bootstrap_servers=listener), spool=spool,
        factory=lambda **kw: _Client(journal, tmp_path, **kw))
    records = [(f"c{i}".encode(), f'{{"event_id":"e{i}"}}'.encode(), None) for i in range(4)]
    delivery, where = producer.send_keyed(records[:2])
    assert delivery.ok and len(where) == 2
    delivery, _ = producer.send_keyed(records[2:])
    assert delivery.ok
    assert journal == ["send journeys.touchpoints with 2 records on disk"] * 2 + [
        "send journeys.touchpoints with 4 records on disk"] * 2
    producer.close()
    assert journal[-1] == "close" and spool.path is None
    assert [r[2] for f in read_spool(tmp_path) for r in f] == [v for _k, v, _h in records]
    spooled = bulk_producer(KafkaConfig(bootstrap_servers=listener), client_id="t",
                            spool_dir=tmp_path / "up" / "spool")
    assert spooled.spool is not None and spooled.spool.directory == tmp_path / "up" / "spool"
    assert spooled.spool.require_gate
    assert bulk_producer(KafkaConfig(), client_id="t").spool is None


def test_an_importers_writer_stops_when_its_up_is_gone(tmp_path: Path) -> None:
    """The gate closed (another `journeys up` is starting on the data dir): an import's
    writer refuses, so nothing it sends can slip in behind a replay that has read past
    it; the collector's writer (no require_gate) is not asked."""
    open_gate(tmp_path)
    writer = SpoolWriter(tmp_path, require_gate=True)
    writer.append(frame(2))
    close_gate(tmp_path)
    with pytest.raises(SpoolFailed, match="restarting"):
        writer.append(frame(1))
    SpoolWriter(tmp_path).append(frame(1))
    assert [len(f) for f in read_spool(tmp_path)] == [2, 1]
