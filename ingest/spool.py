"""The durable spool of `journeys up`: what it acknowledges survives a crash.

The embedded broker (Tansu) keeps everything in memory, so under `journeys up` a 202 of
the collector alone would promise nothing: a crash of the process lost every event the
broker held (measured: 20,000 acknowledged, 20,000 lost). With a spool the collector
appends every record it is about to produce (touchpoints and dead letters, exactly the
bytes it sends) to an append-only segment file and fsyncs it *before* producing, so a
202 means "on disk". The launcher replays the whole spool into the new, empty broker at
the next start, before the collector takes anything new (`gate`); the worker then
recomputes every state, and the warehouse's keyed upserts make rows already there come
out unchanged (docs/reliability.md).

Writers: the collector of `journeys up`, and `journeys ingest` / `journeys generate`
aimed at it (deploy.discovery `Target.spool_dir`), each process with its own segment.

Format: a segment `NNNNNNNN.spool` per writing process (never appended to after its
writer is gone, so only its last frame can be torn), starting with MAGIC, then one frame
per request: `<u32 length><u32 crc32><u64 written at, ns>` + payload (the CRC covers the
time and the payload). A frame that is cut short or fails its CRC ends its segment (a
crash mid-write: that request was never acknowledged); reading goes on with the next
segment. Reading merges the segments by the frames' write times (a writer's own frames
stay in its order), so events that two processes produced at once (the collector's
live traffic and an import) come back interleaved as they were written, not one
process's after the other's: a replay in segment order could make the import's events
late that were on time. Segments of the first format (MAGIC_V1, no times) come first,
in segment order.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from journeys.errors import ServiceUnavailable

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
SpoolRecord = tuple[str, bytes | None, bytes, Headers | None]  # topic, key, value, headers

MAGIC = b"JSPOOL2\n"
MAGIC_V1 = b"JSPOOL1\n"  # frames without a write time (read, never written)
SUFFIX = ".spool"
GATE = "replayed"  # marker file: the spool is in the broker, new records may follow
_FRAME = struct.Struct("<IIQ")  # payload length, crc32 of time + payload, written at (ns)
_FRAME_V1 = struct.Struct("<II")  # payload length, crc32 of the payload
_TIME = struct.Struct("<Q")
_U16, _U32, _I32, _I16 = (struct.Struct(f) for f in ("<H", "<I", "<i", "<h"))
MAX_FRAME = 1 << 30  # far above any request (the collector's body limit is MiBs)


class SpoolFailed(ServiceUnavailable):
    """The spool could not be written (disk full, I/O error): nothing may be produced
    or acknowledged; the client retries after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# -- encoding -------------------------------------------------------------------------

def frame_of(payload: bytes, written_ns: int) -> bytes:
    """One request's encoded records as one frame (length, CRC, write time, payload)."""
    when = _TIME.pack(written_ns)
    return _FRAME.pack(len(payload), zlib.crc32(payload, zlib.crc32(when)),
                       written_ns) + payload


def encode_payload(records: Sequence[SpoolRecord]) -> bytes:
    """The records of one request, in the frame's payload format."""
    parts: list[bytes] = [_U32.pack(len(records))]
    for topic, key, value, headers in records:
        name = topic.encode()
        parts += [_U16.pack(len(name)), name]
        parts += [_I32.pack(-1)] if key is None else [_I32.pack(len(key)), key]
        parts += [_U32.pack(len(value)), value]
        if headers is None:
            parts.append(_I16.pack(-1))
            continue
        parts.append(_I16.pack(len(headers)))
        for hname, hvalue in headers:
            hn = hname.encode()
            parts += [_U16.pack(len(hn)), hn, _U32.pack(len(hvalue)), hvalue]
    return b"".join(parts)


