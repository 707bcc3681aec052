"""The local stack: a real Apache Kafka broker and a real PostgreSQL cluster as plain processes.

There is no Docker engine on the machines this project is developed and tested on, so
`ledgerflow stack up` runs the same software a deployment uses (see docker-compose.yml) directly:

* Kafka 4.1 in KRaft mode, one combined broker+controller node. Its jars come from Maven Central
  through ``ops/kafka/pom.xml`` and are cached in ``var/kafka/libs``.
* PostgreSQL from the distribution's packages, as a private cluster in ``var/postgres/data``
  run by the ``postgres`` OS user (PostgreSQL refuses to run as root).

Everything lives under ``Settings.var_dir`` (``var/`` by default) and every address comes from the
settings (``LEDGERFLOW_KAFKA``, ``LEDGERFLOW_DATABASE_URL``), so a second stack on other ports can
run beside the first by changing those variables. ``down`` stops only what ``up`` started,
identified by pid files, never by process name.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import glob
import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import string
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg import sql

from engine import kafka
from engine.config import PROJECT_ROOT, Settings

# Topic administration is the core's (engine/kafka_admin.py: the stream workers create topics too);
# re-exported so that `stack.ensure_topics` and friends keep their old names.
from engine.kafka_admin import TopicReplication as TopicReplication
from engine.kafka_admin import TopicsNotCreated as TopicsNotCreated
from engine.kafka_admin import broker_count as _broker_count
from engine.kafka_admin import ensure_topics as ensure_topics
from engine.kafka_admin import replication_for as replication_for
from engine.kafka_admin import run_sync as _run_sync
from engine.kafka_admin import topic_replication as topic_replication

OPS_DIR = PROJECT_ROOT / "ops"
KAFKA_OPS = OPS_DIR / "kafka"
POSTGRES_OPS = OPS_DIR / "postgres"

# The machine has two cores and the tests start many Python processes beside the broker.
KAFKA_HEAP = ["-Xms256m", "-Xmx768m"]
KAFKA_START_TIMEOUT = 120.0
KAFKA_STOP_TIMEOUT = 60.0
POSTGRES_START_TIMEOUT = 60.0
POSTGRES_STOP_TIMEOUT = 60.0
# A cold `up` downloads ~46 jars (plus Maven's own plugins on a machine without ~/.m2).
MAVEN_TIMEOUT = 900.0


class StackError(RuntimeError):
    """A service of the local stack could not be set up, started or reached."""


@dataclass(frozen=True)
class ServiceStatus:
    """What `ledgerflow stack status` shows for one service."""

    name: str
    running: bool
    pid: int | None
    address: str
    detail: str


def _say(message: str) -> None:
    # Progress goes to stdout unbuffered: a cold start takes minutes and the user should see why.
    print(message, flush=True)


_lock_depth = threading.local()


@contextlib.contextmanager
def _stack_lock(settings: Settings) -> Iterator[None]:
    """Serialise `up`/`down`/restarts across processes: several engineers and test runs share one
    checkout, and two concurrent `up`s would otherwise both start a broker on the same port.
    Re-entrant within a thread, because flock on a second descriptor of the same file would block."""
    depth = getattr(_lock_depth, "value", 0)
    if depth:
        _lock_depth.value = depth + 1
        try:
            yield
        finally:
            _lock_depth.value = depth
        return
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    with (settings.var_dir / "stack.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        _lock_depth.value = 1
        try:
            yield
        finally:
            _lock_depth.value = 0
            fcntl.flock(handle, fcntl.LOCK_UN)


def _locked(func: Callable[[Settings], None]) -> Callable[[Settings], None]:
    """Run a start/stop operation under the stack lock (see `_stack_lock`)."""

    @functools.wraps(func)
    def wrapper(settings: Settings) -> None:
        with _stack_lock(settings):
            func(settings)

    return wrapper


# ---------------------------------------------------------------------------------------------
# Public API (wired to the CLI: `ledgerflow stack up|down|status`, `ledgerflow topics ensure`)
# ---------------------------------------------------------------------------------------------


@_locked
def up(settings: Settings) -> None:
    """Start PostgreSQL and Kafka unless already running, and wait until both answer."""
    start_postgres(settings)
    start_kafka(settings)


def up_cluster(settings: Settings, cluster: KafkaCluster) -> None:
    """`up` with a multi-broker Kafka cluster instead of the single broker: PostgreSQL as usual,
    then every node of ``cluster`` (see `start_cluster`). The single broker is left alone."""
    with _stack_lock(settings):
        start_postgres(settings)
        start_cluster(settings, cluster)


def down(settings: Settings, cluster_home: Path | None = None) -> None:
    """Stop the services that `up` started (found by their pid files); leave anything else alone.
    That includes the cluster of `up_cluster` recorded in ``cluster_home`` (default
    ``var/kafka-cluster``), if there is one."""
    with _stack_lock(settings):
        cluster = KafkaCluster.load(cluster_home or default_cluster_home(settings))
        if cluster is not None:
            stop_cluster(cluster)
        stop_kafka(settings)
        stop_postgres(settings)


def status(settings: Settings, cluster_home: Path | None = None) -> list[ServiceStatus]:
    """Report whether each service of the local stack is running and answering; the nodes of a
    cluster recorded in ``cluster_home`` (default ``var/kafka-cluster``) come after the rest."""
    cluster = KafkaCluster.load(cluster_home or default_cluster_home(settings))
    if cluster is None:
        return [_kafka_status(settings), _postgres_status(settings)]
    # With LEDGERFLOW_KAFKA naming the cluster, a "kafka" line would report node 1 a second time.
    on_cluster = _kafka_address(settings)[:2] in {(n.host, n.port) for n in cluster.nodes}
    single = [] if on_cluster else [_kafka_status(settings)]
    return [*single, _postgres_status(settings), *cluster_status(cluster)]


@_locked
def restart_kafka(settings: Settings) -> None:
    """Stop then start the broker (crash/recovery tests use it; data is kept)."""
    stop_kafka(settings)
    start_kafka(settings)


@_locked
def restart_postgres(settings: Settings) -> None:
    """Stop then start PostgreSQL (crash/recovery tests use it; data is kept)."""
    stop_postgres(settings)
    start_postgres(settings)


# ---------------------------------------------------------------------------------------------
# Processes, ports and pid files
# ---------------------------------------------------------------------------------------------


def _host_port(address: str, default_port: int) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host:
        return address, default_port
    return host, int(port)


def _port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1.0):
        return True
    return False


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live process (a zombie child of ours is reaped and counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state == "Z":
        # A broker started by this very process (e.g. restart_kafka in a test) is our child.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _listener_pid(port: int) -> int | None:
    """The pid listening on a local TCP port, to name it in an error message (best effort)."""
    try:
        import psutil  # optional: a dev dependency, not needed to run the stack
    except ImportError:
        return None
    with contextlib.suppress(Exception):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                return conn.pid
    return None


def _port_taken_error(service: str, host: str, port: int) -> StackError:
    holder = _listener_pid(port)
    who = f"pid {holder} ({_cmdline(holder).strip()[:160]})" if holder else "another process"
    return StackError(
        f"{service}: {host}:{port} is already in use by {who}, which `ledgerflow stack up` did not "
        f"start. Stop it (or point the settings at other ports) and run `up` again."
    )


def _terminate(pid: int, name: str, signals: Sequence[tuple[signal.Signals, float]]) -> None:
    """Send each signal in turn, waiting its timeout for the process to exit."""
    for sig, timeout in signals:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                return
            time.sleep(0.2)
        _say(f"{name}: pid {pid} still running {timeout:.0f}s after {sig.name}")
    if _pid_alive(pid):
        raise StackError(f"{name}: could not stop pid {pid}")


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text[-lines:])


def _wait_until(
    what: str,
    check: Callable[[], bool],
    deadline: float,
    alive: Callable[[], bool],
    log_file: Path,
    interval: float = 0.5,
) -> None:
    """Poll ``check()`` until it is true; fail early if ``alive()`` turns false, or at the deadline."""
    last_error = ""
    while True:
        try:
            if check():
                return
        except Exception as exc:  # any failure to answer just means "not yet"
            last_error = f"{type(exc).__name__}: {exc}"
        if not alive():
            raise StackError(
                f"{what} exited during start-up. Last lines of {log_file}:\n{_log_tail(log_file)}"
            )
        if time.monotonic() > deadline:
            raise StackError(
                f"{what} did not become ready in time (last error: {last_error or 'none'}). "
                f"Last lines of {log_file}:\n{_log_tail(log_file)}"
            )
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------
# Machine prerequisites
# ---------------------------------------------------------------------------------------------


def _apt_install(packages: list[str], reason: str) -> None:
    """Install Debian packages on a fresh machine; only possible as root with apt-get."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise StackError(f"{reason}: please install {' '.join(packages)} (needs root and apt-get)")
    _say(f"{reason}: installing {' '.join(packages)} with apt-get…")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def _require_tool(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        _apt_install([package], f"{tool} not found")
        path = shutil.which(tool)
    if path is None:
        raise StackError(f"{tool} is still missing after installing {package}")
    return path


# ---------------------------------------------------------------------------------------------
# Kafka
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _KafkaPaths:
    home: Path
    libs: Path
    data: Path
    config: Path
    log: Path
    pid: Path


def _kafka_paths(settings: Settings) -> _KafkaPaths:
    home = settings.var_dir / "kafka"
    return _KafkaPaths(
        home=home,
        libs=home / "libs",
        data=home / "data",
        config=home / "server.properties",
        log=home / "server.log",
        pid=home / "kafka.pid",
    )


def _kafka_address(settings: Settings) -> tuple[str, int, int]:
    """Broker host and port from LEDGERFLOW_KAFKA; the controller listens on the next port."""
    first = settings.kafka_bootstrap.split(",")[0].strip()
    host, port = _host_port(first, 9092)
    return host, port, port + 1


def _our_kafka_pid(paths: _KafkaPaths) -> int | None:
    pid = _read_pid(paths.pid)
    if pid is not None and _pid_alive(pid) and "kafka.Kafka" in _cmdline(pid):
        return pid
    return None


def _fetch_kafka_jars(paths: _KafkaPaths) -> None:
    """Resolve the broker's jars with Maven once; a marker with the pom's hash says they are complete."""
    pom = KAFKA_OPS / "pom.xml"
    marker = paths.libs / ".complete"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    if marker.exists() and marker.read_text().strip() == digest:
        return
    mvn = _require_tool("mvn", "maven")
    _say(f"kafka: resolving jars from Maven Central into {paths.libs} (first run only)…")
    started = time.monotonic()
    # Download into a scratch folder and swap it in, so an interrupted run never looks complete.
    scratch = paths.home / "libs.partial"
    shutil.rmtree(scratch, ignore_errors=True)
    result = subprocess.run(
        [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={scratch}"],
        capture_output=True,
        text=True,
        timeout=MAVEN_TIMEOUT,
    )
    if result.returncode != 0:
        raise StackError(
            f"kafka: Maven could not resolve the jars:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    shutil.rmtree(paths.libs, ignore_errors=True)
    scratch.rename(paths.libs)
    marker.write_text(digest + "\n")
    count = len(list(paths.libs.glob("*.jar")))
    _say(f"kafka: {count} jars ready ({time.monotonic() - started:.0f}s)")


def _new_cluster_id() -> str:
    """A KRaft cluster id: a random UUID in URL-safe base64 without padding, as Kafka's own tool makes.

    Done in Python to save a JVM start; Kafka's generator also avoids ids starting with '-'
    (they look like command-line options), and so do we.
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _write_kafka_config(settings: Settings, paths: _KafkaPaths) -> None:
    host, port, controller_port = _kafka_address(settings)
    template = string.Template((KAFKA_OPS / "server.properties").read_text())
    paths.config.write_text(
        template.substitute(host=host, port=port, controller_port=controller_port, log_dirs=paths.data)
    )


def _java_command(paths: _KafkaPaths, *args: str, logs_dir: Path | None = None) -> list[str]:
    java = _require_tool("java", "openjdk-17-jre-headless")
    return [
        java,
        f"-Dlog4j2.configurationFile={KAFKA_OPS / 'log4j2.properties'}",
        f"-Dkafka.logs.dir={logs_dir or paths.home}",
        "-Djava.awt.headless=true",
        "-cp",
        f"{paths.libs}/*",
        *args,
    ]


def _format_kafka_storage(paths: _KafkaPaths) -> None:
    """Format the KRaft log directory on first start; later starts keep the cluster's data."""
    if (paths.data / "meta.properties").exists():
        return
    cluster_id = _new_cluster_id()
    _say(f"kafka: formatting storage in {paths.data} (cluster id {cluster_id})…")
    command = _java_command(
        paths, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(paths.config)
    )
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise StackError(f"kafka: formatting storage failed:\n{result.stdout}{result.stderr}")


@_locked
def start_kafka(settings: Settings) -> None:
    """Start the broker unless ours is already running, then wait until it answers metadata."""
    paths = _kafka_paths(settings)
    host, port, controller_port = _kafka_address(settings)
    address = f"{host}:{port}"
    deadline = time.monotonic() + KAFKA_START_TIMEOUT
    pid = _our_kafka_pid(paths)
    if pid is not None:
        _wait_until("kafka", lambda: _kafka_answers(address), deadline, lambda: _pid_alive(pid), paths.log)
        _say(f"kafka: already up on {address} (pid {pid})")
        return
    paths.pid.unlink(missing_ok=True)  # stale: the process it named is gone
    for p in (port, controller_port):
        if _port_open(host, p):
            raise _port_taken_error("kafka", host, p)

    paths.home.mkdir(parents=True, exist_ok=True)
    _fetch_kafka_jars(paths)
    _write_kafka_config(settings, paths)
    _format_kafka_storage(paths)

    _say("kafka: starting…")
    started = time.monotonic()
    command = _java_command(
        paths, *KAFKA_HEAP, "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "kafka.Kafka", str(paths.config)
    )
    with paths.log.open("ab") as log:
        # New session: the broker outlives this command and a Ctrl-C in the terminal does not reach it.
        process = subprocess.Popen(
            command,
            cwd=paths.home,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_raise_open_files_limit,
        )
    paths.pid.write_text(f"{process.pid}\n")
    _wait_until(
        "kafka", lambda: _kafka_answers(address), deadline, lambda: process.poll() is None, paths.log, 1.0
    )
    _say(f"kafka: up on {address} (pid {process.pid}, {time.monotonic() - started:.1f}s)")


def _raise_open_files_limit() -> None:
    """The broker keeps several files open per partition (log, index, time index segments); a test
    run creates thousands of partitions, and the usual soft limit of 1,024 (or even 20,000) open
    files stopped the broker with "Too many open files". Raise the soft limit to the hard one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@_locked
def stop_kafka(settings: Settings) -> None:
    """Stop our broker: SIGTERM (controlled shutdown, flushes logs), then SIGKILL if it hangs."""
    paths = _kafka_paths(settings)
    pid = _our_kafka_pid(paths)
    if pid is None:
        paths.pid.unlink(missing_ok=True)
        _say("kafka: not running (nothing started by `stack up`)")
        return
    _say(f"kafka: stopping pid {pid}…")
    _terminate(pid, "kafka", [(signal.SIGTERM, KAFKA_STOP_TIMEOUT), (signal.SIGKILL, 10.0)])
    paths.pid.unlink(missing_ok=True)
    _say("kafka: stopped")


async def _topic_partitions(bootstrap: str) -> dict[str, int]:
    # The local stack's own brokers speak PLAINTEXT: no credentials, whatever the settings say.
    return {
        topic: len(partitions)
        for topic, partitions in (await kafka.partitions_at(bootstrap, None, 5000)).items()
    }


def _kafka_answers(address: str) -> bool:
    # A metadata request, not just an open port: the socket accepts before the broker has a controller.
    if not _port_open(*_host_port(address, 9092)):
        return False
    _run_sync(_topic_partitions(address))
    return True


def _kafka_status(settings: Settings) -> ServiceStatus:
    paths = _kafka_paths(settings)
    host, port, _ = _kafka_address(settings)
    address = f"{host}:{port}"
    pid = _our_kafka_pid(paths)
    try:
        topics = _run_sync(_topic_partitions(address)) if _port_open(host, port) else None
    except Exception as exc:
        topics = None
        answer = f"not answering ({type(exc).__name__})"
    else:
        answer = f"answers metadata, {len(topics)} topics" if topics is not None else "port closed"
    if pid is None and topics is not None:
        answer += " (a broker not started by `stack up`)"
    return ServiceStatus("kafka", pid is not None, pid, address, f"{answer}; log {paths.log}")


# ---------------------------------------------------------------------------------------------
# Kafka: a local multi-broker cluster (`ledgerflow stack up --brokers N`)
# ---------------------------------------------------------------------------------------------

# Three broker JVMs share the machine with the single broker, PostgreSQL and the engine.
CLUSTER_HEAP = ["-Xms128m", "-Xmx512m"]
CLUSTER_BASE_PORT = 19092
# Controller listeners sit this far above the broker ports (19092-19094 -> 19192-19194).
CLUSTER_CONTROLLER_OFFSET = 100
CLUSTER_LAYOUT_FILE = "cluster.json"
CLUSTER_STOP_TIMEOUT = 30.0


@dataclass(frozen=True)
class ClusterNode:
    """One combined broker+controller process of a `KafkaCluster`."""

    node_id: int
    host: str
    port: int
    controller_port: int
    home: Path

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def config(self) -> Path:
        return self.home / "server.properties"

    @property
    def log(self) -> Path:
        return self.home / "server.log"

    @property
    def pid_file(self) -> Path:
        return self.home / "kafka.pid"


@dataclass(frozen=True)
class KafkaCluster:
    """Where a local Kafka cluster lives and listens: node ``i`` (1-based) keeps its data and log
    in ``home/node-i`` and listens on ``broker_ports[i-1]`` (clients) and
    ``controller_ports[i-1]`` (the controller quorum). Nothing is shared with the single broker of
    ``ledgerflow stack up``, so both can run side by side."""

    home: Path
    broker_ports: tuple[int, ...]
    controller_ports: tuple[int, ...]
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if len(self.broker_ports) != len(self.controller_ports) or not self.broker_ports:
            raise StackError("a cluster needs one broker port and one controller port per node")
        if len(set(self.broker_ports) | set(self.controller_ports)) != 2 * len(self.broker_ports):
            raise StackError(f"cluster ports overlap: {self.broker_ports} {self.controller_ports}")

    @classmethod
    def on_ports(
        cls, home: Path, brokers: int, base_port: int = CLUSTER_BASE_PORT, host: str = "127.0.0.1"
    ) -> KafkaCluster:
        """``brokers`` nodes on consecutive ports from ``base_port``, controllers 100 ports above."""
        if brokers < 1:
            raise StackError(f"a cluster needs at least one broker (got {brokers})")
        ports = tuple(range(base_port, base_port + brokers))
        return cls(home, ports, tuple(p + CLUSTER_CONTROLLER_OFFSET for p in ports), host)

    @classmethod
    def load(cls, home: Path) -> KafkaCluster | None:
        """The cluster that `start_cluster` recorded in ``home``, or None if there is none."""
        try:
            layout = json.loads((home / CLUSTER_LAYOUT_FILE).read_text())
        except (OSError, ValueError):
            return None
        return cls(home, tuple(layout["broker_ports"]), tuple(layout["controller_ports"]), layout["host"])

    @property
    def nodes(self) -> list[ClusterNode]:
        return [
            ClusterNode(i, self.host, port, controller, self.home / f"node-{i}")
            for i, (port, controller) in enumerate(
                zip(self.broker_ports, self.controller_ports, strict=True), start=1
            )
        ]

    @property
    def bootstrap(self) -> str:
        """The value for LEDGERFLOW_KAFKA: every broker, so clients start even with one down."""
        return ",".join(node.address for node in self.nodes)

    def node(self, node_id: int) -> ClusterNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise StackError(f"the cluster in {self.home} has no node {node_id}")

    def record(self) -> None:
        layout = {
            "host": self.host,
            "broker_ports": list(self.broker_ports),
            "controller_ports": list(self.controller_ports),
        }
        (self.home / CLUSTER_LAYOUT_FILE).write_text(json.dumps(layout, indent=2) + "\n")


def default_cluster_home(settings: Settings) -> Path:
    return settings.var_dir / "kafka-cluster"


@contextlib.contextmanager
def _cluster_lock(cluster: KafkaCluster) -> Iterator[None]:
    # The cluster may live outside var/ (a test's tmp dir), so it has its own lock beside it.
    cluster.home.mkdir(parents=True, exist_ok=True)
    with (cluster.home / "cluster.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _our_node_pid(node: ClusterNode) -> int | None:
    # The config path in the command line tells our node from the single broker or another cluster.
    pid = _read_pid(node.pid_file)
    if pid is not None and _pid_alive(pid) and str(node.config) in _cmdline(pid):
        return pid
    return None


def _write_node_config(cluster: KafkaCluster, node: ClusterNode) -> None:
    replication = replication_for(len(cluster.nodes))
    voters = ",".join(f"{n.node_id}@{n.host}:{n.controller_port}" for n in cluster.nodes)
    template = string.Template((KAFKA_OPS / "cluster.properties").read_text())
    node.config.write_text(
        template.substitute(
            node_id=node.node_id,
            voters=voters,
            host=node.host,
            port=node.port,
            controller_port=node.controller_port,
            log_dirs=node.data,
            replication=replication.factor,
            min_insync=replication.min_insync_replicas,
        )
    )


def _format_node_storage(paths: _KafkaPaths, node: ClusterNode, cluster_id: str) -> None:
    if (node.data / "meta.properties").exists():
        return
    command = _java_command(
        paths, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(node.config)
    )
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise StackError(
            f"kafka node {node.node_id}: formatting storage failed:\n{result.stdout}{result.stderr}"
        )


def _spawn_node(paths: _KafkaPaths, node: ClusterNode) -> int:
    for port in (node.port, node.controller_port):
        if _port_open(node.host, port):
            raise _port_taken_error(f"kafka node {node.node_id}", node.host, port)
    command = _java_command(
        paths,
        *CLUSTER_HEAP,
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "kafka.Kafka",
        str(node.config),
        logs_dir=node.home,
    )
    with node.log.open("ab") as log:
        process = subprocess.Popen(
            command,
            cwd=node.home,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_raise_open_files_limit,
        )
    node.pid_file.write_text(f"{process.pid}\n")
    return process.pid


def _cluster_sees(node: ClusterNode, brokers: int) -> bool:
    """True once ``node`` answers metadata listing ``brokers`` live brokers (all of them joined)."""
    if not _port_open(node.host, node.port):
        return False
    return _run_sync(_broker_count(node.address)) >= brokers


def start_cluster(settings: Settings, cluster: KafkaCluster) -> None:
    """Start every node of ``cluster`` that is not running and wait until each one answers with
    the whole cluster in its metadata. The jars are the single broker's (``var/kafka/libs``);
    data, configs, logs and the cluster id live under ``cluster.home``."""
    paths = _kafka_paths(settings)
    with _cluster_lock(cluster):
        recorded = KafkaCluster.load(cluster.home)
        if recorded is not None and recorded != cluster and _running_nodes(recorded):
            raise StackError(
                f"a cluster with other ports is running from {cluster.home} ({recorded.bootstrap}); "
                f"stop it first (`ledgerflow stack down`)"
            )
        _fetch_kafka_jars(paths)
        cluster_id_file = cluster.home / "cluster-id"
        if not cluster_id_file.exists():
            cluster_id_file.write_text(_new_cluster_id() + "\n")
        cluster_id = cluster_id_file.read_text().strip()
        cluster.record()
        started = time.monotonic()
        pids: dict[int, int] = {}
        for node in cluster.nodes:
            node.home.mkdir(parents=True, exist_ok=True)
            _write_node_config(cluster, node)
            pid = _our_node_pid(node)
            if pid is None:
                _format_node_storage(paths, node, cluster_id)
                _say(f"kafka node {node.node_id}: starting on {node.address}…")
                pid = _spawn_node(paths, node)
            pids[node.node_id] = pid
        # The nodes are started together: none can finish starting without a quorum of voters.
        deadline = time.monotonic() + KAFKA_START_TIMEOUT
        for node in cluster.nodes:
            pid = pids[node.node_id]
            _wait_until(
                f"kafka node {node.node_id}",
                functools.partial(_cluster_sees, node, len(cluster.nodes)),
                deadline,
                functools.partial(_pid_alive, pid),
                node.log,
                1.0,
            )
    _say(
        f"kafka cluster: {len(cluster.nodes)} brokers up ({time.monotonic() - started:.1f}s); "
        f"LEDGERFLOW_KAFKA={cluster.bootstrap}"
    )


def start_cluster_node(settings: Settings, cluster: KafkaCluster, node_id: int) -> None:
    """Start one node again (after `stop_cluster_node` or a crash); its data is kept. Waits until it
    answers and sees the whole cluster."""
    node = cluster.node(node_id)
    paths = _kafka_paths(settings)
    with _cluster_lock(cluster):
        pid = _our_node_pid(node)
        if pid is None:
            _write_node_config(cluster, node)
            _say(f"kafka node {node_id}: starting on {node.address}…")
            pid = _spawn_node(paths, node)
        _wait_until(
            f"kafka node {node_id}",
            functools.partial(_cluster_sees, node, len(cluster.nodes)),
            time.monotonic() + KAFKA_START_TIMEOUT,
            functools.partial(_pid_alive, pid),
            node.log,
            1.0,
        )


def stop_cluster_node(cluster: KafkaCluster, node_id: int, *, hard: bool = False) -> None:
    """Stop one node: SIGTERM (controlled shutdown: leadership moves away first), or with
    ``hard`` a SIGKILL, the crash a test inflicts (unflushed data and leadership lost at once)."""
    node = cluster.node(node_id)
    pid = _our_node_pid(node)
    if pid is None:
        _say(f"kafka node {node_id}: not running")
        return
    signals = (
        [(signal.SIGKILL, 10.0)] if hard else [(signal.SIGTERM, CLUSTER_STOP_TIMEOUT), (signal.SIGKILL, 10.0)]
    )
    _say(f"kafka node {node_id}: {'killing' if hard else 'stopping'} pid {pid}…")
    _terminate(pid, f"kafka node {node_id}", signals)
    node.pid_file.unlink(missing_ok=True)


def _running_nodes(cluster: KafkaCluster) -> dict[int, int]:
    return {node.node_id: pid for node in cluster.nodes if (pid := _our_node_pid(node)) is not None}


def stop_cluster(cluster: KafkaCluster) -> None:
    """Stop every node of the cluster. All get SIGTERM at once: stopped one by one, the last ones
    would wait for a controller quorum that the first ones already took away."""
    with _cluster_lock(cluster):
        running = _running_nodes(cluster)
        if not running:
            _say(f"kafka cluster: not running ({cluster.home})")
            return
        _say(f"kafka cluster: stopping nodes {sorted(running)}…")
        for pid in running.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for node_id, pid in running.items():
            _terminate(
                pid, f"kafka node {node_id}", [(signal.SIGTERM, CLUSTER_STOP_TIMEOUT), (signal.SIGKILL, 10.0)]
            )
            cluster.node(node_id).pid_file.unlink(missing_ok=True)
        _say("kafka cluster: stopped")


def cluster_status(cluster: KafkaCluster) -> list[ServiceStatus]:
    """One line per node: running?, answering?, how many brokers it sees."""
    statuses = []
    for node in cluster.nodes:
        pid = _our_node_pid(node)
        try:
            if _port_open(node.host, node.port):
                seen = _run_sync(_broker_count(node.address))
                answer = f"answers metadata, sees {seen} of {len(cluster.nodes)} brokers"
            else:
                answer = "port closed"
        except Exception as exc:
            answer = f"not answering ({type(exc).__name__})"
        statuses.append(
            ServiceStatus(
                f"kafka-{node.node_id}", pid is not None, pid, node.address, f"{answer}; log {node.log}"
            )
        )
    return statuses


# ---------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PgTarget:
    """What the settings' database URL asks for."""

    host: str
    port: int
    user: str
    password: str
    database: str

    @property
    def databases(self) -> list[str]:
        # The application database and the one the test suite uses.
        return [self.database, f"{self.database}_test"]


# The runtime role `stack up` creates when LEDGERFLOW_DATABASE_URL names the owner role itself, so that
# a least-privilege run needs only the URLs changed (docs/runbooks/local-stack.md, "Database roles").
DEFAULT_RUNTIME_ROLE = ("ledgerflow_app", "ledgerflow_app")


def _pg_target(settings: Settings) -> _PgTarget:
    """The owner role and its databases: the tables' owner (and the local stack's superuser)."""
    url = urlsplit(settings.owner_url)
    return _PgTarget(
        host=url.hostname or "127.0.0.1",
        port=url.port or 5432,
        user=unquote(url.username or "ledgerflow"),
        password=unquote(url.password or "ledgerflow"),
        database=url.path.lstrip("/") or "ledgerflow",
    )


def _pg_bin() -> Path:
    """The newest installed PostgreSQL server binaries (Debian: /usr/lib/postgresql/<major>/bin)."""

    def candidates() -> list[Path]:
        found = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin") if Path(p, "initdb").exists()]
        return sorted(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)

    if not candidates():
        _apt_install(["postgresql"], "postgres: server binaries not found")
    found = candidates()
    if not found:
        raise StackError("postgres: no /usr/lib/postgresql/*/bin/initdb after installing postgresql")
    return found[-1]


def _as_root() -> bool:
    return os.geteuid() == 0


def _pg_user() -> pwd.struct_passwd:
    return pwd.getpwnam("postgres")


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root we run its tools as the `postgres` OS user."""
    return ["runuser", "-u", "postgres", "--", *command] if _as_root() else command


def _postgres_can_use(path: Path) -> bool:
    result = subprocess.run(
        _as_postgres(["test", "-w", str(path), "-a", "-x", str(path)]), cwd="/", capture_output=True
    )
    return result.returncode == 0


def _pg_home(settings: Settings) -> Path:
    """The folder holding the cluster: ``var/postgres``, owned by the postgres user when we are root.

    If the postgres user cannot reach ``var/`` (a checkout under a private folder such as a
    ``mktemp -d`` in /tmp), the cluster lives in the postgres user's home instead, in a folder
    named after this checkout's var path, and ``var/postgres`` becomes a symlink to it. We do not
    loosen permissions on folders outside the project.
    """
    link = settings.var_dir / "postgres"
    if link.is_symlink():
        target = link.resolve()
        target.mkdir(parents=True, exist_ok=True)
        return target
    link.mkdir(parents=True, exist_ok=True)
    if not _as_root():
        return link
    user = _pg_user()
    os.chown(link, user.pw_uid, user.pw_gid)
    if _postgres_can_use(link):
        return link
    key = hashlib.sha1(str(settings.var_dir.resolve()).encode()).hexdigest()[:10]
    fallback = Path(user.pw_dir) / f"ledgerflow-{key}"
    fallback.mkdir(parents=True, exist_ok=True)
    os.chown(fallback, user.pw_uid, user.pw_gid)
    shutil.rmtree(link)
    link.symlink_to(fallback)
    _say(f"postgres: the postgres user cannot reach {settings.var_dir}; cluster lives in {fallback}")
    return fallback


@dataclass(frozen=True)
class _PgPaths:
    home: Path
    data: Path
    sockets: Path
    log: Path

    @property
    def pid(self) -> Path:
        # PostgreSQL's own pid file: the first line is the postmaster's pid.
        return self.data / "postmaster.pid"


def _pg_paths(settings: Settings, create: bool) -> _PgPaths:
    link = settings.var_dir / "postgres"
    home = _pg_home(settings) if create else (link.resolve() if link.is_symlink() else link)
    return _PgPaths(home=home, data=home / "data", sockets=home / "run", log=home / "postgres.log")


def _our_postgres_pid(paths: _PgPaths) -> int | None:
    pid = _read_pid(paths.pid)
    if pid is not None and _pid_alive(pid) and "postgres" in _cmdline(pid):
        return pid
    return None


def _copy_for_postgres(source: Path, destination: Path) -> None:
    shutil.copyfile(source, destination)
    if _as_root():
        user = _pg_user()
        os.chown(destination, user.pw_uid, user.pw_gid)


def _init_cluster(bin_dir: Path, paths: _PgPaths) -> None:
    """Create the cluster on first start; on every start, refresh our config files inside it."""
    if not (paths.data / "PG_VERSION").exists():
        _say(f"postgres: initialising a cluster in {paths.data}…")
        # --locale=C: byte-order collation, the same everywhere, and no dependency on installed locales.
        result = subprocess.run(
            _as_postgres(
                [str(bin_dir / "initdb"), "-D", str(paths.data), "-U", "postgres", "-E", "UTF8", "--locale=C"]
            ),
            cwd=paths.home,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise StackError(f"postgres: initdb failed:\n{result.stdout}{result.stderr}")
        with (paths.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# Ledgerflow's settings (copied from ops/postgres/postgresql.conf on every start)\n"
            )
            conf.write("include = 'ledgerflow.conf'\n")
    _copy_for_postgres(POSTGRES_OPS / "postgresql.conf", paths.data / "ledgerflow.conf")
    _copy_for_postgres(POSTGRES_OPS / "pg_hba.conf", paths.data / "pg_hba.conf")
    paths.sockets.mkdir(mode=0o700, exist_ok=True)
    if _as_root():
        user = _pg_user()
        os.chown(paths.sockets, user.pw_uid, user.pw_gid)


def _stop_debian_cluster_on(port: int) -> None:
    """Debian's packaged cluster ("main") listens on 5432 once installed; ours must own the port."""
    if shutil.which("pg_lsclusters") is None:
        return
    listing = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True)
    for line in listing.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2] == str(port) and fields[3].startswith("online"):
            version, name = fields[0], fields[1]
            _say(f"postgres: stopping the distribution's cluster {version}/{name}: ours needs port {port}")
            subprocess.run(["pg_ctlcluster", version, name, "stop"], check=True)


def _bootstrap_roles(target: _PgTarget, paths: _PgPaths, runtime_login: tuple[str, str]) -> None:
    """Create the owner role, the databases and the runtime role (idempotent: runs on every `up`)."""
    # Over the private unix socket as the cluster's superuser (trusted there, see ops/postgres/pg_hba.conf).
    if target.user == DEFAULT_RUNTIME_ROLE[0]:
        # Only LEDGERFLOW_DATABASE_URL was changed to the runtime role: never make it the owner.
        raise StackError(
            f"postgres: {target.user} is the runtime role; set LEDGERFLOW_OWNER_DATABASE_URL to the owner's"
            " URL (postgresql://ledgerflow:ledgerflow@127.0.0.1:5432/ledgerflow) for `stack up`"
        )
    with psycopg.connect(
        host=str(paths.sockets), port=target.port, user="postgres", dbname="postgres", autocommit=True
    ) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (target.user,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        # Superuser is acceptable on the local stack: tests terminate backends and create schemas freely.
        conn.execute(
            sql.SQL("{} ROLE {} WITH LOGIN CREATEDB SUPERUSER PASSWORD {}").format(
                sql.SQL(verb), sql.Identifier(target.user), sql.Literal(target.password)
            )
        )
        for database in target.databases:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
                continue
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(database), sql.Identifier(target.user)
                )
            )
            _say(f"postgres: created database {database}")
        runtime, runtime_password = runtime_login
        if ensure_runtime_role(conn, runtime, runtime_password, owner=target.user):
            _say(f"postgres: created runtime role {runtime} (no DDL rights)")


