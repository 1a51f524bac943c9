"""The stack file of `journeys up` and how commands find a broker (deploy.stack,
deploy.discovery)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from deploy import stack as st
from deploy.discovery import resolve
from journeys import envvars
from journeys.errors import ConfigError
from journeys.settings import CollectorSettings


@pytest.fixture(autouse=True)
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    reg = tmp_path / "registry"
    monkeypatch.setenv(st.REGISTRY_ENV, str(reg))
    for name in (envvars.KAFKA_BOOTSTRAP_SERVERS, envvars.KAFKA_TOPIC_PREFIX,
                 envvars.SETTINGS_FILE, envvars.WORKER_APP_ID):
        monkeypatch.delenv(name, raising=False)
    return reg


def _stack(data_dir: Path, **kw: object) -> st.Stack:
    fields: dict[str, object] = dict(data_dir=str(data_dir), broker="127.0.0.1:39999",
                                     topic_prefix="upx", partitions=3, app_id="up-app",
                                     api_url="http://127.0.0.1:18000",
                                     warehouse_path=str(data_dir / "warehouse"))
    return st.new_stack(**{**fields, **kw})


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_publish_is_found_and_withdraw_marks_it_stopped(tmp_path: Path,
                                                        registry: Path) -> None:
    data = tmp_path / "data"
    s = _stack(data)
    st.publish(s)
    assert st.read_stack(data / st.STACK_FILE) == s
    assert len(list(registry.glob("*.json"))) == 1
    assert not list(data.glob(".stack.json.*")), "no temp file left behind"
    found = st.find_stack(data)
    assert found is not None and found.stack == s
    st.withdraw(s)
    stopped = st.read_stack(data / st.STACK_FILE)
    assert stopped is not None and stopped.state == "stopped" and stopped.stopped_at
    assert not list(registry.glob("*.json"))
    assert st.find_stack(data) is None


def test_a_dead_or_reused_pid_is_stale(tmp_path: Path, registry: Path) -> None:
    dead = _stack(tmp_path / "a").model_copy(update={"pid": _dead_pid()})
    assert not st.is_live(dead)
    reused = _stack(tmp_path / "b").model_copy(update={"pid_started": 1})  # our pid, other start
    assert not st.is_live(reused)
    assert st.is_live(_stack(tmp_path / "c"))
    st.publish(dead)
    assert st.find_stack(tmp_path / "a") is None
    assert not list(registry.glob("*.json")), "stale registry entries are removed"


def test_registry_finds_the_only_live_stack_and_refuses_to_guess(tmp_path: Path) -> None:
    one = _stack(tmp_path / "one")
    st.publish(one)
    found = st.find_stack(tmp_path / "elsewhere")
    assert found is not None and found.stack.data_dir == one.data_dir
    st.publish(_stack(tmp_path / "two"))
    with pytest.raises(ConfigError, match="2 `journeys up` stacks"):
        st.find_stack(tmp_path / "elsewhere")
    assert st.find_stack(tmp_path / "one").stack.data_dir == one.data_dir  # type: ignore[union-attr]


def test_a_foreign_or_torn_file_is_ignored(tmp_path: Path) -> None:
    (tmp_path / st.STACK_FILE).write_bytes(b'{"pid": 1, "broker"')
    assert st.read_stack(tmp_path / st.STACK_FILE) is None
    (tmp_path / st.STACK_FILE).write_bytes(orjson.dumps({"hello": "world"}))
    assert st.find_stack(tmp_path) is None


def test_resolve_uses_the_stack_unless_a_broker_is_explicit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    st.publish(_stack(tmp_path))
    kafka = CollectorSettings.build().kafka
    target = resolve(kafka, "journeys-worker", tmp_path)
    assert target.stack is not None
    assert (target.kafka.bootstrap_servers, target.kafka.topic_prefix, target.app_id,
            target.kafka.partitions) == ("127.0.0.1:39999", "upx", "up-app", 3)
    assert resolve(kafka, "w", tmp_path, prefix="mine").kafka.topic_prefix == "mine"
    given = resolve(kafka, "w", tmp_path, bootstrap="10.0.0.1:9092")
    assert given.stack is None and given.kafka.bootstrap_servers == "10.0.0.1:9092"
    monkeypatch.setenv(envvars.KAFKA_BOOTSTRAP_SERVERS, "10.0.0.2:9092")
    from_env = resolve(CollectorSettings.build().kafka, "w", tmp_path)
    assert from_env.stack is None and from_env.kafka.bootstrap_servers == "10.0.0.2:9092"
    assert from_env.unreachable_hint() == ""


def test_nothing_found_keeps_the_default_and_says_how_to_find_one(tmp_path: Path) -> None:
    target = resolve(CollectorSettings.build().kafka, "w", tmp_path)
    assert target.stack is None and target.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert "journeys up" in target.unreachable_hint()


def test_process_started_reads_proc() -> None:
    if not Path("/proc/self/stat").exists():
        pytest.fail("these tests run on Linux")
    assert st.process_started(os.getpid()) is not None
    assert st.process_started(_dead_pid()) is None


def test_an_up_stack_names_its_spool_also_when_its_broker_is_given_explicitly(
        tmp_path: Path) -> None:
    """Producers aimed at a `journeys up` spool what they send (docs/reliability.md);
    pointing -b at its embedded broker is aiming at that stack too."""
    st.publish(_stack(tmp_path / "up"))
    kafka = CollectorSettings.build().kafka
    found = resolve(kafka, "w", tmp_path / "up")
    assert found.spool_dir == tmp_path / "up" / "spool"
    for given in ("127.0.0.1:39999", "localhost:39999"):
        explicit = resolve(kafka, "w", tmp_path / "elsewhere", bootstrap=given)
        assert explicit.stack is not None and explicit.spool_dir == tmp_path / "up" / "spool"
        assert explicit.kafka.bootstrap_servers == given and explicit.app_id == "up-app"
    other = resolve(kafka, "w", tmp_path / "up", bootstrap="127.0.0.1:40000")
    assert other.stack is None and other.spool_dir is None


def test_a_demo_stack_has_no_spool(tmp_path: Path) -> None:
    st.publish(_stack(tmp_path, kind="demo"))
    target = resolve(CollectorSettings.build().kafka, "w", tmp_path)
    assert target.stack is not None and target.spool_dir is None
