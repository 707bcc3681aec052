"""Tenants are strangers: with tenant B's API key, every operation of the API, given tenant A's ids,
returns nothing of A's and changes nothing of A's.

The operations are read from the app's own OpenAPI document, so a new endpoint is swept as soon as
it exists. Each is called with A's ids in its path parameters (ids of an unknown parameter get
every id of A's), with cursors taken from A's own pages, with A's tenant id as a `tenant_id` query
parameter, and with A's Idempotency-Key. Every answer (body and headers, and the decoded
`next` cursor of a page) is searched for A's ids, invoice numbers, buyer name, IRN, ingest key
ids and secrets, API key and integration settings. Ingest messages signed with B's key but naming
A (`ce_source`) are covered by tests/integration/test_ingest.py
(test_only_commands_signed_with_an_active_key_of_the_named_tenant_issue_invoices, the
"other-tenants-key" case), and not repeated here.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote
from uuid import UUID

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from connectors.gst_irp.sandbox import SandboxAccount
from engine import integrations
from engine.application import LedgerService
from engine.commands import CancelInvoice, IssueInvoice
from engine.config import Settings
from engine.relay import Relay
from engine.security.secrets import load_key_ring
from projections import reporting
from projections.invoice_register import InvoiceRegister
from projections.runner import ProjectionRunner
from tests.conftest import BackgroundLoop, wait_for
from tests.integration.helpers import client_for, invoice_body, register_irp_tenant, register_tenant

pytestmark = pytest.mark.integration

# Distinct from everything of B's, so that finding one in an answer to B can only be a leak.
A_GSTIN = "29AAGCB7383J1Z4"
A_BUYER = {
    "name": "Alpha Zeta Mills Private Limited",
    "gstin": "27AAACR5055K1Z7",
    "state": "27",
    "address": {"line1": "7 Alpha Lane", "city": "Pune", "pincode": "411001"},
}
A_ACCOUNT = SandboxAccount(
    client_id="alpha-client-7f3a91",
    client_secret="alpha-client-secret-c0ffee51",
    username="alpha-irp-user-42",
    password="alpha-irp-password-9d8e7f",
    gstin=A_GSTIN,
)
A_BASE_URL = "http://127.0.0.1:9/alpha-irp-endpoint"
A_IDEMPOTENCY_KEY = "alpha-idempotency-key-0001"
A_IRN = hashlib.sha256(b"alpha tenant irn").hexdigest()
B_BASE_URL = "http://127.0.0.1:1/bravo-irp"
A_WEBHOOK_URL = "https://alpha-hooks.example/receiver-7f3a"
B_BUYER_NAME = "Bravo Yankee Traders LLP"
# Answers B may get: B's own data (2xx), not found, invalid, or a conflict with B's own state (a
# third active ingest key, B's own use of an Idempotency-Key). Never 401 (B's key is valid), never
# a 5xx. The operators' endpoints (onboarding) refuse any tenant key with 403.
ALLOWED = {200, 201, 202, 204, 404, 422}
# etims_not_configured: B's own state (B never saved an etims integration), nothing of A's.
ALLOWED_CONFLICTS = {
    "too_many_ingest_keys",
    "idempotency_key_in_progress",
    "etims_not_configured",
    "integration_not_configured",  # B never configured razorpay (POST /v1/subscriptions)
    # POST /v1/integrations/{provider}/sync on B's own integrations: no sync declared, or B switched it off.
    "sync_not_supported",
    "integration_disabled",
}
# 403 forbidden: the operators' endpoints, and A's data asked for with ``college_id`` (only a
# consolidator the operator granted A may read it: docs/users-and-roles.md).
ALLOWED_REFUSALS = {"onboarding_disabled", "forbidden"}
# A's user, whose id, name, email and key must not reach B either.
A_USER = {
    "name": "Alpha Accountant Kumari",
    "email": "alpha.accounts@alpha-college.example",
    "role": "accountant",
}


def error_code(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""


@dataclass
class TenantA:
    tenant_id: str
    api_key: str
    issued: str  # an issued invoice
    cancelled: str  # a cancelled one
    with_irn: str  # one with an IRN
    active_key: dict[str, Any]
    revoked_key: dict[str, Any]
    cursors: dict[str, str] = field(default_factory=dict)  # where -> a next cursor from A's page
    webhook: dict[str, Any] = field(default_factory=dict)  # A's webhook endpoint, secret included
    user: dict[str, Any] = field(default_factory=dict)  # A's user, and its API key as "api_key"

    @property
    def invoice_ids(self) -> list[str]:
        return [self.issued, self.cancelled, self.with_irn]

    @property
    def key_ids(self) -> list[str]:
        return [self.active_key["key_id"], self.revoked_key["key_id"]]

    def markers(self) -> dict[str, str]:
        """What of A's must never reach B, by a name for the failure message."""
        found = {
            "A's tenant id": self.tenant_id,
            "A's API key": self.api_key,
            "A's buyer name": A_BUYER["name"],
            "A's seller GSTIN": A_GSTIN,
            "A's IRN": A_IRN,
            "A's integration base_url": A_BASE_URL,
            "A's Idempotency-Key": A_IDEMPOTENCY_KEY,
            **{f"A's credential {k}": v for k, v in A_ACCOUNT.credentials().items() if k != "gstin"},
            **{f"A's invoice id {i}": i for i in self.invoice_ids},
            **{f"A's invoice number {n}": n for n in ("ALPHA-0001", "ALPHA-0002", "ALPHA-0003")},
            **{f"A's ingest key id {k}": k for k in self.key_ids},
            "A's ingest key secret": self.active_key["secret"],
            "A's revoked ingest key secret": self.revoked_key["secret"],
            "A's webhook url": A_WEBHOOK_URL,
            "A's webhook endpoint id": self.webhook["id"],
            "A's webhook secret": self.webhook["secret"],
            "A's user id": self.user["user_id"],
            "A's user name": A_USER["name"],
            "A's user email": A_USER["email"],
            "A's user API key": self.user["api_key"],
        }
        return found


