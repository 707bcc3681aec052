"""The Kafka records of the Expense aggregate's events (topic ``ledger.expense.v1``) and of the Budget
aggregate's (``ledger.budget.v1``), pure.

Kept beside engine/publishing.py, which adds them to its ``RECORD_BUILDERS``; each builder reads a
domain event or the relay's stored view of one (where decimals, dates, times and UUIDs are still their
stored text). Schemas: schemas/avro/expense/ and schemas/avro/budget/; fields in docs/topics.md.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from engine.domain.budget import Budget
from engine.domain.expense import Expense

EXPENSE_TOPIC = "ledger.expense.v1"
BUDGET_TOPIC = "ledger.budget.v1"
TOPICS = {"expense": EXPENSE_TOPIC, "budget": BUDGET_TOPIC}


def _plain(value: Any) -> Any:
    if type(value) is dict and "_type_" in value:
        return value["_data_"]
    return value


def _money(value: Any) -> str:
    return f"{Decimal(str(_plain(value))):.2f}"


def _optional_money(value: Any) -> str | None:
    value = _plain(value)
    return None if value is None else _money(value)


def _percent(value: Any) -> str:
    return f"{Decimal(str(_plain(value))):.2f}"


def _millis(value: Any) -> int:
    value = _plain(value)
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return int(moment.astimezone(UTC).timestamp() * 1000)


def _day(value: Any) -> str:
    value = _plain(value)
    return value.isoformat() if isinstance(value, date) else str(value)[:10]


def _optional_text(value: Any) -> str | None:
    value = _plain(value)
    return None if value is None else str(value)


def _expense(event: Any, base: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**base, "expense_id": str(event.originator_id), **fields}


def _submitted(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    return _expense(
        event,
        base,
        expense_number=event.expense_number,
        amount=_money(event.amount),
        category=event.category,
        gl_code=event.gl_code,
        expense_date=_day(event.expense_date),
        financial_year=event.financial_year,
        description=event.description,
        vendor_name=event.vendor_name,
        vendor_pan=event.vendor_pan,
        receipt_url=event.receipt_url,
        requires_approval=bool(event.requires_approval),
        submitted_by=event.submitted_by,
    )


def _approval_requested(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    return _expense(
        event,
        base,
        approval_id=str(_plain(event.approval_id)),
        requested_by=event.requested_by,
        requested_at=_millis(event.requested_at),
        due_at=_millis(event.due_at),
        justification=event.justification,
    )


def _approved(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    return _expense(
        event,
        base,
        approval_id=_optional_text(event.approval_id),
        approved_by=event.approved_by,
        approver_role=event.approver_role,
        approver_user_id=event.approver_user_id,
        approver_name=event.approver_name,
        approved_at=_millis(event.approved_at),
        comments=event.comments,
        channel=event.channel,
    )


def _rejected(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    return _expense(
        event,
        base,
        approval_id=_optional_text(event.approval_id),
        rejected_by=event.rejected_by,
        rejector_role=event.rejector_role,
        rejector_user_id=event.rejector_user_id,
        rejector_name=event.rejector_name,
        rejected_at=_millis(event.rejected_at),
        reason=event.reason,
        channel=event.channel,
    )


def _escalated(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    return _expense(
        event,
        base,
        approval_id=str(_plain(event.approval_id)),
        due_at=_millis(event.due_at),
        escalated_at=_millis(event.escalated_at),
    )


def _paid(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    return _expense(
        event,
        base,
        payment_reference=event.payment_reference,
        paid_on=_day(event.paid_on),
        tds_deducted=_optional_money(event.tds_deducted),
        paid_by=event.paid_by,
        paid_at=_millis(event.paid_at),
    )


def _budget(event: Any, base: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**base, "budget_id": str(event.originator_id), **fields}


def _allocated(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    return _budget(
        event,
        base,
        category=event.category,
        financial_year=event.financial_year,
        allocated_amount=_money(event.allocated_amount),
        allocated_by=event.allocated_by,
        # Allocations stored before these fields existed started from nothing (schema v2 defaults).
        utilized_amount=_money(getattr(event, "utilized_amount", "0.00")),
        alert_level=str(getattr(event, "alert_level", "normal")),
    )


def _revised(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    return _budget(
        event,
        base,
        allocated_amount=_money(event.allocated_amount),
        previous_amount=_money(event.previous_amount),
        revised_by=event.revised_by,
    )


def _utilised(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    return _budget(
        event,
        base,
        category=event.category,
        financial_year=event.financial_year,
        expense_id=str(_plain(event.expense_id)),
        expense_number=event.expense_number,
        amount=_money(event.amount),
        utilized_amount=_money(event.utilized_amount),
        allocated_amount=_money(event.allocated_amount),
        utilization_percentage=_percent(event.utilization_percentage),
        alert_level=event.alert_level,
        previous_alert_level=event.previous_alert_level,
    )


RECORD_BUILDERS: dict[type, Callable[[Any, dict[str, Any]], dict[str, Any]]] = {
    Expense.Submitted: _submitted,
    Expense.ApprovalRequested: _approval_requested,
    Expense.Approved: _approved,
    Expense.Rejected: _rejected,
    Expense.Escalated: _escalated,
    Expense.Paid: _paid,
    Budget.Allocated: _allocated,
    Budget.Revised: _revised,
    Budget.Utilised: _utilised,
}
