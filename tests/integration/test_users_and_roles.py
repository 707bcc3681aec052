"""Users, roles and the permission policy on the real API and PostgreSQL (issue 14, "Users and roles").

The approval routes belong to the expenses part of issue 14; these tests mount a probe on the
approval and export templates, in front of the app's own routes, that answers the principal
``current_tenant`` admitted: the policy is enforced centrally by template, whoever implements the
handler. Every other request goes to the app's real routes.
"""

# No ``from __future__ import annotations``: FastAPI must evaluate the probe's signatures, whose
# dependency is local to probed_client.
import threading
import uuid
from dataclasses import replace
from typing import Annotated, Any
from uuid import UUID

import orjson
import psycopg
import pytest
from fastapi import APIRouter, Depends, Request
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from engine.api.principal import principal_of
from engine.application import LedgerService
from engine.commands import IssueInvoice
from engine.config import Settings
from engine.security import api_keys
from tests.conftest import wait_for
from tests.integration import helpers
from tests.integration.helpers import invoice_body, register_tenant

pytestmark = pytest.mark.integration

OPERATOR_TOKEN = "op-" + uuid.uuid4().hex
APPROVE = "/v1/expenses/{expense_id}/approve"
EXPORT = "/v1/expenses/export"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def key_id(api_key: str) -> str:
    parsed = api_keys.parse(api_key)
    assert parsed is not None
    return parsed[0]


def _current_tenant(routes: list[Any]) -> Any:
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            found = _current_tenant(included.routes)
            if found is not None:
                return found
        elif isinstance(route, APIRoute):
            stack = list(route.dependant.dependencies)
            while stack:
                dependency = stack.pop()
                if getattr(dependency.call, "__name__", "") == "current_tenant":
                    return dependency.call
                stack += dependency.dependencies
    return None


def probed_client(settings: Settings) -> TestClient:
    """The real app, with a probe on the approval and export templates answering the principal."""
    from engine.api.app import create_app

    app = create_app(settings)
    current_tenant = _current_tenant(list(app.router.routes))
    assert current_tenant is not None
    Tenant = Annotated[UUID, Depends(current_tenant)]  # noqa: N806 - a type alias
    probe = APIRouter()

    def who(request: Request, tenant_id: UUID) -> dict[str, Any]:
        found = principal_of(request)
        assert found.tenant_id == tenant_id
        return {
            "tenant_id": str(found.tenant_id),
            "actor": found.actor,
            "role": found.role,
            "user_id": str(found.user_id) if found.user_id else None,
            "home_tenant_id": str(found.home_tenant_id) if found.home_tenant_id else None,
        }

    @probe.post(APPROVE)
    async def approve(expense_id: str, request: Request, tenant_id: Tenant) -> dict[str, Any]:
        return who(request, tenant_id)

    @probe.get(EXPORT)
    async def export(request: Request, tenant_id: Tenant) -> dict[str, Any]:
        return who(request, tenant_id)

    routes = app.router.routes
    before = len(routes)
    app.include_router(probe)
    added = routes[before:]
    del routes[before:]
    routes[0:0] = added  # first match wins: the probe answers even once the real routes exist
    client = TestClient(app, raise_server_exceptions=False)
    client.__enter__()
    helpers._open_clients.append(client)
    return client


def stored_events(settings: Settings, tenant_id: str, kind: str) -> list[dict[str, Any]]:
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        rows = conn.execute(
            "SELECT state FROM ledger_events WHERE originator_id = %s AND topic = %s"
            " ORDER BY originator_version",
            (tenant_id, f"engine.domain.tenant:Tenant.{kind}"),
        ).fetchall()
    return [orjson.loads(bytes(r[0])) for r in rows]


def add_user(client: TestClient, admin_key: str, role: str, email: str | None = None) -> tuple[str, str]:
    """A new user of the admin key's tenant and a key of its own: (user id, api key)."""
    email = email or f"{role}-{uuid.uuid4().hex[:8]}@college.example"
    made = client.post(
        "/v1/users", json={"name": f"The {role}", "email": email, "role": role}, headers=bearer(admin_key)
    )
    assert made.status_code == 201, made.text
    user_id = made.json()["user_id"]
    key = client.post(f"/v1/users/{user_id}/api-keys", json={"name": role}, headers=bearer(admin_key))
    assert key.status_code == 201, key.text
    assert key.json()["user_id"] == user_id
    return user_id, key.json()["api_key"]


