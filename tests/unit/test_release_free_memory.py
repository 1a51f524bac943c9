"""A worker hands glibc's free memory back (stream/gc_tuning.py `release_free_memory`,
docs/reliability.md "What grows per open journey")."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.gc_tuning import release_free_memory


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_free_pages_between_live_blocks_go_back_to_the_os() -> None:
    """What a backlog leaves: many glibc blocks freed, a few kept alive among them, so
    the heap cannot shrink from its top. Trimming gives the free pages back."""
    blocks = [bytes(4000) + bytes([i % 256]) for i in range(40_000)]  # ~160 MB via malloc
    kept = blocks[::64]  # one live block every 256 KB pins the heap's extent
    del blocks
    before = _rss()
    assert release_free_memory()
    after = _rss()
    assert before - after > 64 << 20
    assert len(kept) == 625
