"""The collector's durable spool: what `journeys up` acknowledges survives a crash.

The embedded broker (Tansu) keeps everything in memory, so under `journeys up` a 202 of
the collector alone would promise nothing: a crash of the process lost every event the
broker held (measured: 20,000 acknowledged, 20,000 lost). With a spool the collector
appends every record it is about to produce (touchpoints and dead letters, exactly the
bytes it sends) to an append-only segment file and fsyncs it *before* producing, so a
202 means "on disk". The launcher replays the whole spool into the new, empty broker at
the next start, before the collector takes anything new (`gate`); the worker then
recomputes every state, and the warehouse's keyed upserts make rows already there come
out unchanged (docs/reliability.md).

Format: a segment `NNNNNNNN.spool` per collector process (never appended to after its
writer is gone, so only its last frame can be torn), starting with MAGIC, then one frame
per request: `<u32 length><u32 crc32>` + payload. A frame that is cut short or fails its
CRC ends its segment (a crash mid-write: that request was never acknowledged); reading
goes on with the next segment.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from journeys.errors import ServiceUnavailable

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
SpoolRecord = tuple[str, bytes | None, bytes, Headers | None]  # topic, key, value, headers

MAGIC = b"JSPOOL1\n"
SUFFIX = ".spool"
GATE = "replayed"  # marker file: the spool is in the broker, new records may follow
_FRAME = struct.Struct("<II")  # payload length, crc32 of the payload
_U16, _U32, _I32, _I16 = (struct.Struct(f) for f in ("<H", "<I", "<i", "<h"))
MAX_FRAME = 1 << 30  # far above any request (the collector's body limit is MiBs)


class SpoolFailed(ServiceUnavailable):
    """The spool could not be written (disk full, I/O error): nothing may be produced
    or acknowledged; the client retries after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# -- encoding -------------------------------------------------------------------------

def encode_frame(records: Sequence[SpoolRecord]) -> bytes:
    """One request's records as one frame (length, CRC, payload)."""
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
    payload = b"".join(parts)
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


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
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fd: int | None = None
        self._lock = threading.Lock()

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
        frame = encode_frame(records)
        try:
            with self._lock:
                if self._fd is None:
                    self._fd = self._open()
                fd = self._fd
                _write_all(fd, frame)
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
    size = path.stat().st_size
    with path.open("rb") as f:
        pos = len(MAGIC) if f.read(len(MAGIC)) == MAGIC else 0
        while pos < size:
            f.seek(pos)
            head = f.read(_FRAME.size)
            length, crc = _FRAME.unpack(head) if len(head) == _FRAME.size else (-1, 0)
            records = None
            if 0 <= length <= min(MAX_FRAME, size - pos - _FRAME.size):
                payload = f.read(length)
                if zlib.crc32(payload) == crc:
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
            stats.frame_bytes += _FRAME.size + length
            yield records
            pos += _FRAME.size + length


def read_spool(directory: Path, stats: SpoolStats | None = None
               ) -> Iterator[list[SpoolRecord]]:
    """Every frame of every segment, in the order they were written."""
    stats = stats if stats is not None else SpoolStats()
    for path in segments(directory):
        yield from read_segment(path, stats)


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
