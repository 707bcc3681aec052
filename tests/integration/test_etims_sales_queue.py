"""The eTIMS sales queue against the real PostgreSQL: invcNo allocation, order, blocking, 994.

KRA is replaced by a channel that subclasses the real port (:class:`SaleChannel`) and keeps what a
device would: the numbers it accepted, in order. Everything else (the tables, the locks, the
transactions) is the real thing; the end-to-end proof against the eTIMS sandbox is
tests/integration/test_etims_e2e.py.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any
from uuid import UUID

import psycopg
import pytest

from connectors.errors import ConnectorError, PermanentError, RetryableError
from connectors.etims import sales
from connectors.etims.sales import DuplicateAnswer, QueuedSale, Receipt, SaleChannel, SaleDocument, SaleQueue
from engine.config import Settings

pytestmark = pytest.mark.integration


def _migrate(settings: Settings) -> None:
    sql = resources.files("connectors.etims").joinpath("sales.sql").read_text()
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{settings.db_schema}"')
        conn.execute(f'SET search_path TO "{settings.db_schema}"')
        conn.execute(sql)


class Kra(SaleChannel):
    """A device as the queue sees it: signs what it is sent, refuses or fails on request."""

    device_type = "oscu"

    def __init__(self) -> None:
        self.accepted: dict[tuple[str, int], QueuedSale] = {}
        self.order: list[tuple[str, int]] = []
        self.fail_next: list[ConnectorError] = []
        self.refuse: set[tuple[str, int]] = set()
        self.lose_answer: set[tuple[str, int]] = set()
        self.org: dict[tuple[str, int], int | None] = {}
        self.can_find = True

    def _receipt(self, sale: QueuedSale, adopted: bool) -> Receipt:
        n = list(self.accepted).index((sale.bhf_id, sale.invc_no)) + 1
        return Receipt(n, n, f"DATA{n}", f"SIGN{n}", "SDC1", "MRC1", "20261202100000", None, "oscu", adopted)

    async def save_sale(self, sale: QueuedSale, *, org_invc_no: int | None) -> Receipt:
        await asyncio.sleep(0)
        key = (sale.bhf_id, sale.invc_no)
        if self.fail_next:
            raise self.fail_next.pop(0)
        if key in self.refuse:
            raise PermanentError("910", "parameter error: customer PIN not registered")
        if key in self.accepted:
            raise DuplicateAnswer()
        self.accepted[key] = sale
        self.order.append(key)
        self.org[key] = org_invc_no
        if key in self.lose_answer:
            self.lose_answer.discard(key)
            raise RetryableError("timeout", "no answer within 45 s")
        return self._receipt(sale, False)

    async def find_sale(self, sale: QueuedSale) -> Receipt | None:
        if not self.can_find or (sale.bhf_id, sale.invc_no) not in self.accepted:
            return None
        return self._receipt(sale, True)


class Ledger:
    """The result port as the invoice sees it: every call kept, idempotence left to the assertion."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, UUID, dict[str, Any]]] = []

    def _keep(self, name: str, invoice_id: UUID, kw: dict[str, Any]) -> None:
        self.calls.append((name, invoice_id, kw))

    def record_etims_numbered(self, tenant_id: UUID, invoice_id: UUID, **kw: Any) -> None:
        self._keep("numbered", invoice_id, kw)

    def record_etims_signed(self, tenant_id: UUID, invoice_id: UUID, **kw: Any) -> None:
        self._keep("signed", invoice_id, kw)

    def record_etims_failed(self, tenant_id: UUID, invoice_id: UUID, **kw: Any) -> None:
        self._keep("failed", invoice_id, kw)

    def record_etims_voided(self, tenant_id: UUID, invoice_id: UUID, **kw: Any) -> None:
        self._keep("voided", invoice_id, kw)

    def raise_alert(self, tenant_id: UUID, **kw: Any) -> None:
        self._keep("alert", tenant_id, kw)

    def of(self, name: str, invoice_id: UUID | None = None) -> list[dict[str, Any]]:
        return [kw for n, i, kw in self.calls if n == name and (invoice_id is None or i == invoice_id)]


TENANT = uuid.UUID(int=0xE71A5)