class _Cursor:
    """Reads fields of a payload whose CRC matched; a short field raises ValueError."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = memoryview(data), 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError("field runs past the frame")
        out = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return out

    def num(self, s: struct.Struct) -> int:
        return int(s.unpack(self.take(s.size))[0])


def decode_payload(payload: bytes) -> list[SpoolRecord]:
    cur = _Cursor(payload)
    records: list[SpoolRecord] = []
    for _ in range(cur.num(_U32)):
        topic = cur.take(cur.num(_U16)).decode()
        klen = cur.num(_I32)
        key = None if klen < 0 else cur.take(klen)
        value = cur.take(cur.num(_U32))
        count = cur.num(_I16)
        headers: Headers | None = None
        if count >= 0:
            headers = [(cur.take(cur.num(_U16)).decode(), cur.take(cur.num(_U32)))
                       for _ in range(count)]
        records.append((topic, key, value, headers))
    if cur.pos != len(payload):
        raise ValueError("bytes left after the last record")
    return records


# -- writing --------------------------------------------------------------------------

def segments(directory: Path) -> list[Path]:
    """The spool's segment files, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir()
                  if p.suffix == SUFFIX and p.stem.isdigit())


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SpoolWriter:
    """Appends frames to a new segment of `directory`; thread-safe.

    `append` returns only once the frame is written and fsync'd: the caller produces
    and acknowledges after that. The write happens under a lock (frames never
    interleave), the fsync outside it (it covers every write made before it).

    `require_gate` (an import or a generator aimed at a running `journeys up`): refuse
    to append while the gate is closed, i.e. once that `up` is gone and another one is
    starting on the data dir. Its replay may already have read past this segment, so
    records written now would reach the new broker out of order (and a broker port
    fixed by JOURNEYS_BROKER_PORT would let the old client go on sending into it).
    """

    def __init__(self, directory: Path, *, require_gate: bool = False) -> None:
        self.directory = directory
        self.require_gate = require_gate
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._last_ns = 0  # write times only grow within a segment

    @property
    def path(self) -> Path | None:
        """The segment being written (None before the first append)."""
        return self._path if self._fd is not None else None

    def _open(self) -> int:
        """A segment numbered after every existing one (created on the first append,
        so a collector that takes nothing leaves nothing)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        existing = segments(self.directory)
        number = int(existing[-1].stem) + 1 if existing else 1
        while True:  # O_EXCL: another collector process may take a number first
            self._path = self.directory / f"{number:08d}{SUFFIX}"
            try:
                fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND,
                             0o644)
                break
            except FileExistsError:
                number += 1
        _write_all(fd, MAGIC)
        os.fsync(fd)
        _fsync_dir(self.directory)  # the new file's name is durable too
        return fd

    def append(self, records: Sequence[SpoolRecord]) -> None:
        """Write one frame and fsync it; raises SpoolFailed when the disk refuses."""
        if not records:
            return
        if self.require_gate and not gate_is_open(self.directory):
            raise SpoolFailed(f"the `journeys up` on {self.directory.parent} stopped or is "
                              "restarting: nothing more is sent; what was sent before is "
                              "kept (run the rest again: repeated event ids count once)")
        payload = encode_payload(records)
        try:
            with self._lock:
                if self._fd is None:
                    self._fd = self._open()
                fd = self._fd
                self._last_ns = max(time.time_ns(), self._last_ns + 1)
                _write_all(fd, frame_of(payload, self._last_ns))
            os.fsync(fd)
        except OSError as exc:
            raise SpoolFailed(f"the spool in {self.directory} cannot be written: {exc}") \
                from exc

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# -- reading --------------------------------------------------------------------------

@dataclass
class SpoolStats:
    """What a read found: frames and records read, bytes ignored at torn ends."""

    frames: int = 0
    records: int = 0
    frame_bytes: int = 0  # of the frames read (progress against spool_bytes)
    ignored_bytes: int = 0
    torn_segments: int = 0


def read_segment(path: Path, stats: SpoolStats) -> Iterator[list[SpoolRecord]]:
    """The frames of one segment in order (streamed: a segment may be large); stops at
    a torn or corrupt frame."""
    for _ns, records in _timed_frames(path, stats):
        yield records


def _timed_frames(path: Path, stats: SpoolStats
                  ) -> Iterator[tuple[int, list[SpoolRecord]]]:
    """(written at ns, records) per frame of one segment; 0 for the first format."""
    size = path.stat().st_size
    with path.open("rb") as f:
        magic = f.read(len(MAGIC))
        head_format = _FRAME_V1 if magic == MAGIC_V1 else _FRAME
        pos = len(MAGIC) if magic in (MAGIC, MAGIC_V1) else 0
        while pos < size:
            f.seek(pos)
            head = f.read(head_format.size)
            length, crc, written = -1, 0, 0
            if len(head) == head_format.size:
                length, crc, *rest = head_format.unpack(head)
                written = rest[0] if rest else 0
            seed = zlib.crc32(_TIME.pack(written)) if head_format is _FRAME else 0
            records = None
            if 0 <= length <= min(MAX_FRAME, size - pos - head_format.size):
                payload = f.read(length)
                if zlib.crc32(payload, seed) == crc:
                    with contextlib.suppress(ValueError, UnicodeDecodeError, struct.error):
                        records = decode_payload(payload)
            if records is None:
                stats.ignored_bytes += size - pos
                stats.torn_segments += 1
                log.warning("spool %s: %d bytes from offset %d are torn or corrupt; "
                            "ignored (a write cut short by a crash was never "
                            "acknowledged)", path, size - pos, pos)
                return
            stats.frames += 1
            stats.records += len(records)
            stats.frame_bytes += head_format.size + length
            yield written, records
            pos += head_format.size + length


def read_spool(directory: Path, stats: SpoolStats | None = None
               ) -> Iterator[list[SpoolRecord]]:
    """Every frame of every segment, merged by write time (module docstring): each
    segment's frames in their order, ties and first-format segments in segment order."""
    stats = stats if stats is not None else SpoolStats()
    merged = heapq.merge(*(((ns, i, records) for ns, records in _timed_frames(p, stats))
                           for i, p in enumerate(segments(directory))),
                         key=lambda item: (item[0], item[1]))
    for _ns, _i, records in merged:
        yield records


def spool_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in segments(directory))


# -- the gate -------------------------------------------------------------------------

def close_gate(directory: Path) -> None:
    """Before a (re)start: the collector refuses records until `open_gate`."""
    with contextlib.suppress(FileNotFoundError):
        (directory / GATE).unlink()


def open_gate(directory: Path) -> None:
    """The spool is replayed and the worker takes events: the collector may accept."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / GATE).touch()


def gate_is_open(directory: Path) -> bool:
    return (directory / GATE).exists()


# -- replay ---------------------------------------------------------------------------

Progress = Callable[[SpoolStats], None]


def replay(directory: Path, send: Callable[[list[SpoolRecord]], None], *,
           chunk: int = 5000, on_progress: Progress | None = None) -> SpoolStats:
    """Hand every spooled record to `send` in spool order, `chunk` records at a time
    (`send` returns once they are acknowledged). Returns what was read."""
    stats = SpoolStats()
    pending: list[SpoolRecord] = []
    for frame in read_spool(directory, stats):
        pending.extend(frame)
        if len(pending) >= chunk:
            send(pending)
            pending = []
            if on_progress is not None:
                on_progress(stats)
    if pending:
        send(pending)
    return stats
