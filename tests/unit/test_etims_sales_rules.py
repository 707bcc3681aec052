"""eTIMS sales rules that need no I/O: the branch key, what a sale job accepts, the retry policy."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from connectors.errors import PermanentError
from connectors.etims import CONNECTOR
from connectors.etims.sales import Receipt, SaleDocument, branch_key
from engine.config import load_settings
from streams.catalogue import retry_policy
from streams.connectors.jobs import Job
from streams.connectors.retry import GiveUp, Retry, next_step

TENANT = "5d2f6a3e-0000-4000-8000-000000000001"


def record(**changes: Any) -> dict[str, Any]:
    return {
        "invoice_id": "7b7c2f0e-0000-4000-8000-000000000002",
        "tenant_id": TENANT,
        "number": "KE-1",
        "country": "KE",
        "environment": "sandbox",
        "branch_id": "01",
        "document_type": "invoice",
        **changes,
    }


def test_one_branch_has_one_key_and_environments_and_branches_have_their_own() -> None:
    key = branch_key(TENANT, "sandbox", "01")
    assert key == branch_key(UUID(TENANT), "sandbox", "01")
    assert len({key, branch_key(TENANT, "production", "01"), branch_key(TENANT, "sandbox", "02")}) == 3


def test_a_sale_document_takes_its_branch_and_environment_from_the_issued_record() -> None:
    doc = SaleDocument.from_record(record(branch_id="03", environment="production"))
    assert (doc.bhf_id, doc.environment, doc.document_type, doc.original_invoice_id) == (
        "03",
        "production",
        "invoice",
        None,
    )


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"environment": None}, "environment"),
        ({"branch_id": ""}, "branch_id"),
        ({"document_type": "debit_note"}, "document_type"),
        ({"document_type": "credit_note", "original_invoice_id": None}, "original_invoice_id"),
    ],
)
def test_a_record_that_cannot_be_a_kenyan_sale_is_refused_permanently(
    changes: dict[str, Any], says: str
) -> None:
    with pytest.raises(PermanentError, match=says):
        SaleDocument.from_record(record(**changes))


def test_a_receipt_survives_the_queue_row_unchanged() -> None:
    receipt = Receipt(7, 9, "INTERNAL", "SIGN", "SDC1", "MRC1", "20261202101500", "https://q", "oscu", True)
    assert Receipt.from_fields(receipt.fields()) == receipt


def test_etims_retries_a_transient_failure_for_ever_at_its_capped_delay() -> None:
    policy = retry_policy(load_settings(), CONNECTOR)
    assert policy.forever
    capped = policy.delays[-1]
    assert capped == 900.0  # "every 15 minutes" (issue 10)
    assert next_step(policy, attempt=10_000, code="outage", retry_after=None) == Retry(10_001, capped, capped)


def test_other_connectors_still_give_up_after_their_schedule() -> None:
    policy = retry_policy(load_settings())
    assert isinstance(next_step(policy, attempt=len(policy.delays) + 1, code="x", retry_after=None), GiveUp)


def test_a_kenyan_invoice_becomes_a_sale_job_keyed_by_its_branch() -> None:
    from connectors.etims.routes import routes

    [job] = routes("ledgerflow.invoice.issued", "ce-1", record(totals={"total": Decimal("116.00")}))
    assert (job.connector, job.kind, job.job_id, job.tenant_id) == ("etims", "sale", "ce-1:sale", TENANT)
    assert job.subject == str(branch_key(TENANT, "sandbox", "01"))
    assert job.payload["invoice_id"] == record()["invoice_id"]
    assert job.payload["invoice"]["totals"] == {"total": "116.00"}  # JSON as the job topic carries it
    Job.decode(job.encode())  # and it survives the topic
    [again] = routes("ledgerflow.invoice.issued", "ce-1", record())
    assert again.job_id == job.job_id  # a re-published event makes the same job


def test_credit_notes_are_sales_and_indian_invoices_are_not() -> None:
    from connectors.etims.routes import routes

    credit = record(document_type="credit_note", original_invoice_id="7b7c2f0e-0000-4000-8000-000000000009")
    assert [j.kind for j in routes("ledgerflow.invoice.issued", "ce-2", credit)] == ["sale"]
    assert routes("ledgerflow.invoice.issued", "ce-3", record(country="IN")) == []
    assert routes("ledgerflow.invoice.cancelled", "ce-4", record()) == []


def test_a_saved_etims_integration_asks_for_device_initialisation() -> None:
    from connectors.etims.routes import routes

    saved = {"tenant_id": TENANT, "provider": "etims", "enabled": True, "environment": "sandbox"}
    [job] = routes("ledgerflow.tenant.integration_settings_changed", "ce-5", saved)
    assert job.kind.startswith("device.")


@pytest.mark.parametrize(
    "url",
    [
        "https://etims-api.kra.go.ke",
        "https://ETIMS-API.kra.go.ke./etims-api",
        "http://etims-api.kra.go.ke:8080",
    ],
)
def test_a_sandbox_integration_can_never_call_kras_production_host(url: str) -> None:
    from connectors.etims.endpoints import ENDPOINTS
    from engine.security.egress import EgressRefused, check_endpoint

    with pytest.raises(EgressRefused, match="production endpoint") as refused:
        check_endpoint(url, "sandbox", ENDPOINTS, "development")
    assert refused.value.code == "url_not_allowed"
    # The same host is what production is for; the sandboxes stay reachable from sandbox.
    assert check_endpoint("https://etims-api.kra.go.ke", "production", ENDPOINTS, "production")
    assert check_endpoint("https://etims-api-sbx.kra.go.ke", "sandbox", ENDPOINTS, "development")
    assert check_endpoint("http://127.0.0.1:9103", "sandbox", ENDPOINTS, "development")


def test_a_production_integration_can_never_call_a_sandbox() -> None:
    from connectors.etims.endpoints import ENDPOINTS
    from engine.security.egress import EgressRefused, check_endpoint

    for url in ("https://etims-api-sbx.kra.go.ke", "http://127.0.0.1:9103"):
        with pytest.raises(EgressRefused):
            check_endpoint(url, "production", ENDPOINTS, "production")


def test_a_drain_job_after_a_resend_goes_to_the_branchs_partition_and_is_never_a_duplicate() -> None:
    from connectors.etims.routes import drain_job, sale_job

    first, second = (drain_job(TENANT, "sandbox", "01", reason="resend") for _ in range(2))
    assert first.kind == "drain" and first.job_id != second.job_id
    assert first.subject == sale_job("ce-9", record()).subject == str(branch_key(TENANT, "sandbox", "01"))
    assert first.payload == {"environment": "sandbox", "bhf_id": "01"}
