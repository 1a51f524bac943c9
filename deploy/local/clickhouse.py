"""A throw-away ClickHouse server (Debian's clickhouse-server) run as a child process.

Why: the server backend (clickhouse-driver, native protocol) must be exercised by tests
and can back `journeys demo` when a real server is wanted, without touching the system
service. Everything (config, data, logs) lives in the launcher's own directory; it
listens on 127.0.0.1 only, on free ports, in UTC.
"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from xml.sax.saxutils import escape

from deploy.local._proc import (
    LOCALHOST,
    EarlyExit,
    ManagedProcess,
    WorkDir,
    child_env,
    free_port,
    log_tail,
    port_is_free,
    track,
    untrack,
)
from journeys.errors import LauncherError

DEFAULT_BINARY = Path("/usr/sbin/clickhouse-server")
INSTALL_HINT = "apt-get install -y clickhouse-server clickhouse-client"

_CONFIG = """<?xml version="1.0"?>
<yandex>
    <logger>
        <level>{log_level}</level>
        <log>{logs}/clickhouse-server.log</log>
        <errorlog>{logs}/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>2</count>
    </logger>
    <listen_host>{host}</listen_host>
    <tcp_port>{tcp_port}</tcp_port>
    <http_port>{http_port}</http_port>
    <interserver_http_port>{interserver_port}</interserver_http_port>
    <interserver_http_host>{host}</interserver_http_host>
    <path>{data}/</path>
    <tmp_path>{data}/tmp/</tmp_path>
    <user_files_path>{data}/user_files/</user_files_path>
    <format_schema_path>{data}/format_schemas/</format_schema_path>
    <users_config>{users}</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <max_concurrent_queries>100</max_concurrent_queries>
    <mlock_executable>false</mlock_executable>
</yandex>
"""

_USERS = """<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <load_balancing>random</load_balancing>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks>
                <ip>::1</ip>
                <ip>127.0.0.1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
