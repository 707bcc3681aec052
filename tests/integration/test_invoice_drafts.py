"""Draft invoices and the invoice number series (issue 13) on the real PostgreSQL, Kafka and API:
draft -> issue with the next number, 20 concurrent issues without gap or duplicate, patch, discard,
idempotent creation on an external reference (concurrently), tenant scope, hostile input, and drafts
never reaching the IRP, eTIMS or GSTR-1."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from schemathesis.generation.modes import GenerationMode

from connectors.registry import CONNECTORS
from engine import db
from engine.application import InvoiceStateConflict, LedgerService
from engine.commands import DraftInvoice
from engine.config import Settings
from engine.relay import Relay
from engine.tax.india_gst import financial_year, today_in_india
from projections.gst_outward_supplies import CHANGES as OUTWARD_CHANGES
from projections.gst_outward_supplies import GstOutwardSupplies, supplies_for
from projections.invoice_register import InvoiceRegister
from projections.runner import ProjectionRunner
from schemas import registry
from tests.conftest import BackgroundLoop, wait_for
from tests.integration.helpers import INVOICE_BODY, client_for, register_tenant
from tests.integration.test_api_fuzz import api, api_schema, failures_of, tenant_key  # noqa: F401 (fixtures)
from tests.integration.test_backbone import read_topic

pytestmark = pytest.mark.integration

# The seller GSTIN register_tenant gives every test tenant.
SELLER_GSTIN = "27AAGCB7383J1Z8"
YEAR = financial_year(today_in_india(datetime.now(UTC)))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def draft_body(**changes: Any) -> dict[str, Any]:
    """The issue's example invoice without its number and date (a draft is dated today)."""
    body = copy.deepcopy(INVOICE_BODY)
    body.pop("number")
    body.pop("date")
    body.update(changes)
    return body


@pytest.fixture
def india(service: LedgerService, settings: Settings) -> tuple[str, str, Any]:
    tenant_id, api_key = register_tenant(service)
    return tenant_id, api_key, client_for(settings)


