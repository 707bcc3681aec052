"""Indian credit and debit notes (issue 11) on the real PostgreSQL, Kafka and API: issue, cap, cancel
and release, concurrency, idempotency, tenant isolation, the register's links between an invoice and
its notes, and a credit note's IRN at the IRP sandbox over HTTP."""

from __future__ import annotations

import threading
from datetime import date
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from connectors import gst_irp
from connectors.gst_irp.client import IrpClient, IrpCredentials
from connectors.gst_irp.handler import issued_seller
from connectors.gst_irp.mapping import irn_for, to_einvoice
from connectors.gst_irp.routes import ISSUED
from connectors.gst_irp.sandbox import create_app
from engine.application import LedgerService
from engine.commands import IssueGstNote, IssueInvoice
from engine.config import Settings
from engine.publishing import invoice_document
from engine.relay import Relay
from projections.invoice_register import InvoiceRegister
from projections.runner import ProjectionRunner
from tests.conftest import BackgroundLoop, wait_for
from tests.connectors.contract import LiveServer
from tests.integration.helpers import (
    IRP_ACCOUNT,
    IRP_SELLER_GSTIN,
    client_for,
    invoice_body,
    register_irp_tenant,
    register_tenant,
)

pytestmark = pytest.mark.integration


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def two_lines(number: str = "INV-N-1", **changes: Any) -> dict[str, Any]:
    body = invoice_body(number, **changes)
    body["lines"].append(
        {"description": "Copper wire", "hsn": "7408", "quantity": "4", "unit": "KGS", "unit_price": "50",
         "gst_rate": "18"}
    )  # fmt: skip
    return body


def note(number: str, *lines: tuple[int, str], reason: str = "sales_return", **extra: Any) -> dict[str, Any]:
    return {
        "number": number,
        "date": "2026-01-20",
        "reason": reason,
        "lines": [{"line_no": no, "quantity": quantity, **extra} for no, quantity in lines],
    }


@pytest.fixture
def india(service: LedgerService, settings: Settings) -> tuple[str, Any]:
    _, api_key = register_tenant(service)
    return api_key, client_for(settings)