def leaks_in(response: httpx.Response, markers: dict[str, str]) -> list[str]:
    """The markers found in an answer: its body, its headers, and its decoded page cursors."""
    texts = [response.content.decode(errors="replace"), json.dumps(dict(response.headers))]
    cursors = [response.headers.get("x-next-cursor") or ""]
    if response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("next"), str):
            cursors.append(body["next"])
    for cursor in filter(None, cursors):
        try:
            texts.append(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode(errors="replace"))
        except ValueError:
            texts.append(cursor)
    return [name for name, value in markers.items() if any(value in text for text in texts)]


@pytest.fixture
def two_tenants(
    service: LedgerService, settings: Settings, topics: list[str], background: BackgroundLoop
) -> Iterator[tuple[TestClient, TenantA, str]]:
    """A with data in every place a tenant owns, B with a little of its own; both projected."""
    a = register_irp_tenant(service, settings, A_BASE_URL, gstin=A_GSTIN, credentials=A_ACCOUNT.credentials())
    _, b_key = register_tenant(service)
    a_id = a.tenant_id
    client = client_for(settings)
    as_a = {"Authorization": f"Bearer {a.api_key}"}
    as_b = {"Authorization": f"Bearer {b_key}"}

    def issue(number: str, **changes: Any) -> str:
        body = invoice_body(number, buyer=A_BUYER, **changes)
        return str(service.issue_invoice(a_id, IssueInvoice.model_validate(body)).invoice.id)

    first = client.post(
        "/v1/invoices",
        json=invoice_body("ALPHA-0001", buyer=A_BUYER, date="2026-01-05"),
        headers={**as_a, "Idempotency-Key": A_IDEMPOTENCY_KEY},
    )
    assert first.status_code == 201, first.text
    issued = first.json()["id"]
    cancelled = issue("ALPHA-0002", date="2026-01-06")
    service.cancel_invoice(a_id, UUID(cancelled), CancelInvoice(reason="order_cancelled"))
    with_irn = issue("ALPHA-0003", date="2026-01-07")
    service.record_irn(
        a_id,
        UUID(with_irn),
        job_id="job-alpha-3",
        irn=A_IRN,
        ack_no="112010000000077",
        ack_date="2026-01-07 11:30:15",
        signed_invoice="alpha.signed.invoice",
        signed_qr_code="alpha.signed.qr",
        adopted_existing=False,
        traceparent=None,
    )
    active, revoked = (client.post("/v1/tenant/ingest-keys", headers=as_a).json() for _ in range(2))
    assert client.delete(f"/v1/tenant/ingest-keys/{revoked['key_id']}", headers=as_a).status_code == 200
    webhook = client.post(
        "/v1/webhooks/endpoints", json={"url": A_WEBHOOK_URL, "event_types": ["*"]}, headers=as_a
    )
    assert webhook.status_code == 201, webhook.text
    user = client.post("/v1/users", json=A_USER, headers=as_a)
    assert user.status_code == 201, user.text
    user_key = client.post(
        f"/v1/users/{user.json()['user_id']}/api-keys", json={"name": "alpha"}, headers=as_a
    )
    assert user_key.status_code == 201, user_key.text

    # B's own: an invoice, an ingest key and its own gst-irp integration.
    b_invoice = invoice_body("BRAVO-0001", date="2026-01-06")
    b_invoice["buyer"] = {**b_invoice["buyer"], "name": B_BUYER_NAME}
    assert client.post("/v1/invoices", json=b_invoice, headers=as_b).status_code == 201
    assert client.post("/v1/tenant/ingest-keys", headers=as_b).status_code == 201
    put = client.put(
        "/v1/integrations/gst-irp",
        json={"base_url": B_BASE_URL, "credentials": SandboxAccount(client_id="bravo").credentials()},
        headers=as_b,
    )
    assert put.status_code == 200, put.text

    background.start(Relay(settings).run)
    background.start(ProjectionRunner(settings, InvoiceRegister()).run)

    def projected() -> bool:
        background.check()
        mine = client.get("/v1/invoices", headers=as_a).json()["items"]
        states = {i["number"]: (i["status"], (i["einvoice"] or {}).get("irn")) for i in mine}
        theirs = client.get("/v1/invoices", headers=as_b).json()["items"]
        return states == {
            "ALPHA-0001": ("issued", None),
            "ALPHA-0002": ("cancelled", None),
            "ALPHA-0003": ("issued", A_IRN),
        } and [i["number"] for i in theirs] == ["BRAVO-0001"]

    wait_for(projected, timeout=120, what="both tenants' invoices projected, A's cancellation and IRN too")

    tenant_a = TenantA(
        tenant_id=str(a_id),
        api_key=a.api_key,
        issued=issued,
        cancelled=cancelled,
        with_irn=with_irn,
        active_key=active,
        revoked_key=revoked,
        webhook=webhook.json(),
        user={**user.json(), "api_key": user_key.json()["api_key"]},
    )
    # Cursors from A's own pages: each continues after one of A's rows.
    page = client.get("/v1/invoices", params={"limit": 1}, headers=as_a).json()
    assert page["next"], page
    tenant_a.cursors["/v1/invoices"] = page["next"]
    for name in reporting.REPORTS:
        report = client.get(f"/v1/reports/{name}", params={"limit": 1}, headers=as_a).json()
        assert report["items"], f"A has no rows in the report {name}"
        if report["next"]:
            tenant_a.cursors[f"/v1/reports/{name}"] = report["next"]
    yield client, tenant_a, b_key