def error(answer: Any) -> dict[str, Any]:
    body = answer.json()
    assert set(body["error"]) == {"code", "message", "details", "timestamp", "request_id"}, body
    return dict(body["error"])


def test_each_role_may_do_what_the_policy_says_and_the_approver_is_the_user(
    settings: Settings, service: LedgerService
) -> None:
    tenant_id, admin_key = register_tenant(service)
    client = probed_client(settings)
    accountant, accountant_key = add_user(client, admin_key, "accountant")
    principal, principal_key = add_user(client, admin_key, "principal")
    _, auditor_key = add_user(client, admin_key, "auditor")

    # The accountant cannot approve; the principal can, and the approval acts as that user.
    refused = client.post(APPROVE.format(expense_id="e-1"), headers=bearer(accountant_key))
    assert refused.status_code == 403
    assert error(refused)["code"] == "forbidden"
    assert error(refused)["details"] == {"allowed_roles": ["admin", "principal"], "role": "accountant"}
    assert "admin, principal" in error(refused)["message"]
    approved = client.post(APPROVE.format(expense_id="e-1"), headers=bearer(principal_key))
    assert approved.status_code == 200, approved.text
    assert approved.json() == {
        "tenant_id": tenant_id,
        "actor": f"user:{principal}",
        "role": "principal",
        "user_id": principal,
        "home_tenant_id": None,
    }
    # A key without a user acts as the tenant's admin, as every key did before users existed.
    as_admin = client.post(APPROVE.format(expense_id="e-1"), headers=bearer(admin_key)).json()
    assert (as_admin["actor"], as_admin["role"]) == (f"api_key:{key_id(admin_key)}", "admin")

    # The auditor reads invoices but cannot issue one; the accountant can, the principal cannot.
    assert client.get("/v1/invoices", headers=bearer(auditor_key)).status_code == 200
    for key in (auditor_key, principal_key):
        no = client.post("/v1/invoices", json=invoice_body("ROLE-1"), headers=bearer(key))
        assert no.status_code == 403 and error(no)["details"]["allowed_roles"] == ["accountant", "admin"]
    issued = client.post("/v1/invoices", json=invoice_body("ROLE-1"), headers=bearer(accountant_key))
    assert issued.status_code == 201, issued.text
    read = client.get(f"/v1/invoices/{issued.json()['id']}", headers=bearer(auditor_key))
    assert read.status_code == 200 and read.json()["number"] == "ROLE-1"

    # User and key management is the admin's: not the accountant's, not even to read.
    for method, path in (
        ("GET", "/v1/users"),
        ("POST", "/v1/users"),
        ("GET", f"/v1/users/{accountant}"),
        ("POST", f"/v1/users/{accountant}/api-keys"),
        ("GET", "/v1/tenant/api-keys"),
        ("GET", "/v1/integrations"),
        ("PATCH", "/v1/tenant"),
    ):
        answer = client.request(method, path, json={}, headers=bearer(accountant_key))
        assert answer.status_code == 403, (method, path, answer.text)
    assert client.get("/v1/tenant", headers=bearer(auditor_key)).status_code == 200

    # The admin's list shows the three users; its key list shows whose each key is.
    users = client.get("/v1/users", headers=bearer(admin_key)).json()["items"]
    assert sorted(u["role"] for u in users) == ["accountant", "auditor", "principal"]
    assert all(u["status"] == "active" for u in users)
    keys = client.get("/v1/tenant/api-keys", headers=bearer(admin_key)).json()["items"]
    assert {k["name"]: k["user_id"] for k in keys}["principal"] == principal
    assert {k["name"]: k["user_id"] for k in keys}["default"] is None