def doc(
    bhf: str = "01", *, credit_of: UUID | None = None, env: str = "sandbox", tenant: UUID = TENANT
) -> SaleDocument:
    invoice_id = uuid.uuid4()
    record: Mapping[str, Any] = {
        "invoice_id": str(invoice_id),
        "tenant_id": str(tenant),
        "number": f"INV-{invoice_id.hex[:6]}",
        "country": "KE",
        "environment": env,
        "branch_id": bhf,
        "document_type": "credit_note" if credit_of else "invoice",
        "original_invoice_id": str(credit_of) if credit_of else None,
    }
    return SaleDocument.from_record(record)


def queue_for(settings: Settings, kra: Kra, ledger: Ledger, **kw: Any) -> SaleQueue:
    @asynccontextmanager
    async def connection() -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        conn = await psycopg.AsyncConnection.connect(
            settings.database_url, autocommit=True, options=f"-c search_path={settings.db_schema}"
        )
        try:
            yield conn
        finally:
            await conn.close()

    async def channel_for(sale: QueuedSale) -> SaleChannel:
        return kra

    async def run(work: Any) -> Any:
        return await asyncio.to_thread(work)

    return SaleQueue(connection, ledger, channel_for, run, settings.db_schema, **kw)


async def until_signed(q: SaleQueue, d: SaleDocument, job: str, tries: int = 20) -> Mapping[str, Any]:
    """A job's attempts as the worker makes them: retryable errors try again (no delay here)."""
    for _ in range(tries):
        try:
            return await q.sale_job(d, job_id=job)
        except RetryableError:
            continue
    raise AssertionError(f"{d.number} not signed after {tries} attempts")


@pytest.fixture
def migrated(settings: Settings) -> Settings:
    _migrate(settings)
    return settings


async def test_invc_no_is_contiguous_per_branch_with_two_workers_allocating_at_once(
    migrated: Settings,
) -> None:
    kra, ledger = Kra(), Ledger()
    workers = [queue_for(migrated, kra, ledger), queue_for(migrated, kra, ledger)]
    docs = [doc("01") for _ in range(30)] + [doc("02") for _ in range(20)]

    async def job(i: int, d: SaleDocument) -> Mapping[str, Any]:
        return await until_signed(workers[i % 2], d, f"job-{d.invoice_id}")

    # Every sale's job twice (a redelivery), on both workers, all at once.
    await asyncio.gather(*(job(i, d) for i, d in enumerate(docs + docs)))

    for bhf, count in (("01", 30), ("02", 20)):
        sent = [n for b, n in kra.order if b == bhf]
        assert sent == list(range(1, count + 1)), f"branch {bhf} went to KRA as {sent}"
    numbered = {
        inv: kws[0]["invc_no"]
        for inv, kws in ((d.invoice_id, ledger.of("numbered", d.invoice_id)) for d in docs)
    }
    assert len(numbered) == 50
    for d in docs:
        signed = ledger.of("signed", d.invoice_id)
        assert signed and {s["receipt"]["invc_no"] for s in signed} == {numbered[d.invoice_id]}


async def test_a_later_sale_cannot_overtake_an_earlier_one_that_is_still_failing(migrated: Settings) -> None:
    kra, ledger = Kra(), Ledger()
    q = queue_for(migrated, kra, ledger)
    first, second = doc(), doc()
    kra.fail_next = [RetryableError("896", "communication error")]
    with pytest.raises(RetryableError):
        await q.sale_job(first, job_id="j1")
    kra.fail_next = [RetryableError("timeout", "no answer")]
    # The second sale's job runs while the first still waits: it sends the head (the first), which fails.
    with pytest.raises(RetryableError):
        await q.sale_job(second, job_id="j2")
    assert kra.order == []
    assert (await q.sale_job(second, job_id="j2"))["state"] == "signed"
    assert kra.order == [("01", 1), ("01", 2)]
    # The first sale's own job, retried later, finds it signed and signs nothing twice.
    assert (await q.sale_job(first, job_id="j1"))["invc_no"] == 1
    assert len(kra.order) == 2 and len(ledger.of("signed", first.invoice_id)) == 1


