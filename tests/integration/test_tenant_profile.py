"""Tenant profile, named API keys and operator onboarding, on the real PostgreSQL, Kafka and API.

Every change is an event on the Tenant aggregate naming who made it; provider settings changes too,
without a secret in them.
"""

from __future__ import annotations

import io
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import fastavro
import orjson
import psycopg
import pytest
from confluent_kafka import Consumer

from connectors.gst_irp.sandbox import create_app as irp_sandbox
from engine.application import LedgerService
from engine.config import Settings
from engine.relay import Relay
from engine.security import api_keys
from tests.conftest import BackgroundLoop, wait_for
from tests.connectors.contract import LiveServer
from tests.integration.helpers import (
    IRP_ACCOUNT,
    IRP_SELLER_ADDRESS,
    IRP_SELLER_GSTIN,
    client_for,
    invoice_body,
    register_tenant,
)
from tests.integration.processes import Processes, settings_env

pytestmark = pytest.mark.integration

OPERATOR_TOKEN = "op-" + uuid.uuid4().hex
CANARY_PASSWORD = "canary-pw-" + uuid.uuid4().hex


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def key_id(api_key: str) -> str:
    parsed = api_keys.parse(api_key)
    assert parsed is not None
    return parsed[0]


def stored_events(settings: Settings, tenant_id: str, kind: str) -> list[dict[str, Any]]:
    """The tenant's stored events of one type, as the event store holds them (JSON state)."""
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        rows = conn.execute(
            "SELECT state FROM ledger_events WHERE originator_id = %s AND topic = %s"
            " ORDER BY originator_version",
            (tenant_id, f"engine.domain.tenant:Tenant.{kind}"),
        ).fetchall()
    return [orjson.loads(bytes(r[0])) for r in rows]


def raw_rows(settings: Settings, tenant_id: str) -> bytes:
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        rows = conn.execute(
            "SELECT topic, state FROM ledger_events WHERE originator_id = %s", (tenant_id,)
        ).fetchall()
    return b"\n".join(r[0].encode() + b" " + bytes(r[1]) for r in rows)


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        env=settings_env(settings),
        capture_output=True,
        timeout=120,
    )


# -- the README path for a new tenant -----------------------------------------------------------


@pytest.fixture
def irp_url() -> Iterator[str]:
    with LiveServer(irp_sandbox(account=IRP_ACCOUNT)) as server:
        yield server.url