def test_credit_and_debit_notes_are_issued_capped_and_a_cancelled_credit_note_gives_back(
    india: tuple[str, Any],
) -> None:
    api_key, client = india
    original = client.post("/v1/invoices", json=two_lines(), headers=bearer(api_key))
    assert original.status_code == 201, original.text
    invoice_id = original.json()["id"]
    credit_url, debit_url = (
        f"/v1/invoices/{invoice_id}/credit-notes",
        f"/v1/invoices/{invoice_id}/debit-notes",
    )

    first = client.post(credit_url, json=note("CN-1", (1, "4")), headers=bearer(api_key))
    assert first.status_code == 201, first.text
    body = first.json()
    assert (body["document_type"], body["original_invoice_id"], body["original_number"]) == (
        "credit_note",
        invoice_id,
        "INV-N-1",
    )
    assert body["original_invoice_date"] == "2026-01-19" and body["note_reason"] == "sales_return"
    [line] = body["lines"]
    # 4 of line 1's 10 units at 100, CGST + SGST 9% each as on the original (intra-state, 18%).
    assert (line["original_line_no"], line["taxable_value"], line["cgst"], line["sgst"], line["total"]) == (
        1,
        "400.00",
        "36.00",
        "36.00",
        "472.00",
    )
    assert first.headers["Location"] == f"/v1/invoices/{body['id']}"

    # The same note again is a replay, not a second note.
    again = client.post(credit_url, json=note("CN-1", (1, "4")), headers=bearer(api_key))
    assert again.status_code == 201 and again.headers.get("Idempotent-Replayed") == "true"
    assert again.json()["id"] == body["id"]
    # The same number with another body is a duplicate number.
    clash = client.post(credit_url, json=note("CN-1", (1, "5")), headers=bearer(api_key))
    assert clash.status_code == 409, clash.text

    second = client.post(credit_url, json=note("CN-2", (1, "6"), (2, "1")), headers=bearer(api_key))
    assert second.status_code == 201, second.text
    exceed = client.post(credit_url, json=note("CN-3", (1, "1")), headers=bearer(api_key))
    assert exceed.status_code == 422, exceed.text
    error = exceed.json()["error"]
    assert error["code"] == "credit_note_exceeds_original"
    assert error["details"]["fields"][0]["path"] == "lines[0]"

    # A debit note is not capped by what was credited.
    debit = client.post(
        debit_url, json=note("DN-1", (1, "2"), reason="others", unit_price="10"), headers=bearer(api_key)
    )
    assert debit.status_code == 201, debit.text
    assert (debit.json()["document_type"], debit.json()["totals"]["total"]) == ("debit_note", "23.60")

    # Cancelling CN-2 gives its six units back: a new credit note for them goes through.
    cancel = client.post(
        f"/v1/invoices/{second.json()['id']}/cancel", json={"reason": "other"}, headers=bearer(api_key)
    )
    assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled", cancel.text
    again_cancel = client.post(
        f"/v1/invoices/{second.json()['id']}/cancel", json={"reason": "other"}, headers=bearer(api_key)
    )
    assert again_cancel.status_code == 409
    third = client.post(credit_url, json=note("CN-3", (1, "6")), headers=bearer(api_key))
    assert third.status_code == 201, third.text
    assert client.post(credit_url, json=note("CN-4", (1, "1")), headers=bearer(api_key)).status_code == 422

    # The invoice cannot be cancelled while credit notes stand against it.
    blocked = client.post(
        f"/v1/invoices/{invoice_id}/cancel", json={"reason": "other"}, headers=bearer(api_key)
    )
    assert blocked.status_code == 409 and "credit notes" in blocked.json()["error"]["message"], blocked.text

    # A note is no invoice: it takes no notes itself; a cancelled invoice takes none either.
    on_note = client.post(
        f"/v1/invoices/{body['id']}/debit-notes", json=note("DN-2", (1, "1")), headers=bearer(api_key)
    )
    assert on_note.status_code == 409, on_note.text
    other = client.post("/v1/invoices", json=two_lines("INV-N-2"), headers=bearer(api_key)).json()
    client.post(f"/v1/invoices/{other['id']}/cancel", json={"reason": "duplicate"}, headers=bearer(api_key))
    refused = client.post(
        f"/v1/invoices/{other['id']}/credit-notes", json=note("CN-5", (1, "1")), headers=bearer(api_key)
    )
    assert refused.status_code == 409 and "cancelled" in refused.json()["error"]["message"]


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"reason": "because"}, "reason"),
        ({"number": "0CN"}, "number"),
        ({"number": "CN\u202e1"}, "number"),
        ({"date": "2026-13-01"}, "date"),
        ({"date": "2026-01-18"}, "date"),
        ({"lines": []}, "lines"),
        ({"lines": [{"line_no": 9, "quantity": "1"}]}, "lines[0].line_no"),
        ({"lines": [{"line_no": 1, "quantity": "1e999999"}]}, "lines[0].quantity"),
        (
            {"lines": [{"line_no": 1, "quantity": "1", "unit_price": "99999999999999999999"}]},
            "lines[0].unit_price",
        ),
        ({"lines": [{"line_no": 1, "quantity": "0"}]}, "lines[0].quantity"),
    ],
)
def test_hostile_note_input_is_422_naming_the_field(
    india: tuple[str, Any], change: dict[str, Any], path: str
) -> None:
    api_key, client = india
    invoice_id = client.post("/v1/invoices", json=two_lines(), headers=bearer(api_key)).json()["id"]
    for kind in ("credit-notes", "debit-notes"):
        answer = client.post(
            f"/v1/invoices/{invoice_id}/{kind}",
            json={**note("CN-H", (1, "1")), **change},
            headers=bearer(api_key),
        )
        assert answer.status_code == 422, answer.text
        assert path in [f["path"] for f in answer.json()["error"]["details"]["fields"]], answer.text


def test_concurrent_credit_notes_never_exceed_the_invoice_together(
    india: tuple[str, Any], settings: Settings
) -> None:
    api_key, client = india
    invoice_id = client.post("/v1/invoices", json=two_lines(), headers=bearer(api_key)).json()["id"]
    url = f"/v1/invoices/{invoice_id}/credit-notes"
    clients = [client_for(settings) for _ in range(6)]
    start = threading.Barrier(len(clients))
    answers: list[Any] = [None] * len(clients)

    def send(i: int) -> None:
        start.wait()
        # A 503 says "busy, retry" (a lock wait ran out on a loaded machine): retried as a client would.
        for _ in range(5):
            answers[i] = clients[i].post(url, json=note(f"CN-C{i}", (1, "3")), headers=bearer(api_key))
            if answers[i].status_code != 503:
                break

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201, 201, 201, 422, 422, 422], [a.text for a in answers]
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 422} == {
        "credit_note_exceeds_original"
    }