def test_a_role_change_and_a_disabled_user_take_effect_within_the_cache_window_and_are_recorded(
    settings: Settings, service: LedgerService
) -> None:
    settings = replace(settings, auth_cache_seconds=0.5)
    tenant_id, admin_key = register_tenant(service)
    here = probed_client(settings)
    elsewhere = probed_client(settings)  # another API process, with its own authentication cache
    user, key = add_user(here, admin_key, "principal")
    assert elsewhere.post(APPROVE.format(expense_id="e"), headers=bearer(key)).status_code == 200

    changed = here.patch(f"/v1/users/{user}", json={"role": "accountant"}, headers=bearer(admin_key))
    assert changed.status_code == 200, changed.text
    assert changed.json()["role"] == "accountant"
    # The process that made the change forgets at once; the other within its cache window.
    assert here.post(APPROVE.format(expense_id="e"), headers=bearer(key)).status_code == 403
    wait_for(
        lambda: elsewhere.post(APPROVE.format(expense_id="e"), headers=bearer(key)).status_code == 403,
        timeout=15,
        what="the other process refusing the approval of a user who is no longer a principal",
    )

    disabled = here.patch(f"/v1/users/{user}", json={"disabled": True}, headers=bearer(admin_key))
    assert disabled.status_code == 200 and disabled.json()["status"] == "disabled"
    assert here.get("/v1/invoices", headers=bearer(key)).status_code == 401
    wait_for(
        lambda: elsewhere.get("/v1/invoices", headers=bearer(key)).status_code == 401,
        timeout=15,
        what="the other process refusing a disabled user's key",
    )
    refused = here.post(f"/v1/users/{user}/api-keys", json={"name": "again"}, headers=bearer(admin_key))
    assert refused.status_code == 409 and error(refused)["code"] == "user_disabled"
    enabled = here.patch(f"/v1/users/{user}", json={"disabled": False}, headers=bearer(admin_key))
    assert enabled.status_code == 200 and enabled.json()["status"] == "active"
    assert here.get("/v1/invoices", headers=bearer(key)).status_code == 200
    # Sending the values it already has changes nothing and records nothing.
    same = here.patch(f"/v1/users/{user}", json={"role": "accountant"}, headers=bearer(admin_key))
    assert same.status_code == 200

    # Every change is a Tenant event naming who made it, with the old and new values.
    admin = f"api_key:{key_id(admin_key)}"
    assert [
        (e["user_id"], e["role"], e["changed_by"]) for e in stored_events(settings, tenant_id, "UserAdded")
    ] == [(user, "principal", admin)]
    assert [(e["changes"], e["changed_by"]) for e in stored_events(settings, tenant_id, "UserChanged")] == [
        ({"role": {"old": "principal", "new": "accountant"}}, admin),
        ({"disabled": {"old": False, "new": True}}, admin),
        ({"disabled": {"old": True, "new": False}}, admin),
    ]

    # A change made with a user's key is recorded as that user, not as a key.
    boss, boss_key = add_user(here, admin_key, "admin")
    renamed = here.patch("/v1/tenant", json={"trade_name": "Renamed College"}, headers=bearer(boss_key))
    assert renamed.status_code == 200, renamed.text
    assert stored_events(settings, tenant_id, "ProfileUpdated")[-1]["changed_by"] == f"user:{boss}"
    # Names and emails stay off the events (they are published on ledger.tenant.v1).
    for event in stored_events(settings, tenant_id, "UserAdded"):
        assert (
            set(event) >= {"user_id", "role", "changed_by"} and "email" not in event and "name" not in event
        )


