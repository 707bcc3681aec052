"""Buyer GSTIN verification after an invoice is issued: the ``verify_buyer`` job of ``gstin-lookup``.

First the handler on its own (real PostgreSQL, the real LedgerService for alerts, the sandbox over
HTTP), then end to end: the relay publishes the invoice, the router queues the job, a connector
worker runs it, and an alert for the cancelled buyer appears while the invoice stays issued.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest

from connectors.catalogue import endpoint_policy
from connectors.gstin_lookup.handler import BuyerChecks
from connectors.gstin_lookup.routes import ISSUED, VERIFY_BUYER, job_for
from connectors.gstin_lookup.sandbox import BUYER, CANCELLED, SUSPENDED, SandboxAccount, create_app
from engine import integrations
from engine.application import LedgerService
from engine.commands import IssueInvoice
from engine.config import Settings
from engine.publishing import invoice_document
from engine.security.secrets import load_key_ring
from engine.tax.gstin import check_character
from streams.connectors.context import HandlerContext
from tests.connectors.contract import LiveServer, Operator
from tests.integration.helpers import client_for, invoice_body
from tests.integration.processes import Processes

pytestmark = pytest.mark.integration

ACCOUNT = SandboxAccount()
UNREGISTERED = "29AAACZ9999Q1Z" + check_character("29AAACZ9999Q1Z")
SELLER = "27AAGCB7383J1Z8"


@pytest.fixture
def lookup() -> Iterator[tuple[str, Operator]]:
    with LiveServer(create_app(account=ACCOUNT)) as server:
        yield server.url, Operator(server.url)


def seller(service: LedgerService, settings: Settings, url: str | None) -> tuple[UUID, str]:
    """An Indian tenant; with its gstin-lookup integration pointed at ``url`` unless None."""
    registered = service.register_tenant(
        name="Seller", legal_name="Seller Private Limited", country="IN", gstin=SELLER, state="27"
    )
    if url is not None:
        with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
            integrations.save(
                conn,
                load_key_ring(settings.var_dir),
                registered.tenant_id,
                "gstin-lookup",
                enabled=True,
                environment="sandbox",
                base_url=url,
                credentials=ACCOUNT.credentials(),
                endpoints=endpoint_policy("gstin-lookup"),
                mode=settings.mode,
            )
    return registered.tenant_id, registered.api_key


def issue_to(service: LedgerService, tenant_id: UUID, number: str, buyer_gstin: str | None) -> Any:
    state = buyer_gstin[:2] if buyer_gstin else "27"
    buyer: dict[str, Any] = {"name": "Buyer", "state": state, "address": {"line1": "1 Road", "city": "X"}}
    if buyer_gstin:
        buyer["gstin"] = buyer_gstin
    body = invoice_body(number, buyer=buyer, place_of_supply=state)
    return service.issue_invoice(tenant_id, IssueInvoice.model_validate(body)).invoice


def published(invoice: Any) -> dict[str, Any]:
    """The issued record as the relay publishes it (engine/publishing.py ``_invoice_issued``)."""
    return {"event_id": "e", "tenant_id": str(invoice.tenant_id), **invoice_document(invoice, invoice.id)}


def alerts(settings: Settings) -> list[bytes]:
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        rows = conn.execute("SELECT state FROM ledger_events WHERE topic LIKE '%Alert.Raised'").fetchall()
    return [bytes(r[0]) for r in rows]


def test_routes_ask_for_one_verification_per_invoice_with_a_buyer_gstin(
    service: LedgerService, settings: Settings
) -> None:
    tenant_id, _ = seller(service, settings, None)
    issued = issue_to(service, tenant_id, "R1", BUYER)
    b2b = {**published(issued), "invoice_id": str(UUID(int=1))}
    job = job_for(ISSUED, "ce-1", b2b)
    assert job is not None
    assert (job.connector, job.kind, job.job_id, job.subject) == (
        "gstin-lookup",
        VERIFY_BUYER,
        "ce-1:verify_buyer",
        str(UUID(int=1)),
    )
    assert job.payload == {"invoice_id": str(UUID(int=1)), "number": "R1", "gstin": BUYER}
    walk_in = issue_to(service, tenant_id, "R2", None)
    assert job_for(ISSUED, "ce-2", published(walk_in)) is None
    assert job_for("ledgerflow.invoice.cancelled", "ce-3", b2b) is None
    assert job_for(ISSUED, "ce-4", {**b2b, "country": "KE"}) is None


def test_the_handler_alerts_on_a_cancelled_suspended_or_unknown_buyer_and_records_each_check(
    service: LedgerService, settings: Settings, lookup: tuple[str, Operator]
) -> None:
    url, operator = lookup
    tenant_id, key = seller(service, settings, url)
    invoices = {
        gstin: issue_to(service, tenant_id, f"V{i}", gstin)
        for i, gstin in enumerate((BUYER, CANCELLED, SUSPENDED, UNREGISTERED))
    }
    context = HandlerContext(
        settings, service, load_key_ring(settings.var_dir), connector="gstin-lookup", request_rate_per_s=None
    )
    raised_by_handler: list[str] = []

    class CountingAlerts:
        """The real service's raise_alert, counting calls: a redelivery must not even ask."""

        def raise_alert(self, tenant_id: UUID, **alert: Any) -> None:
            raised_by_handler.append(alert["cause"])
            service.raise_alert(tenant_id, **alert)

    handler = BuyerChecks(context, alerts=CountingAlerts())

    async def run_all(rounds: int) -> list[dict[str, Any]]:
        results = []
        try:
            for _ in range(rounds):
                for gstin, invoice in invoices.items():
                    job = job_for(ISSUED, f"ce-{invoice.id}", published(invoice))
                    assert job is not None and job.payload["gstin"] == gstin
                    results.append(dict((await handler(job, 1)).data))
        finally:
            await handler.close()
        return results

    # Twice: the second round is a redelivery, answered from the cache, and raises no new alert.
    results = asyncio.run(run_all(2))
    assert [(r["outcome"], r["cached"]) for r in results] == [
        ("active", False),
        ("not_active", False),
        ("not_active", False),
        ("not_registered", False),
        ("active", True),
        ("not_active", True),
        ("not_active", True),
        ("not_registered", True),
    ]
    assert operator.stats()["effects"]["taxpayer_searched"] == 4

    raised = alerts(settings)
    assert len(raised) == 3
    assert len(raised_by_handler) == 3, raised_by_handler  # not again on the redelivered round
    for cause, invoice in (
        (b"gst.buyer_gstin_cancelled", invoices[CANCELLED]),
        (b"gst.buyer_gstin_suspended", invoices[SUSPENDED]),
        (b"gst.buyer_gstin_not_registered", invoices[UNREGISTERED]),
    ):
        [alert] = [a for a in raised if cause in a]
        assert str(invoice.id).encode() in alert and f"invoice {invoice.number}".encode() in alert

    # The invoice view's hook: each invoice's buyer check, for its own tenant only.
    client = client_for(settings)
    auth = {"Authorization": f"Bearer {key}"}
    cancelled = client.get(f"/v1/gst/invoices/{invoices[CANCELLED].id}/buyer", headers=auth)
    assert cancelled.status_code == 200, cancelled.text
    shown = cancelled.json()
    assert (shown["buyer_gstin"], shown["number"]) == (CANCELLED, "V1")
    check = shown["verification"]
    assert (check["gstin"], check["outcome"], check["status"], check["alerted"]) == (
        CANCELLED,
        "not_active",
        "cancelled",
        True,
    )
    active = client.get(f"/v1/gst/invoices/{invoices[BUYER].id}/buyer", headers=auth).json()
    assert (active["verification"]["outcome"], active["verification"]["alerted"]) == ("active", False)
    party = client.get(f"/v1/gst/parties/{CANCELLED}", headers=auth).json()
    assert party["status"] == "cancelled" and [i["number"] for i in party["invoices"]] == ["V1"]

    other = service.register_tenant(
        name="Other", legal_name="Other Private Limited", country="IN", gstin="07AAGFF2194N1Z1", state="07"
    )
    theirs = {"Authorization": f"Bearer {other.api_key}"}
    assert client.get(f"/v1/gst/invoices/{invoices[CANCELLED].id}/buyer", headers=theirs).status_code == 404
    assert client.get(f"/v1/gst/parties/{CANCELLED}", headers=theirs).status_code == 404
    assert client.get("/v1/gst/invoices/not-a-uuid/buyer", headers=theirs).status_code == 404