def test_the_same_note_sent_concurrently_is_issued_once(india: tuple[str, Any], settings: Settings) -> None:
    api_key, client = india
    invoice_id = client.post("/v1/invoices", json=two_lines(), headers=bearer(api_key)).json()["id"]
    url = f"/v1/invoices/{invoice_id}/credit-notes"
    clients = [client_for(settings) for _ in range(5)]
    start = threading.Barrier(len(clients))
    answers: list[Any] = [None] * len(clients)

    def send(i: int) -> None:
        start.wait()
        answers[i] = clients[i].post(url, json=note("CN-SAME", (1, "2")), headers=bearer(api_key))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [a.status_code for a in answers] == [201] * 5, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert sum(a.headers.get("Idempotent-Replayed") != "true" for a in answers) == 1
    remaining = client.post(url, json=note("CN-REST", (1, "9")), headers=bearer(api_key))
    assert remaining.status_code == 422, "the duplicate credited the invoice twice"
    assert client.post(url, json=note("CN-REST", (1, "8")), headers=bearer(api_key)).status_code == 201


def test_an_idempotency_key_answers_a_retried_note_with_the_first(india: tuple[str, Any]) -> None:
    api_key, client = india
    invoice_id = client.post("/v1/invoices", json=two_lines(), headers=bearer(api_key)).json()["id"]
    url = f"/v1/invoices/{invoice_id}/credit-notes"
    headers = {**bearer(api_key), "Idempotency-Key": "note-1"}
    first = client.post(url, json=note("CN-K", (1, "1")), headers=headers)
    assert first.status_code == 201, first.text
    retry = client.post(url, json=note("CN-K", (1, "1")), headers=headers)
    assert retry.status_code == 201 and retry.headers.get("Idempotent-Replayed") == "true"
    reused = client.post(url, json=note("CN-L", (1, "1")), headers=headers)
    assert reused.status_code == 422 and reused.json()["error"]["code"] == "idempotency_key_reused"


def test_another_tenants_invoice_and_notes_are_not_found(
    india: tuple[str, Any], service: LedgerService
) -> None:
    api_key, client = india
    _, stranger = register_tenant(service, state="29", gstin="29AAGCB7383J1Z4")
    invoice_id = client.post("/v1/invoices", json=two_lines(), headers=bearer(api_key)).json()["id"]
    note_id = client.post(
        f"/v1/invoices/{invoice_id}/credit-notes", json=note("CN-1", (1, "1")), headers=bearer(api_key)
    ).json()["id"]
    for kind in ("credit-notes", "debit-notes"):
        answer = client.post(
            f"/v1/invoices/{invoice_id}/{kind}", json=note("CN-X", (1, "1")), headers=bearer(stranger)
        )
        assert answer.status_code == 404, answer.text
    assert client.get(f"/v1/invoices/{note_id}", headers=bearer(stranger)).status_code == 404
    cancel = client.post(f"/v1/invoices/{note_id}/cancel", json={"reason": "other"}, headers=bearer(stranger))
    assert cancel.status_code == 404


def test_the_register_links_an_invoice_and_its_notes_and_shows_the_new_fields(
    india: tuple[str, Any], settings: Settings, topics: list[str], background: BackgroundLoop
) -> None:
    api_key, client = india
    body = two_lines(
        reverse_charge=True,
        ecommerce_gstin="27AAGCB7383J1Z8",
    )
    body["lines"][1]["supply_category"] = "exempt"
    body["lines"][1].pop("gst_rate")
    issued = client.post("/v1/invoices", json=body, headers=bearer(api_key))
    assert issued.status_code == 201, issued.text
    invoice_id = issued.json()["id"]
    assert (
        issued.json()["lines"][1]["supply_category"] == "exempt"
        and issued.json()["lines"][1]["total"] == "200.00"
    )
    credit = client.post(
        f"/v1/invoices/{invoice_id}/credit-notes", json=note("CN-R", (2, "1")), headers=bearer(api_key)
    ).json()
    debit = client.post(
        f"/v1/invoices/{invoice_id}/debit-notes", json=note("DN-R", (1, "1")), headers=bearer(api_key)
    ).json()
    client.post(f"/v1/invoices/{credit['id']}/cancel", json={"reason": "other"}, headers=bearer(api_key))

    background.start(Relay(settings).run)
    background.start(ProjectionRunner(settings, InvoiceRegister()).run)

    def projected() -> dict[str, Any] | None:
        answer = client.get(f"/v1/invoices/{invoice_id}", headers=bearer(api_key))
        found: dict[str, Any] = answer.json()
        if "X-Ledgerflow-Read-Source" in answer.headers or len(found["notes"]) < 2:
            return None
        if any(n["status"] != "cancelled" for n in found["notes"] if n["document_type"] == "credit_note"):
            return None
        return found

    found = wait_for(projected, timeout=120, what="the invoice and its notes in the register")
    assert [(n["id"], n["document_type"], n["status"]) for n in found["notes"]] == [
        (credit["id"], "credit_note", "cancelled"),
        (debit["id"], "debit_note", "issued"),
    ]
    assert (found["reverse_charge"], found["ecommerce_gstin"], found["document_type"]) == (
        True,
        "27AAGCB7383J1Z8",
        "invoice",
    )
    assert found["lines"][1]["supply_category"] == "exempt"
    note_view = wait_for(
        lambda: (
            (r := client.get(f"/v1/invoices/{debit['id']}", headers=bearer(api_key))).headers.get(
                "X-Ledgerflow-Read-Source"
            )
            is None
            and r.json()
        ),
        timeout=60,
        what="the debit note in the register",
    )
    assert (note_view["original_invoice_id"], note_view["note_reason"], note_view["reverse_charge"]) == (
        invoice_id,
        "sales_return",
        True,
    )
    assert "notes" not in note_view


