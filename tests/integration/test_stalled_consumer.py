"""A consumer that stops making progress while records keep arriving is reported stalled by
``ledgerflow lag --check`` (exit 1), by ``GET /healthz/consumers`` (503) and by the API's lag
monitor; once it consumes again it is ok again. Real broker, real database, a real consumer group.

The stuck consumer is a plain aiokafka consumer that stops calling ``getmany`` (as one whose
handler hangs on a message or on a lock): it stays a member of its group, because aiokafka keeps
heartbeating in the background, so Kafka alone still calls the group ``Stable``.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import uuid
from dataclasses import replace
from typing import Any

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from click.testing import CliRunner, Result

from engine.cli import main
from engine.config import Settings
from ops.lag import lag
from tests.conftest import BackgroundLoop, wait_for
from tests.integration.helpers import client_for
from tests.integration.processes import free_port, settings_env

pytestmark = pytest.mark.integration

STALL_AFTER = "2"
TOPIC = "ledger.invoice.v1"


class Consumer:
    """A consumer of ``topic`` in ``group`` that commits after each batch while ``polling`` is set,
    and otherwise stops polling without leaving the group."""

    def __init__(self, settings: Settings, group: str, topic: str) -> None:
        self.settings = settings
        self.group = group
        self.topic = topic
        self.polling = asyncio.Event()
        self.polling.set()
        self.consumed = 0
        self.stuck = False
        """True once the consumer has stopped polling (its last batch committed)."""

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
        )
        await consumer.start()
        try:
            while not stop.is_set():
                self.stuck = not self.polling.is_set()
                if self.stuck:
                    # Stuck: no poll, no commit, until resumed (or stopped).
                    resumed = asyncio.ensure_future(self.polling.wait())
                    stopped = asyncio.ensure_future(stop.wait())
                    await asyncio.wait({resumed, stopped}, return_when=asyncio.FIRST_COMPLETED)
                    resumed.cancel()
                    stopped.cancel()
                    continue
                batches = await consumer.getmany(timeout_ms=200)
                if batches:
                    self.consumed += sum(len(records) for records in batches.values())
                    await consumer.commit()
        finally:
            await consumer.stop()


async def produce(settings: Settings, topic: str, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(count):
            # Distinct keys spread the records over every partition.
            await producer.send_and_wait(topic, value=b"{}", key=uuid.uuid4().bytes + bytes([i % 256]))
    finally:
        await producer.stop()


def lag_cli(settings: Settings, *args: str) -> Result:
    return CliRunner().invoke(main, ["lag", *args], env=settings_env(settings))


def group_status(result: Result, group: str) -> str:
    """The STATUS column of ``group``'s line in ``ledgerflow lag`` output."""
    for line in result.stdout.splitlines():
        if line.startswith(f"{group} "):
            return line[len(group) :].split()[0] if "no members" not in line else "no members"
    raise AssertionError(f"no line for {group} in:\n{result.output}")


