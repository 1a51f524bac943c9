"""One worker per data dir and app id on a machine (stream.agents.local_state.
claim_data_dir): a second one stops with what to do instead, and the claim goes with
the process that held it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from journeys.errors import ConfigError
from journeys.settings import WorkerSettings
from stream.agents.local_state import claim_data_dir

ROOT = Path(__file__).resolve().parents[2]
CLAIM = ("import sys; from journeys.settings import WorkerSettings; "
         "from stream.agents.local_state import claim_data_dir; "
         "claim_data_dir(WorkerSettings(data_dir=sys.argv[1], app_id=sys.argv[2])); "
         "print('claimed')")


def _other_process(data_dir: Path, app_id: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CLAIM, str(data_dir), app_id], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_second_worker_on_the_same_data_dir_is_refused_until_the_first_is_gone(
        tmp_path: Path) -> None:
    held = claim_data_dir(WorkerSettings(data_dir=tmp_path, app_id="w"))
    try:
        other = _other_process(tmp_path, "w")
        assert other.returncode != 0
        assert f"in use by another worker of app id 'w' (pid {os.getpid()})" in other.stderr
        assert "JOURNEYS_DATA_DIR" in other.stderr
        assert _other_process(tmp_path, "other-app").stdout.strip() == "claimed"
        with pytest.raises(ConfigError, match="in use by another worker"):
            claim_data_dir(WorkerSettings(data_dir=tmp_path, app_id="w"))
    finally:
        held.close()  # as when the process exits (or is killed)
    assert _other_process(tmp_path, "w").stdout.strip() == "claimed"


def test_the_lock_file_is_outside_the_directory_the_app_wipes(tmp_path: Path) -> None:
    held = claim_data_dir(WorkerSettings(data_dir=tmp_path, app_id="w"))
    try:
        lock = tmp_path / "faust" / "w.lock"
        assert lock.read_text() == str(os.getpid())
        assert not lock.is_relative_to(tmp_path / "faust" / "w")
    finally:
        held.close()


def test_rocksdb_is_the_default_state_store() -> None:
    assert WorkerSettings.model_fields["state_store"].default == "rocksdb"