async def test_a_refused_sale_blocks_its_branch_until_resent_under_the_same_number(
    migrated: Settings,
) -> None:
    kra, ledger = Kra(), Ledger()
    q = queue_for(migrated, kra, ledger)
    refused, behind, other_branch = doc(), doc(), doc("02")
    kra.refuse.add(("01", 1))
    # Waiting for a person is no provider failure: the jobs finish, saying where the branch waits.
    assert (await q.sale_job(refused, job_id="j1"))["waiting_behind"] == 1
    waiting = await q.sale_job(behind, job_id="j2")
    assert (waiting["state"], waiting["invc_no"], waiting["waiting_behind"]) == ("queued", 2, 1)
    assert (await q.sale_job(other_branch, job_id="j3"))["state"] == "signed"
    [failed] = ledger.of("failed", refused.invoice_id)
    assert failed["result_code"] == "910" and failed["error_class"] == "permanent" and failed["invc_no"] == 1
    [alert] = ledger.of("alert")
    assert alert["cause"] == "etims.sale_refused" and alert["details"]["invc_no"] == "1"

    kra.refuse.clear()  # the operator fixed the cause at KRA
    with psycopg.connect(migrated.database_url, options=f"-c search_path={migrated.db_schema}") as conn:
        assert sales.resend(conn, TENANT, refused.invoice_id).state == "queued"
        assert sales.resend(conn, TENANT, refused.invoice_id).state == "queued"  # again: no change
    # The drain job the resend queues sends the branch from its head.
    assert await q.drain_job(TENANT, "sandbox", "01") == {"sent": 2, "blocked_at": None}
    assert [n for b, n in kra.order if b == "01"] == [1, 2]
    assert (await q.sale_job(refused, job_id="j1"))["state"] == "signed"
    with (
        psycopg.connect(migrated.database_url, options=f"-c search_path={migrated.db_schema}") as conn,
        pytest.raises(sales.SaleNotBlocked),
    ):
        sales.resend(conn, TENANT, refused.invoice_id)


async def test_voiding_a_blocked_sale_leaves_its_number_unused_and_the_queue_moves_on(
    migrated: Settings,
) -> None:
    kra, ledger = Kra(), Ledger()
    q = queue_for(migrated, kra, ledger)
    refused, behind = doc(), doc()
    kra.refuse.add(("01", 1))
    await q.sale_job(refused, job_id="j1")
    with psycopg.connect(migrated.database_url, options=f"-c search_path={migrated.db_schema}") as conn:
        voided = sales.void(conn, TENANT, refused.invoice_id, reason="customer cancelled", voided_by="ops@x")
    assert (voided.state, voided.void_reason, voided.invc_no) == ("voided", "customer cancelled", 1)
    assert (await q.sale_job(behind, job_id="j2"))["invc_no"] == 2
    assert (await q.sale_job(refused, job_id="j1"))["state"] == "voided"
    assert kra.order == [("01", 2)]
    assert (await q.sale_job(doc(), job_id="j3"))["invc_no"] == 3


async def test_a_994_after_a_lost_answer_adopts_the_receipt_and_never_renumbers(migrated: Settings) -> None:
    kra, ledger = Kra(), Ledger()
    q = queue_for(migrated, kra, ledger)
    d = doc()
    kra.lose_answer.add(("01", 1))  # KRA accepted it, the answer never came back
    with pytest.raises(RetryableError):
        await q.sale_job(d, job_id="j1")
    result = await q.sale_job(d, job_id="j1")
    assert result["invc_no"] == 1 and kra.order == [("01", 1)]
    [signed] = ledger.of("signed", d.invoice_id)
    assert signed["receipt"]["adopted_existing"] is True and signed["receipt"]["receipt_no"] == 1


async def test_a_994_that_cannot_be_verified_needs_a_person_and_blocks_the_branch(migrated: Settings) -> None:
    kra, ledger = Kra(), Ledger()
    q = queue_for(migrated, kra, ledger)
    d = doc()
    kra.lose_answer.add(("01", 1))
    kra.can_find = False
    with pytest.raises(RetryableError):
        await q.sale_job(d, job_id="j1")
    assert (await q.sale_job(d, job_id="j1"))["state"] == "blocked"
    [failed] = ledger.of("failed", d.invoice_id)
    assert failed["result_code"] == "duplicate_unverified" and failed["error_class"] == "needs_attention"
    assert ledger.of("signed", d.invoice_id) == []


