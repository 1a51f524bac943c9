"""Quarantine of records that kill the worker process (docs/reliability.md "Quarantine").

The poison rule (stream.agents.context.isolating) handles a record that makes a stage
*raise*. A record that kills the process outright (a native crash, the kernel's OOM
killer) leaves nothing to catch: the batch stays uncommitted, every restart reads it
again and dies again. So each stage writes a marker file naming the records it is
computing before its pure work on them and removes it after; only a process that died
meanwhile leaves one. The next process to read those records handles them one at a
time, each under its own marker; a record found in a marker left by a death while it
was handled *alone* for the second time is quarantined: dead-lettered with reason
`quarantined` and skipped, never read again.

Markers are local files in the worker's data directory (cheap: no broker round trip
per batch), so the count is per worker: if partitions move to another worker after a
death, that worker counts its own, and a killing record costs at most three deaths per
worker that reads it. A graceful stop (cancellation) removes the marker: only deaths
count. The journal lives beside Faust's local state and is wiped with it when the
topics are new (the offsets it names would mean nothing).

`JOURNEYS_FAULT_EXIT_ON` (stage:text) makes a stage exit at once (os._exit) when a
record it is about to compute contains the text: fault injection for tests/faults, the
way a native crash would behave. Never set it in production.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson

log = logging.getLogger(__name__)

QUARANTINE_AFTER = 2  # deaths while the record was handled alone
FAULT_EXIT_CODE = 86

Key = tuple[int, int]  # (partition, offset)


@dataclass(slots=True)
class _Suspects:
    """What one (stage, topic) marker left by a dead process says, once loaded."""

    alone: dict[Key, int] = field(default_factory=dict)  # deaths while handled alone
    ranges: list[tuple[int, int, int]] = field(default_factory=list)  # chunk (p, lo, hi)

    def deaths(self, key: Key) -> int | None:
        """None: not suspect; else how often it died alone (0: only in a chunk)."""
        if key in self.alone:
            return self.alone[key]
        p, o = key
        return 0 if any(p == rp and lo <= o <= hi for rp, lo, hi in self.ranges) else None


def parse_fault(spec: str) -> tuple[str, bytes] | None:
    """`stage:text` -> (stage, text); empty -> None."""
    if not spec:
        return None
    stage, sep, text = spec.partition(":")
    if not sep or not stage or not text:
        raise ValueError(f"fault_exit_on must be 'stage:text', got {spec!r}")
    return stage, text.encode()


class CrashJournal:
    """Markers of the records each stage is computing; see the module docstring."""

    def __init__(self, directory: Path | None, fault_exit_on: str = "") -> None:
        self.directory = directory  # None: disabled (pure tests, tools)
        self.fault = parse_fault(fault_exit_on)
        self._loaded: dict[tuple[str, str], _Suspects] = {}

    def _path(self, stage: str, topic: str) -> Path:
        assert self.directory is not None
        return self.directory / f"{stage}--{topic}.inflight"

    def _suspects(self, stage: str, topic: str) -> _Suspects:
        got = self._loaded.get((stage, topic))
        if got is None:
            got = self._loaded[(stage, topic)] = self._load(stage, topic)
        return got

    def _load(self, stage: str, topic: str) -> _Suspects:
        """Read a marker left by a process that died (a live one removes its own)."""
        out = _Suspects()
        if self.directory is None:
            return out
        path = self._path(stage, topic)
        try:
            marker = orjson.loads(path.read_bytes())
            ranges = [(int(p), int(lo), int(hi)) for p, lo, hi in marker["ranges"]]
            alone, deaths = bool(marker["alone"]), int(marker["deaths"])
        except FileNotFoundError:
            return out
        except (OSError, ValueError, KeyError, TypeError) as exc:  # torn write at death
            log.warning("%s: unreadable crash marker %s (%r); ignored", stage, path, exc)
            return out
        if alone and len(ranges) == 1 and ranges[0][1] == ranges[0][2]:
            p, o, _ = ranges[0]
            out.alone[(p, o)] = deaths + 1
            log.warning("%s: the worker died while handling %s[%d]@%d alone (%d time(s))",
                        stage, topic, p, o, deaths + 1)
        else:
            out.ranges = ranges
            log.warning("%s: the worker died while computing %s %s; those records are "
                        "handled one at a time now (docs/reliability.md \"Quarantine\")",
                        stage, topic, ", ".join(f"[{p}]@{lo}-{hi}" for p, lo, hi in ranges))
        return out

    def verdicts(self, stage: str, topic: str, keys: Sequence[Key]) -> list[int | None]:
        """Per record: None (not suspect) or deaths while handled alone so far."""
        if self.directory is None:
            return [None] * len(keys)
        suspects = self._suspects(stage, topic)
        if not suspects.alone and not suspects.ranges:
            return [None] * len(keys)
        return [suspects.deaths(k) for k in keys]

    @staticmethod
    def quarantined(deaths: int | None) -> bool:
        return deaths is not None and deaths >= QUARANTINE_AFTER

    def cleared(self, stage: str, topic: str, keys: Sequence[Key]) -> None:
        """These records were handled (or quarantined): no longer suspect."""
        suspects = self._loaded.get((stage, topic))
        if suspects is None:
            return
        for k in keys:
            suspects.alone.pop(k, None)
        if suspects.ranges and keys:
            done = set(keys)
            left = [(p, lo, hi) for p, lo, hi in suspects.ranges
                    if not all((p, o) in done for o in range(lo, hi + 1))]
            suspects.ranges = left

    @contextmanager
    def computing(self, stage: str, topic: str, records: Sequence[tuple[int, int, bytes | None]],
                  *, alone_deaths: int | None = None) -> Iterator[None]:
        """Marker around the pure work on `records` ((partition, offset, value)); removed
        when the block ends in any way but the death of the process."""
        if self.directory is None or not records:
            yield
            return
        path = self._path(stage, topic)
        marker = {"ranges": _ranges(records), "alone": alone_deaths is not None,
                  "deaths": alone_deaths or 0}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(marker))
        os.replace(tmp, path)  # whole or absent, never torn
        self._fault_exit(stage, records)
        try:
            yield
        finally:
            path.unlink(missing_ok=True)

    def _fault_exit(self, stage: str, records: Sequence[tuple[int, int, bytes | None]]) -> None:
        if self.fault is None or self.fault[0] != stage:
            return
        needle = self.fault[1]
        if any(needle in (v or b"") for _p, _o, v in records):
            log.critical("%s: fault injection (JOURNEYS_FAULT_EXIT_ON): exiting now", stage)
            logging.shutdown()
            os._exit(FAULT_EXIT_CODE)


def _ranges(records: Sequence[tuple[int, int, bytes | None]]) -> list[list[int]]:
    """Per partition, the lowest and highest offset (records of a partition are
    consecutive in a batch, so the range names exactly them and the holes between)."""
    spans: dict[int, list[int]] = {}
    for p, o, _v in records:
        span = spans.get(p)
        if span is None:
            spans[p] = [o, o]
        else:
            span[0], span[1] = min(span[0], o), max(span[1], o)
    return [[p, lo, hi] for p, (lo, hi) in sorted(spans.items())]