def _runtime_role(settings: Settings, owner: str) -> tuple[str, str]:
    url = urlsplit(settings.database_url)
    user = unquote(url.username or "")
    if user and user != owner:
        return user, unquote(url.password or "")
    return DEFAULT_RUNTIME_ROLE


def ensure_runtime_role(conn: psycopg.Connection, name: str, password: str, *, owner: str) -> bool:
    """Create the runtime role if missing (True when created); an existing one only gets its password.

    Data rights come from the owner (engine.db.grant_runtime); the role itself may do nothing else:
    no superuser, no CREATEDB, no CREATEROLE, no replication, row-level security applies. Safe on a
    shared cluster: it never alters another role (and refuses to touch the owner's).
    """
    if name == owner:
        raise StackError(f"postgres: the runtime role must differ from the owner role {owner!r}")
    attributes = sql.SQL(
        "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS PASSWORD {}"
    ).format(sql.Literal(password))
    with conn.transaction():
        # Two `stack up`s (or tests) at once: one creates, the other finds it.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('ledgerflow.runtime_role'))")
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
        if exists:
            conn.execute(sql.SQL("ALTER ROLE {} WITH {}").format(sql.Identifier(name), attributes))
            return False
        conn.execute(sql.SQL("CREATE ROLE {} WITH {}").format(sql.Identifier(name), attributes))
        return True


