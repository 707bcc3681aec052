"""E-invoicing end to end: real Kafka, PostgreSQL, the engine's processes and the IRP sandbox.

Invoices are issued through the service; the relay publishes them, the faust router turns B2B
invoices of tenants with gst-irp enabled into jobs, connector workers call the sandbox over HTTP,
and the IRN comes back onto the invoice as an event.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest

from connectors.catalogue import endpoint_policy
from connectors.gst_irp.sandbox import create_app
from engine import integrations
from engine.application import LedgerService
from engine.commands import IssueInvoice
from engine.config import Settings
from engine.security.secrets import load_key_ring
from streams.connectors.ops import dlq_list, dlq_redrive, render_status, status
from tests.connectors.contract import LiveServer, Operator
from tests.integration.helpers import IRP_ACCOUNT, IRP_SELLER_GSTIN, invoice_body, register_irp_tenant
from tests.integration.processes import Processes

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SELLER_GSTIN = IRP_SELLER_GSTIN
ACCOUNT = IRP_ACCOUNT
GOOD_CREDENTIALS = ACCOUNT.credentials()
RATE_LIMIT = 40.0


@pytest.fixture
def irp() -> Iterator[tuple[str, Operator]]:
    with LiveServer(create_app(account=ACCOUNT)) as server:
        yield server.url, Operator(server.url)


@pytest.fixture
def fast(settings: Settings) -> Settings:
    """Seconds-long retries and breaker, a rate limit tests can reach. Thirteen attempts: with 30% of
    calls failing and up to three calls per attempt, six attempts would leave ~1 job in 200 failing
    every one of them, which is the DLQ's job to catch but not what this test is about."""
    return replace(
        settings,
        retry_delays=(0, 1, 1, 2, 2, 3, 3, 5, 5, 8, 8, 13),
        breaker_open_seconds=3,
        rate_limits={"gst-irp": RATE_LIMIT},
    )


