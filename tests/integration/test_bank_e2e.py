"""A payout and the statement poll end to end: API -> event store -> relay -> ledger.payout.v1 ->
router -> connector.bank.jobs.v1 -> connector worker -> bank sandbox -> result events, in separate
processes, with the bank losing answers on the way."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from connectors.bank import sandbox
from engine.application import LedgerService
from engine.config import Settings
from tests.connectors.contract import LiveServer
from tests.integration.helpers import client_for
from tests.integration.processes import Processes

pytestmark = pytest.mark.integration

ACCOUNT = sandbox.SandboxAccount()


@pytest.fixture
def fast(settings: Settings) -> Settings:
    return replace(settings, retry_delays=(0, 1, 1, 2, 2, 3), breaker_open_seconds=3)


@pytest.fixture
def processes(fast: Settings, tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(fast, tmp_path)
    yield procs
    procs.close()


def scalar(settings: Settings, query: str, *params: Any) -> Any:
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def test_a_payout_is_paid_once_through_lost_answers_and_the_statement_poll_imports_it(
    service: LedgerService, fast: Settings, topics: list[str], processes: Processes
) -> None:
    with LiveServer(sandbox.create_app(account=ACCOUNT)) as bank, httpx.Client(base_url=bank.url) as operator:
        # The first two initiates are carried out and their answers lost (502 after the effect).
        operator.post(
            "/_sandbox/faults",
            json={"after_effect_failure_rate": 1.0, "paths": ["/api/v2/payments/"], "max_faults": 2},
        )
        registered = service.register_tenant(
            name="College",
            legal_name="College Accounts Private Limited",
            country="IN",
            gstin="27AAGCB7383J1Z8",
            state="27",
        )
        api = client_for(fast)
        auth = {"Authorization": f"Bearer {registered.api_key}"}

        def configure(enabled: bool) -> None:
            saved = api.put(
                "/v1/integrations/bank",
                json={
                    "enabled": enabled,
                    "environment": "sandbox",
                    "base_url": bank.url,
                    "credentials": ACCOUNT.credentials(),
                },
                headers=auth,
            )
            assert saved.status_code == 200, saved.text

        configure(True)
        engine = [
            processes.start("relay"),
            processes.start("worker"),
            processes.start("connectors", "run", name="connectors"),
        ]
        created = api.post(
            "/v1/payouts",
            json={
                "amount": "5000.00",
                "currency": "INR",
                "mode": "NEFT",
                "beneficiary": {
                    "name": "Tech Supplies Ltd",
                    "account_number": "1234567890",
                    "ifsc": "HDFC0001234",
                },
                "purpose": "Payment for Invoice INV-2024-001",
                "reference": "PAY-2024-000123",
            },
            headers=auth,
        )
        assert created.status_code == 201, created.text
        payout_id = created.json()["id"]

        def status() -> str:
            return str(api.get(f"/v1/payouts/{payout_id}", headers=auth).json()["status"])

        processes.wait_for(
            lambda: status() == "completed", what="the payout completed", watch=engine, timeout=90
        )
        # The poll that saving the integration started may have run before the bank booked the
        # debit (it then imported nothing and waits its interval, 6 h). Saving it again starts a
        # poll that supersedes it; wait for one that ran after the payout completed.
        completed_at = datetime.now(UTC)
        configure(True)
        processes.wait_for(
            lambda: (
                scalar(
                    fast,
                    "SELECT last_polled_at > %s FROM bank_statement_polls WHERE tenant_id = %s",
                    completed_at,
                    registered.tenant_id,
                )
                is True
            ),
            what="a statement poll after the payout completed",
            watch=engine,
            timeout=60,
        )
        stats = operator.get("/_sandbox/stats").json()

    assert stats["effects"]["payout_initiated"] == 1
    assert stats["faults_injected"]["after_effect_failure"] == 2
    completed = scalar(fast, "SELECT count(*) FROM ledger_events WHERE topic LIKE %s", "%Payout.Completed%")
    assert completed == 1
    lines = api.get("/v1/bank/transactions", params={"account": ACCOUNT.account_number}, headers=auth).json()
    # The poll imported the payout's own debit (amount + charges), its UTR as the reference.
    utr = api.get(f"/v1/payouts/{payout_id}", headers=auth).json()["utr"]
    assert [(line["amount"], line["reference"]) for line in lines["items"]] == [("-5005.00", utr)]
    processes.assert_alive(*engine)
