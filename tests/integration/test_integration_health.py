"""Integration health, logs, sync and removal, and the runtime's alerts, on the real Kafka and PostgreSQL.

The connector workers run a stand-in handler under the ``gst-irp`` name (the provider the tenant
configures): what is under test is what the runtime records and what the API makes of it.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
import pytest
from fastapi.testclient import TestClient

from connectors.errors import ConnectorError, PermanentError, RetryableError
from engine import kafka
from engine.application import LedgerService
from engine.config import Settings
from streams.connectors import (
    BreakerSettings,
    ConnectorSpec,
    ConnectorWorker,
    Job,
    JobResult,
    RetryPolicy,
    publish_job,
)
from tests.conftest import BackgroundLoop, wait_for
from tests.integration.helpers import client_for, register_tenant
from tests.integration.test_api_contract import assert_error_shape
from tests.integration.test_backbone import read_topic

pytestmark = pytest.mark.integration

SECRET = "p@ssw0rd-very-secret"
CREDENTIALS = {
    "client_id": "AAACR05TXPLE9Z1",
    "client_secret": "s3cr3t-client",
    "username": "api_user",
    "password": SECRET,
    "gstin": "29AAGCB7383J1Z4",
}
PROVIDER = "gst-irp"


class ScriptedProvider:
    """Fails the jobs named in ``failing`` with their error; every other job succeeds."""

    def __init__(self, failing: dict[str, ConnectorError] | None = None) -> None:
        self.failing = failing or {}
        self.fail_all: ConnectorError | None = None
        self._lock = threading.Lock()

    async def __call__(self, job: Job, attempt: int) -> JobResult:
        with self._lock:
            error = self.failing.get(job.job_id, self.fail_all)
        if error is not None:
            raise error
        return JobResult({})


def configure(client: TestClient, key: str) -> dict[str, str]:
    auth = {"Authorization": f"Bearer {key}"}
    body = {"enabled": True, "environment": "sandbox", "base_url": "http://127.0.0.1:9101"}
    saved = client.put(
        f"/v1/integrations/{PROVIDER}", json={**body, "credentials": CREDENTIALS}, headers=auth
    )
    assert saved.status_code == 200, saved.text
    return auth


def publish(settings: Settings, jobs: list[Job]) -> None:
    async def send() -> None:
        producer = await kafka.start_producer(settings, "reliable")
        try:
            for j in jobs:
                await publish_job(producer, settings, j)
        finally:
            await producer.stop()

    asyncio.run(send())


def job(tenant_id: str, job_id: str) -> Job:
    return Job(job_id, PROVIDER, "generate_irn", tenant_id, str(uuid.uuid4()), {})


def alerts(settings: Settings) -> list[dict[str, Any]]:
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        rows = conn.execute(
            "SELECT state FROM ledger_events WHERE topic LIKE %s", ("%Alert.Raised",)
        ).fetchall()
    return [orjson.loads(bytes(r[0])) for r in rows]


def item(client: TestClient, auth: dict[str, str]) -> dict[str, Any]:
    answer = client.get("/v1/integrations", headers=auth)
    assert answer.status_code == 200, answer.text
    [found] = [i for i in answer.json()["items"] if i["provider"] == PROVIDER]
    return dict(found)


@pytest.fixture
def run_worker(settings: Settings, background: BackgroundLoop) -> Iterator[Any]:
    def start(spec: ConnectorSpec) -> None:
        worker = ConnectorWorker(settings, [spec])
        background.start(worker.run)
        jobs_topic = settings.topic(f"connector.{spec.name}.jobs.v1")

        def holds_jobs() -> bool:
            background.check()
            return any(t == jobs_topic for t, _ in worker.assigned().get(spec.name, []))

        wait_for(holds_jobs, timeout=60, what="the worker holding the jobs partitions")

    yield start
    background.check()


def test_health_logs_and_one_alert_follow_successes_and_dead_letters(
    service: LedgerService, settings: Settings, run_worker: Any
) -> None:
    tenant, key = register_tenant(service)
    _, other_key = register_tenant(service)
    client = client_for(settings)
    auth = configure(client, key)
    other_auth = configure(client, other_key)

    fresh = item(client, auth)
    assert fresh["status"] == "active" and fresh["enabled"] is True
    assert fresh["health"]["attempts"] == 0 and fresh["health"]["score"] is None
    assert fresh["dlq_depth"] == 0 and fresh["circuit"]["state"] == "closed" and fresh["last_error"] is None
    assert fresh["credentials"]["password"]["set"] is True  # the settings fields are still there

    # A provider error that quotes the request back (with the password) must never surface.
    refusal = PermanentError("invoice_rejected", f"remote said: bad request for password={SECRET}")
    provider = ScriptedProvider({"j-3": refusal, "j-4": refusal, "j-5": refusal})
    run_worker(ConnectorSpec(PROVIDER, provider, RetryPolicy((0.2,)), alerts=service.raise_alert))
    publish(settings, [job(tenant, f"j-{n}") for n in range(1, 6)])

    after = wait_for(
        lambda: (i := item(client, auth))["health"]["attempts"] == 5 and i["dlq_depth"] == 3 and i,
        what="five attempts and three dead letters in the health fields",
    )
    assert (
        after["health"]["success_rate"] == pytest.approx(0.4)
        and after["health"]["score"] == after["health"]["success_rate"]
    )
    assert after["health"]["p95_latency_ms"] is not None and after["health"]["last_success_at"]
    assert after["status"] == "degraded"
    assert after["last_error"]["code"] == "invoice_rejected" and after["last_error"]["outcome"] == "permanent"
    listing = client.get("/v1/integrations", headers=auth).text
    assert SECRET not in listing and "remote said" not in listing

    # Logs page newest first, three then two, and leak nothing either.
    first = client.get(f"/v1/integrations/{PROVIDER}/logs", params={"limit": 3}, headers=auth)
    assert first.status_code == 200, first.text
    page = first.json()
    assert len(page["items"]) == 3 and page["next_cursor"]
    rest = client.get(
        f"/v1/integrations/{PROVIDER}/logs", params={"limit": 3, "cursor": page["next_cursor"]}, headers=auth
    ).json()
    assert len(rest["items"]) == 2 and rest["next_cursor"] is None
    every = page["items"] + rest["items"]
    assert sorted(i["job_id"] for i in every) == [f"j-{n}" for n in range(1, 6)]
    assert [int(i["id"]) for i in every] == sorted((int(i["id"]) for i in every), reverse=True)
    assert {i["outcome"] for i in every} == {"success", "permanent"}
    assert SECRET not in first.text + str(rest) and "remote said" not in first.text

    # Three dead letters of one connector within the window: one alert, about the connector.
    wait_for(lambda: alerts(settings), what="the dead-letter alert")
    raised = alerts(settings)
    assert [(a["cause"], a["subject"]) for a in raised] == [
        ("connector.dead_lettered", f"connector:{PROVIDER}")
    ]
    assert raised[0]["tenant_id"]["_data_"] == uuid.UUID(tenant).hex
    assert raised[0]["details"]["error_code"] == "invoice_rejected"
    assert SECRET not in orjson.dumps(raised).decode()

    # The other tenant configured the same provider and sees none of it.
    theirs = item(client, other_auth)
    assert theirs["health"]["attempts"] == 0 and theirs["dlq_depth"] == 0 and theirs["status"] == "active"
    assert client.get(f"/v1/integrations/{PROVIDER}/logs", headers=other_auth).json()["items"] == []


def test_an_open_circuit_shows_and_raises_one_alert(
    service: LedgerService, settings: Settings, run_worker: Any
) -> None:
    tenant, key = register_tenant(service)
    client = client_for(settings)
    auth = configure(client, key)
    provider = ScriptedProvider()
    provider.fail_all = RetryableError("irp_unavailable", "503 from the IRP")
    breaker = BreakerSettings(failure_threshold=2, open_for=600.0)
    run_worker(
        ConnectorSpec(
            PROVIDER, provider, RetryPolicy((0.2, 0.2)), breaker=breaker, alerts=service.raise_alert
        )
    )
    publish(settings, [job(tenant, f"c-{n}") for n in range(4)])

    opened = wait_for(
        lambda: (i := item(client, auth))["circuit"]["state"] == "open" and i, what="the circuit open"
    )
    assert opened["status"] == "circuit_open" and opened["circuit"]["opened_at"]
    assert opened["last_error"]["code"] == "irp_unavailable"
    wait_for(lambda: alerts(settings), what="the circuit alert")
    causes = [a["cause"] for a in alerts(settings)]
    assert causes == ["connector.circuit_open"]


def test_delete_disables_forgets_credentials_as_an_event_and_is_tenant_scoped(
    service: LedgerService, settings: Settings
) -> None:
    _, key = register_tenant(service)
    _, other_key = register_tenant(service)
    client = client_for(settings)
    auth = configure(client, key)
    other_auth = {"Authorization": f"Bearer {other_key}"}

    assert client.delete(f"/v1/integrations/{PROVIDER}", headers=other_auth).status_code == 404
    gone = client.delete(f"/v1/integrations/{PROVIDER}", headers=auth)
    assert gone.status_code == 204, gone.text
    shown = client.get(f"/v1/integrations/{PROVIDER}", headers=auth).json()
    assert shown["enabled"] is False
    assert not any(f["set"] for f in shown["credentials"].values())
    assert item(client, auth)["status"] == "disabled"

    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        rows = conn.execute(
            "SELECT state FROM ledger_events WHERE topic LIKE %s ORDER BY originator_version",
            ("%IntegrationSettingsChanged",),
        ).fetchall()
    removal = orjson.loads(bytes(rows[-1][0]))
    assert removal["enabled"] is False and sorted(removal["credentials_changed"]) == sorted(CREDENTIALS)

    # Switching it back on needs every credential again: nothing was kept.
    again = client.put(f"/v1/integrations/{PROVIDER}", json={"enabled": True}, headers=auth)
    assert again.status_code == 422, again.text
    assert_error_shape(again.json(), "invalid_credentials")
    assert client.delete("/v1/integrations/razorpay", headers=auth).status_code == 404


def test_sync_queues_the_connectors_sync_or_answers_409(
    service: LedgerService, settings: Settings, topics: list[str]
) -> None:
    from connectors.etims import demo_credentials

    tenant, key = register_tenant(service)
    client = client_for(settings)
    auth = {"Authorization": f"Bearer {key}"}

    refused = client.post(f"/v1/integrations/{PROVIDER}/sync", headers=auth)
    assert refused.status_code == 409
    assert_error_shape(refused.json(), "sync_not_supported")
    assert client.post("/v1/integrations/etims/sync", headers=auth).status_code == 404  # not configured

    body = {
        "enabled": True,
        "environment": "sandbox",
        "base_url": "http://127.0.0.1:9103",
        "credentials": demo_credentials(),
    }
    assert client.put("/v1/integrations/etims", json=body, headers=auth).status_code == 200
    listed = client.get("/v1/integrations", headers=auth).json()["items"]
    [etims] = [i for i in listed if i["provider"] == "etims"]
    assert etims["sync"] == {"supported": True, "last_sync_at": None, "next_sync_at": None}

    started = client.post("/v1/integrations/etims/sync", headers=auth)
    assert started.status_code == 202, started.text
    queued = started.json()["queued"]
    [message] = read_topic(settings, settings.topic("connector.etims.jobs.v1"), expected=1)
    assert queued in message.value().decode() and tenant in message.value().decode()

    assert client.put("/v1/integrations/etims", json={"enabled": False}, headers=auth).status_code == 200
    off = client.post("/v1/integrations/etims/sync", headers=auth)
    assert off.status_code == 409
    assert_error_shape(off.json(), "integration_disabled")


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        ("/v1/integrations/no-such/logs", {}, 422, "unknown_provider"),
        (f"/v1/integrations/{PROVIDER}/logs", {"cursor": "1; DROP TABLE x"}, 422, "validation_failed"),
        (f"/v1/integrations/{PROVIDER}/logs", {"cursor": "9" * 40}, 422, "validation_failed"),
        (f"/v1/integrations/{PROVIDER}/logs", {"cursor": "\u0000\u202e"}, 422, "validation_failed"),
        (f"/v1/integrations/{PROVIDER}/logs", {"limit": 10**12}, 422, "validation_failed"),
        (f"/v1/integrations/{PROVIDER}/logs", {"limit": -1}, 422, "validation_failed"),
    ],
    ids=["unknown-provider", "sql-cursor", "huge-cursor", "control-chars", "huge-limit", "negative-limit"],
)
def test_hostile_log_queries_get_a_clear_4xx(
    service: LedgerService, settings: Settings, path: str, params: dict[str, Any], status: int, code: str
) -> None:
    _, key = register_tenant(service)
    answer = client_for(settings).get(path, params=params, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == status, answer.text
    assert_error_shape(answer.json(), code)


def test_two_deletes_at_once_remove_it_once_and_never_answer_500(
    service: LedgerService, settings: Settings
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    _, key = register_tenant(service)
    client = client_for(settings)
    auth = configure(client, key)
    with ThreadPoolExecutor(2) as pool:
        statuses = sorted(
            pool.map(
                lambda _: client.delete(f"/v1/integrations/{PROVIDER}", headers=auth).status_code, range(2)
            )
        )
    assert statuses[0] == 204 and statuses[1] in (204, 409), statuses
    assert client.get(f"/v1/integrations/{PROVIDER}", headers=auth).json()["enabled"] is False