def test_hostile_and_wrong_user_requests_are_clear_4xx_and_another_tenants_users_are_missing(
    settings: Settings, service: LedgerService
) -> None:
    _, admin_key = register_tenant(service)
    _, other_key = register_tenant(service)
    client = helpers.client_for(settings)
    user, _ = add_user(client, admin_key, "accountant", email="Asha@College.example")

    for body in (
        {"name": "Bad\u0000name", "email": "x@college.example", "role": "accountant"},
        {"name": "Line\nbreak", "email": "y@college.example", "role": "accountant"},
        {"name": "Role", "email": "z@college.example", "role": "superuser"},
        {"name": "Role", "email": "not-an-email", "role": "auditor"},
        {"name": "x" * 5000, "email": "w@college.example", "role": "auditor"},
        {"name": "Extra", "email": "v@college.example", "role": "auditor", "user_id": str(uuid.uuid4())},
        {"email": "u@college.example", "role": "auditor"},
    ):
        answer = client.post("/v1/users", json=body, headers=bearer(admin_key))
        assert answer.status_code == 422, (body, answer.text)
        assert error(answer)["code"] == "validation_failed"
    for body in ({}, {"role": "root"}, {"disabled": "maybe"}, {"role": "auditor", "email": "a@b.example"}):
        answer = client.patch(f"/v1/users/{user}", json=body, headers=bearer(admin_key))
        assert answer.status_code == 422, (body, answer.text)
    assert client.get("/v1/users/not-a-uuid", headers=bearer(admin_key)).status_code == 422

    # The same email, whatever its case, is one user; racing creations make one user, never a 500.
    twin = {"name": "Asha again", "email": "asha@college.EXAMPLE", "role": "auditor"}
    duplicate = client.post("/v1/users", json=twin, headers=bearer(admin_key))
    assert duplicate.status_code == 409 and error(duplicate)["code"] == "duplicate_email"
    racing = {"name": "Racer", "email": "racer@college.example", "role": "auditor"}
    statuses: list[int] = []

    def create() -> None:
        statuses.append(client.post("/v1/users", json=racing, headers=bearer(admin_key)).status_code)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses.count(201) == 1 and set(statuses) <= {201, 409}, statuses
    emails = [u["email"] for u in client.get("/v1/users", headers=bearer(admin_key)).json()["items"]]
    assert emails.count("racer@college.example") == 1

    # Another tenant's admin sees no user of ours and cannot change one or give it a key.
    nobody = str(uuid.uuid4())
    attempts: list[tuple[str, str, dict[str, str] | None]] = [
        (f"/v1/users/{user}", "GET", None),
        (f"/v1/users/{user}", "PATCH", {"role": "admin"}),
        (f"/v1/users/{user}/api-keys", "POST", {"name": "stolen"}),
    ]
    for path, method, sent in attempts:
        theirs = client.request(method, path, json=sent, headers=bearer(other_key))
        missing = client.request(method, path.replace(user, nobody), json=sent, headers=bearer(other_key))
        assert theirs.status_code == missing.status_code == 404
        assert error(theirs)["message"].replace(user, "<id>") == error(missing)["message"].replace(
            nobody, "<id>"
        )
    assert client.get("/v1/users", headers=bearer(other_key)).json() == {"items": []}
    assert client.get(f"/v1/users/{user}", headers=bearer(admin_key)).json()["role"] == "accountant"


