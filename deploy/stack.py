"""The stack file: where a running `journeys up` / `journeys demo` listens.

`journeys up` picks a free broker port; before this, `journeys ingest` had no way to know
it and tried 127.0.0.1:9092 (issue #15). Now the launcher writes `DATA_DIR/stack.json`
(broker, topic prefix, app id, API, collector, warehouse) and a copy in a per-user
registry, atomically (temp file + rename); on a clean exit the data dir's file is marked
`stopped` and the registry copy removed. A file whose process is gone (killed) is stale:
liveness is the PID plus its start time from /proc, so a reused PID is not mistaken for
the stack. The commands that talk to a broker (`ingest`, `generate`, `status`, `dlq`)
use a live stack when no broker is configured explicitly (docs/configuration.md
"Finding a running stack").
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from journeys import envvars
from journeys.errors import ConfigError
from journeys.timeutil import ms_to_iso, now_ms

STACK_FILE = "stack.json"
REGISTRY_ENV = envvars.STACK_REGISTRY


class Stack(BaseModel):
    """What one embedded stack serves, and which process it is."""

    model_config = ConfigDict(frozen=True)

    version: int = 1
    kind: Literal["up", "demo"] = "up"
    state: Literal["starting", "running", "stopped"] = "starting"
    pid: int
    pid_started: int | None = None  # /proc/<pid>/stat start time (clock ticks)
    started_at: str
    stopped_at: str | None = None
    data_dir: str
    broker: str  # bootstrap servers
    topic_prefix: str
    partitions: int
    app_id: str
    api_url: str
    collector_url: str | None = None
    warehouse_path: str  # chdb: locked by the stack's process, ask its API instead


@dataclass(frozen=True, slots=True)
class Found:
    """A live stack, and the file it was read from."""

    stack: Stack
    path: Path


def process_started(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux /proc), None elsewhere
    or when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # the name may contain spaces and ')'
    return int(fields[19]) if len(fields) > 19 else None


def is_live(stack: Stack) -> bool:
    """The process that wrote the file still runs (same PID and start time)."""
    if stack.state == "stopped":
        return False
    try:
        os.kill(stack.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    started = process_started(stack.pid)
    return stack.pid_started is None or started is None or started == stack.pid_started


def new_stack(**fields: object) -> Stack:
    """A stack file for this process, state `starting`."""
    pid = os.getpid()
    return Stack.model_validate({"pid": pid, "pid_started": process_started(pid),
                                 "started_at": ms_to_iso(now_ms()), **fields})


def registry_dir() -> Path:
    """Per-user directory of live stacks' copies, so a stack is found from any directory."""
    given = os.environ.get(REGISTRY_ENV)
    if given:
        return Path(given)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "journeys" / "stacks"


def _registry_path(data_dir: str) -> Path:
    return registry_dir() / (hashlib.sha1(data_dir.encode()).hexdigest()[:16] + ".json")


def write_atomic(path: Path, data: bytes) -> None:
    """Write through a temp file in the same directory and rename: a reader sees the
    old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def publish(stack: Stack) -> None:
    """Write the stack file into its data dir and the registry."""
    data = orjson.dumps(stack.model_dump(), option=orjson.OPT_INDENT_2)
    write_atomic(Path(stack.data_dir) / STACK_FILE, data)
    with contextlib.suppress(OSError):  # the registry is a convenience
        write_atomic(_registry_path(stack.data_dir), data)


def withdraw(stack: Stack) -> None:
    """On a clean exit: mark the data dir's file stopped, drop the registry copy."""
    stopped = stack.model_copy(update={"state": "stopped", "stopped_at": ms_to_iso(now_ms())})
    with contextlib.suppress(OSError):
        write_atomic(Path(stack.data_dir) / STACK_FILE,
                     orjson.dumps(stopped.model_dump(), option=orjson.OPT_INDENT_2))
    with contextlib.suppress(OSError):
        _registry_path(stack.data_dir).unlink()


def read_stack(path: Path) -> Stack | None:
    """The stack file at `path`; None when missing or unreadable (a foreign file)."""
    try:
        return Stack.model_validate(orjson.loads(path.read_bytes()))
    except (OSError, orjson.JSONDecodeError, ValidationError):
        return None


def find_stack(data_dir: Path) -> Found | None:
    """The live stack of `data_dir`, else the only live stack in the registry. Several
    live stacks and none in `data_dir`: ConfigError naming them (pick one)."""
    own = data_dir.resolve() / STACK_FILE
    stack = read_stack(own)
    if stack is not None and is_live(stack):
        return Found(stack, own)
    live: list[Found] = []
    for entry in sorted(registry_dir().glob("*.json")) if registry_dir().is_dir() else ():
        other = read_stack(entry)
        if other is None or not is_live(other):
            with contextlib.suppress(OSError):
                entry.unlink()  # stale: its process is gone
            continue
        live.append(Found(other, entry))
    if len(live) > 1:
        names = "; ".join(f"{f.stack.data_dir} (pid {f.stack.pid})" for f in live)
        raise ConfigError(f"{len(live)} `journeys up` stacks are running ({names}): pick one "
                          "with JOURNEYS_DATA_DIR=<its data dir>, or pass -b HOST:PORT")
    return live[0] if live else None


def stack_serving(data_dir: Path, bootstrap_servers: str) -> Found | None:
    """The live stack whose embedded broker is `bootstrap_servers` (the data dir's own
    first, then the registry), None when no live stack serves that address."""
    wanted = {s.strip().replace("localhost:", "127.0.0.1:")
              for s in bootstrap_servers.split(",") if s.strip()}
    candidates = [data_dir.resolve() / STACK_FILE]
    if registry_dir().is_dir():
        candidates += sorted(registry_dir().glob("*.json"))
    for path in candidates:
        stack = read_stack(path)
        if stack is not None and is_live(stack) and stack.broker in wanted:
            return Found(stack, path)
    return None


def describe(found: Found) -> str:
    """One line for the commands' output: which stack they talk to."""
    s = found.stack
    return (f"using the `journeys {s.kind}` stack in {s.data_dir} (pid {s.pid}, "
            f"{s.state}): broker {s.broker}, topics {s.topic_prefix}.*")
