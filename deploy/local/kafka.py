"""A real Apache Kafka 4.x broker (single node, KRaft) run as a child process.

Why: the embedded Tansu broker (deploy.local.broker) is fast but not Kafka; production
runs on Apache Kafka. This launcher starts the real broker from jars on Maven Central,
so the pipeline can be exercised against the protocol and semantics it will meet in
production (ListOffsets, idempotence, transactions, commit metadata, compaction), on
127.0.0.1 only and without Docker.

This module runs the process (start, readiness, stop) and the command line; the jars
and Java come from deploy.local.kafka_jars (Maven Central, a cache complete only once
its marker is written), the broker's settings from deploy.local.kafka_config.
`python -m deploy.local.kafka fetch` fills the jar cache; `LocalKafka.start()` fills it
when missing.

    with LocalKafka() as kafka:                # free ports, temp dir (removed on stop)
        ensure_topics(kafka.bootstrap_servers, {"orders": 4})
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from deploy.local._proc import (
    LOCALHOST,
    EarlyExit,
    ManagedProcess,
    WorkDir,
    child_env,
    free_port,
    log_tail,
    port_is_free,
    run_logged,
    tcp_connects,
    track,
    untrack,
)
from deploy.local.kafka_config import (
    DEFAULT_HEAP,
    JVM_ENV,
    jvm_command,
    new_cluster_id,
    write_config,
)
from deploy.local.kafka_jars import (
    KAFKA_VERSION,
    default_jars_dir,
    fetch_jars,
    jar_subdir,
    jars_ready,
    java_binary,
)
from journeys import envvars
from journeys.errors import LauncherError

# -- readiness ------------------------------------------------------------------------


def _known(cls: type, **options: Any) -> dict[str, Any]:
    """kafka-python options this version knows (unknown ones raise; 2.x vs 3.x differ)."""
    known = getattr(cls, "DEFAULT_CONFIG", {})
    return {k: v for k, v in options.items() if k in known}


def broker_registered(bootstrap_servers: str, port: int, timeout_s: float = 2.0) -> bool:
    """True when the broker answers DescribeCluster (a real Kafka request) and lists
    itself, i.e. it has registered with the controller and can serve clients."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    ms = max(500, int(timeout_s * 1000))
    try:
        admin = KafkaAdminClient(
            **_known(
                KafkaAdminClient,
                bootstrap_servers=bootstrap_servers,
                client_id="journeys-kafka-launcher",
                request_timeout_ms=ms,
                bootstrap_timeout_ms=ms,
                api_version_auto_timeout_ms=ms,
                reconnect_backoff_max_ms=200,
            )
        )
    except (KafkaError, OSError, ValueError):
        return False
    try:
        cluster = admin.describe_cluster()
    except (KafkaError, OSError, ValueError):
        return False
    finally:
        admin.close()
    return any(int(b.get("port", -1)) == port for b in cluster.get("brokers", ()))


# -- the launcher ---------------------------------------------------------------------