def run_together(count: int, work: Callable[[int], Any]) -> list[Any]:
    """``work(i)`` for i in 0..count-1 on as many threads, released at once; their results in order."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except Exception as exc:  # reported by the assertions on results
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_a_draft_has_taxes_but_no_number_and_is_issued_with_the_next_number_of_the_series(
    india: tuple[str, str, Any],
) -> None:
    _, api_key, client = india
    created = client.post("/v1/invoices/drafts", json=draft_body(), headers=bearer(api_key))
    assert created.status_code == 201, created.text
    draft = created.json()
    assert (draft["status"], draft["number"]) == ("draft", None)
    assert draft["totals"] == {
        "taxable": "1000.00", "cgst": "90.00", "sgst": "90.00",
        "igst": "0.00", "cess": "0.00", "total": "1180.00",
    }  # fmt: skip
    assert draft["date"] == today_in_india(datetime.now(UTC)).isoformat()

    read = client.get(f"/v1/invoices/{draft['id']}", headers=bearer(api_key))
    assert (read.status_code, read.json()["status"]) == (200, "draft")
    listed = client.get("/v1/invoices", params={"status": "draft"}, headers=bearer(api_key)).json()
    assert [item["id"] for item in listed["items"]] == [draft["id"]]

    # PATCH replaces the fields; the taxes follow.
    half = draft_body()
    half["lines"][0]["quantity"] = "5"
    patched = client.patch(f"/v1/invoices/{draft['id']}", json=half, headers=bearer(api_key))
    assert patched.status_code == 200, patched.text
    assert patched.json()["totals"]["total"] == "590.00"

    issued = client.post(f"/v1/invoices/{draft['id']}/issue", headers=bearer(api_key))
    assert issued.status_code == 201, issued.text
    invoice = issued.json()
    assert invoice["number"] == f"INV/{YEAR}/0001"
    assert (invoice["status"], invoice["draft_id"], invoice["totals"]["total"]) == (
        "issued",
        draft["id"],
        "590.00",
    )
    assert invoice["id"] != draft["id"]
    assert invoice["source"] == "api"

    again = client.post(f"/v1/invoices/{draft['id']}/issue", headers=bearer(api_key))
    assert (again.status_code, again.json()["id"], again.headers["Idempotent-Replayed"]) == (
        200,
        invoice["id"],
        "true",
    )
    after = client.get(f"/v1/invoices/{draft['id']}", headers=bearer(api_key)).json()
    assert (after["status"], after["issued_invoice_id"], after["issued_number"]) == (
        "issued",
        invoice["id"],
        invoice["number"],
    )
    # An issued draft, and an issued invoice, are no drafts any more.
    refused = client.patch(f"/v1/invoices/{draft['id']}", json=draft_body(), headers=bearer(api_key))
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "invalid_state")
    for method, path in (("PATCH", ""), ("DELETE", ""), ("POST", "/issue")):
        answer = client.request(
            method,
            f"/v1/invoices/{invoice['id']}{path}",
            json=draft_body() if method == "PATCH" else None,
            headers=bearer(api_key),
        )
        assert (answer.status_code, answer.json()["error"]["code"]) == (409, "invalid_state"), (method, path)

    series = client.get("/v1/invoice-series", headers=bearer(api_key)).json()
    assert series == {
        "prefix": "INV/{fy}/",
        "digits": 4,
        "financial_year": YEAR,
        "last_number": 1,
        "next_number": f"INV/{YEAR}/0002",
    }


def test_twenty_concurrent_issues_take_sequential_numbers_without_a_gap_or_a_duplicate(
    india: tuple[str, str, Any], service: LedgerService
) -> None:
    tenant_id, api_key, client = india
    changed = client.put(
        "/v1/invoice-series", json={"prefix": "S/{fy}/", "digits": 3}, headers=bearer(api_key)
    )
    assert changed.status_code == 200, changed.text
    command = DraftInvoice.model_validate(draft_body())
    drafts = [
        service.create_draft_invoice(
            UUID(tenant_id), command, source="api", external_ref=None, traceparent=None
        )
        for _ in range(20)
    ]
    # Twenty issues at once, and the first draft issued a second time concurrently.
    targets = [d.id for d in drafts] + [drafts[0].id]
    results = run_together(
        len(targets), lambda i: service.issue_draft_invoice(UUID(tenant_id), targets[i], traceparent=None)
    )
    failures = [r for r in results if isinstance(r, Exception)]
    assert not failures, failures
    numbers = sorted(r.invoice.number for r in results[:20])
    assert numbers == [f"S/{YEAR}/{n:03d}" for n in range(1, 21)]
    assert results[20].invoice.id == results[0].invoice.id
    assert sum(r.created for r in results) == 20
    # Each draft points at its own invoice.
    assert {str(r.invoice.id) for r in results[:20]} == {
        service.get_draft_invoice(UUID(tenant_id), d.id).issued_invoice["invoice_id"]  # type: ignore[index]
        for d in drafts
    }
    assert client.get("/v1/invoice-series", headers=bearer(api_key)).json()["next_number"] == f"S/{YEAR}/021"


def test_a_number_given_by_hand_is_stepped_over_and_no_number_is_lost(
    india: tuple[str, str, Any], service: LedgerService
) -> None:
    tenant_id, api_key, client = india
    manual = {
        **INVOICE_BODY,
        "number": f"INV/{YEAR}/0001",
        "date": today_in_india(datetime.now(UTC)).isoformat(),
    }
    assert client.post("/v1/invoices", json=manual, headers=bearer(api_key)).status_code == 201
    draft = client.post("/v1/invoices/drafts", json=draft_body(), headers=bearer(api_key)).json()
    issued = client.post(f"/v1/invoices/{draft['id']}/issue", headers=bearer(api_key))
    assert (issued.status_code, issued.json()["number"]) == (201, f"INV/{YEAR}/0002")
    assert client.get("/v1/invoice-series", headers=bearer(api_key)).json()["last_number"] == 2
    assert service.get_draft_invoice(UUID(tenant_id), UUID(draft["id"])).status == "issued"


def test_a_discarded_draft_is_kept_as_discarded_and_can_never_be_issued(india: tuple[str, str, Any]) -> None:
    _, api_key, client = india
    draft = client.post("/v1/invoices/drafts", json=draft_body(), headers=bearer(api_key)).json()
    discarded = client.delete(
        f"/v1/invoices/{draft['id']}", params={"reason": "order cancelled"}, headers=bearer(api_key)
    )
    assert discarded.status_code == 200, discarded.text
    assert (discarded.json()["status"], discarded.json()["discard_reason"]) == (
        "discarded",
        "order cancelled",
    )
    twice = client.delete(f"/v1/invoices/{draft['id']}", headers=bearer(api_key))
    assert (twice.status_code, twice.json()["version"]) == (200, discarded.json()["version"])
    issued = client.post(f"/v1/invoices/{draft['id']}/issue", headers=bearer(api_key))
    assert (issued.status_code, issued.json()["error"]["code"]) == (409, "invalid_state")
    patched = client.patch(f"/v1/invoices/{draft['id']}", json=draft_body(), headers=bearer(api_key))
    assert patched.status_code == 409
    listed = client.get("/v1/invoices/drafts", params={"status": "discarded"}, headers=bearer(api_key)).json()
    assert [(d["id"], d["status"]) for d in listed["items"]] == [(draft["id"], "discarded")]
    assert client.get("/v1/invoices/drafts", headers=bearer(api_key)).json()["items"] == []
    assert client.get("/v1/invoice-series", headers=bearer(api_key)).json()["last_number"] == 0


def test_a_draft_is_created_once_per_external_reference_even_concurrently(
    india: tuple[str, str, Any], service: LedgerService
) -> None:
    tenant_id, api_key, client = india
    command = DraftInvoice.model_validate(draft_body())
    results = run_together(
        10,
        lambda _: service.create_draft_invoice(
            UUID(tenant_id), command, source="veekaart", external_ref="order-1042", traceparent=None
        ),
    )
    assert not [r for r in results if isinstance(r, Exception)], results
    assert len({r.id for r in results}) == 1
    assert results[0].version == 1 and results[0].source == "veekaart"
    listed = client.get("/v1/invoices/drafts", headers=bearer(api_key)).json()["items"]
    assert [(d["id"], d["external_ref"]) for d in listed] == [(str(results[0].id), "order-1042")]

    # Over HTTP the reference is the Idempotency-Key: the same body answers the same draft,
    # another body is refused.
    key = {**bearer(api_key), "Idempotency-Key": "k-1"}
    first = client.post("/v1/invoices/drafts", json=draft_body(), headers=key)
    replay = client.post("/v1/invoices/drafts", json=draft_body(), headers=key)
    assert (first.status_code, replay.status_code) == (201, 201)
    assert replay.json()["id"] == first.json()["id"] and replay.headers["Idempotent-Replayed"] == "true"
    other = client.post(
        "/v1/invoices/drafts", json=draft_body(supply_type="B2B", reverse_charge=True), headers=key
    )
    assert (other.status_code, other.json()["error"]["code"]) == (422, "idempotency_key_reused")


def test_drafts_and_series_are_scoped_to_their_tenant(
    india: tuple[str, str, Any], service: LedgerService
) -> None:
    _, api_key, client = india
    _, other_key = register_tenant(service)
    draft = client.post("/v1/invoices/drafts", json=draft_body(), headers=bearer(api_key)).json()
    assert client.put("/v1/invoice-series", json={"prefix": "A/"}, headers=bearer(api_key)).status_code == 200
    for method, path in (("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/issue")):
        answer = client.request(
            method,
            f"/v1/invoices/{draft['id']}{path}",
            json=draft_body() if method == "PATCH" else None,
            headers=bearer(other_key),
        )
        assert (answer.status_code, answer.json()["error"]["code"]) == (404, "not_found"), (method, path)
    assert client.get(f"/v1/invoices/drafts/{draft['id']}", headers=bearer(other_key)).status_code == 404
    assert client.get("/v1/invoices/drafts", headers=bearer(other_key)).json()["items"] == []
    assert client.get("/v1/invoice-series", headers=bearer(other_key)).json()["prefix"] == "INV/{fy}/"
    # The owner's draft is untouched and still issues from the owner's series.
    issued = client.post(f"/v1/invoices/{draft['id']}/issue", headers=bearer(api_key))
    assert issued.json()["number"] == "A/0001"
    assert client.post("/v1/invoices/drafts", json=draft_body(), headers={}).status_code == 401


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"buyer": {**INVOICE_BODY["buyer"], "name": "Evil\x00Traders"}}, "buyer.name"),
        ({"buyer": {**INVOICE_BODY["buyer"], "name": "Line\nbreak"}}, "buyer.name"),
        ({"buyer": {**INVOICE_BODY["buyer"], "gstin": "27AAACR5055K1Z8"}}, "buyer.gstin"),  # bad check digit
        ({"lines": [{**INVOICE_BODY["lines"][0], "quantity": "1e999999"}]}, "lines[0].quantity"),
        (
            {"lines": [{**INVOICE_BODY["lines"][0], "unit_price": "99999999999999999999"}]},
            "lines[0].unit_price",
        ),
        ({"lines": []}, "lines"),
        ({"date": "2026-02-30"}, "date"),
    ],
)
def test_a_hostile_draft_is_refused_with_the_field_that_is_wrong(
    india: tuple[str, str, Any], change: dict[str, Any], path: str
) -> None:
    _, api_key, client = india
    answer = client.post("/v1/invoices/drafts", json=draft_body(**change), headers=bearer(api_key))
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "validation_failed"
    assert path in [f["path"] for f in error["details"]["fields"]], error


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"prefix": "INVOICE/{fy}/", "digits": 4}, "number_too_long"),
        ({"prefix": "INV\u202e/"}, "control_character"),
        ({"prefix": "INV {fy}"}, "invalid_prefix"),
        ({"prefix": "", "digits": 4}, "invalid_number"),
        ({"prefix": "INV/", "digits": 0}, "invalid_digits"),
        ({"prefix": "INV/", "digits": 10**30}, "invalid_digits"),
    ],
)
def test_a_series_the_irp_cannot_take_is_refused(
    india: tuple[str, str, Any], body: dict[str, Any], code: str
) -> None:
    _, api_key, client = india
    answer = client.put("/v1/invoice-series", json=body, headers=bearer(api_key))
    assert answer.status_code == 422, answer.text
    codes = [f["code"] for f in answer.json()["error"]["details"].get("fields", [])]
    assert answer.json()["error"]["code"] == "validation_failed"
    assert code in codes, answer.text


def test_unknown_and_malformed_draft_ids_are_404(india: tuple[str, str, Any]) -> None:
    _, api_key, client = india
    for path in ("/v1/invoices/not-a-uuid/issue", f"/v1/invoices/{UUID(int=7)}/issue"):
        answer = client.post(path, headers=bearer(api_key))
        assert (answer.status_code, answer.json()["error"]["code"]) == (404, "not_found")
    answer = client.delete("/v1/invoices/\u00e9t\u00e9", headers=bearer(api_key))
    assert answer.status_code == 404


def test_drafts_never_reach_the_irp_etims_or_gstr1_and_their_issue_is_an_ordinary_invoice(
    india: tuple[str, str, Any], settings: Settings, topics: list[str], background: BackgroundLoop
) -> None:
    tenant_id, api_key, client = india
    b2b = client.post("/v1/invoices/drafts", json=draft_body(), headers=bearer(api_key)).json()
    other = client.post("/v1/invoices/drafts", json=draft_body(), headers=bearer(api_key)).json()
    client.patch(f"/v1/invoices/{other['id']}", json=draft_body(), headers=bearer(api_key))
    client.delete(f"/v1/invoices/{other['id']}", headers=bearer(api_key))
    invoice = client.post(f"/v1/invoices/{b2b['id']}/issue", headers=bearer(api_key)).json()
    background.start(Relay(settings).run)
    # drafted x2, draft_updated, draft_discarded, issued, draft_issued
    messages = read_topic(settings, settings.topic("ledger.invoice.v1"), expected=6)
    routed: dict[str, list[str]] = {}
    for message in messages:
        headers = {k: v.decode() for k, v in message.headers()}
        ce_type = headers["ce_type"]
        record = registry.decode_event(message.value(), ce_type)
        # What the router does with it: each connector that names the type makes its jobs.
        jobs = [
            f"{connector.name}:{job}"
            for connector in CONNECTORS
            if ce_type in connector.route_event_types
            for job in connector.routes(ce_type, headers["ce_id"], record)
        ]
        routed.setdefault(ce_type, []).extend(jobs)
        if ce_type.startswith("ledgerflow.invoice_draft."):
            assert message.key().decode() in (b2b["id"], other["id"])
            assert OUTWARD_CHANGES.get(ce_type) is None
    assert sorted(routed) == [
        "ledgerflow.invoice.issued",
        "ledgerflow.invoice_draft.draft_discarded",
        "ledgerflow.invoice_draft.draft_issued",
        "ledgerflow.invoice_draft.draft_updated",
        "ledgerflow.invoice_draft.drafted",
    ]
    assert all(not jobs for ce_type, jobs in routed.items() if ce_type != "ledgerflow.invoice.issued"), routed
    # The issued invoice is a normal B2B invoice: the IRP and GSTIN look-up connectors take it.
    assert any(job.startswith("gst-irp:") for job in routed["ledgerflow.invoice.issued"]), routed
    assert invoice["supply_type"] == "B2B"

    # The read side: GSTR-1's outward supplies and the invoice register hold the invoice, no draft.
    background.start(ProjectionRunner(settings, GstOutwardSupplies()).run)
    background.start(ProjectionRunner(settings, InvoiceRegister()).run)
    period = today_in_india(datetime.now(UTC)).strftime("%m%Y")

    def supplies() -> list[Any]:
        background.check()
        with db.connect(settings) as conn:
            return supplies_for(conn, UUID(tenant_id), SELLER_GSTIN, period)

    found = wait_for(supplies, what="the issued invoice among the period's outward supplies")
    assert [d.number for d in found] == [invoice["number"]]
    listed = wait_for(
        lambda: client.get("/v1/invoices", headers=bearer(api_key)).json()["items"],
        what="the issued invoice in the invoice register",
    )
    assert [i["id"] for i in listed] == [invoice["id"]]


def test_the_service_refuses_to_issue_a_discarded_draft(
    india: tuple[str, str, Any], service: LedgerService
) -> None:
    tenant_id, _, _ = india
    draft = service.create_draft_invoice(
        UUID(tenant_id),
        DraftInvoice.model_validate(draft_body()),
        source="api",
        external_ref=None,
        traceparent=None,
    )
    service.discard_draft_invoice(UUID(tenant_id), draft.id, None, None)
    with pytest.raises(InvoiceStateConflict):
        service.issue_draft_invoice(UUID(tenant_id), draft.id, None)


def test_the_draft_and_series_operations_answer_generated_requests_as_documented(
    api_schema: Any,  # noqa: F811 (the fixture of test_api_fuzz)
    tenant_key: str,  # noqa: F811
) -> None:
    """schemathesis against the draft routes only (test_api_fuzz covers them all, slowly)."""
    headers = {"Authorization": f"Bearer {tenant_key}"}
    ours = ("/v1/invoices/drafts", "/v1/invoice-series", "/v1/invoices/{invoice_id}")
    operations = [
        op
        for op in (result.ok() for result in api_schema.get_all_operations())
        if op.path.startswith(ours)
        and (op.method, op.path) != ("get", "/v1/invoices/{invoice_id}")
        and not op.path.endswith(("/cancel", "/credit-notes", "/debit-notes"))
    ]
    assert len(operations) == 8, [op.label for op in operations]
    statuses: dict[int, int] = {}
    found = [
        failure
        for operation in operations
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        for failure in failures_of(operation, mode, headers, statuses)
    ]
    assert not [s for s in statuses if s >= 500], statuses
    assert not found, "\n\n".join(found[:10])


def test_a_kenyan_tenant_has_no_gst_drafts(service: LedgerService, settings: Settings) -> None:
    registered = service.register_tenant(
        name="Duka", legal_name="Duka Limited", country="KE", gstin=None, state=None, kra_pin="P051234567X"
    )
    client = client_for(settings)
    answer = client.post("/v1/invoices/drafts", json=draft_body(), headers=bearer(registered.api_key))
    assert answer.status_code == 422, answer.text
    assert [f["code"] for f in answer.json()["error"]["details"]["fields"]] == ["wrong_country"]
