"""docker-compose.yml's Kafka access control, run without Docker: the `kafka` service's environment
turned into broker properties, its `kafka-users` script and its `kafka-acls` command, against a
broker of this test's own (free ports, a tmp dir).

There is no Docker engine here, so two steps of Docker are done by hand, as documented for the
apache/kafka image and for Compose: ``KAFKA_A_B`` becomes the property ``a.b`` (``__`` an underscore,
``___`` a dash), and ``${VAR}``, ``${VAR:?message}`` and ``$$`` are interpolated. Only the addresses
and the data directory are changed to this test's.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaProducer
from aiokafka.errors import TopicAuthorizationFailedError

from engine.config import PROJECT_ROOT, Settings
from engine.kafka_clients import aiokafka_kwargs
from ops import stack
from tests.conftest import wait_for
from tests.integration.sasl_broker import new_sasl_broker

pytestmark = pytest.mark.integration

PASSWORDS = {
    "KAFKA_ADMIN_PASSWORD": "admin",
    "KAFKA_ENGINE_PASSWORD": "engine",
    "KAFKA_INGEST_PRODUCER_PASSWORD": "ingest-producer",
    "KAFKA_LEDGER_READER_PASSWORD": "ledger-reader",
}


def interpolated_compose(passwords: dict[str, str]) -> dict[str, Any]:
    text = (PROJECT_ROOT / "docker-compose.yml").read_text()

    def variable(match: re.Match[str]) -> str:
        return passwords.get(match.group(1), os.environ.get(match.group(1), "unset"))

    text = re.sub(r"(?<!\$)\$\{(\w+)(?::\?[^}]*)?\}", variable, text).replace("$$", "$")
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def image_property(variable: str) -> str:
    name = variable.removeprefix("KAFKA_").lower()
    return name.replace("___", "-").replace("__", "\0").replace("_", ".").replace("\0", "_")


def produce(settings: Settings, topic: str) -> None:
    async def send() -> None:
        producer = AIOKafkaProducer(**aiokafka_kwargs(settings), acks="all", enable_idempotence=True)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"{}")
        finally:
            await producer.stop()

    asyncio.run(send())


def test_the_compose_kafka_service_and_its_one_shots_give_each_user_only_its_acls(
    settings: Settings, tmp_path: Path
) -> None:
    compose = interpolated_compose(PASSWORDS)
    services = compose["services"]
    broker = new_sasl_broker(tmp_path / "kafka", [])
    ours = {
        "listeners": f"SASL://{broker.host}:{broker.port},CONTROLLER://{broker.host}:{broker.controller_port}",
        "advertised.listeners": f"SASL://{broker.host}:{broker.port}",
        "controller.quorum.voters": f"1@{broker.host}:{broker.controller_port}",
        "log.dirs": str(broker.data),
    }
    properties = {image_property(k): str(v) for k, v in services["kafka"]["environment"].items()}
    properties.update(ours)
    broker.passwords["admin"] = PASSWORDS["KAFKA_ADMIN_PASSWORD"]
    broker.start(settings, "".join(f"{k}={v}\n" for k, v in properties.items()), scram_users=False)
    try:
        wait_for(
            lambda: broker.answers_as_admin(settings, mechanism="PLAIN"),
            timeout=120,
            interval=0.5,
            what="the compose broker answers the PLAIN admin",
        )
        bootstrap = broker.bootstrap

        # kafka-users: its script, with kafka-configs.sh as the class that script runs.
        config_command = shlex.join(
            stack._java_command(stack._kafka_paths(settings), "kafka.admin.ConfigCommand")
        )
        users = services["kafka-users"]
        script = (
            users["command"][0]
            .replace("/opt/kafka/bin/kafka-configs.sh", config_command)
            .replace("kafka:9092", bootstrap)
        )
        made = subprocess.run(
            [*users["entrypoint"], script],
            env={**os.environ, **{k: str(v) for k, v in users["environment"].items()}},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert made.returncode == 0, made.stdout + made.stderr
        assert made.stdout.count("Completed updating config for user") == 3

        # kafka-acls: the engine image's command with the service's environment.
        acls = services["kafka-acls"]
        env = {k: str(v) for k, v in acls["environment"].items()}
        applied = subprocess.run(
            [sys.executable, "-m", "engine.cli", *acls["command"]],
            env={**os.environ, **env, "LEDGERFLOW_KAFKA": bootstrap},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert applied.returncode == 0, applied.stdout + applied.stderr

        # Every engine service's Kafka settings (the x-ledgerflow environment), as `topics` uses them.
        engine_env = compose["x-ledgerflow"]["environment"]
        engine = replace(
            settings,
            kafka_bootstrap=bootstrap,
            topic_prefix="",
            kafka_security_protocol=engine_env["LEDGERFLOW_KAFKA_SECURITY_PROTOCOL"],
            kafka_sasl_mechanism=engine_env["LEDGERFLOW_KAFKA_SASL_MECHANISM"],
            kafka_username=engine_env["LEDGERFLOW_KAFKA_USERNAME"],
            kafka_password=engine_env["LEDGERFLOW_KAFKA_PASSWORD"],
        )
        assert engine.kafka_username == "engine" and engine.kafka_password == "engine"
        stack.ensure_topics(engine, ["ingest.invoice.v1", "ledger.invoice.v1"], 1)
        produce(engine, "ledger.invoice.v1")

        producer = replace(engine, kafka_username="ingest-producer", kafka_password="ingest-producer")
        produce(producer, "ingest.invoice.v1")
        with pytest.raises(TopicAuthorizationFailedError):
            produce(producer, "ledger.invoice.v1")
    finally:
        broker.stop()