class LocalKafka:
    """Start/stop one Apache Kafka broker (KRaft, broker+controller) on 127.0.0.1.

    `port=0` picks a free port for the broker listener (the controller listener always
    gets a free port of its own). A temp work dir (the default) is removed on stop, so
    a restart comes back empty; with `workdir=` the data (topics, records, offsets)
    survives a stop/start. A restart keeps the broker port, so `bootstrap_servers` stays valid.

    Topics are never auto-created (`auto.create.topics.enable=false`): the project
    creates every topic explicitly (journeys.topics.ensure_topics).
    """

    def __init__(
        self,
        port: int = 0,
        *,
        workdir: Path | None = None,
        jars_dir: Path | None = None,
        java: Path | None = None,
        heap: str = DEFAULT_HEAP,
        log_level: str = "INFO",
        start_timeout: float = 90.0,
        stop_timeout: float = 20.0,
    ) -> None:
        if not 0 <= port <= 65535:
            raise LauncherError(f"invalid broker port {port}")
        self._port: int | None = port or None
        self._controller_port: int | None = None
        self._workdir = WorkDir(workdir, prefix="journeys-kafka-")
        self._jars_dir = Path(jars_dir) if jars_dir is not None else None
        self._java = java
        self.heap = heap
        self.log_level = log_level
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._process: ManagedProcess | None = None

    # -- public surface -------------------------------------------------------------

    @property
    def host(self) -> str:
        return LOCALHOST

    @property
    def port(self) -> int:
        if self._port is None:
            raise LauncherError("the Kafka broker has no port yet: call start() first")
        return self._port

    @property
    def bootstrap_servers(self) -> str:
        """`127.0.0.1:PORT`, ready for kafka-python, aiokafka and Faust (`kafka://` + this)."""
        return f"{LOCALHOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def log_path(self) -> Path | None:
        return self._process.log_path if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running()

    def start(self) -> LocalKafka:
        """Start the broker and return once a Kafka client sees it registered.

        Fetches the jars first when the cache is incomplete. Raises LauncherError when
        java/mvn are missing, the port is taken, the JVM exits early (with the end of
        its log) or the broker is not ready within `start_timeout`.
        """
        if self.running:
            return self
        if self._port is not None and not port_is_free(self._port):
            raise LauncherError(
                f"cannot start Kafka: port {LOCALHOST}:{self._port} is already in use"
            )
        java = java_binary(self._java)
        jars = fetch_jars(self._jars_dir)
        # Ports picked by us can be taken before the JVM binds them: retry then.
        attempts = 3 if self._port is None else 1
        for attempt in range(1, attempts + 1):
            ports = self._choose_ports()
            try:
                self._launch(java, jars, ports)
            except EarlyExit:
                self._workdir.cleanup()
                if attempt == attempts:
                    raise
            except LauncherError:
                self._workdir.cleanup()
                raise
            else:
                self._port, self._controller_port = ports
                break
        track(self, self.stop)
        return self

    def stop(self) -> int | None:
        """Stop by PID (SIGTERM, then SIGKILL after `stop_timeout`); idempotent.

        Returns the exit code (Kafka exits 143 on SIGTERM after a clean shutdown).
        A temp work dir (data and log) is removed.
        """
        rc: int | None = None
        if self._process is not None:
            rc = self._process.stop(self.stop_timeout)
            self._process = None
        self._workdir.cleanup()
        untrack(self)
        return rc

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"LocalKafka(port={self._port}, {state})"

    # -- internals -------------------------------------------------------------------

    def _choose_ports(self) -> tuple[int, int]:
        """(broker, controller). A restart keeps the broker port; the controller port is
        kept when still free, else replaced (measured: a one-voter KRaft quorum restarts
        fine on a new controller port, its data dir kept)."""
        broker = self._port
        if broker is None:
            broker = free_port()
        elif not port_is_free(broker):
            raise LauncherError(
                f"cannot start Kafka: port {LOCALHOST}:{broker} is already in use"
            )
        controller = self._controller_port
        if controller is None or controller == broker or not port_is_free(controller):
            controller = free_port()
            while controller == broker:
                controller = free_port()
        return broker, controller

    @staticmethod
    def _formatted(root: Path) -> bool:
        return (root / "data" / "meta.properties").is_file()

    def _format(self, java: str, jars: Path, root: Path, config: Path) -> None:
        """kafka-storage.sh format --standalone: a one-voter dynamic KRaft quorum."""
        argv = [
            *jvm_command(java, jars, root, self.heap),
            "kafka.tools.StorageTool",
            "format",
            "-t",
            new_cluster_id(),
            "-c",
            str(config),
            "--standalone",
        ]
        log = root / "format.log"
        try:
            rc = run_logged(argv, log, cwd=root, env=child_env(drop=JVM_ENV),
                            timeout=self.start_timeout)
        except subprocess.TimeoutExpired as exc:
            raise LauncherError(
                f"formatting Kafka storage took over {self.start_timeout:.0f}s"
            ) from exc
        except OSError as exc:
            raise LauncherError(f"cannot run {java}: {exc}") from exc
        if rc != 0:
            raise LauncherError(
                f"formatting Kafka storage failed (exit code {rc}).\nLog {log}:\n"
                f"{log_tail(log)}"
            )

    def _launch(self, java: str, jars: Path, ports: tuple[int, int]) -> None:
        root = self._workdir.create()
        config = write_config(root, ports, self.log_level)
        if not self._formatted(root):
            self._format(java, jars, root, config)
        argv = [*jvm_command(java, jars, root, self.heap), "kafka.Kafka", str(config)]
        proc = ManagedProcess(
            "kafka broker", argv, root / "kafka.log", env=child_env(drop=JVM_ENV), cwd=root
        )
        proc.start()
        self._process = proc
        broker = ports[0]
        bootstrap = f"{LOCALHOST}:{broker}"
        try:
            proc.wait_ready(
                lambda: tcp_connects(LOCALHOST, broker) and broker_registered(bootstrap, broker),
                self.start_timeout,
                f"DescribeCluster at {bootstrap} lists the broker",
            )
        except EarlyExit as exc:
            self._process = None
            raise EarlyExit(f"{exc}{_first_errors(root / 'kafka.log')}") from exc
        except LauncherError:
            self._process = None
            raise


def _first_errors(log: Path) -> str:
    """The first ERROR line and the innermost cause of a Kafka log, for error messages
    (the tail of a failed start is mostly stack frames)."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    errors = [ln for ln in lines if re.search(r"\] (ERROR|FATAL) ", ln)][:1]
    causes = [ln for ln in lines if ln.startswith("Caused by:")][-1:]
    found = errors + causes
    return ("\nFirst error:\n" + "\n".join(found)) if found else ""


# -- command line ---------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.local.kafka",
        description=f"Local Apache Kafka {KAFKA_VERSION} from Maven Central (jars, broker).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download the broker's jars unless cached")
    fetch.add_argument("--jars-dir", type=Path, default=None,
                       help=f"cache dir (default: ${envvars.KAFKA_JARS_DIR} or "
                       f"~/.cache/journeys/kafka-{KAFKA_VERSION})")
    run = sub.add_parser("run", help="run a broker in the foreground until Ctrl-C")
    run.add_argument("--port", type=int, default=0)
    run.add_argument("--workdir", type=Path, default=None)
    run.add_argument("--jars-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            root = Path(args.jars_dir) if args.jars_dir else default_jars_dir()
            cached = jars_ready(root)
            started = time.monotonic()
            fetch_jars(root)
            what = "already cached" if cached else f"fetched in {time.monotonic() - started:.1f}s"
            size = sum(p.stat().st_size for p in jar_subdir(root).glob("*.jar"))
            print(f"Kafka {KAFKA_VERSION} jars {what}: {jar_subdir(root)} "
                  f"({size / 2**20:.0f} MiB)")
            return 0
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        with LocalKafka(args.port, workdir=args.workdir, jars_dir=args.jars_dir) as kafka:
            print(f"Kafka {KAFKA_VERSION} ready at {kafka.bootstrap_servers} "
                  f"(pid {kafka.pid}, log {kafka.log_path}); Ctrl-C stops it", flush=True)
            while not stop.wait(0.5) and kafka.running:
                pass
        return 0
    except LauncherError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