def _login_works(target: _PgTarget, database: str) -> bool:
    with psycopg.connect(
        host=target.host,
        port=target.port,
        user=target.user,
        password=target.password,
        dbname=database,
        connect_timeout=3,
    ) as conn:
        conn.execute("SELECT 1")
    return True


def _superuser_answers(target: _PgTarget, paths: _PgPaths) -> bool:
    with psycopg.connect(
        host=str(paths.sockets), port=target.port, user="postgres", dbname="postgres", connect_timeout=3
    ) as conn:
        conn.execute("SELECT 1")
    return True


def _spawn_postgres(target: _PgTarget, paths: _PgPaths, deadline: float) -> int:
    """Initialise the cluster if needed and start it; return the postmaster's pid."""
    _stop_debian_cluster_on(target.port)
    if _port_open(target.host, target.port):
        raise _port_taken_error("postgres", target.host, target.port)
    bin_dir = _pg_bin()
    _init_cluster(bin_dir, paths)
    _say("postgres: starting…")
    # Every engine process keeps a pool, and `make test` runs test files in parallel, each starting its
    # own relay, projector, API and workers: the default 100 connections run out.
    options = f"-p {target.port} -k {paths.sockets} -c listen_addresses={target.host} -c max_connections=500"
    # pg_ctl daemonises the postmaster (own session) and -w waits until it accepts connections.
    pg_ctl = [str(bin_dir / "pg_ctl"), "start", "-D", str(paths.data), "-l", str(paths.log), "-o", options]
    while True:
        result = subprocess.run(
            _as_postgres([*pg_ctl, "-w", "-t", str(int(POSTGRES_START_TIMEOUT))]),
            cwd=paths.home,
            capture_output=True,
            text=True,
        )
        pid = _our_postgres_pid(paths)
        if result.returncode == 0 and pid is not None:
            return pid
        # After a hard kill of the postmaster its children linger for a moment, still attached to
        # the old shared memory, and PostgreSQL refuses to start until they notice and exit.
        stale_lock = 'lock file "postmaster.pid" already exists' in _log_tail(paths.log, 3)
        if stale_lock and time.monotonic() < deadline:
            time.sleep(1.0)
            continue
        raise StackError(
            f"postgres: pg_ctl start failed:\n{result.stdout}{result.stderr}\n"
            f"Last lines of {paths.log}:\n{_log_tail(paths.log)}"
        )