async def test_a_credit_note_gets_its_own_irn_at_the_irp_sandbox(
    service: LedgerService, settings: Settings
) -> None:
    with LiveServer(create_app(account=IRP_ACCOUNT)) as server:
        tenant = register_irp_tenant(service, settings, server.url).tenant_id
        original = service.issue_invoice(
            tenant, IssueInvoice.model_validate(invoice_body("INV-IRN-1"))
        ).invoice
        command = IssueGstNote.model_validate(note("CN-IRN-1", (1, "2"), reason="post_sale_discount"))
        credit = service.issue_gst_note(tenant, original.id, command, kind="credit_note").invoice
        record = {**invoice_document(credit, credit.id), "tenant_id": str(tenant)}
        # The router asks for an IRN for the note as for any B2B document.
        [job] = gst_irp.CONNECTOR.routes(ISSUED, f"note-{credit.id}", record)
        seller = issued_seller(record)
        assert seller is not None
        payload = to_einvoice(job.payload["invoice"], seller)
        assert payload["DocDtls"]["Typ"] == "CRN"
        assert payload["RefDtls"]["PrecDocDtls"] == [{"InvNo": "INV-IRN-1", "InvDt": "19/01/2026"}]
        async with IrpClient(server.url, IrpCredentials(**IRP_ACCOUNT.credentials())) as irp:
            result = await irp.generate_irn(payload)
            assert result.irn == irn_for(IRP_SELLER_GSTIN, date(2026, 1, 20), "CRN", "CN-IRN-1")
            found = await irp.get_irn_by_document("CRN", "CN-IRN-1", date(2026, 1, 20))
            assert found is not None and found.irn == result.irn
            # The invoice's own IRN is a different document (Typ INV) at the portal.
            assert await irp.get_irn_by_document("INV", "CN-IRN-1", date(2026, 1, 20)) is None
        assert Decimal(str(payload["ValDtls"]["TotInvVal"])) == Decimal(str(record["totals"]["total"]))
        assert UUID(job.subject) == credit.id


def test_the_ingest_path_takes_the_new_invoice_fields_and_refuses_them_when_wrong(
    service: LedgerService, settings: Settings
) -> None:
    from engine.ingest import IngestRejected, apply_ingest_batch
    from tests.integration.helpers import create_ingest_key, ingest_command
    from tests.integration.test_ingest_batches import signing_keys

    tenant_id, _ = register_tenant(service)
    key = create_ingest_key(settings, tenant_id)
    export = two_lines(
        "EXP-1", supply_type="EXPWOP", export={"shipping_bill_number": "1234567", "port_code": "INNSA1"}
    )
    export["lines"][1]["supply_category"] = "nil"
    export["lines"][1].pop("gst_rate")
    wrong = two_lines("EXP-2", export={"shipping_bill_number": "1234567"})  # not an export
    outcomes = apply_ingest_batch(
        service,
        [ingest_command(tenant_id, "ok", export, key), ingest_command(tenant_id, "bad", wrong, key)],
        signing_keys(service, settings),
    )
    assert not isinstance(outcomes[0], IngestRejected), outcomes[0]
    assert isinstance(outcomes[1], IngestRejected) and outcomes[1].code == "validation_failed"
    stored = service.get_invoice(UUID(tenant_id), outcomes[0].invoice_id)
    assert stored.export == {
        "shipping_bill_number": "1234567",
        "shipping_bill_date": None,
        "port_code": "INNSA1",
    }
    assert stored.lines[1]["supply_category"] == "nil" and stored.source == "ingest"
