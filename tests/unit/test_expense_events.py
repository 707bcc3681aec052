"""An expense's and a budget's whole lives are published on ledger.expense.v1 / ledger.budget.v1: every
event type, through the domain event and the relay's fast path over stored JSON, gives the same record,
and each record round-trips through its shipped Avro schema."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.persistence import DatetimeAsISO, DecimalAsStr, JSONTranscoder, Mapper, UUIDAsHex

from engine.application import DateAsISO
from engine.domain.budget import Budget, budget_id_for
from engine.domain.expense import Expense, ExpenseStateConflict, ExpenseStatus, expense_id_for
from engine.publishing import outbound_from_stored, to_outbound
from schemas import registry

NOW = datetime(2026, 6, 16, 10, 30, tzinfo=UTC)


def submitted(*, requires_approval: bool = True, amount: str = "75000.00") -> Expense:
    tenant_id = uuid4()
    return Expense(
        tenant_id=tenant_id,
        expense_id=expense_id_for(tenant_id, "key-1"),
        expense_number="EXP-2026-000001",
        amount=Decimal(amount),
        category="infrastructure",
        gl_code="5500",
        expense_date=date(2026, 6, 15),
        financial_year="2026-27",
        description="Lab equipment — “oscilloscopes”",
        vendor_name="Tech Supplies Ltd",
        vendor_pan="AAACT1234F",
        receipt_url=None,
        requires_approval=requires_approval,
        submitted_by="api_key:k1",
        request_hash="h",
    )


def _millis(value: Any) -> Any:
    return int(value.timestamp() * 1000) if isinstance(value, datetime) else value


def _both_paths(event: Any) -> dict[str, Any]:
    message = to_outbound(event)
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO(), DateAsISO()):
        transcoder.register(transcoding)
    stored = Mapper(transcoder=transcoder).to_stored_event(event)
    fast = outbound_from_stored(stored.originator_id, stored.originator_version, stored.topic, stored.state)
    assert fast.record == message.record, type(event).__qualname__
    value, _ = registry.encode_event(message.ce_type, message.record)
    decoded = registry.decode_event(value, message.ce_type)
    # Avro's timestamp-millis decodes to a datetime; the record holds the milliseconds.
    assert {k: _millis(v) for k, v in decoded.items()} == message.record
    return {"topic": message.topic, "key": message.key, "ce_type": message.ce_type, **message.record}


def test_an_expense_from_submission_to_payment_is_published_keyed_by_its_id() -> None:
    expense = submitted()
    assert expense.status == ExpenseStatus.PENDING_APPROVAL
    expense.request_approval(
        requested_by="user:a", requested_at=NOW, due_at=NOW + timedelta(hours=48), justification=None
    )
    approval_id = expense.approval["approval_id"] if expense.approval else None
    assert expense.escalate(approval_id=approval_id, escalated_at=NOW + timedelta(hours=49))  # type: ignore[arg-type]
    assert not expense.escalate(approval_id=approval_id, escalated_at=NOW + timedelta(hours=50))  # type: ignore[arg-type]
    expense.approve(
        approved_by="user:p",
        approver_role="principal",
        approver_user_id="p",
        approver_name="Dr. Principal",
        approved_at=NOW + timedelta(hours=50),
        comments="Approved for lab setup project",
        channel="api",
    )
    expense.pay(
        payment_reference="UTR1",
        paid_on=date(2026, 6, 20),
        tds_deducted=Decimal("1500"),
        paid_by="api_key:k1",
        paid_at=NOW + timedelta(days=4),
    )
    records = [_both_paths(e) for e in expense.collect_events()]
    assert [r["ce_type"] for r in records] == [
        "ledgerflow.expense.submitted",
        "ledgerflow.expense.approval_requested",
        "ledgerflow.expense.escalated",
        "ledgerflow.expense.approved",
        "ledgerflow.expense.paid",
    ]
    assert {(r["topic"], r["key"], r["expense_id"]) for r in records} == {
        ("ledger.expense.v1", str(expense.id), str(expense.id))
    }
    assert records[0]["amount"] == "75000.00" and records[0]["expense_date"] == "2026-06-15"
    assert records[2]["due_at"] == int((NOW + timedelta(hours=48)).timestamp() * 1000)
    assert records[3]["approver_name"] == "Dr. Principal" and records[3]["approval_id"] == str(approval_id)
    assert records[4]["tds_deducted"] == "1500.00" and records[4]["paid_on"] == "2026-06-20"


def test_a_rejection_is_published_and_is_final() -> None:
    expense = submitted()
    expense.reject(
        rejected_by="user:p",
        rejector_role="principal",
        rejector_user_id=None,
        rejector_name=None,
        rejected_at=NOW,
        reason="Not in this year's plan",
        channel="callback",
    )
    (_, rejected) = [_both_paths(e) for e in expense.collect_events()]
    assert rejected["ce_type"] == "ledgerflow.expense.rejected" and rejected["approval_id"] is None
    with pytest.raises(ExpenseStateConflict):
        expense.approve(
            approved_by="user:p",
            approver_role="principal",
            approver_user_id=None,
            approver_name=None,
            approved_at=NOW,
            comments=None,
            channel="api",
        )
    with pytest.raises(ExpenseStateConflict):
        expense.pay(
            payment_reference="X", paid_on=date(2026, 6, 20), tds_deducted=None, paid_by="a", paid_at=NOW
        )


def test_an_auto_approval_needs_a_submitted_expense_and_an_approver_a_pending_one() -> None:
    below = submitted(requires_approval=False, amount="4000.00")
    assert below.status == ExpenseStatus.SUBMITTED
    with pytest.raises(ExpenseStateConflict):
        below.approve(
            approved_by="user:p",
            approver_role="principal",
            approver_user_id=None,
            approver_name=None,
            approved_at=NOW,
            comments=None,
            channel="api",
        )
    below.approve(
        approved_by="system:auto_approval",
        approver_role="system",
        approver_user_id=None,
        approver_name=None,
        approved_at=NOW,
        comments=None,
        channel="auto",
    )
    assert below.status == ExpenseStatus.APPROVED


def test_a_budget_allocation_revision_and_utilisation_are_published_on_ledger_budget() -> None:
    tenant_id = uuid4()
    budget = Budget(
        tenant_id=tenant_id,
        category="supplies",
        financial_year="2026-27",
        allocated_amount=Decimal("500000"),
        allocated_by="api_key:k1",
        utilized_amount=Decimal("0.00"),
        alert_level="normal",
    )
    assert budget.id == budget_id_for(tenant_id, "supplies", "2026-27")
    assert budget.revise(allocated_amount=Decimal("400000.00"), revised_by="api_key:k1")
    assert not budget.revise(allocated_amount=Decimal("400000"), revised_by="api_key:k1")
    budget.utilise(
        expense_id=uuid4(),
        expense_number="EXP-2026-000002",
        amount=Decimal("340000"),
        utilization_percentage=Decimal("85.00"),
        alert_level="warning",
    )
    records = [_both_paths(e) for e in budget.collect_events()]
    assert [r["ce_type"] for r in records] == [
        "ledgerflow.budget.allocated",
        "ledgerflow.budget.revised",
        "ledgerflow.budget.utilised",
    ]
    assert {(r["topic"], r["key"]) for r in records} == {("ledger.budget.v1", str(budget.id))}
    utilised = records[2]
    assert (
        utilised["utilized_amount"],
        utilised["allocated_amount"],
        utilised["utilization_percentage"],
    ) == (
        "340000.00",
        "400000.00",
        "85.00",
    )
    assert (utilised["alert_level"], utilised["previous_alert_level"], utilised["category"]) == (
        "warning",
        "normal",
        "supplies",
    )


def test_an_allocation_carries_the_years_earlier_approvals_and_an_old_one_replays_from_nothing() -> None:
    tenant_id = uuid4()
    budget = Budget(
        tenant_id=tenant_id,
        category="supplies",
        financial_year="2026-27",
        allocated_amount=Decimal("100000"),
        allocated_by="api_key:k1",
        utilized_amount=Decimal("85000.00"),
        alert_level="warning",
    )
    assert (budget.utilized_amount, budget.alert_level) == (Decimal("85000.00"), "warning")
    [allocated] = budget.collect_events()
    record = _both_paths(allocated)
    assert (record["utilized_amount"], record["alert_level"]) == ("85000.00", "warning")
    # An Allocated stored before the field existed has no utilized_amount: it replays as 0.00.
    old = object.__new__(Budget.Allocated)
    old.__dict__.update(
        {k: v for k, v in allocated.__dict__.items() if k not in ("utilized_amount", "alert_level")}
    )
    replayed = old.mutate(None)
    assert replayed is not None
    assert (replayed.utilized_amount, replayed.alert_level) == (Decimal("0.00"), "normal")
    assert _both_paths(old)["utilized_amount"] == "0.00"
