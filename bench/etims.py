"""The eTIMS stage: Kenyan sales signed per second against the eTIMS sandbox, beside the sandbox's own
ceiling measured in the same run.

The ceiling is a bare ``httpx`` loop posting ``saveTrnsSalesOsdc`` straight to the sandbox, with the
same shape the pipeline must respect: KRA takes a branch's sales in ``invcNo`` order (a gap is a 921),
so each branch is one sequential loop and the branches run side by side. That is the most any
integrator can get out of this sandbox for this many branches; the pipeline's figure divided by it
is what the engine (store, relay, router, queue, retries, recording the receipt) costs.

Two conditions: no limit (the sandbox answers as fast as it can) and the sandbox's congestion
profile (``POST /_sandbox/etims/profile {"profile": "congestion"}``: every answer slow, as KRA is
at busy times; Odoo's 45 s timeout is there for it).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import httpx

from bench.env import BenchEnv, free_port, retry
from connectors.catalogue import endpoint_policy
from connectors.etims import DEMO_KRA_PIN
from connectors.etims.client import PATHS, EtimsClient
from connectors.etims.mapping import NAIROBI, build_item_code, item_payload, sale_payload
from engine.application import LedgerService
from engine.commands import IssueKenyanInvoice
from engine.config import PROJECT_ROOT, Settings
from engine.security.secrets import load_key_ring

# The interpreter running the bench (the project's venv under `make bench`).
PYTHON = sys.executable
TIN = DEMO_KRA_PIN
ITEM_CODE = build_item_code("KE", "2", "NT", "U", 1)
ITEM_CLASS = "5059690800"
CONGESTION_LATENCY_MS = 1500
"""The sandbox's congestion profile default (connectors/etims/sandbox.py, ``Profile.latency_ms``)."""
SAVE_SALE = PATHS["oscu"].save_sale


class Sandbox:
    """``python -m connectors.etims.sandbox`` as a process of the run, and its operator endpoints."""

    def __init__(self, env: BenchEnv) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.proc = env.start_command(
            "etims-sandbox", [PYTHON, "-m", "connectors.etims.sandbox", "--port", str(port)], cwd=PROJECT_ROOT
        )
        self.http = httpx.Client(base_url=self.url, timeout=10)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.http.get("/_sandbox/stats").raise_for_status()
                return
            except httpx.HTTPError:
                self.proc.check()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def reset(self, profile: str = "none") -> None:
        """Faults off, counters zero, devices and sales forgotten; then the named eTIMS profile."""
        self.http.post("/_sandbox/reset").raise_for_status()
        self.profile(profile)

    def profile(self, name: str) -> None:
        """One of the sandbox's named eTIMS behaviours (``none``, ``congestion``, ...), keeping its state."""
        self.http.post("/_sandbox/etims/profile", json={"profile": name}).raise_for_status()

    def stats(self) -> dict[str, Any]:
        response = self.http.get("/_sandbox/stats")
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats

    def close(self) -> None:
        self.http.close()


def branch_ids(count: int) -> list[str]:
    """KRA branch ids, from 01: a branch is never assumed to be 00 (docs/etims.md)."""
    return [f"{i + 1:02d}" for i in range(count)]


def sale_record(number: str) -> dict[str, Any]:
    """A one-line Kenyan sale as the ``ledgerflow.invoice.issued`` record carries it: 3 x 200.00 at
    16% VAT (tax type B), prices without VAT."""
    taxable = Decimal("600.00")
    vat = Decimal("96.00")
    return {
        "number": number,
        "date": datetime.now(UTC).date().isoformat(),
        "country": "KE",
        "document_type": "invoice",
        "currency": "KES",
        "payment_type": "01",
        "seller": {"kra_pin": TIN, "legal_name": "Bench Duka Limited", "trade_name": "Bench Duka"},
        "buyer": {"name": "Wanjiku Stores"},
        "lines": [
            {
                "line_no": 1,
                "item_code": ITEM_CODE,
                "description": "Maize flour 2kg",
                "quantity": "3",
                "unit_price": "200.00",
                "discount": "0",
                "tax_type": "B",
                "supply_amount": str(taxable),
                "taxable_amount": str(taxable),
                "tax_rate": "16",
                "tax_amount": str(vat),
                "total": str(taxable + vat),
            }
        ],
        "tax_breakdown": [{"tax_type": "B", "rate": "16", "taxable": str(taxable), "tax": str(vat)}],
        "totals": {"taxable": str(taxable), "vat": str(vat), "total": str(taxable + vat)},
    }