@_locked
def start_postgres(settings: Settings) -> None:
    """Start our PostgreSQL cluster unless running, then wait until the application role can log in."""
    target = _pg_target(settings)
    address = f"{target.host}:{target.port}"
    deadline = time.monotonic() + POSTGRES_START_TIMEOUT
    started = time.monotonic()
    paths = _pg_paths(settings, create=True)
    already = _our_postgres_pid(paths)
    pid = already if already is not None else _spawn_postgres(target, paths, deadline)

    def alive() -> bool:
        return _pid_alive(pid)

    _wait_until("postgres", lambda: _superuser_answers(target, paths), deadline, alive, paths.log)
    # Every time, not just after initdb: a wiped database or a changed password in the URL is repaired.
    _bootstrap_roles(target, paths, _runtime_role(settings, target.user))

    def app_logins() -> bool:
        return all(_login_works(target, db) for db in target.databases)

    _wait_until("postgres", app_logins, deadline, alive, paths.log)
    if already is not None:
        _say(f"postgres: already up on {address} (pid {pid})")
    else:
        _say(f"postgres: up on {address} (pid {pid}, {time.monotonic() - started:.1f}s)")


@_locked
def stop_postgres(settings: Settings) -> None:
    """Stop our cluster: SIGINT is PostgreSQL's "fast" shutdown (clean, checkpointed, and does not
    wait for clients to disconnect the way SIGTERM's "smart" mode does, which would hang on any
    open pool); SIGQUIT ("immediate", crash-recovers on next start) and SIGKILL only if it hangs."""
    paths = _pg_paths(settings, create=False)
    pid = _our_postgres_pid(paths)
    if pid is None:
        _say("postgres: not running (nothing started by `stack up`)")
        return
    _say(f"postgres: stopping pid {pid}…")
    _terminate(
        pid,
        "postgres",
        [(signal.SIGINT, POSTGRES_STOP_TIMEOUT), (signal.SIGQUIT, 10.0), (signal.SIGKILL, 10.0)],
    )
    _say("postgres: stopped")


def _postgres_status(settings: Settings) -> ServiceStatus:
    target = _pg_target(settings)
    paths = _pg_paths(settings, create=False)
    pid = _our_postgres_pid(paths)
    try:
        _login_works(target, target.database)
        answer = f"accepts login as {target.user}"
    except Exception as exc:
        answer = f"no login ({type(exc).__name__})"
    if pid is None and answer.startswith("accepts"):
        answer += " (a server not started by `stack up`)"
    return ServiceStatus(
        "postgres", pid is not None, pid, f"{target.host}:{target.port}", f"{answer}; log {paths.log}"
    )


def format_status(statuses: Sequence[ServiceStatus]) -> list[str]:
    """One plain-text line per service, for the CLI and for scripts."""
    lines = []
    for s in statuses:
        state = "running" if s.running else "stopped"
        pid = f"pid {s.pid}" if s.pid else "no pid"
        lines.append(f"{s.name}: {state} on {s.address} ({pid}) — {s.detail}")
    return lines