@pytest.fixture
def processes(fast: Settings, tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(fast, tmp_path)
    yield procs
    procs.close()


def tenant(
    service: LedgerService,
    settings: Settings,
    base_url: str,
    *,
    gstin: str = SELLER_GSTIN,
    credentials: dict[str, str] | None = None,
) -> UUID:
    return register_irp_tenant(service, settings, base_url, gstin=gstin, credentials=credentials).tenant_id


def issue(service: LedgerService, tenant_id: UUID, count: int, prefix: str, **changes: Any) -> list[UUID]:
    ids = []
    for i in range(count):
        body = invoice_body(f"{prefix}{i}", **changes)
        ids.append(service.issue_invoice(tenant_id, IssueInvoice.model_validate(body)).invoice.id)
    return ids


def irns(settings: Settings) -> dict[str, int]:
    """Per invoice id, how many IrnGenerated events the event store holds."""
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        rows = conn.execute(
            "SELECT originator_id, count(*) FROM ledger_events WHERE topic LIKE '%Invoice.IrnGenerated'"
            " GROUP BY originator_id"
        ).fetchall()
    return {str(r[0]): int(r[1]) for r in rows}


def start_engine(processes: Processes, connector_workers: int = 2) -> list[Any]:
    started = [processes.start("relay"), processes.start("projector"), processes.start("worker")]
    started += [processes.start("connectors", "run", name="connectors") for _ in range(connector_workers)]
    return started


def test_every_eligible_invoice_gets_exactly_one_irn_through_faults_a_killed_worker_and_bad_credentials(
    service: LedgerService, fast: Settings, topics: list[str], irp: tuple[str, Operator], processes: Processes
) -> None:
    url, operator = irp
    good = tenant(service, fast, url)
    # Registered with a GSTIN the IRP account does not own: the portal refuses its documents (2143).
    foreign = tenant(service, fast, url, gstin="29AABCT1332L1ZA")
    # Wrong password: every call needs attention until the credentials are fixed.
    locked = tenant(service, fast, url, credentials={**GOOD_CREDENTIALS, "password": "wrong"})

    # 30% of calls fail transiently, a third of those after the IRN was already created.
    operator.faults(
        error_rate=0.15, rate_limit_rate=0.05, retry_after_s=1, after_effect_failure_rate=0.10, seed=7
    )
    eligible = issue(service, good, 500, "E")
    b2c = issue(service, good, 5, "C", buyer={"name": "Walk-in", "state": "29"})
    refused = issue(service, foreign, 3, "F")
    stuck = issue(service, locked, 4, "L")

    engine = start_engine(processes)
    # Kill one connector worker mid-flight; its jobs are redelivered to the other (and a new one).
    processes.wait_for(lambda: len(irns(fast)) >= 100, what="100 IRNs", watch=engine, timeout=120)
    engine[3].kill()
    engine.append(processes.start("connectors", "run", name="connectors"))

    processes.wait_for(
        lambda: len(irns(fast)) >= len(eligible),
        what=f"{len(eligible)} IRNs",
        watch=engine,
        timeout=300,
        explain=lambda: render_status(status(fast)),
    )
    counts = irns(fast)
    assert set(counts) == {str(i) for i in eligible}, "an IRN for an ineligible invoice, or one missing"
    assert set(counts.values()) == {1}, "an invoice got two IRN events"
    stats = operator.stats()
    assert stats["effects"]["irn_generated"] == len(eligible), stats  # exactly one IRN per invoice at the IRP
    assert stats["peak_rps"] <= RATE_LIMIT, stats
    assert all(str(i) not in counts for i in b2c)

    # Refused and locked-out invoices are in the DLQ with the provider's code, and say why on the invoice.
    letters = processes.wait_for(
        lambda: (found := dlq_list(fast, "gst-irp")) and len(found) >= len(refused) + len(stuck) and found,
        what="the refused and locked-out jobs in the DLQ",
        watch=engine,
        timeout=120,
    )
    by_tenant: dict[str, set[str]] = {}
    for letter in letters:
        by_tenant.setdefault(letter.tenant_id, set()).add(letter.error_code)
    assert by_tenant[str(foreign)] == {"2143"}, by_tenant
    assert all(
        code in {"1008", "token_rejected_after_reauth"} or code.startswith("10")
        for code in by_tenant[str(locked)]
    )
    refused_invoice = service.get_invoice(foreign, refused[0])
    assert refused_invoice.einvoice is None
    assert refused_invoice.einvoice_failure is not None and refused_invoice.einvoice_failure["code"] == "2143"

    # Fix the locked tenant's credentials and redrive: its invoices complete.
    with psycopg.connect(fast.database_url, options=f"-c search_path={fast.db_schema}") as conn:
        integrations.save(
            conn,
            load_key_ring(fast.var_dir),
            locked,
            "gst-irp",
            enabled=True,
            environment="sandbox",
            base_url=url,
            credentials={"password": ACCOUNT.password},
            endpoints=endpoint_policy("gst-irp"),
            mode=fast.mode,
        )
    report = dlq_redrive(fast, "gst-irp", [d.offset for d in letters if d.tenant_id == str(locked)])
    assert len(report.done) == len(stuck), str(report)
    processes.wait_for(
        lambda: all(str(i) in irns(fast) for i in stuck),
        what="the redriven invoices' IRNs",
        watch=engine,
        timeout=120,
    )
    processes.assert_alive(*engine[:3], engine[4], engine[5])


def test_an_outage_opens_the_circuit_and_everything_completes_after_it(
    service: LedgerService, fast: Settings, topics: list[str], irp: tuple[str, Operator], processes: Processes
) -> None:
    url, operator = irp
    tenant_id = tenant(service, fast, url)
    operator.faults(outage=True)
    invoices = issue(service, tenant_id, 30, "O")
    engine = start_engine(processes, connector_workers=1)

    def circuit_open() -> bool:
        return any(c.state == "open" for s in status(fast, ["gst-irp"]) for c in s.circuits)

    processes.wait_for(
        circuit_open,
        what="the circuit opening",
        watch=engine,
        timeout=120,
        explain=lambda: render_status(status(fast)),
    )
    assert "open" in render_status(status(fast, ["gst-irp"]))
    calls_while_open = operator.stats()["requests"]
    operator.faults(outage=False)
    processes.wait_for(
        lambda: len(irns(fast)) == len(invoices),
        what="every IRN after the outage",
        watch=engine,
        timeout=180,
        explain=lambda: render_status(status(fast)),
    )
    assert dlq_list(fast, "gst-irp") == []  # an outage waits in retry; it never fills the DLQ
    assert operator.stats()["effects"]["irn_generated"] == len(invoices)
    assert calls_while_open < len(invoices) * 6, "the open circuit should have kept calls away from the IRP"


def test_cancelling_an_invoice_cancels_its_irn_at_the_portal(
    service: LedgerService, fast: Settings, topics: list[str], irp: tuple[str, Operator], processes: Processes
) -> None:
    from engine.commands import CancelInvoice

    url, operator = irp
    tenant_id = tenant(service, fast, url)
    (invoice_id,) = issue(service, tenant_id, 1, "X")
    engine = start_engine(processes, connector_workers=1)
    processes.wait_for(lambda: str(invoice_id) in irns(fast), what="the IRN", watch=engine, timeout=60)

    service.cancel_invoice(
        tenant_id, invoice_id, CancelInvoice(reason="order_cancelled", remark="buyer withdrew")
    )
    cancelled = processes.wait_for(
        lambda: (inv := service.get_invoice(tenant_id, invoice_id)).einvoice_cancellation and inv,
        what="the IRN cancellation recorded on the invoice",
        watch=engine,
        timeout=60,
    )
    assert cancelled.einvoice_cancellation["reason_code"] == 3
    assert operator.stats()["effects"]["irn_cancelled"] == 1