@dataclass
class Attempt:
    operation: str  # "METHOD /path/{param}" as in the OpenAPI document
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    body: Any | None
    tenant_key: bool = False  # the operation authenticates with a tenant's API key (current_tenant)


def path_values(name: str, a: TenantA) -> list[str]:
    """A's ids for a path parameter; every id of A's for a parameter this test does not know yet."""
    known: dict[str, list[str]] = {
        "invoice_id": a.invoice_ids,
        "key_id": a.key_ids,
        "provider": sorted(integrations.PROVIDERS),
        "name": list(reporting.REPORTS),
        "fingerprint": ["0123456789abcdef"],
        "endpoint_id": [a.webhook["id"]],
        "delivery_id": [a.webhook["id"], a.tenant_id],
        "user_id": [a.user["user_id"]],
    }
    return known.get(name, [a.tenant_id, *a.invoice_ids, *a.key_ids])


def request_body(method: str, path: str, serial: Iterator[int]) -> Any | None:
    """B's own body for an operation with one (A's ids are in the path, never in B's data)."""
    if path == "/v1/invoices":
        body = invoice_body(f"BRAVO-{next(serial):04d}", date="2026-01-08")
        body["buyer"] = {**body["buyer"], "name": B_BUYER_NAME}
        return body
    if path.endswith("/cancel"):
        return {"reason": "order_cancelled"}
    if path.startswith("/v1/integrations/"):
        return {"base_url": B_BASE_URL}
    return {}


