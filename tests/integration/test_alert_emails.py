"""Alerts by email end to end: an alert stored as an event, published by the relay on ledger.alert.v1,
kept by the alert worker, routed by the tenant's policy to the sendgrid connector, which sends it to
the SendGrid sandbox over real HTTP, once per alert even when the alert is delivered again."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from connectors import sendgrid
from connectors.sendgrid import sandbox
from engine import kafka
from engine.application import LedgerService
from engine.config import Settings
from engine.relay import Relay
from engine.security.secrets import load_key_ring
from streams.alerts import AlertWorker
from streams.catalogue import connector_specs
from streams.connectors import ConnectorWorker
from tests.conftest import BackgroundLoop, wait_for
from tests.connectors.contract import LiveServer
from tests.integration.helpers import client_for, register_tenant
from tests.integration.test_api_contract import assert_error_shape
from tests.integration.test_backbone import read_topic

pytestmark = pytest.mark.integration

ACCOUNT = sandbox.SandboxAccount()


def mails(server: LiveServer) -> list[dict[str, Any]]:
    return list(httpx.get(f"{server.url}/_sandbox/mails", timeout=5).json()["mails"])


def configure_sendgrid(client: TestClient, auth: dict[str, str], url: str) -> None:
    body = {"enabled": True, "environment": "sandbox", "base_url": url, "credentials": ACCOUNT.credentials()}
    saved = client.put("/v1/integrations/sendgrid", json=body, headers=auth)
    assert saved.status_code == 200, saved.text


def republish(settings: Settings, message: Any) -> None:
    async def send() -> None:
        producer = await kafka.start_producer(settings, "reliable")
        try:
            await producer.send_and_wait(
                message.topic(), value=message.value(), key=message.key(), headers=message.headers()
            )
        finally:
            await producer.stop()

    asyncio.run(send())


def test_a_critical_alert_is_emailed_per_policy_once_and_listed_for_its_tenant_only(
    service: LedgerService, settings: Settings, topics: list[str], background: BackgroundLoop
) -> None:
    tenant, key = register_tenant(service)
    other, other_key = register_tenant(service)
    client = client_for(settings)
    auth, other_auth = {"Authorization": f"Bearer {key}"}, {"Authorization": f"Bearer {other_key}"}

    with LiveServer(sandbox.create_app(ACCOUNT)) as mail_server:
        configure_sendgrid(client, auth, mail_server.url)
        configure_sendgrid(client, other_auth, mail_server.url)
        policy = {
            "email": [
                {"min_severity": "critical", "recipients": ["oncall@example.com", "cfo@example.com"]},
                {"min_severity": "warning", "recipients": ["ops@example.com", "oncall@example.com"]},
            ]
        }
        saved = client.put("/v1/alerts/policy", json=policy, headers=auth)
        assert saved.status_code == 200, saved.text
        assert client.get("/v1/alerts/policy", headers=auth).json()["email"] == policy["email"]
        assert client.get("/v1/alerts/policy", headers=other_auth).json() == {"email": [], "updated_at": None}

        from uuid import UUID

        service.raise_alert(
            UUID(tenant),
            severity="critical",
            cause="test.ledger_down",
            subject="ledger:1",
            message="look now",
        )
        service.raise_alert(
            UUID(tenant), severity="info", cause="test.note", subject="ledger:1", message="fyi"
        )
        # The other tenant has no policy: its alert is listed for it, never emailed.
        service.raise_alert(
            UUID(other), severity="critical", cause="test.other", subject="ledger:2", message="theirs"
        )

        specs, handlers = connector_specs(
            settings, service, load_key_ring(settings.var_dir), [sendgrid.CONNECTOR]
        )
        background.start(Relay(settings).run)
        background.start(AlertWorker(settings).run)
        background.start(ConnectorWorker(settings, specs).run)
        try:
            wait_for(
                lambda: len(client.get("/v1/alerts", headers=auth).json()["items"]) == 2,
                what="both alerts of the tenant listed",
            )
            [sent] = wait_for(lambda: mails(mail_server), what="the critical alert emailed")
            body = sent["mail"]
            assert sorted(p["to"][0]["email"] for p in body["personalizations"]) == [
                "cfo@example.com",
                "oncall@example.com",
                "ops@example.com",
            ]
            assert body["from"]["email"] == ACCOUNT.from_email and "test.ledger_down" in body["subject"]
            assert "look now" in body["content"][0]["value"]

            listed = client.get("/v1/alerts", headers=auth).json()["items"]
            assert [a["cause"] for a in listed] == ["test.note", "test.ledger_down"] or [
                a["cause"] for a in listed
            ] == ["test.ledger_down", "test.note"]
            critical = client.get("/v1/alerts", params={"min_severity": "critical"}, headers=auth).json()
            assert [a["cause"] for a in critical["items"]] == ["test.ledger_down"]
            theirs = wait_for(
                lambda: client.get("/v1/alerts", headers=other_auth).json()["items"], what="the other alert"
            )
            assert [a["cause"] for a in theirs] == ["test.other"]

            # The same alert delivered again: the same job runs again and sends nothing.
            alert_id = critical["items"][0]["alert_id"]
            [record] = [
                m
                for m in read_topic(settings, settings.topic("ledger.alert.v1"), expected=3)
                if alert_id.encode() in m.value()
            ]
            republish(settings, record)

            def attempts_of_the_job() -> int:
                logs = client.get("/v1/integrations/sendgrid/logs", headers=auth).json()["items"]
                return sum(
                    1 for a in logs if a["job_id"] == f"alert-email:{alert_id}" and a["outcome"] == "success"
                )

            wait_for(lambda: attempts_of_the_job() == 2, what="the redelivered alert's job handled")
            assert len(mails(mail_server)) == 1
            health = [i for i in client.get("/v1/integrations", headers=auth).json()["items"]]
            [mailer] = [i for i in health if i["provider"] == "sendgrid"]
            assert mailer["status"] == "active" and mailer["health"]["success_rate"] == 1.0
        finally:
            asyncio.run_coroutine_threadsafe(handlers.close(), background.loop).result(timeout=10)


@pytest.mark.parametrize(
    ("policy", "path"),
    [
        (
            {"email": [{"min_severity": "fatal", "recipients": ["a@example.com"]}]},
            "email[0].min_severity",
        ),
        ({"email": [{"min_severity": "info", "recipients": ["not-an-address"]}]}, "email[0].recipients[0]"),
        (
            {"email": [{"min_severity": "info", "recipients": ["a\u0000@example.com"]}]},
            "email[0].recipients[0]",
        ),
        (
            {"email": [{"min_severity": "info", "recipients": ["a@exam\u202eple.com"]}]},
            "email[0].recipients[0]",
        ),
        (
            {"email": [{"min_severity": "info", "recipients": ["x" * 300 + "@example.com"]}]},
            "email[0].recipients[0]",
        ),
        ({"email": [{"min_severity": "info", "recipients": []}]}, "email[0].recipients"),
        (
            {"email": [{"min_severity": "info", "recipients": [f"u{i}@example.com" for i in range(51)]}]},
            "email[0].recipients",
        ),
        ({"email": [], "sms": ["+254700000000"]}, "sms"),
    ],
    ids=["unknown-severity", "not-email", "nul", "bidi", "huge", "empty", "too-many", "unknown-field"],
)
def test_a_bad_policy_is_a_422_naming_the_field_and_changes_nothing(
    service: LedgerService, settings: Settings, policy: dict[str, Any], path: str
) -> None:
    _, key = register_tenant(service)
    client = client_for(settings)
    auth = {"Authorization": f"Bearer {key}"}
    answer = client.put("/v1/alerts/policy", json=policy, headers=auth)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert_error_shape(answer.json(), error["code"])
    assert any(f["path"].startswith(path) for f in error["details"]["fields"]), error
    assert client.get("/v1/alerts/policy", headers=auth).json()["email"] == []


def test_alerts_need_a_key_and_a_foreign_cursor_shows_nothing(
    service: LedgerService, settings: Settings
) -> None:
    _, key = register_tenant(service)
    client = client_for(settings)
    assert client.get("/v1/alerts").status_code == 401
    assert client.put("/v1/alerts/policy", json={"email": []}).status_code == 401
    page = client.get(
        "/v1/alerts",
        params={"cursor": "7d1c1a52-3f2e-4a55-9f7b-1b2f6f0d8c11"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert page.status_code == 200 and page.json() == {"items": [], "next_cursor": None}
    bad = client.get("/v1/alerts", params={"cursor": "1 OR 1=1"}, headers={"Authorization": f"Bearer {key}"})
    assert bad.status_code == 422
    assert_error_shape(bad.json(), "validation_failed")


def test_alerts_page_newest_first_and_a_redelivered_alert_is_kept_once(
    service: LedgerService, settings: Settings
) -> None:
    from uuid import uuid4

    from engine import alert_policy, db

    tenant, key = register_tenant(service)
    other, other_key = register_tenant(service)
    client = client_for(settings)

    def alert(tenant_id: str, minute: int) -> dict[str, Any]:
        return {
            "alert_id": str(uuid4()),
            "tenant_id": tenant_id,
            "severity": "warning",
            "cause": f"test.{minute}",
            "subject": "s",
            "message": "m",
            "details": {},
            "raised_at": f"2026-12-02T10:{minute:02d}:00+00:00",
        }

    mine = [alert(tenant, m) for m in (1, 2, 3)]
    theirs = alert(other, 4)
    with db.connect(settings) as conn, conn.transaction():
        assert all(alert_policy.record_alert(conn, a) for a in [*mine, theirs])
        assert alert_policy.record_alert(conn, mine[0]) is False  # delivered again

    auth = {"Authorization": f"Bearer {key}"}
    first = client.get("/v1/alerts", params={"limit": 2}, headers=auth).json()
    assert [a["cause"] for a in first["items"]] == ["test.3", "test.2"] and first["next_cursor"]
    rest = client.get("/v1/alerts", params={"limit": 2, "cursor": first["next_cursor"]}, headers=auth).json()
    assert [a["cause"] for a in rest["items"]] == ["test.1"] and rest["next_cursor"] is None
    # Another tenant's alert id as a cursor shows nothing of either tenant.
    foreign = client.get("/v1/alerts", params={"cursor": theirs["alert_id"]}, headers=auth).json()
    assert foreign["items"] == []
    assert [
        a["cause"]
        for a in client.get("/v1/alerts", headers={"Authorization": f"Bearer {other_key}"}).json()["items"]
    ] == ["test.4"]
