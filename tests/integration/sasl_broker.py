"""A test's own single-node Kafka broker with SASL/SCRAM users and the StandardAuthorizer.

Rendered from ops/kafka/sasl.properties on free ports under a tmp dir, with the jars of the local
stack (var/kafka/libs) and started the way ops.stack starts cluster nodes; the shared broker on
9092 is never touched. The users are created when the storage is formatted (``--add-scram``), so
they exist from the broker's first start.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import string
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

from engine.config import Settings
from ops import stack

ADMIN = "admin"
MECHANISM = "SCRAM-SHA-512"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class SaslBroker:
    home: Path
    port: int
    controller_port: int
    passwords: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log(self) -> Path:
        return self.home / "server.log"

    def settings_for(self, settings: Settings, user: str) -> Settings:
        """``settings`` (the test's schema and topic prefix) pointed at this broker as ``user``."""
        return replace(
            settings,
            kafka_bootstrap=self.bootstrap,
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism=MECHANISM,
            kafka_username=user,
            kafka_password=self.passwords[user],
        )

    def render(self) -> str:
        """ops/kafka/sasl.properties for this broker's ports, directory and admin."""
        template = string.Template((stack.KAFKA_OPS / "sasl.properties").read_text())
        return template.substitute(
            host=self.host,
            port=self.port,
            controller_port=self.controller_port,
            log_dirs=self.data,
            admin_user=ADMIN,
            admin_password=self.passwords[ADMIN],
        )

    @property
    def data(self) -> Path:
        return self.home / "data"

    def start(self, settings: Settings, properties: str | None = None, *, scram_users: bool = True) -> None:
        """Format and start the broker with ``properties`` (default: `render`); with ``scram_users``
        every user but the PLAIN admin gets its SCRAM credential at format time."""
        paths = stack._kafka_paths(settings)  # the jars only; nothing else of var/kafka is used
        stack._fetch_kafka_jars(paths)
        config = self.home / "server.properties"
        config.write_text(self.render() if properties is None else properties)
        scram = [
            arg
            for user, password in self.passwords.items()
            if scram_users
            for arg in ("--add-scram", f"{MECHANISM}=[name={user},password={password}]")
        ]
        formatted = subprocess.run(
            stack._java_command(
                paths,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                stack._new_cluster_id(),
                "-c",
                str(config),
                *scram,
            ),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert formatted.returncode == 0, (
            f"formatting the SASL broker failed:\n{formatted.stdout}{formatted.stderr}"
        )
        command = stack._java_command(
            paths, *stack.CLUSTER_HEAP, "-XX:+UseG1GC", "kafka.Kafka", str(config), logs_dir=self.home
        )
        with (self.home / "stdout.log").open("ab") as out:
            self.process = subprocess.Popen(
                command,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def answers_as_admin(self, settings: Settings, mechanism: str = MECHANISM) -> bool:
        """True once the admin user authenticates and gets metadata (the broker is ready)."""
        from confluent_kafka.admin import AdminClient

        from engine.kafka_clients import confluent_config

        assert self.process is not None
        assert self.process.poll() is None, f"the SASL broker exited; see {self.log}"
        if not stack._port_open(self.host, self.port):  # librdkafka would log every refused connect
            return False
        admin_settings = replace(self.settings_for(settings, ADMIN), kafka_sasl_mechanism=mechanism)
        admin = AdminClient(confluent_config(admin_settings, **{"socket.timeout.ms": 3000}))
        try:
            return len(admin.list_topics(timeout=3).brokers) == 1
        except Exception:
            return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait(timeout=10)


def new_sasl_broker(home: Path, users: list[str]) -> SaslBroker:
    """A broker (not started yet) with ``admin`` and ``users``, each with a fresh password."""
    import secrets

    home.mkdir(parents=True, exist_ok=True)
    # Passwords of letters and digits only: they go inside the JAAS string and the --add-scram value.
    passwords = {user: secrets.token_hex(12) for user in [ADMIN, *users]}
    return SaslBroker(home, _free_port(), _free_port(), passwords)