@pytest.fixture
def processes(settings: Settings, tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(replace(settings, retry_delays=(0, 1, 1, 2, 3), breaker_open_seconds=2), tmp_path)
    yield procs
    procs.close()


def test_a_tenant_created_with_the_cli_and_its_address_gets_an_irn_for_an_invoice_sent_over_http(
    settings: Settings, topics: list[str], irp_url: str, processes: Processes
) -> None:
    created = cli(
        settings,
        "tenants",
        "create",
        "--trade-name",
        "Demo",
        "--legal-name",
        "Demo Electricals Private Limited",
        "--gstin",
        IRP_SELLER_GSTIN,
        "--state",
        "KA",
        "--address-line1",
        IRP_SELLER_ADDRESS["line1"],
        "--city",
        IRP_SELLER_ADDRESS["city"],
        "--pincode",
        IRP_SELLER_ADDRESS["pincode"],
        "--json",
    )
    assert created.returncode == 0, created.stderr.decode()
    api_key = orjson.loads(created.stdout)["api_key"]
    client = client_for(settings)
    auth = bearer(api_key)
    saved = client.put(
        "/v1/integrations/gst-irp",
        json={
            "enabled": True,
            "environment": "sandbox",
            "base_url": irp_url,
            "credentials": IRP_ACCOUNT.credentials(),
        },
        headers=auth,
    )
    assert saved.status_code == 200, saved.text
    issued = client.post("/v1/invoices", json=invoice_body("NEW-1"), headers=auth)
    assert issued.status_code == 201, issued.text
    invoice_id = issued.json()["id"]

    engine = [processes.start("relay"), processes.start("worker"), processes.start("connectors", "run")]

    def irn() -> Any:
        processes.assert_alive(*engine)
        einvoice = client.get(f"/v1/invoices/{invoice_id}", headers=auth).json()["einvoice"]
        assert einvoice is None or einvoice.get("status") != "failed", einvoice
        return einvoice and einvoice.get("irn")

    found = wait_for(irn, timeout=120, interval=0.5, what="the new tenant's invoice getting its IRN")
    assert len(found) == 64
    profile = client.get("/v1/tenant", headers=auth).json()
    assert profile["einvoicing_enabled"] is True
    assert profile["address"]["pincode"] == IRP_SELLER_ADDRESS["pincode"]


def test_the_cli_switches_einvoicing_through_the_integration_and_refuses_it_without_one(
    settings: Settings, service: LedgerService
) -> None:
    tenant_id, api_key = register_tenant(service)
    refused = cli(settings, "tenants", "update", tenant_id, "--einvoicing")
    assert refused.returncode != 0
    assert b"PUT /v1/integrations/gst-irp" in refused.stderr
    client = client_for(settings)
    saved = client.put(
        "/v1/integrations/gst-irp",
        json={
            "enabled": False,
            "base_url": "http://127.0.0.1:9/irp",
            "credentials": IRP_ACCOUNT.credentials(),
        },
        headers=bearer(api_key),
    )
    assert saved.status_code == 200, saved.text
    assert client.get("/v1/tenant", headers=bearer(api_key)).json()["einvoicing_enabled"] is False

    switched = cli(settings, "tenants", "update", tenant_id, "--einvoicing", "--city", "Pune", "--json")
    assert switched.returncode != 0  # an address needs its first line: nothing is changed
    assert b"--address-line1" in switched.stderr
    switched = cli(settings, "tenants", "update", tenant_id, "--einvoicing", "--trade-name", "Tee", "--json")
    assert switched.returncode == 0, switched.stderr.decode()
    assert orjson.loads(switched.stdout)["einvoicing_enabled"] is True
    assert client.get("/v1/integrations/gst-irp", headers=bearer(api_key)).json()["enabled"] is True
    (rename,) = stored_events(settings, tenant_id, "ProfileUpdated")
    assert rename["changed_by"].startswith("operator:cli")
    assert rename["changes"] == {"name": {"old": "Test Tenant", "new": "Tee"}}


def test_the_demo_tenant_starts_with_an_address_and_einvoicing_on_through_its_integration(
    settings: Settings, tmp_path: Path
) -> None:
    from ops.supervisor import demo_tenant

    demo = demo_tenant(replace(settings, var_dir=tmp_path, mode="development"))
    client = client_for(settings)
    profile = client.get("/v1/tenant", headers=bearer(demo["api_key"])).json()
    assert profile["einvoicing_enabled"] is True
    assert profile["address"]["pincode"] == "560025"
    # One recorded change per connector with a demo sandbox (gst-irp, gstin-lookup, ...).
    recorded = stored_events(settings, demo["tenant_id"], "IntegrationSettingsChanged")
    changes = {c["provider"]: c for c in recorded}
    change = changes["gst-irp"]
    assert (change["enabled"], change["changed_by"]) == (True, "operator:demo")
    assert all(c["changed_by"] == "operator:demo" for c in changes.values())


# -- the caller's own profile -------------------------------------------------------------------


def test_a_profile_change_is_an_event_with_who_old_and_new_and_get_shows_the_new_profile(
    settings: Settings, service: LedgerService
) -> None:
    tenant_id, api_key = register_tenant(service)
    client = client_for(settings)
    change = {
        "trade_name": "Test Traders",
        "address": {"line1": "12 Market Road", "city": "Pune", "pincode": "411001"},
        "branches": [{"name": "Nashik", "address": {"line1": "3 MG Road", "city": "Nashik"}}],
        "contacts": [{"name": "Asha Rao", "role": "accounts", "email": "asha@test.example"}],
    }
    patched = client.patch("/v1/tenant", json=change, headers=bearer(api_key))
    assert patched.status_code == 200, patched.text

    profile = client.get("/v1/tenant", headers=bearer(api_key)).json()
    assert profile["tenant_id"] == tenant_id
    assert profile["trade_name"] == "Test Traders"
    assert profile["address"] == {**change["address"], "line2": None}
    assert profile["branches"][0]["address"]["city"] == "Nashik"
    assert profile["contacts"][0]["email"] == "asha@test.example"
    assert profile["gstin"] == "27AAGCB7383J1Z8"

    (event,) = stored_events(settings, tenant_id, "ProfileUpdated")
    assert event["changed_by"] == f"api_key:{key_id(api_key)}"
    assert event["changes"]["name"] == {"old": "Test Tenant", "new": "Test Traders"}
    assert event["changes"]["address"]["old"] is None
    assert event["changes"]["address"]["new"]["pincode"] == "411001"
    assert event["changes"]["contacts"]["old"] == []

    # The same values again change nothing and record nothing.
    assert client.patch("/v1/tenant", json=change, headers=bearer(api_key)).status_code == 200
    assert len(stored_events(settings, tenant_id, "ProfileUpdated")) == 1


@pytest.mark.parametrize(
    "change, field",
    [
        ({"gstin": "27AABCT1332L1ZA"}, "gstin"),
        ({"state": "29"}, "state"),
        ({"country": "KE"}, "country"),
        ({"legal_name": "Someone Else Ltd", "trade_name": "X"}, "legal_name"),
    ],
)
def test_the_legal_identity_cannot_change(
    settings: Settings, service: LedgerService, change: dict[str, str], field: str
) -> None:
    tenant_id, api_key = register_tenant(service)
    client = client_for(settings)
    refused = client.patch("/v1/tenant", json=change, headers=bearer(api_key))
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "validation_failed"
    assert {f["path"]: f["code"] for f in error["details"]["fields"]} == {field: "legal_identity_immutable"}
    assert error["request_id"] and error["timestamp"]
    assert client.get("/v1/tenant", headers=bearer(api_key)).json()["trade_name"] == "Test Tenant"
    assert stored_events(settings, tenant_id, "ProfileUpdated") == []
    # The registered values themselves, in another notation, are not a change.
    same = client.patch(
        "/v1/tenant", json={"state": "MH", "gstin": "27aagcb7383j1z8"}, headers=bearer(api_key)
    )
    assert same.status_code == 200, same.text


def test_bad_profile_values_are_422_with_the_field(settings: Settings, service: LedgerService) -> None:
    _, api_key = register_tenant(service)
    client = client_for(settings)
    refused = client.patch(
        "/v1/tenant",
        json={"address": {"line1": "1 Road", "city": "Pune", "pincode": "12"}, "contacts": [{"email": "x"}]},
        headers=bearer(api_key),
    )
    assert refused.status_code == 422
    paths = {f["path"] for f in refused.json()["error"]["details"]["fields"]}
    assert {"address.pincode", "contacts[0].name", "contacts[0].email"} <= paths


class StaleReads(LedgerService):
    """The real service, except that it reads the tenant as it was before: a request whose read
    happened just before another request's write."""

    stale: Any = None

    def get_tenant(self, tenant_id: Any) -> Any:
        return self.stale or super().get_tenant(tenant_id)


def test_a_change_racing_another_change_of_the_tenant_is_409_and_stores_nothing(
    settings: Settings, service: LedgerService
) -> None:
    from engine.application import TenantChangedConcurrently

    tenant_id = uuid.UUID(register_tenant(service)[0])
    first_racer, second_racer = (StaleReads(settings, service.ledger, service.pool) for _ in range(2))
    first_racer.stale = service.get_tenant(tenant_id)
    second_racer.stale = service.get_tenant(tenant_id)
    service.update_profile(tenant_id, "api_key:first", {"name": "First"})
    with pytest.raises(TenantChangedConcurrently):
        first_racer.add_api_key(tenant_id, "late", "api_key:second")
    with pytest.raises(TenantChangedConcurrently):
        second_racer.update_profile(tenant_id, "api_key:second", {"name": "Second"})
    names = [k["name"] for k in service.list_api_keys(tenant_id)]
    assert names == ["default"]  # the key row went with the refused event
    assert service.get_tenant(tenant_id).name == "First"


# -- named API keys ---------------------------------------------------------------------------------


def test_named_keys_are_added_listed_without_secrets_rotated_one_at_a_time_and_revoked(
    settings: Settings, service: LedgerService
) -> None:
    tenant_id, first = register_tenant(service)
    client = client_for(settings)
    added = client.post("/v1/tenant/api-keys", json={"name": "erp"}, headers=bearer(first))
    assert added.status_code == 201, added.text
    erp = added.json()
    other = client.post("/v1/tenant/api-keys", json={"name": "bi"}, headers=bearer(first)).json()
    assert client.get("/v1/invoices", headers=bearer(erp["api_key"])).status_code == 200

    listed = client.get("/v1/tenant/api-keys", headers=bearer(first))
    assert listed.status_code == 200
    items = {k["key_id"]: k for k in listed.json()["items"]}
    assert {k["name"] for k in items.values()} == {"default", "erp", "bi"}
    assert items[erp["key_id"]]["last_used_at"] is not None  # it was used just above
    for secret in (first, erp["api_key"], other["api_key"]):
        assert api_keys.parse(secret)[1] not in listed.text  # type: ignore[index]

    rotated = client.post(f"/v1/tenant/api-keys/{erp['key_id']}/rotate", headers=bearer(first))
    assert rotated.status_code == 201, rotated.text
    new_erp = rotated.json()
    assert new_erp["name"] == "erp" and new_erp["replaces"] == erp["key_id"]
    assert new_erp["replaced_key_valid_until"] is not None
    # The old erp key works during the grace period; the other keys are untouched.
    for key in (erp["api_key"], new_erp["api_key"], other["api_key"], first):
        assert client.get("/v1/invoices", headers=bearer(key)).status_code == 200
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        expiring = conn.execute(
            "SELECT key_id FROM api_keys WHERE tenant_id = %s AND expires_at IS NOT NULL", (tenant_id,)
        ).fetchall()
    assert [r[0] for r in expiring] == [erp["key_id"]]

    revoked = client.delete(f"/v1/tenant/api-keys/{other['key_id']}", headers=bearer(first))
    assert revoked.status_code == 204, revoked.text
    # Authentication is cached for a few seconds (AUTH_CACHE_SECONDS) in other processes; a fresh
    # app (another API process) refuses the revoked key at once.
    fresh = client_for(settings)
    assert fresh.get("/v1/invoices", headers=bearer(other["api_key"])).status_code == 401
    assert fresh.get("/v1/invoices", headers=bearer(new_erp["api_key"])).status_code == 200
    names = [k["name"] for k in fresh.get("/v1/tenant/api-keys", headers=bearer(first)).json()["items"]]
    assert sorted(names) == ["default", "erp", "erp"]  # the old erp key is still in its grace period

    kinds = {
        kind: stored_events(settings, tenant_id, kind)
        for kind in ("ApiKeyAdded", "ApiKeyRotated", "ApiKeyRevoked")
    }
    me = f"api_key:{key_id(first)}"
    assert [(e["name"], e["changed_by"]) for e in kinds["ApiKeyAdded"]] == [("erp", me), ("bi", me)]
    assert [(e["previous_key_id"], e["changed_by"]) for e in kinds["ApiKeyRotated"]] == [(erp["key_id"], me)]
    assert [e["key_id"] for e in kinds["ApiKeyRevoked"]] == [other["key_id"]]
    raw = raw_rows(settings, tenant_id)
    for secret in (first, erp["api_key"], new_erp["api_key"], other["api_key"]):
        assert api_keys.parse(secret)[1].encode() not in raw  # type: ignore[index]


def test_the_last_key_cannot_be_revoked(settings: Settings, service: LedgerService) -> None:
    _, only = register_tenant(service)
    client = client_for(settings)
    refused = client.delete(f"/v1/tenant/api-keys/{key_id(only)}", headers=bearer(only))
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "last_api_key"
    assert client.get("/v1/invoices", headers=bearer(only)).status_code == 200


def test_after_rotating_every_key_the_one_lasting_key_cannot_be_revoked(
    settings: Settings, service: LedgerService
) -> None:
    tenant_id, first = register_tenant(service)
    client = client_for(settings)
    assert client.post("/v1/tenant/api-keys", json={"name": "erp"}, headers=bearer(first)).status_code == 201
    # `ledgerflow tenants rotate-key`: one new key, every other one only runs out its grace period.
    rotated = service.rotate_api_key(uuid.UUID(tenant_id), changed_by="operator:cli:test")
    refused = client.delete(f"/v1/tenant/api-keys/{key_id(rotated.api_key)}", headers=bearer(rotated.api_key))
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "last_api_key"
    (rotation,) = stored_events(settings, tenant_id, "ApiKeyRotated")
    assert rotation["changed_by"] == "operator:cli:test"


def test_a_tenant_can_neither_see_nor_touch_another_tenants_keys(
    settings: Settings, service: LedgerService
) -> None:
    _, key_a = register_tenant(service)
    _, key_b = register_tenant(service)
    client = client_for(settings)
    b_extra = client.post("/v1/tenant/api-keys", json={"name": "b-erp"}, headers=bearer(key_b)).json()
    listed = client.get("/v1/tenant/api-keys", headers=bearer(key_a)).json()["items"]
    assert [k["key_id"] for k in listed] == [key_id(key_a)]
    for target in (key_id(key_b), b_extra["key_id"]):
        rotate = client.post(f"/v1/tenant/api-keys/{target}/rotate", headers=bearer(key_a))
        revoke = client.delete(f"/v1/tenant/api-keys/{target}", headers=bearer(key_a))
        missing = client.delete("/v1/tenant/api-keys/000000000000", headers=bearer(key_a))
        for answer in (rotate, revoke, missing):
            assert answer.status_code == 404, answer.text
            assert answer.json()["error"]["code"] == "not_found"
    fresh = client_for(settings)
    for key in (key_b, b_extra["api_key"]):
        assert fresh.get("/v1/invoices", headers=bearer(key)).status_code == 200


# -- operator onboarding --------------------------------------------------------------------------

NEW_TENANT = {
    "trade_name": "Kilimanjaro Traders",
    "legal_name": "Kilimanjaro Traders Private Limited",
    "gstin": IRP_SELLER_GSTIN,
    "state": "29",
    "address": IRP_SELLER_ADDRESS,
    "contacts": [{"name": "Wanjiru", "email": "wanjiru@kili.example"}],
}


def test_onboarding_refuses_a_tenant_key_and_a_missing_or_wrong_operator_token(
    settings: Settings, service: LedgerService
) -> None:
    _, tenant_key = register_tenant(service)
    client = client_for(replace(settings, operator_token=OPERATOR_TOKEN))
    for headers, status in (
        ({}, 401),
        (bearer("not-the-token"), 401),
        ({"Authorization": f"Basic {OPERATOR_TOKEN}"}, 401),
        (bearer(tenant_key), 403),
    ):
        for answer in (
            client.post("/v1/tenants", json=NEW_TENANT, headers=headers),
            client.get("/v1/tenants", headers=headers),
        ):
            assert answer.status_code == status, (headers, answer.text)
            error = answer.json()["error"]
            assert set(error) == {"code", "message", "details", "timestamp", "request_id"}
            assert "LEDGERFLOW_OPERATOR_TOKEN" in error["message"]
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        assert conn.execute("SELECT count(*) FROM api_keys").fetchone()[0] == 1  # type: ignore[index]


def test_without_an_operator_token_configured_onboarding_is_off(settings: Settings) -> None:
    client = client_for(replace(settings, operator_token=None))
    answer = client.post("/v1/tenants", json=NEW_TENANT, headers=bearer("anything"))
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "onboarding_disabled"


def test_the_operator_onboards_a_tenant_whose_key_then_works(settings: Settings) -> None:
    client = client_for(replace(settings, operator_token=OPERATOR_TOKEN))
    created = client.post("/v1/tenants", json=NEW_TENANT, headers=bearer(OPERATOR_TOKEN))
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["profile"]["trade_name"] == "Kilimanjaro Traders"
    assert body["profile"]["contacts"][0]["name"] == "Wanjiru"
    own = client.get("/v1/tenant", headers=bearer(body["api_key"]))
    assert own.status_code == 200
    assert own.json()["address"]["city"] == IRP_SELLER_ADDRESS["city"]
    listed = client.get("/v1/tenants", headers=bearer(OPERATOR_TOKEN)).json()["items"]
    assert [t["tenant_id"] for t in listed] == [body["tenant_id"]]
    (profile,) = stored_events(settings, body["tenant_id"], "ProfileUpdated")
    assert profile["changed_by"] == "operator:api"
    # Bad input is the same 422 as everywhere, and creates nothing.
    bad = client.post("/v1/tenants", json={**NEW_TENANT, "state": "27"}, headers=bearer(OPERATOR_TOKEN))
    assert bad.status_code == 422
    assert bad.json()["error"]["details"]["fields"][0]["code"] == "gstin_state_mismatch"
    assert len(client.get("/v1/tenants", headers=bearer(OPERATOR_TOKEN)).json()["items"]) == 1


# -- provider settings changes ------------------------------------------------------------------------


def read_tenant_topic(settings: Settings, tenant_id: str, ce_type: str) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"test-reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([settings.topic("ledger.tenant.v1")])
    found: list[Any] = []

    def poll() -> bool:
        msg = consumer.poll(0.2)
        if (
            msg is not None
            and msg.error() is None
            and msg.key().decode() == tenant_id
            and dict(msg.headers())["ce_type"].decode() == ce_type
        ):
            found.append(msg)
        return len(found) >= 2

    try:
        wait_for(poll, timeout=90, interval=0, what=f"two {ce_type} records on ledger.tenant.v1")
    finally:
        consumer.close()
    return found


def test_an_integration_change_is_an_event_naming_changed_fields_but_never_a_secret(
    settings: Settings, service: LedgerService, topics: list[str], background: BackgroundLoop
) -> None:
    tenant_id, api_key = register_tenant(service)
    client = client_for(settings)
    credentials = {**IRP_ACCOUNT.credentials(), "password": CANARY_PASSWORD}
    first = {"enabled": True, "base_url": "http://127.0.0.1:9/irp", "credentials": credentials}
    assert client.put("/v1/integrations/gst-irp", json=first, headers=bearer(api_key)).status_code == 200
    second = {"enabled": False, "credentials": {"password": CANARY_PASSWORD + "-2"}}
    assert client.put("/v1/integrations/gst-irp", json=second, headers=bearer(api_key)).status_code == 200

    events = stored_events(settings, tenant_id, "IntegrationSettingsChanged")
    assert [(e["enabled"], sorted(e["credentials_changed"])) for e in events] == [
        (True, sorted(credentials)),
        (False, ["password"]),
    ]
    assert {e["changed_by"] for e in events} == {f"api_key:{key_id(api_key)}"}
    assert CANARY_PASSWORD.encode() not in raw_rows(settings, tenant_id)

    background.start(Relay(settings).run)
    messages = read_tenant_topic(settings, tenant_id, "ledgerflow.tenant.integration_settings_changed")
    schema = client.get(dict(messages[0].headers())["ce_dataschema"].decode()).json()
    records = [
        fastavro.schemaless_reader(io.BytesIO(m.value()[10:]), fastavro.parse_schema(schema))
        for m in messages
    ]
    assert [(r["provider"], r["enabled"], r["environment"]) for r in records] == [
        ("gst-irp", True, "sandbox"),
        ("gst-irp", False, "sandbox"),
    ]
    assert records[1]["credentials_changed"] == ["password"]
    for message in messages:
        assert CANARY_PASSWORD.encode() not in message.value()
        assert all(CANARY_PASSWORD.encode() not in v for _, v in message.headers())
