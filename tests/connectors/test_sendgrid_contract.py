"""sendgrid: the standard connector suite, then Mail Send's own contract, over HTTP against its sandbox."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from starlette.types import ASGIApp

from connectors import sendgrid
from connectors.errors import NeedsAttentionError, PermanentError, RetryableError
from connectors.sendgrid.client import MAIL_SEND_PATH, SendGridClient
from connectors.sendgrid.handler import alert_email_job
from connectors.sendgrid.mapping import alert_mail
from connectors.sendgrid.sandbox import SandboxAccount, create_app
from engine import db
from engine.application import LedgerService
from engine.config import Settings
from streams.connectors.jobs import Job
from tests.connectors.contract import (
    ConnectorContract,
    ConnectorSettingsContract,
    LiveServer,
    Operator,
    SandboxFixtures,
)

ACCOUNT = SandboxAccount()


def an_alert(n: int = 1, tenant_id: str | None = None) -> dict[str, Any]:
    return {
        "alert_id": str(uuid4()),
        "tenant_id": tenant_id or str(uuid4()),
        "severity": "critical",
        "cause": "connector.dead_lettered",
        "subject": f"connector:gst-irp #{n}",
        "message": "gst-irp gave up on a job",
        "details": {"job_id": f"j-{n}"},
        "raised_at": "2026-12-02T10:00:00+00:00",
    }


class SendGridHarness:
    effect = "mail_accepted"
    effect_path = MAIL_SEND_PATH

    def create_app(self) -> ASGIApp:
        return create_app(ACCOUNT)

    def client(self, base_url: str, timeout: httpx.Timeout) -> SendGridClient:
        return SendGridClient(base_url, ACCOUNT.api_key, timeout=timeout)

    async def probe(self, client: SendGridClient) -> None:
        await client.scopes()

    async def perform_effect(self, client: SendGridClient, n: int) -> None:
        await client.send(alert_mail(an_alert(n), ["ops@example.com"], ACCOUNT.from_email))

    def secrets(self) -> list[str]:
        return [ACCOUNT.api_key]


class TestSendGridContract(ConnectorContract):
    harness = SendGridHarness()


class SendGridSettingsHarness:
    connector = sendgrid.CONNECTOR

    def create_app(self) -> ASGIApp:
        return create_app(ACCOUNT)

    def credentials(self) -> dict[str, str]:
        return ACCOUNT.credentials()

    def wrong_credentials(self) -> dict[str, str]:
        return {**ACCOUNT.credentials(), "api_key": "SG.not-the-key"}


class TestSendGridSettings(ConnectorSettingsContract):
    harness = SendGridSettingsHarness()


class TestMailSend(SandboxFixtures):
    harness = SendGridHarness()

    async def test_a_mail_is_accepted_with_202_and_an_id_and_recorded(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with SendGridClient(server.url, ACCOUNT.api_key) as client:
            message_id = await client.send(
                alert_mail(an_alert(), ["a@example.com", "b@example.com"], ACCOUNT.from_email)
            )

        [kept] = httpx.get(f"{server.url}/_sandbox/mails").json()["mails"]
        assert kept["message_id"] == message_id and message_id
        # One personalization per recipient: nobody sees the other addresses.
        assert [p["to"] for p in kept["mail"]["personalizations"]] == [
            [{"email": "a@example.com"}],
            [{"email": "b@example.com"}],
        ]

    @pytest.mark.parametrize(
        ("change", "error", "code"),
        [
            ({"personalizations": []}, PermanentError, "http_400"),
            ({"subject": ""}, PermanentError, "http_400"),
            ({"from": {"email": "someone@else.test"}}, NeedsAttentionError, "http_403"),
        ],
        ids=["no-recipient", "no-subject", "unverified-sender"],
    )
    async def test_refused_mails_are_classified(
        self, sandbox: Operator, server: LiveServer, change: dict[str, Any], error: type, code: str
    ) -> None:
        mail = {**alert_mail(an_alert(), ["a@example.com"], ACCOUNT.from_email), **change}
        async with SendGridClient(server.url, ACCOUNT.api_key) as client:
            with pytest.raises(error) as caught:
                await client.send(mail)
        assert caught.value.code == code
        assert sandbox.stats()["effects"]["mail_accepted"] == 0

    async def test_a_wrong_key_needs_a_person_and_is_never_echoed(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with SendGridClient(server.url, "SG.wrong-key") as client:
            with pytest.raises(NeedsAttentionError) as caught:
                await client.send(alert_mail(an_alert(), ["a@example.com"], ACCOUNT.from_email))
        assert caught.value.code == "http_401"
        assert "SG.wrong-key" not in f"{caught.value!r} {caught.value} {caught.value.details} {client!r}"

    async def test_a_429_is_retried_after_what_sendgrid_asks(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        sandbox.faults(rate_limit_rate=1.0, retry_after_s=7, paths=[MAIL_SEND_PATH])
        async with SendGridClient(server.url, ACCOUNT.api_key) as client:
            with pytest.raises(RetryableError) as caught:
                await client.send(alert_mail(an_alert(), ["a@example.com"], ACCOUNT.from_email))
        assert (caught.value.code, caught.value.retry_after) == ("http_429", 7.0)


@pytest.mark.integration
def test_the_handler_sends_an_alert_once_and_refuses_a_job_of_another_tenant(
    settings: Settings, service: LedgerService
) -> None:
    import asyncio

    from engine.security.secrets import load_key_ring
    from streams.catalogue import context_for
    from tests.integration.helpers import register_tenant

    with LiveServer(create_app(ACCOUNT)) as server:
        tenant, _ = register_tenant(service)
        service.save_integration(
            load_key_ring(settings.var_dir),
            UUID(tenant),
            "sendgrid",
            changed_by="test",
            enabled=True,
            environment="sandbox",
            base_url=server.url,
            credentials=ACCOUNT.credentials(),
            endpoints=sendgrid.ENDPOINTS,
            mode=settings.mode,
        )
        job = alert_email_job(an_alert(tenant_id=tenant), ["ops@example.com"])
        forged = Job(job.job_id, job.connector, job.kind, str(uuid4()), job.subject, job.payload)

        async def run() -> list[Any]:
            assert sendgrid.CONNECTOR.handler is not None
            handler = sendgrid.CONNECTOR.handler(
                context_for(settings, service, load_key_ring(settings.var_dir), sendgrid.CONNECTOR)
            )
            outcomes: list[Any] = []
            try:
                for j in (job, job, forged):
                    try:
                        outcomes.append((await handler(j, 1)).data)
                    except PermanentError as exc:
                        outcomes.append(exc.code)
            finally:
                await handler.close()
            return outcomes

        first, again, refused = asyncio.run(run())
        assert first["recipients"] == 1 and again["already_sent"] is True and refused == "malformed_job"
        assert Operator(server.url).stats()["effects"]["mail_accepted"] == 1
        with db.connect(settings) as conn:
            row = conn.execute("SELECT count(*) FROM sendgrid_alert_emails").fetchone()
        assert row is not None and row[0] == 1