"""


def clickhouse_binary(binary: Path | None = None) -> Path:
    """The server binary: the given path, /usr/sbin/clickhouse-server, or one on PATH."""
    if binary is not None:
        candidates = [Path(binary)]
    else:
        on_path = shutil.which("clickhouse-server")
        candidates = [DEFAULT_BINARY] + ([Path(on_path)] if on_path else [])
    for path in candidates:
        if path.is_file():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise LauncherError(
        f"clickhouse-server not found (tried {tried}). On Debian/Ubuntu: {INSTALL_HINT}"
    )


class LocalClickHouse:
    """Start/stop one ClickHouse server on 127.0.0.1 with its own config, data and logs.

    Ports 0 mean "pick free ones". A temp work dir (the default) is removed on stop, so
    data survives a restart only when `workdir` is given.
    """

    def __init__(
        self,
        *,
        tcp_port: int = 0,
        http_port: int = 0,
        interserver_port: int = 0,
        workdir: Path | None = None,
        binary: Path | None = None,
        log_level: str = "warning",
        start_timeout: float = 30.0,
        stop_timeout: float = 15.0,
    ) -> None:
        self._wanted = (tcp_port, http_port, interserver_port)
        self._ports: tuple[int, int, int] | None = None
        self._workdir = WorkDir(workdir, prefix="journeys-clickhouse-")
        self._binary = binary
        self.log_level = log_level
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._process: ManagedProcess | None = None

    # -- public surface -------------------------------------------------------------

    @property
    def host(self) -> str:
        return LOCALHOST

    @property
    def tcp_port(self) -> int:
        """Native-protocol port, for clickhouse-driver `Client(host, port=tcp_port)`."""
        return self._require_ports()[0]

    @property
    def http_port(self) -> int:
        return self._require_ports()[1]

    @property
    def interserver_port(self) -> int:
        return self._require_ports()[2]

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def workdir(self) -> Path | None:
        return self._workdir.path

    @property
    def log_path(self) -> Path | None:
        """The server's own log (its stdout/stderr go to `stdout.log` next to it)."""
        path = self._workdir.path
        return path / "logs" / "clickhouse-server.log" if path is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running()

    def start(self) -> LocalClickHouse:
        """Start the server and return once HTTP /ping answers "Ok."."""
        if self.running:
            return self
        binary = clickhouse_binary(self._binary)
        # Ports we picked may be taken before the server binds them: retry then.
        attempts = 3 if 0 in self._wanted and self._ports is None else 1
        for attempt in range(1, attempts + 1):
            ports = self._choose_ports()
            try:
                self._launch(binary, ports)
            except EarlyExit:
                self._workdir.cleanup()
                if attempt == attempts:
                    raise
            except LauncherError:
                self._workdir.cleanup()
                raise
            else:
                self._ports = ports
                break
        track(self, self.stop)
        return self

    def stop(self) -> int | None:
        """Stop by PID (SIGTERM, then SIGKILL after the grace time); idempotent.

        Returns the exit code. A temp work dir (data and logs) is removed; with a given
        work dir the server gets `stop_timeout` to shut down cleanly.
        """
        rc: int | None = None
        if self._process is not None:
            # The server waits ~10 s for clients that are still connected. A temp dir is
            # deleted right after, so its data needs no clean shutdown: short grace.
            grace = self.stop_timeout if self._workdir.owned_by_caller else 2.0
            rc = self._process.stop(min(grace, self.stop_timeout))
            self._process = None
        self._workdir.cleanup()
        untrack(self)
        return rc

    def __enter__(self) -> LocalClickHouse:
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
        return f"LocalClickHouse(ports={self._ports}, {state})"

    # -- internals -------------------------------------------------------------------

    def _require_ports(self) -> tuple[int, int, int]:
        if self._ports is None:
            raise LauncherError("the ClickHouse server has no ports yet: call start() first")
        return self._ports

    def _choose_ports(self) -> tuple[int, int, int]:
        # On restart keep the addresses clients already know.
        wanted = self._ports if self._ports is not None else self._wanted
        chosen: list[int] = []
        for port in wanted:
            if port == 0:
                port = free_port()
                while port in chosen:
                    port = free_port()
            elif not port_is_free(port):
                raise LauncherError(
                    f"cannot start ClickHouse: port {LOCALHOST}:{port} is already in use"
                )
            chosen.append(port)
        tcp, http, inter = chosen
        return tcp, http, inter

    def _write_config(self, root: Path, ports: tuple[int, int, int]) -> Path:
        data, logs = root / "data", root / "logs"
        for sub in (data / "tmp", data / "user_files", data / "format_schemas", logs):
            sub.mkdir(parents=True, exist_ok=True)
        users = root / "users.xml"
        users.write_text(_USERS, encoding="utf-8")
        config = root / "config.xml"
        config.write_text(
            _CONFIG.format(
                log_level=escape(self.log_level),
                logs=escape(str(logs)),
                host=LOCALHOST,
                tcp_port=ports[0],
                http_port=ports[1],
                interserver_port=ports[2],
                data=escape(str(data)),
                users=escape(str(users)),
            ),
            encoding="utf-8",
        )
        return config

    def _launch(self, binary: Path, ports: tuple[int, int, int]) -> None:
        root = self._workdir.create()
        config = self._write_config(root, ports)
        argv = [str(binary), f"--config-file={config}"]
        proc = ManagedProcess(
            "clickhouse-server", argv, root / "stdout.log", env=child_env(TZ="UTC"), cwd=root
        )
        proc.start()
        self._process = proc
        try:
            proc.wait_ready(
                lambda: _ping(ports[1]),
                self.start_timeout,
                f"GET http://{LOCALHOST}:{ports[1]}/ping",
            )
        except LauncherError as exc:
            self._process = None
            server_log = root / "logs" / "clickhouse-server.err.log"
            if server_log.exists():
                raise type(exc)(f"{exc}\nServer error log:\n{log_tail(server_log)}") from exc
            raise


# No proxy: an http_proxy variable in CI must not reroute a 127.0.0.1 probe.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _ping(http_port: int) -> bool:
    """True when the server's HTTP /ping answers "Ok."."""
    try:
        with _DIRECT.open(f"http://{LOCALHOST}:{http_port}/ping", timeout=1) as r:
            return r.status == 200 and r.read().strip() == b"Ok."
    except (OSError, urllib.error.URLError, ValueError):
        return False
