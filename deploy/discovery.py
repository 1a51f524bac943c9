"""Which broker a command talks to: explicit settings first, else a running stack.

Explicit means `-b/--bootstrap-servers`, `JOURNEYS_KAFKA__BOOTSTRAP_SERVERS` or the
settings file: those always win. Without them, a live `journeys up`/`demo` stack found
through its stack file (deploy.stack) supplies the broker, the topic prefix and the app
id (unless those are set explicitly), and the command says which stack it uses. An
explicit broker that is a live `journeys up`'s own embedded broker is that stack too:
`Target.spool_dir` then says where producers must spool (docs/reliability.md "Events
produced straight into `journeys up`").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from deploy.stack import Found, describe, find_stack, stack_serving
from journeys.settings import KafkaConfig

SPOOL_DIR = "spool"  # DATA_DIR/spool: the spool of a `journeys up` (ingest.spool)


@dataclass(frozen=True, slots=True)
class Target:
    """The Kafka side of a command, and the stack it came from (None: settings)."""

    kafka: KafkaConfig
    app_id: str
    stack: Found | None
    explicit: bool

    @property
    def spool_dir(self) -> Path | None:
        """Where a producer aimed at this target must append what it sends before it
        counts as sent: the spool of a live `journeys up` (its broker keeps nothing over
        a crash; ingest.spool), None for any other broker. A `journeys demo` has no
        spool: what is produced into it lives in its broker's memory only."""
        if self.stack is None or self.stack.stack.kind != "up":
            return None
        return Path(self.stack.stack.data_dir) / SPOOL_DIR

    def unreachable_hint(self) -> str:
        """What to add to an 'unreachable' error: how a broker is found."""
        if self.explicit or self.stack is not None:
            return ""
        return (" (no running `journeys up` found through its stack file: start one, or "
                "point at a broker with -b HOST:PORT or JOURNEYS_KAFKA__BOOTSTRAP_SERVERS)")


def resolve(kafka: KafkaConfig, app_id: str, data_dir: Path, *, bootstrap: str | None = None,
            prefix: str | None = None, app_id_explicit: bool = False,
            console: Console | None = None) -> Target:
    """The broker, topics and app id to use (see the module docstring)."""
    explicit = bool(bootstrap) or "bootstrap_servers" in kafka.model_fields_set
    update: dict[str, object] = {}
    if bootstrap:
        update["bootstrap_servers"] = bootstrap
    if prefix:
        update["topic_prefix"] = prefix
    if explicit:  # a live stack's own broker, given explicitly, is still that stack
        found = stack_serving(data_dir, bootstrap or kafka.bootstrap_servers)
    else:
        found = find_stack(data_dir)
    if found is not None:
        s = found.stack
        if not explicit:
            update["bootstrap_servers"] = s.broker
        update["partitions"] = s.partitions
        if not prefix and "topic_prefix" not in kafka.model_fields_set:
            update["topic_prefix"] = s.topic_prefix
        if not app_id_explicit:
            app_id = s.app_id
        if console is not None:
            console.print(f"[dim]{describe(found)}[/]")
    config = KafkaConfig(**{**kafka.model_dump(), **update}) if update else kafka
    return Target(config, app_id, found, explicit)