async def prepare_branch(url: str, bhf_id: str) -> str:
    """Initialise the branch's OSCU and register the bench's item there; returns the CMC key."""
    async with EtimsClient(url, device_type="oscu", tin=TIN, bhf_id=bhf_id, cmc_key=None) as kra:
        device = await kra.initialize(f"BENCH-{bhf_id}")
        await kra.save_item(
            item_payload(
                item_code=ITEM_CODE,
                item_class_code=ITEM_CLASS,
                name="Maize flour 2kg",
                origin="KE",
                tax_type="B",
                default_price="200.00",
            )
        )
    assert device.cmc_key, "the sandbox returned no CMC key"
    return device.cmc_key


@dataclass(frozen=True)
class Ceiling:
    sales: int
    seconds: float
    refused: int

    @property
    def per_s(self) -> float:
        return self.sales / self.seconds


async def _branch_loop(http: httpx.AsyncClient, bhf_id: str, cmc_key: str, count: int) -> int:
    """Post ``count`` sales of one branch in invcNo order, each after the previous answer."""
    headers = {"tin": TIN, "bhfId": bhf_id, "cmcKey": cmc_key}
    refused = 0
    for invc_no in range(1, count + 1):
        body = sale_payload(
            sale_record(f"CEIL-{bhf_id}-{invc_no}"),
            invc_no=invc_no,
            org_invc_no=None,
            item_classes={ITEM_CODE: ITEM_CLASS},
            now=datetime.now(UTC),
            device_type="oscu",
        )
        answer = await http.post(SAVE_SALE, json=body, headers=headers)
        if answer.status_code != 200 or answer.json().get("resultCd") != "000":
            refused += 1
    return refused


async def ceiling(url: str, branches: list[str], per_branch: int, timeout: float = 60.0) -> Ceiling:
    """The sandbox's own ceiling: one sequential loop per branch, all branches at once."""
    keys = {b: await prepare_branch(url, b) for b in branches}
    limits = httpx.Limits(max_connections=len(branches), max_keepalive_connections=len(branches))
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as http:
        started = time.perf_counter()
        refused = await asyncio.gather(*(_branch_loop(http, b, keys[b], per_branch) for b in branches))
        seconds = time.perf_counter() - started
    return Ceiling(len(branches) * per_branch, seconds, sum(refused))


# -- the pipeline -------------------------------------------------------------------------------------

ITEM_REQUEST = {
    "name": "Maize flour 2kg",
    "item_class_code": ITEM_CLASS,
    "item_type": "2",
    "origin": "KE",
    "pkg_unit": "NT",
    "qty_unit": "U",
    "tax_type": "B",
    "default_price": "200.00",
}


@dataclass(frozen=True)
class KenyanTenant:
    tenant_id: UUID
    api_key: str
    item_code: str