@pytest.mark.slow
def test_issuing_to_a_cancelled_buyer_raises_an_alert_through_the_running_engine(
    service: LedgerService,
    settings: Settings,
    topics: list[str],
    lookup: tuple[str, Operator],
    tmp_path: Path,
) -> None:
    url, operator = lookup
    fast = replace(settings, retry_delays=(0, 1, 1, 2), breaker_open_seconds=3)
    tenant_id, key = seller(service, fast, url)
    # A transient outage first: the job retries, and the write path never noticed.
    operator.faults(error_rate=1.0, paths=["/commonapi/v1.1/search"], max_faults=2)
    cancelled = issue_to(service, tenant_id, "E1", CANCELLED)
    active = issue_to(service, tenant_id, "E2", BUYER)
    b2c = issue_to(service, tenant_id, "E3", None)

    processes = Processes(fast, tmp_path)
    try:
        engine = [processes.start("relay"), processes.start("worker")]
        engine.append(processes.start("connectors", "run", name="connectors"))

        def checks() -> dict[str, str]:
            with psycopg.connect(fast.database_url, options=f"-c search_path={fast.db_schema}") as conn:
                rows = conn.execute(
                    "SELECT invoice_number, outcome FROM gstin_lookup_invoice_checks"
                ).fetchall()
            return {r[0]: r[1] for r in rows}

        processes.wait_for(
            lambda: len(checks()) == 2, what="both B2B buyers checked", watch=engine, timeout=120
        )
        assert checks() == {"E1": "not_active", "E2": "active"}
        raised = processes.wait_for(lambda: alerts(fast), what="the alert", watch=engine, timeout=30)
        assert len(raised) == 1 and b"gst.buyer_gstin_cancelled" in raised[0]
        assert str(cancelled.id).encode() in raised[0]
        assert operator.stats()["faults_injected"], "the outage was never hit"
    finally:
        processes.close()

    # The invoices are untouched: issued, whatever the network said.
    assert service.get_invoice(tenant_id, cancelled.id).status == "issued"
    assert service.get_invoice(tenant_id, active.id).status == "issued"
    client = client_for(fast)
    shown = client.get(f"/v1/gst/invoices/{b2c.id}/buyer", headers={"Authorization": f"Bearer {key}"}).json()
    assert shown["buyer_gstin"] is None and shown["verification"] is None