def samples_of(settings: Settings, group: str) -> int:
    with psycopg.connect(
        settings.database_url, options=f"-c search_path={settings.db_schema}", connect_timeout=5
    ) as conn:
        row = conn.execute(
            "SELECT count(*) FROM consumer_lag_samples WHERE group_id = %s", (group,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_consumer_that_stops_consuming_is_reported_stalled_and_ok_again_once_it_resumes(
    settings: Settings,
    topics: list[str],
    background: BackgroundLoop,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    topic = settings.topic(TOPIC)
    group = f"{settings.topic_prefix}ledgerflow.test-consumer"
    check = ["--group", group, "--check", "--stall-after", STALL_AFTER]
    consumer = Consumer(settings, group, topic)
    background.start(consumer.run)
    # The API with a short stall limit and its lag monitor sampling five times a second.
    monkeypatch.setenv("LEDGERFLOW_STALL_AFTER_S", STALL_AFTER)
    monkeypatch.setenv("LEDGERFLOW_LAG_SAMPLE_S", "0.2")
    caplog.set_level(logging.INFO, logger="ledgerflow.lag")
    api = client_for(settings)

    def health() -> tuple[int, dict[str, Any]]:
        response = api.get("/healthz/consumers", params={"group": group})
        return response.status_code, response.json()

    # 1. Consuming: everything read and committed, the group ok.
    asyncio.run(produce(settings, topic, 12))
    wait_for(lambda: consumer.consumed >= 12, what="the consumer reading the first 12 records")
    first = wait_for(
        lambda: (r := lag_cli(settings, *check)).exit_code == 0 and group_status(r, group) == "ok" and r,
        what=f"{group} ok in `ledgerflow lag`",
    )
    assert f"{group}  ok" in first.stdout
    status, body = health()
    assert status == 200, body
    assert body["status"] == "ok"
    assert [(g["group"], g["status"], g["lag"]) for g in body["groups"]] == [(group, "ok", 0)]

    # 2. Stuck while records keep arriving.
    background.loop.call_soon_threadsafe(consumer.polling.clear)
    wait_for(lambda: consumer.stuck, what="the consumer to stop polling")
    asyncio.run(produce(settings, topic, 30))
    stalled = wait_for(
        lambda: (r := lag_cli(settings, *check)).exit_code == 1 and r,
        what=f"`ledgerflow lag --check` exiting 1 for {group}",
    )
    assert group_status(stalled, group) == "stalled"
    assert f"no progress for {STALL_AFTER}s or more while records wait: {topic}[" in stalled.stdout
    assert f"stalled: {group}" in stalled.stderr
    # Kafka alone sees nothing wrong: the stuck consumer is still a member of a stable group.
    (described,) = lag(settings, [group])
    assert (described.state, described.members, described.total) == ("Stable", 1, 30)

    # What a probe runs: the real command, its exit status.
    probe = subprocess.run(
        [sys.executable, "-m", "engine.cli", "lag", *check],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 1, probe.stdout + probe.stderr

    # The endpoint reuses a sample for a few seconds (probes may come every second).
    status, body = wait_for(lambda: (h := health())[0] == 503 and h, what="the endpoint answering 503")
    error = body["error"]
    assert error["code"] == "consumers_stalled"
    assert error["details"]["stalled"] == [group]
    assert f"1 consumer group(s) stalled: {group}: no progress" in error["message"]
    (reported,) = error["details"]["groups"]
    assert reported["status"] == "stalled" and reported["lag"] == 30 and reported["members"] == 1
    assert reported["stalled_partitions"], reported
    assert all(p["topic"] == topic and p["lag_now"] > 0 for p in reported["stalled_partitions"])
    assert sum(p["lag_now"] for p in reported["stalled_partitions"]) == 30

    # The monitor in the API process noticed it on its own and said so in the log.
    wait_for(
        lambda: any(f"consumer group {group} stalled" in r.getMessage() for r in caplog.records),
        what="the lag monitor logging the stall",
    )

    # --sample compares two samples taken in one run.
    sampled = lag_cli(settings, "--group", group, "--sample", "0.1", "--stall-after", "3600")
    assert sampled.exit_code == 0, sampled.output
    assert group_status(sampled, group) == "lagging"
    assert "sampling again in 0.1s" in sampled.stderr
    assert "lag 30; longest without progress:" in sampled.stdout

    # 3. Consuming again: ok again, for the command, the endpoint and the monitor.
    background.loop.call_soon_threadsafe(consumer.polling.set)
    wait_for(lambda: consumer.consumed >= 42, what="the resumed consumer reading the 30 waiting records")
    recovered = wait_for(
        lambda: (r := lag_cli(settings, *check)).exit_code == 0 and group_status(r, group) == "ok" and r,
        what=f"{group} ok again in `ledgerflow lag --check`",
    )
    assert "stalled" not in recovered.stderr
    status, body = wait_for(lambda: (h := health())[0] == 200 and h, what="the endpoint answering 200 again")
    assert body["groups"][0]["status"] == "ok"
    wait_for(
        lambda: any(f"consumer group {group} no longer stalled" in r.getMessage() for r in caplog.records),
        what="the lag monitor logging the recovery",
    )
    # The monitor keeps sampling with nobody asking: the history grows by itself.
    before = samples_of(settings, group)
    wait_for(lambda: samples_of(settings, group) > before, what="the lag monitor storing another sample")
    background.check()


def test_bad_input_gets_a_clear_answer(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    result = lag_cli(settings, "--sample", "-1")
    assert result.exit_code == 2
    assert "Invalid value for '--sample'" in result.output
    result = lag_cli(settings, "--stall-after", "0")
    assert result.exit_code == 2
    assert "Invalid value for '--stall-after'" in result.output

    monkeypatch.setenv("LEDGERFLOW_STALL_AFTER_S", "soon")
    result = lag_cli(settings)
    assert result.exit_code == 2
    assert "LEDGERFLOW_STALL_AFTER_S='soon': expected a number of seconds" in result.output

    monkeypatch.setenv("LEDGERFLOW_STALL_AFTER_S", "60")
    monkeypatch.setenv("LEDGERFLOW_LAG_SAMPLE_S", "0")
    response = client_for(settings).get("/healthz/consumers", params={"group": " "})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_failed"
    # Unauthenticated: another application's group on a shared broker is not the probe's business.
    foreign = client_for(settings).get("/healthz/consumers", params={"group": "billing-app.consumers"})
    assert foreign.status_code == 422
    assert "only the engine's consumer groups" in foreign.json()["error"]["message"]


def test_kafka_out_of_reach_fails_the_check_and_the_endpoint_with_a_precise_message(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    nowhere = replace(settings, kafka_bootstrap=f"127.0.0.1:{free_port()}")
    result = lag_cli(nowhere, "--check")
    assert result.exit_code == 1
    assert f"Error: Kafka at {nowhere.kafka_bootstrap} did not answer" in result.output

    monkeypatch.setenv("LEDGERFLOW_LAG_SAMPLE_S", "0")
    response = client_for(nowhere).get("/healthz/consumers")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "kafka_unavailable"
    assert response.headers["Retry-After"] == "5"


def test_without_postgresql_lag_still_answers_but_the_endpoint_cannot_vouch(
    settings: Settings, topics: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    no_database = replace(
        settings, database_url=f"postgresql://ledgerflow:ledgerflow@127.0.0.1:{free_port()}/ledgerflow"
    )
    result = lag_cli(no_database, "--check")
    assert result.exit_code == 0, result.output
    assert "PostgreSQL unavailable: lag history neither stored nor read" in result.stderr

    monkeypatch.setenv("LEDGERFLOW_LAG_SAMPLE_S", "0")
    response = client_for(no_database).get("/healthz/consumers")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "database_unavailable"
    assert response.headers["Retry-After"] == "5"