async def test_a_credit_note_waits_for_its_original_and_carries_its_number(migrated: Settings) -> None:
    kra, ledger = Kra(), Ledger()
    q = queue_for(migrated, kra, ledger)
    original = doc()
    credit = doc(credit_of=original.invoice_id)
    with pytest.raises(RetryableError) as early:
        await q.sale_job(credit, job_id="c1")  # its original's job has not run yet
    assert early.value.code == "original_not_queued"
    kra.fail_next = [RetryableError("timeout", "no answer")]
    with pytest.raises(RetryableError):
        await q.sale_job(original, job_id="o1")
    assert (await q.sale_job(credit, job_id="c1"))["invc_no"] == 2
    assert kra.org[("01", 2)] == 1 and kra.order == [("01", 1), ("01", 2)]


async def test_a_sale_failing_for_longer_than_the_stale_limit_alerts_once_and_keeps_waiting(
    migrated: Settings,
) -> None:
    from datetime import timedelta

    kra, ledger = Kra(), Ledger()
    q = queue_for(migrated, kra, ledger, stale_after=timedelta(0))
    d = doc()
    for _ in range(3):
        kra.fail_next = [RetryableError("outage", "connection refused")]
        with pytest.raises(RetryableError):
            await q.sale_job(d, job_id="j1")
    [alert] = ledger.of("alert")
    assert alert["cause"] == "etims.sale_failed"
    assert (await q.sale_job(d, job_id="j1"))["state"] == "signed"


async def _blocked_branch(settings: Settings, tenant_id: UUID) -> tuple[SaleDocument, SaleDocument]:
    """Branch 01 of ``tenant_id`` blocked at invcNo 1, with invcNo 2 queued behind it."""
    kra, ledger = Kra(), Ledger()
    q = queue_for(settings, kra, ledger)
    refused, behind = doc(tenant=tenant_id), doc(tenant=tenant_id)
    kra.refuse.add(("01", 1))
    for d in (refused, behind):
        assert (await q.sale_job(d, job_id=f"job-{d.number}"))["waiting_behind"] == 1
    return refused, behind


async def test_operators_list_the_queue_and_resend_a_blocked_sale_over_http(
    service: Any, settings: Settings
) -> None:
    from tests.integration.helpers import client_for, register_tenant

    tenant_id, api_key = register_tenant(service)
    _migrate(settings)
    refused, behind = await _blocked_branch(settings, UUID(tenant_id))
    client = client_for(settings)
    auth = {"Authorization": f"Bearer {api_key}"}

    listed = client.get("/v1/etims/sales", params={"bhf_id": "01"}, headers=auth)
    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    assert [(i["invc_no"], i["state"]) for i in items] == [(1, "blocked"), (2, "queued")]
    assert items[0]["failure"]["code"] == "910" and items[0]["environment"] == "sandbox"
    blocked_only = client.get("/v1/etims/sales", params={"state": "blocked"}, headers=auth).json()["items"]
    assert [i["invoice_id"] for i in blocked_only] == [str(refused.invoice_id)]

    not_blocked = client.post(
        f"/v1/etims/sales/{behind.invoice_id}/void", json={"reason": "not this one"}, headers=auth
    )
    assert not_blocked.status_code == 409
    assert not_blocked.json()["error"]["code"] == "sale_not_blocked"
    resent = client.post(f"/v1/etims/sales/{refused.invoice_id}/resend", headers=auth)
    assert resent.status_code == 200, resent.text
    assert (resent.json()["state"], resent.json()["invc_no"]) == ("queued", 1)

    unknown = client.post(f"/v1/etims/sales/{uuid.uuid4()}/resend", headers=auth)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    bad_state = client.get("/v1/etims/sales", params={"state": "lost"}, headers=auth)
    assert bad_state.status_code == 422 and "error" in bad_state.json()
    # Another tenant sees none of it.
    _, other_key = register_tenant(service, gstin="27AAPFU0939F1ZV")
    theirs = client.get("/v1/etims/sales", headers={"Authorization": f"Bearer {other_key}"})
    assert theirs.json()["items"] == []
    assert (
        client.post(
            f"/v1/etims/sales/{refused.invoice_id}/resend", headers={"Authorization": f"Bearer {other_key}"}
        ).status_code
        == 404
    )


