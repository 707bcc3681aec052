"""Kenyan tenants (issue 10): a KRA PIN instead of a GSTIN and state, through the CLI and the
operator API, shown by GET /v1/tenant and recorded on the Registered event."""

from __future__ import annotations

import subprocess
import sys
import uuid
from dataclasses import replace

import orjson
import pytest

from engine.application import LedgerService
from engine.config import Settings
from engine.publishing import to_outbound
from schemas import registry
from tests.integration.helpers import client_for
from tests.integration.processes import settings_env

pytestmark = pytest.mark.integration

OPERATOR_TOKEN = "op-" + uuid.uuid4().hex
KE_TENANT = {
    "trade_name": "Savanna Retail",
    "legal_name": "Savanna Retail Limited",
    "country": "KE",
    "kra_pin": "p051234567x",
}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        env=settings_env(settings),
        capture_output=True,
        timeout=120,
    )


def test_a_kenyan_tenant_created_with_the_cli_has_its_kra_pin_and_no_gst_registration(
    settings: Settings, service: LedgerService
) -> None:
    created = cli(
        settings,
        *("tenants", "create", "--country", "KE", "--kra-pin", "P051234567X"),
        *("--name", "Savanna Retail", "--legal-name", "Savanna Retail Limited", "--json"),
    )
    assert created.returncode == 0, created.stderr.decode()
    answer = orjson.loads(created.stdout)
    own = client_for(settings).get("/v1/tenant", headers=bearer(answer["api_key"]))
    assert own.status_code == 200, own.text
    profile = own.json()
    assert (profile["country"], profile["kra_pin"], profile["gstin"], profile["state"]) == (
        "KE",
        "P051234567X",
        None,
        None,
    )
    # The Registered event carries it to ledger.tenant.v1 (registered v3), and encodes.
    tenant = service.get_tenant(uuid.UUID(answer["tenant_id"]))
    (registered,) = [e for e in service.ledger.events.get(tenant.id)][:1]
    record = to_outbound(registered).record
    assert record["kra_pin"] == "P051234567X"
    data, used = registry.encode_event("ledgerflow.tenant.registered", record)
    assert used.version == 3
    assert registry.decode_event(data)["kra_pin"] == "P051234567X"
    listed = cli(settings, "tenants", "list")
    assert listed.returncode == 0, listed.stderr.decode()
    assert f"{answer['tenant_id']}  Savanna Retail" in listed.stdout.decode()
    assert "P051234567X" in listed.stdout.decode()


def test_the_cli_refuses_a_kenyan_tenant_without_or_with_a_malformed_kra_pin(settings: Settings) -> None:
    base = ("tenants", "create", "--country", "KE", "--name", "X", "--legal-name", "X Ltd", "--json")
    missing = cli(settings, *base)
    assert missing.returncode != 0
    assert "KRA PIN" in missing.stderr.decode()
    malformed = cli(settings, *base, "--kra-pin", "P05123X")
    assert malformed.returncode != 0
    assert "letter, 9 digits and a letter" in malformed.stderr.decode()


def test_the_operator_onboards_a_kenyan_tenant_and_indian_rules_stay_as_they_were(settings: Settings) -> None:
    client = client_for(replace(settings, operator_token=OPERATOR_TOKEN))
    created = client.post("/v1/tenants", json=KE_TENANT, headers=bearer(OPERATOR_TOKEN))
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["profile"]["kra_pin"] == "P051234567X"
    assert body["profile"]["country"] == "KE"
    own = client.get("/v1/tenant", headers=bearer(body["api_key"])).json()
    assert own["kra_pin"] == "P051234567X"
    # The PIN is part of the legal identity: a change is refused like a GSTIN change.
    changed = client.patch("/v1/tenant", json={"kra_pin": "A123456789Z"}, headers=bearer(body["api_key"]))
    assert changed.status_code == 422, changed.text
    assert changed.json()["error"]["details"]["fields"][0]["code"] == "legal_identity_immutable"

    refusals = [
        ({**KE_TENANT, "kra_pin": None}, "kra_pin", "missing_kra_pin"),
        ({**KE_TENANT, "kra_pin": "P0512345678"}, "kra_pin", "invalid_kra_pin"),
        ({**KE_TENANT, "kra_pin": "P05123\x004567X"}, "kra_pin", "control_character"),
        ({**KE_TENANT, "gstin": "29AAGCB7383J1Z4"}, "gstin", "not_applicable"),
        # An Indian tenant: no KRA PIN, and still its state.
        (
            {"trade_name": "A", "legal_name": "A Pvt Ltd", "state": "29", "kra_pin": "P051234567X"},
            "kra_pin",
            "not_applicable",
        ),
        ({"trade_name": "A", "legal_name": "A Pvt Ltd"}, "state", "missing_state"),
    ]
    for sent, path, code in refusals:
        refused = client.post("/v1/tenants", json=sent, headers=bearer(OPERATOR_TOKEN))
        assert refused.status_code == 422, (sent, refused.text)
        fields = refused.json()["error"]["details"]["fields"]
        assert (fields[0]["path"], fields[0]["code"]) == (path, code), sent
    listed = client.get("/v1/tenants", headers=bearer(OPERATOR_TOKEN)).json()["items"]
    assert [t["tenant_id"] for t in listed] == [body["tenant_id"]]