def test_a_consolidator_reads_only_the_colleges_the_operator_granted_and_only_on_its_read_routes(
    settings: Settings, service: LedgerService
) -> None:
    settings = replace(settings, operator_token=OPERATOR_TOKEN)
    operator = bearer(OPERATOR_TOKEN)
    college_a, a_key = register_tenant(service)
    college_b, _ = register_tenant(service)
    home, home_key = register_tenant(service)
    invoices = {
        tenant: str(
            service.issue_invoice(UUID(tenant), IssueInvoice.model_validate(invoice_body(number))).invoice.id
        )
        for tenant, number in ((college_a, "A-0001"), (college_b, "B-0001"), (home, "X-0001"))
    }
    client = probed_client(settings)
    consolidator, c_key = add_user(client, home_key, "consolidator")
    accountant, y_key = add_user(client, home_key, "accountant")

    def number(key: str, tenant: str, **params: str) -> Any:
        """The number of ``tenant``'s invoice as the key reads it, or the status of the answer."""
        answer = client.get(f"/v1/invoices/{invoices[tenant]}", params=params, headers=bearer(key))
        return answer.json()["number"] if answer.status_code == 200 else answer.status_code

    # Before any grant: its own college only.
    assert number(c_key, home) == "X-0001" and number(c_key, home, college_id=home) == "X-0001"
    assert number(c_key, college_a, college_id=college_a) == 403
    assert number(c_key, college_a) == 404

    # Only the operator grants, and only to a consolidator.
    for headers, status in (({}, 401), (bearer(home_key), 403), (bearer(c_key), 403)):
        assert client.post("/v1/operator/grants", json={}, headers=headers).status_code == status
        assert client.get("/v1/operator/grants", headers=headers).status_code == status
    wrong = client.post(
        "/v1/operator/grants", json={"user_id": accountant, "tenant_id": college_a}, headers=operator
    )
    assert wrong.status_code == 409 and error(wrong)["code"] == "not_a_consolidator"
    unknown = client.post(
        "/v1/operator/grants",
        json={"user_id": consolidator, "tenant_id": str(uuid.uuid4())},
        headers=operator,
    )
    assert unknown.status_code == 404
    grant = {"user_id": consolidator, "tenant_id": college_a}
    given = client.post("/v1/operator/grants", json=grant, headers=operator)
    assert given.status_code == 201, given.text
    assert given.json()["home_tenant_id"] == home and given.json()["granted_by"] == "operator:api"
    again = client.post("/v1/operator/grants", json=grant, headers=operator)
    assert again.status_code == 201 and again.json()["granted_at"] == given.json()["granted_at"]
    listed = client.get("/v1/operator/grants", params={"user_id": consolidator}, headers=operator).json()
    assert [(g["tenant_id"], g["home_tenant_id"]) for g in listed["items"]] == [(college_a, home)]

    # Granted: A's invoices (the list and one), and the request acts as the user from its home tenant.
    assert number(c_key, college_a, college_id=college_a) == "A-0001"
    assert number(c_key, college_a) == 404  # without college_id it reads its own college
    assert (
        client.get("/v1/invoices", params={"college_id": college_a}, headers=bearer(c_key)).status_code == 200
    )
    seen = client.get(EXPORT, params={"college_id": college_a}, headers=bearer(c_key)).json()
    assert seen == {
        "tenant_id": college_a,
        "actor": f"user:{consolidator}",
        "role": "consolidator",
        "user_id": consolidator,
        "home_tenant_id": home,
    }

    # Refused, with one answer whatever the reason: an ungranted college, a tenant that does not
    # exist, a mutation, a route not for consolidators, secrets, a non-consolidator, the wrong way round.
    refusals = [
        client.get("/v1/invoices", params={"college_id": college_b}, headers=bearer(c_key)),
        client.get("/v1/invoices", params={"college_id": str(uuid.uuid4())}, headers=bearer(c_key)),
        client.get("/v1/tenant", params={"college_id": college_a}, headers=bearer(c_key)),
        client.get("/v1/payments", params={"college_id": college_a}, headers=bearer(c_key)),
        client.get("/v1/invoices", params={"college_id": college_a}, headers=bearer(y_key)),
        client.get("/v1/invoices", params={"college_id": college_a}, headers=bearer(home_key)),
        client.get("/v1/invoices", params={"college_id": home}, headers=bearer(a_key)),
        client.get(EXPORT, params={"college_id": college_a}, headers=bearer(y_key)),
    ]
    for answer in refusals:
        assert answer.status_code == 403, answer.text
        assert error(answer)["code"] == "forbidden"
        assert "only a consolidator the operator granted" in error(answer)["message"]
    for method, path in (
        ("POST", "/v1/invoices"),
        ("GET", "/v1/integrations"),
        ("GET", "/v1/integrations/gst-irp"),
        ("GET", "/v1/webhooks/endpoints"),
        ("GET", "/v1/tenant/api-keys"),
        ("GET", "/v1/users"),
    ):
        answer = client.request(
            method, path, params={"college_id": college_a}, json=invoice_body("C-1"), headers=bearer(c_key)
        )
        assert answer.status_code == 403, (method, path, answer.text)
    for odd in ("1", "ABC", "\u202e", " " + college_a):
        answer = client.get("/v1/invoices", params={"college_id": odd}, headers=bearer(c_key))
        assert answer.status_code == 422 and error(answer)["code"] == "validation_failed", (odd, answer.text)
    two = client.get(
        "/v1/invoices", params=[("college_id", college_a), ("college_id", college_b)], headers=bearer(c_key)
    )
    assert two.status_code == 422
    assert number(a_key, college_a) == "A-0001"

    # The grant serves the consolidator role only: another role cannot use it, the role back can.
    demoted = client.patch(f"/v1/users/{consolidator}", json={"role": "auditor"}, headers=bearer(home_key))
    assert demoted.status_code == 200, demoted.text
    assert number(c_key, college_a, college_id=college_a) == 403
    client.patch(f"/v1/users/{consolidator}", json={"role": "consolidator"}, headers=bearer(home_key))
    assert number(c_key, college_a, college_id=college_a) == "A-0001"

    # Withdrawing a grant stops its use at once (grants are never cached).
    withdrawn = client.delete(f"/v1/operator/grants/{consolidator}/{college_a}", headers=operator)
    assert withdrawn.status_code == 204
    assert number(c_key, college_a, college_id=college_a) == 403
    assert (
        client.delete(f"/v1/operator/grants/{consolidator}/{college_a}", headers=operator).status_code == 404
    )
    assert client.get("/v1/operator/grants", headers=operator).json() == {"items": []}

    # The granted college's own history says who was let in and out, and by whom.
    for kind in ("ReadGrantGiven", "ReadGrantWithdrawn"):
        [event] = stored_events(settings, college_a, kind)
        assert (event["user_id"], event["home_tenant_id"], event["changed_by"]) == (
            consolidator,
            home,
            "operator:api",
        )
    assert stored_events(settings, college_b, "ReadGrantGiven") == []