async def test_a_receipt_the_ledger_could_not_take_is_recorded_by_the_next_attempt_without_resending(
    migrated: Settings,
) -> None:
    class FlakyLedger(Ledger):
        def __init__(self) -> None:
            super().__init__()
            self.refuse_once = True

        def record_etims_signed(self, tenant_id: UUID, invoice_id: UUID, **kw: Any) -> None:
            if self.refuse_once:
                self.refuse_once = False
                raise RetryableError("database_unavailable", "the event store is away")
            super().record_etims_signed(tenant_id, invoice_id, **kw)

    kra, ledger = Kra(), FlakyLedger()
    q = queue_for(migrated, kra, ledger)
    d = doc()
    with pytest.raises(RetryableError, match="event store"):
        await q.sale_job(d, job_id="j1")
    assert kra.order == [("01", 1)]
    assert (await q.sale_job(d, job_id="j1"))["state"] == "signed"
    assert kra.order == [("01", 1)]  # not sent again
    [signed] = ledger.of("signed", d.invoice_id)
    assert signed["receipt"]["receipt_no"] == 1 and ledger.of("failed") == []


async def test_voiding_over_http_records_it_on_the_invoice_and_a_second_void_changes_nothing(
    service: Any, settings: Settings
) -> None:
    from tests.integration.helpers import client_for

    registered = service.register_tenant(
        name="Savanna",
        legal_name="Savanna Retail Limited",
        country="KE",
        gstin=None,
        state=None,
        kra_pin="P051234567X",
    )
    auth = {"Authorization": f"Bearer {registered.api_key}"}
    client = client_for(settings)
    saved = client.put(
        "/v1/integrations/etims",
        json={
            "enabled": True,
            "environment": "sandbox",
            "base_url": "http://127.0.0.1:9",
            "credentials": {
                "tin": "P051234567X",
                "bhf_id": "01",
                "device_serial": "S1",
                "device_type": "oscu",
            },
        },
        headers=auth,
    )
    assert saved.status_code == 200, saved.text
    body = {
        "number": "KE-V-1",
        "date": "2026-12-01",
        "buyer": {"name": "Walk-in"},
        "lines": [
            {
                "item_code": "KE2NTU0000001",
                "description": "Flour",
                "quantity": "1",
                "unit_price": "10",
                "tax_type": "B",
            }
        ],
    }
    issued = service.issue_invoice(
        registered.tenant_id, service.parse_issue_command(registered.tenant_id, body)
    )
    record = {
        "invoice_id": str(issued.invoice.id),
        "tenant_id": str(registered.tenant_id),
        "number": "KE-V-1",
        "country": "KE",
        "environment": "sandbox",
        "branch_id": "01",
        "document_type": "invoice",
    }
    _migrate(settings)
    kra = Kra()
    kra.refuse.add(("01", 1))
    # The real ledger takes the results this time.
    waiting = await queue_for(settings, kra, service).sale_job(SaleDocument.from_record(record), job_id="j1")
    assert waiting["waiting_behind"] == 1
    assert (service.get_invoice(registered.tenant_id, issued.invoice.id).etims or {})["status"] == "failed"

    short = client.post(f"/v1/etims/sales/{issued.invoice.id}/void", json={"reason": ""}, headers=auth)
    assert short.status_code == 422 and short.json()["error"]["code"]
    voided = client.post(
        f"/v1/etims/sales/{issued.invoice.id}/void", json={"reason": "customer walked away"}, headers=auth
    )
    assert voided.status_code == 200, voided.text
    assert (voided.json()["state"], voided.json()["invc_no"]) == ("voided", 1)
    assert voided.json()["voided_by"].startswith("api_key:")
    etims = service.get_invoice(registered.tenant_id, issued.invoice.id).etims or {}
    assert etims["status"] == "voided", etims
    again = client.post(f"/v1/etims/sales/{issued.invoice.id}/void", json={"reason": "again"}, headers=auth)
    assert again.status_code == 200 and again.json()["void_reason"] == "customer walked away"
    resend = client.post(f"/v1/etims/sales/{issued.invoice.id}/resend", headers=auth)
    assert resend.status_code == 409