def onboard(
    service: LedgerService, settings: Settings, api_url: str, sandbox_url: str, branches: list[str]
) -> KenyanTenant:
    """A Kenyan tenant whose etims integration points at the sandbox, one OSCU per branch (the first
    from the integration, the others over the API), all initialised, and one item registered."""
    registered = service.register_tenant(
        name="Bench Duka",
        legal_name="Bench Duka Limited",
        country="KE",
        gstin=None,
        state=None,
        kra_pin=TIN,
        changed_by="operator:bench",
    )
    service.save_integration(
        load_key_ring(settings.var_dir),
        registered.tenant_id,
        "etims",
        changed_by="operator:bench",
        enabled=True,
        environment="sandbox",
        base_url=sandbox_url,
        credentials={
            "tin": TIN,
            "bhf_id": branches[0],
            "device_serial": f"BENCH-{branches[0]}",
            "device_type": "oscu",
        },
        endpoints=endpoint_policy("etims"),
        mode=settings.mode,
    )
    auth = {"Authorization": f"Bearer {registered.api_key}"}
    with httpx.Client(base_url=api_url, headers=auth, timeout=30) as api:
        for bhf_id in branches[1:]:
            answer = api.post(
                "/v1/etims/devices",
                json={"bhf_id": bhf_id, "device_serial": f"BENCH-{bhf_id}", "device_type": "oscu"},
            )
            answer.raise_for_status()
        _wait(
            lambda: (
                {d["bhf_id"]: d["status"] for d in api.get("/v1/etims/devices").json()["items"]}
                == dict.fromkeys(branches, "initialized")
            ),
            "every branch's device initialised",
        )
        created = api.post("/v1/etims/items", json=ITEM_REQUEST)
        created.raise_for_status()
        item_code = str(created.json()["item_code"])
        _wait(
            lambda: any(
                i["item_code"] == item_code and i.get("status") == "registered"
                for i in api.get("/v1/etims/items").json()["items"]
            ),
            f"item {item_code} registered with KRA",
        )
    return KenyanTenant(registered.tenant_id, registered.api_key, item_code)


def _wait(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.2)


def kenyan_sale(number: str, item_code: str, bhf_id: str) -> IssueKenyanInvoice:
    return IssueKenyanInvoice.model_validate(
        {
            "number": number,
            "date": datetime.now(NAIROBI).date().isoformat(),
            "buyer": {"name": "Wanjiku Stores"},
            "branch_id": bhf_id,
            "lines": [
                {
                    "item_code": item_code,
                    "description": "Maize flour 2kg",
                    "quantity": "3",
                    "unit_price": "200.00",
                    "tax_type": "B",
                }
            ],
        }
    )


# The connector processes of the pipeline: no request limit (the "no limit" condition; the default is
# LEDGERFLOW_ETIMS_RATE=10), and KRA's own timeout kept (45 s, above the congestion profile's 1.5 s).
PROCESS_ENV = {"LEDGERFLOW_ETIMS_RATE": "none"}


def signed(env: BenchEnv) -> int:
    """EtimsSigned events in the event store."""
    return int(
        env.scalar("SELECT count(*) FROM ledger_events WHERE topic LIKE %s", ("%Invoice.EtimsSigned",)) or 0
    )


@dataclass(frozen=True)
class PipelineRun:
    sales: int
    seconds: float
    """First sale issued -> last receipt recorded."""
    issue_seconds: float
    sandbox_signed: int
    """Sales the sandbox signed meanwhile: equal to ``sales`` unless one was signed twice."""

    @property
    def per_s(self) -> float:
        return self.sales / self.seconds


def issue_and_wait(
    env: BenchEnv,
    service: LedgerService,
    tenant: KenyanTenant,
    sandbox: Sandbox,
    branches: list[str],
    per_branch: int,
    prefix: str,
    progress: Callable[[int], None] | None = None,
) -> PipelineRun:
    """Issue ``per_branch`` sales on every branch, interleaved (as tills sell), and wait until each
    has its receipt recorded (``etims_signed``)."""
    before = signed(env)
    sandbox_before = int(sandbox.stats()["effects"].get("sales_signed", 0))
    n = per_branch * len(branches)
    started = time.monotonic()
    for i in range(per_branch):
        for bhf_id in branches:
            retry(
                lambda i=i, bhf_id=bhf_id: service.issue_invoice(  # type: ignore[misc]
                    tenant.tenant_id, kenyan_sale(f"{prefix}-{bhf_id}-{i}", tenant.item_code, bhf_id)
                )
            )
    issue_seconds = time.monotonic() - started
    deadline = time.monotonic() + max(300.0, 3 * n)
    while True:
        done = signed(env) - before
        if progress:
            progress(done)
        if done >= n:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"eTIMS pipeline: {done} of {n} sales signed")
        env.check()
        time.sleep(0.1)
    seconds = time.monotonic() - started
    sandbox_signed = int(sandbox.stats()["effects"].get("sales_signed", 0)) - sandbox_before
    return PipelineRun(n, seconds, issue_seconds, sandbox_signed)
