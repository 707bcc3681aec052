"""Builders shared by the integration tests."""

from __future__ import annotations

import copy
from typing import Any
from uuid import UUID

import orjson
import psycopg
from fastapi.testclient import TestClient

from connectors.catalogue import endpoint_policy
from connectors.gst_irp.sandbox import SandboxAccount
from engine import integrations
from engine.application import LedgerService, RegisteredTenant
from engine.config import Settings
from engine.ingest import ISSUE_TYPE
from engine.security import ingest_keys
from engine.security.secrets import load_key_ring

# The example body from the issue (the contract upstream systems code against).
INVOICE_BODY: dict[str, Any] = {
    "number": "INV-2026-001",
    "date": "2026-01-19",
    "buyer": {
        "name": "Reliable Traders Pvt Ltd",
        "gstin": "27AAACR5055K1Z7",
        "state": "27",
        "address": {"line1": "12 Market Road", "city": "Pune", "pincode": "411001"},
    },
    "place_of_supply": "27",
    "lines": [
        {
            "description": "Transformer coil",
            "hsn": "8504",
            "quantity": "10",
            "unit": "NOS",
            "unit_price": "100.00",
            "discount": "0.00",
            "gst_rate": "18",
        }
    ],
}


def invoice_body(number: str = "INV-2026-001", **changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(INVOICE_BODY)
    body["number"] = number
    body.update(changes)
    return body


def register_tenant(
    service: LedgerService, *, state: str = "27", gstin: str = "27AAGCB7383J1Z8"
) -> tuple[str, str]:
    registered = service.register_tenant(
        name="Test Tenant", legal_name="Test Tenant Private Limited", country="IN", gstin=gstin, state=state
    )
    return str(registered.tenant_id), registered.api_key


def create_ingest_key(settings: Settings, tenant_id: str) -> ingest_keys.IssuedIngestKey:
    """A new ingest signing key of the tenant, as `POST /v1/tenant/ingest-keys` would create it."""
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        return ingest_keys.create(conn, load_key_ring(settings.var_dir), UUID(tenant_id))


def ingest_command(
    tenant_id: str,
    ce_id: str,
    body: dict[str, Any] | bytes,
    key: ingest_keys.IssuedIngestKey | None,
) -> tuple[list[tuple[str, bytes]], bytes]:
    """The headers and value of an ingest command, signed with ``key`` as docs/topics.md says
    (``key=None``: unsigned, as an unauthorised producer would send it)."""
    value = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", ce_id.encode()),
        ("ce_source", f"/tenants/{tenant_id}".encode()),
        ("ce_type", ISSUE_TYPE.encode()),
        ("content-type", b"application/json"),
    ]
    if key is not None:
        headers += [
            (ingest_keys.KEY_ID_HEADER, key.key_id.encode()),
            (ingest_keys.SIGNATURE_HEADER, ingest_keys.signature(key.secret, ce_id, value).encode()),
        ]
    return headers, value


_open_clients: list[TestClient] = []


def client_for(settings: Settings) -> TestClient:
    """An in-process client of the real API app; its connections are closed after the test."""
    from engine.api.app import create_app

    client = TestClient(create_app(settings), raise_server_exceptions=False)
    client.__enter__()  # runs the app's lifespan, whose shutdown closes the connection pools
    _open_clients.append(client)
    return client


def close_clients() -> None:
    while _open_clients:
        _open_clients.pop().__exit__(None, None, None)


# The seller of the e-invoicing tests: a Karnataka tenant with a user at the IRP sandbox.
IRP_SELLER_GSTIN = "29AAGCB7383J1Z4"
IRP_ACCOUNT = SandboxAccount(gstin=IRP_SELLER_GSTIN)
IRP_SELLER_ADDRESS = {"line1": "14 Residency Road", "city": "Bengaluru", "pincode": "560025"}


def register_irp_tenant(
    service: LedgerService,
    settings: Settings,
    base_url: str,
    *,
    gstin: str = IRP_SELLER_GSTIN,
    credentials: dict[str, str] | None = None,
) -> RegisteredTenant:
    """A tenant with e-invoicing on and its gst-irp integration pointed at ``base_url``."""
    registered = service.register_tenant(
        name="Demo",
        legal_name="Demo Electricals Private Limited",
        country="IN",
        gstin=gstin,
        state="29",
        einvoicing_enabled=True,
        address=IRP_SELLER_ADDRESS,
    )
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        integrations.save(
            conn,
            load_key_ring(settings.var_dir),
            registered.tenant_id,
            "gst-irp",
            enabled=True,
            environment="sandbox",
            base_url=base_url,
            credentials=credentials or IRP_ACCOUNT.credentials(),
            endpoints=endpoint_policy("gst-irp"),
            mode=settings.mode,
        )
    return registered
