"""Provider settings per tenant: credentials stored sealed, never returned, validated up front."""

from __future__ import annotations

import psycopg
import pytest

from engine.application import LedgerService
from engine.config import Settings
from tests.integration.helpers import client_for, register_tenant

pytestmark = pytest.mark.integration

CREDENTIALS = {
    "client_id": "AAACR05TXPLE9Z1",
    "client_secret": "s3cr3t-client",
    "username": "api_user",
    "password": "p@ssw0rd-very-secret",
    "gstin": "29AAGCB7383J1Z4",
}


def test_settings_are_stored_encrypted_and_only_their_presence_is_shown(
    service: LedgerService, settings: Settings
) -> None:
    _, key = register_tenant(service)
    client = client_for(settings)
    auth = {"Authorization": f"Bearer {key}"}
    body = {
        "enabled": True,
        "environment": "sandbox",
        "base_url": "http://127.0.0.1:9101",
        "credentials": CREDENTIALS,
    }
    saved = client.put("/v1/integrations/gst-irp", json=body, headers=auth)
    assert saved.status_code == 200, saved.text
    shown = saved.json()
    assert shown["enabled"] is True and shown["base_url"] == "http://127.0.0.1:9101"
    assert all(field["set"] and field["rotated_at"] for field in shown["credentials"].values())
    for secret in CREDENTIALS.values():
        assert secret not in saved.text
        assert secret not in client.get("/v1/integrations", headers=auth).text

    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        stored = conn.execute("SELECT credentials_sealed FROM integrations").fetchone()
    assert stored is not None and "p@ssw0rd" not in stored[0]

    # Rotating one field updates its rotation time and keeps the others.
    rotated = client.put(
        "/v1/integrations/gst-irp",
        json={**body, "credentials": {"password": "new-password"}},
        headers=auth,
    ).json()
    assert rotated["credentials"]["password"]["rotated_at"] > shown["credentials"]["password"]["rotated_at"]
    assert (
        rotated["credentials"]["client_id"]["rotated_at"] == shown["credentials"]["client_id"]["rotated_at"]
    )


@pytest.mark.parametrize(
    ("provider", "body", "code", "path"),
    [
        ("stripe-ish", {"base_url": "https://x.example"}, "unknown_provider", "provider"),
        ("gst-irp", {"base_url": "not a url", "credentials": CREDENTIALS}, "invalid_base_url", "base_url"),
        (
            "gst-irp",
            {"base_url": "ftp://x.example", "credentials": CREDENTIALS},
            "invalid_base_url",
            "base_url",
        ),
        (
            "gst-irp",
            {"base_url": "https://gsp.example", "credentials": {"client_id": "x"}},
            "invalid_credentials",
            "credentials.password",
        ),
    ],
    ids=["unknown-provider", "not-a-url", "not-http", "missing-credentials"],
)
def test_bad_settings_are_422_with_the_field(
    service: LedgerService, settings: Settings, provider: str, body: dict[str, object], code: str, path: str
) -> None:
    _, key = register_tenant(service)
    client = client_for(settings)
    response = client.put(
        f"/v1/integrations/{provider}", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert any(f["path"] == path for f in error["details"]["fields"]), error


def test_one_tenant_cannot_see_anothers_settings(service: LedgerService, settings: Settings) -> None:
    _, key_a = register_tenant(service)
    _, key_b = register_tenant(service)
    client = client_for(settings)
    body = {"base_url": "https://gsp.example", "credentials": CREDENTIALS}
    assert (
        client.put(
            "/v1/integrations/gst-irp", json=body, headers={"Authorization": f"Bearer {key_a}"}
        ).status_code
        == 200
    )
    assert (
        client.get("/v1/integrations/gst-irp", headers={"Authorization": f"Bearer {key_b}"}).status_code
        == 404
    )
    assert client.get("/v1/integrations", headers={"Authorization": f"Bearer {key_b}"}).json()["items"] == []


def test_test_connection_calls_the_provider_and_says_precisely_what_failed(
    service: LedgerService, settings: Settings
) -> None:
    from connectors.gst_irp.sandbox import SandboxAccount, create_app
    from tests.connectors.contract import LiveServer

    account = SandboxAccount()
    good = account.credentials()
    _, key = register_tenant(service)
    client = client_for(settings)
    auth = {"Authorization": f"Bearer {key}"}
    with LiveServer(create_app(account=account)) as irp:
        client.put("/v1/integrations/gst-irp", json={"base_url": irp.url, "credentials": good}, headers=auth)
        assert client.post("/v1/integrations/gst-irp/test", headers=auth).json()["ok"] is True

        client.put(
            "/v1/integrations/gst-irp",
            json={"base_url": irp.url, "credentials": {"password": "wrong"}},
            headers=auth,
        )
        failed = client.post("/v1/integrations/gst-irp/test", headers=auth).json()
        assert failed["ok"] is False
        assert failed["error"]["class"] == "needs_attention", failed
        assert "wrong" not in str(failed)

    # Nothing listens on port 1: the failure names the connection, not the credentials. (A new
    # base_url needs the credentials again: see test_integration_egress.py.)
    moved = client.put(
        "/v1/integrations/gst-irp",
        json={"base_url": "http://127.0.0.1:1", "credentials": good},
        headers=auth,
    )
    assert moved.status_code == 200, moved.text
    unreachable = client.post("/v1/integrations/gst-irp/test", headers=auth).json()
    assert unreachable["ok"] is False
    assert unreachable["error"]["class"] == "retryable" and "connect" in unreachable["error"]["code"], (
        unreachable
    )