def attempts_for(openapi: dict[str, Any], a: TenantA) -> list[Attempt]:
    """Every operation of the document, with A's ids wherever an operation takes an id."""
    serial = itertools.count(2)
    found: list[Attempt] = []
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            parameters = operation.get("parameters", [])
            in_path = [p["name"] for p in parameters if p["in"] == "path"]
            in_query = {p["name"] for p in parameters if p["in"] == "query"}
            in_header = {p["name"].lower() for p in parameters if p["in"] == "header"}
            headers = {"Idempotency-Key": A_IDEMPOTENCY_KEY} if "idempotency-key" in in_header else {}
            formats = ["json", "csv"] if "format" in in_query else [None]
            for values in itertools.product(*(path_values(n, a) for n in in_path)):
                url = path
                for name, value in zip(in_path, values, strict=True):
                    url = url.replace("{" + name + "}", quote(value, safe=""))
                has_body = "requestBody" in operation
                # college_id: the seed's way to name a college (tenant), open only to consolidators.
                variants: list[dict[str, str]] = [{}, {"tenant_id": a.tenant_id}, {"college_id": a.tenant_id}]
                if "cursor" in in_query:
                    variants += [{"cursor": c} for c in a.cursors.values()]
                # A query parameter this test does not know yet gets A's ids too.
                for name in sorted(
                    in_query - {"cursor", "format", "limit", "from", "to", "status", "group", "college_id"}
                ):
                    variants += [{name: v} for v in (a.tenant_id, *a.invoice_ids, *a.key_ids)]
                for variant, output in itertools.product(variants, formats):
                    params = {**variant, **({"format": output} if output else {})}
                    body = request_body(method, path, serial) if has_body else None
                    tenant_key = any("HTTPBearer" in s for s in operation.get("security", []))
                    found.append(
                        Attempt(
                            f"{method.upper()} {path}", method.upper(), url, params, headers, body, tenant_key
                        )
                    )
    return found


