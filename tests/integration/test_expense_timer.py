"""The durable SLA timer of expense approvals (issue 14): a real ``ledgerflow expenses timer`` process
killed with SIGKILL before the SLA lapses escalates nothing; after the due time, restarted (twice, side
by side), the lapsed request is escalated exactly once, and a decided expense never is."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest
from psycopg.rows import dict_row

from engine import db
from engine.application import LedgerService
from engine.config import Settings
from engine.domain.expense import Expense
from tests.conftest import wait_for
from tests.integration.helpers import client_for, register_tenant
from tests.integration.processes import Processes

pytestmark = pytest.mark.integration

# 0.002 hours = 7.2 seconds: long enough to kill the timer before it is due, short enough to wait for.
SLA_HOURS = "0.002"


@pytest.fixture
def processes(settings: Settings, service: LedgerService, tmp_path: Path) -> Iterator[Processes]:
    group = Processes(settings, tmp_path)
    yield group
    group.close()


def escalations(service: LedgerService, expense_id: UUID) -> list[Expense.Escalated]:
    events = service.ledger.events.get(expense_id)
    return [e for e in events if isinstance(e, Expense.Escalated)]


def timer_row(service: LedgerService, expense_id: str) -> dict[str, object]:
    with db.transaction(service.pool) as conn, conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT * FROM expense_approval_timers WHERE expense_id = %s", (expense_id,)
        ).fetchone()
    assert row is not None
    return row


def test_a_lapsed_approval_is_escalated_once_across_a_killed_timer(
    service: LedgerService, settings: Settings, processes: Processes
) -> None:
    _, key = register_tenant(service)
    client = client_for(settings)
    auth = {"Authorization": f"Bearer {key}"}
    configured = client.put(
        "/v1/config/expenses",
        json={
            "approval_threshold": "50000",
            "sla_hours": SLA_HOURS,
            "budget_alerts": {"warning_percentage": "80", "critical_percentage": "95"},
        },
        headers=auth,
    )
    assert configured.status_code == 200, configured.text
    body = {
        "amount": "75000",
        "category": "infrastructure",
        "date": "2026-06-15",
        "description": "Lab equipment",
        "vendor_name": "Tech Supplies Ltd",
        "receipt_url": "https://files.example.edu/r/1.pdf",
    }
    lapsing = client.post("/v1/expenses", json=body, headers=auth).json()["id"]
    decided = client.post("/v1/expenses", json=body, headers=auth).json()["id"]

    timer = processes.start("expenses", "timer", "--poll-seconds", "0.2", name="timer")
    processes.wait_for(
        lambda: "timer started" in timer.log_tail(), what="the timer's start", timeout=60, watch=[timer]
    )
    for expense_id in (lapsing, decided):
        assert (
            client.post(f"/v1/approvals/expenses/{expense_id}/request", json={}, headers=auth).status_code
            == 201
        )
    due = timer_row(service, lapsing)["due_at"]
    assert isinstance(due, datetime)
    assert datetime.now(UTC) < due, "the SLA lapsed before the timer could be killed: raise SLA_HOURS"
    timer.kill()
    assert escalations(service, UUID(lapsing)) == []
    # One request is decided in time; the other lapses while no timer runs.
    assert client.post(f"/v1/expenses/{decided}/approve", json={}, headers=auth).status_code == 200
    wait_for(lambda: datetime.now(UTC) > due, timeout=30, what="the SLA's due time passing")
    assert escalations(service, UUID(lapsing)) == []

    # Restarted, two timers side by side: the lapsed request is escalated by exactly one of them.
    restarted = [
        processes.start("expenses", "timer", "--poll-seconds", "0.2", name=f"timer-{i}") for i in range(2)
    ]
    processes.wait_for(
        lambda: (
            timer_row(service, lapsing)["fired_at"] is not None
            and timer_row(service, decided)["fired_at"] is not None
        ),
        what="both timer rows fired",
        timeout=60,
        watch=restarted,
    )
    (escalated,) = escalations(service, UUID(lapsing))
    assert escalated.due_at == due
    assert timer_row(service, lapsing)["outcome"] == "escalated"
    assert timer_row(service, decided)["outcome"] == "not_pending"
    assert escalations(service, UUID(decided)) == []
    view = client.get(f"/v1/expenses/{lapsing}", headers=auth).json()
    assert view["status"] == "pending_approval" and view["approval"]["escalated_at"] is not None
    # A timer killed after storing the escalation but before marking its row leaves the row due
    # again: the next claim finds the request escalated and stores nothing more.
    with db.transaction(service.pool) as conn:
        conn.execute(
            "UPDATE expense_approval_timers SET fired_at = NULL, outcome = NULL WHERE expense_id = %s",
            (lapsing,),
        )
    processes.wait_for(
        lambda: timer_row(service, lapsing)["outcome"] == "escalated_before",
        what="the re-claimed row found escalated before",
        timeout=60,
        watch=restarted,
    )
    assert len(escalations(service, UUID(lapsing))) == 1
    for process in restarted:
        processes.assert_alive(process)
        process.stop()
    # And the escalated expense can still be decided.
    assert client.post(f"/v1/expenses/{lapsing}/approve", json={}, headers=auth).status_code == 200