def test_tenant_b_gets_nothing_of_tenant_a_from_any_endpoint_and_changes_nothing_of_a(
    two_tenants: tuple[TestClient, TenantA, str], settings: Settings
) -> None:
    client, a, b_key = two_tenants
    as_a = {"Authorization": f"Bearer {a.api_key}"}
    as_b = {"Authorization": f"Bearer {b_key}"}
    markers = a.markers()

    # The search finds A's data where it is: A's own answers hold it (so a leak to B would show).
    own = client.get(f"/v1/invoices/{a.with_irn}", headers=as_a)
    assert {"A's buyer name", "A's IRN", f"A's invoice id {a.with_irn}"} <= set(leaks_in(own, markers))
    own_csv = client.get("/v1/reports/invoices", params={"format": "csv"}, headers=as_a)
    assert "A's invoice number ALPHA-0002" in leaks_in(own_csv, markers)

    document = client.app.openapi()  # type: ignore[attr-defined]
    attempts = attempts_for(document, a)
    operations = {f"{m.upper()} {p}" for p, ops in document["paths"].items() for m in ops}
    assert {t.operation for t in attempts} == operations and len(operations) >= 18
    # Most operations take a tenant's key (the rest: operator, health, signed receivers).
    assert len({t.operation for t in attempts if t.tenant_key}) >= len(operations) * 3 // 4
    leaks: list[str] = []
    refused: list[str] = []
    answers: Counter[str] = Counter()
    for attempt in attempts:
        response = client.request(
            attempt.method,
            attempt.path,
            params=attempt.params,
            headers={**as_b, **attempt.headers},
            json=attempt.body,
        )
        where = f"{attempt.method} {attempt.path} {attempt.params} -> {response.status_code}"
        code = error_code(response) if response.status_code >= 400 else ""
        answers[f"{response.status_code} {code}".strip()] += 1
        conflict = response.status_code == 409 and code in ALLOWED_CONFLICTS
        operators_only = response.status_code == 403 and code in ALLOWED_REFUSALS
        # The webhook receiver is authenticated by the provider's signature, not by B's API key.
        unsigned = response.status_code == 401 and code == "invalid_signature"
        # The OAuth callback is authenticated by its single-use state, not by B's API key.
        unsigned = unsigned or (response.status_code == 400 and code == "invalid_state")
        if response.status_code not in ALLOWED and not conflict and not operators_only and not unsigned:
            refused.append(f"{where}: {response.text[:300]}")
        # B is no consolidator granted A: naming A as the college is refused before anything runs.
        if (
            attempt.tenant_key
            and "college_id" in attempt.params
            and (response.status_code, code)
            != (
                403,
                "forbidden",
            )
        ):
            refused.append(f"{where}: answered B's college_id=A with {response.text[:300]}")
        # B's own input echoed back ("no invoice <id>") tells B nothing it did not send.
        sent = json.dumps([attempt.path, attempt.params, attempt.headers, attempt.body])
        unsent = {name: value for name, value in markers.items() if value not in sent}
        leaks += [f"{where}: {name}" for name in leaks_in(response, unsent)]
    print(f"\ncross-tenant attempts: {len(attempts)}, leaks: {len(leaks)}")
    print("answers to B: " + ", ".join(f"{n}x {a}" for a, n in answers.most_common()))
    unexpected = "answers to B outside 2xx/404/422, B's own conflicts and operator-only refusals"
    assert not refused, f"{unexpected}:\n" + "\n".join(refused)
    assert not leaks, "A's data in answers to B:\n" + "\n".join(leaks)

    # B's answers about A's things are the answers about things that never existed: no oracle.
    def answer(method: str, path: str, body: Any | None = None) -> tuple[int, str, str]:
        got = client.request(method, path, json=body, headers=as_b)
        error = got.json()["error"]
        return got.status_code, error["code"], error["message"].replace(path.split("/")[-1], "<id>")

    nobody = str(uuid.uuid4())
    for invoice_id in a.invoice_ids:
        assert answer("GET", f"/v1/invoices/{invoice_id}") == answer("GET", f"/v1/invoices/{nobody}")
        assert answer("GET", f"/v1/invoices/{invoice_id}")[:2] == (404, "not_found")
        cancel = {"reason": "order_cancelled"}
        theirs = answer("POST", f"/v1/invoices/{invoice_id}/cancel", cancel)
        assert theirs[:2] == (404, "not_found")
        assert theirs[0:2] == answer("POST", f"/v1/invoices/{nobody}/cancel", cancel)[0:2]
    for key_id in a.key_ids:
        missing = answer("DELETE", f"/v1/tenant/ingest-keys/{key_id}")
        assert missing == answer("DELETE", "/v1/tenant/ingest-keys/ik_0000000000000000")
        assert missing[:2] == (404, "not_found")

    # A is untouched: its invoices, its ingest keys, its integration and sealed credentials.
    statuses = {i["id"]: i["status"] for i in client.get("/v1/invoices", headers=as_a).json()["items"]}
    assert statuses == {a.issued: "issued", a.cancelled: "cancelled", a.with_irn: "issued"}
    keys = {
        k["key_id"]: k["active"] for k in client.get("/v1/tenant/ingest-keys", headers=as_a).json()["items"]
    }
    assert keys == {a.active_key["key_id"]: True, a.revoked_key["key_id"]: False}
    assert client.get("/v1/integrations/gst-irp", headers=as_a).json()["base_url"] == A_BASE_URL
    hook = client.get(f"/v1/webhooks/endpoints/{a.webhook['id']}", headers=as_a).json()
    assert (hook["url"], hook["status"], hook["updated_at"]) == (
        A_WEBHOOK_URL,
        "active",
        a.webhook["updated_at"],
    )
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        loaded = integrations.load(conn, load_key_ring(settings.var_dir), UUID(a.tenant_id), "gst-irp")
    assert loaded is not None
    assert loaded.base_url == A_BASE_URL and loaded.credentials == A_ACCOUNT.credentials()
    users = client.get("/v1/users", headers=as_a).json()["items"]
    assert [(u["user_id"], u["role"], u["status"]) for u in users] == [
        (a.user["user_id"], "accountant", "active")
    ]
    assert (
        client.get("/v1/invoices", headers={"Authorization": f"Bearer {a.user['api_key']}"}).status_code
        == 200
    )

    # B's reports hold B's rows (so "no A rows" above is not an empty report), as JSON and CSV.
    for output in ("json", "csv"):
        report = client.get("/v1/reports/invoices", params={"format": output}, headers=as_b)
        assert report.status_code == 200 and "BRAVO-0001" in report.text and B_BUYER_NAME in report.text
        assert not leaks_in(report, markers)
    # B's Idempotency-Key equal to A's issued B's own invoice, not a replay of A's.
    bs = client.get("/v1/invoices", headers=as_b, params={"limit": 500}).json()["items"]
    assert bs and all(i["seller"]["gstin"] != A_GSTIN for i in bs)
    assert uuid.UUID(a.issued) not in {uuid.UUID(i["id"]) for i in bs}
