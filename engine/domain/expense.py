"""The Expense aggregate: money a college (a tenant) spends, from submission to payment (issue 14,
seed "College Accounts" file 002). Its life::

    submitted ──(at or below the threshold, budget available)──▶ approved ──pay──▶ paid
        └──(above the threshold, or a category that always needs approval)──▶ pending_approval
                pending_approval ──approve──▶ approved          (the principal, or the signed callback)
                pending_approval ──reject───▶ rejected          (final)
                pending_approval ──escalate─▶ pending_approval  (the approval's SLA lapsed, once per request)

Who decided is recorded from the authenticated principal (``approved_by`` = ``user:<id>`` or
``api_key:<id>``, with the role), never from a request body. The id derives from the tenant and the
caller's Idempotency-Key when one is sent, so a retried submission is the same aggregate.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from eventsourcing.domain import Aggregate, event

from engine.errors import Conflict

_EXPENSE_NAMESPACE = uuid5(NAMESPACE_URL, "https://ledgerflow.dev/ns/expense")
_APPROVAL_NAMESPACE = uuid5(NAMESPACE_URL, "https://ledgerflow.dev/ns/expense-approval")


class ExpenseStatus:
    SUBMITTED = "submitted"
    PENDING_APPROVAL = "pending_approval"
    APPROVED = "approved"
    REJECTED = "rejected"
    PAID = "paid"


STATUSES = (
    ExpenseStatus.SUBMITTED,
    ExpenseStatus.PENDING_APPROVAL,
    ExpenseStatus.APPROVED,
    ExpenseStatus.REJECTED,
    ExpenseStatus.PAID,
)
# How a decision reached us: the auto-approval at submission, an approver's API call, or the
# principal portal's signed callback (POST /v1/webhooks/expense-approval).
CHANNELS = ("auto", "api", "callback")
AUTO_APPROVER = "system:auto_approval"


def expense_id_for(tenant_id: UUID, idempotency_key: str | None) -> UUID:
    """Stable for the same tenant and Idempotency-Key; a fresh id without one."""
    if idempotency_key is None:
        return uuid4()
    return uuid5(_EXPENSE_NAMESPACE, f"{tenant_id}/{idempotency_key}")


def approval_id_for(expense_id: UUID, round_: int) -> UUID:
    """One approval request per expense and round (a request after an escalation is still round 1)."""
    return uuid5(_APPROVAL_NAMESPACE, f"{expense_id}/{round_}")


class Expense(Aggregate):
    """One expense of one tenant."""

    class Submitted(Aggregate.Created):
        tenant_id: UUID
        expense_id: UUID
        expense_number: str
        amount: Decimal
        category: str
        gl_code: str
        expense_date: date
        financial_year: str
        description: str
        vendor_name: str
        vendor_pan: str | None
        receipt_url: str | None
        requires_approval: bool
        submitted_by: str
        request_hash: str

    @event(Submitted)
    def __init__(
        self,
        *,
        tenant_id: UUID,
        expense_id: UUID,
        expense_number: str,
        amount: Decimal,
        category: str,
        gl_code: str,
        expense_date: date,
        financial_year: str,
        description: str,
        vendor_name: str,
        vendor_pan: str | None,
        receipt_url: str | None,
        requires_approval: bool,
        submitted_by: str,
        request_hash: str,
    ) -> None:
        self.tenant_id = tenant_id
        self.expense_number = expense_number
        self.amount = amount
        self.category = category
        self.gl_code = gl_code
        self.expense_date = expense_date
        self.financial_year = financial_year
        self.description = description
        self.vendor_name = vendor_name
        self.vendor_pan = vendor_pan
        self.receipt_url = receipt_url
        self.requires_approval = requires_approval
        self.submitted_by = submitted_by
        self.request_hash = request_hash
        self.status = ExpenseStatus.PENDING_APPROVAL if requires_approval else ExpenseStatus.SUBMITTED
        self.approval: dict[str, Any] | None = None  # the open or last approval request
        self.decided_by: str | None = None
        self.decided_role: str | None = None
        self.decided_user_id: str | None = None
        self.decided_name: str | None = None
        self.decided_at: datetime | None = None
        self.decision_channel: str | None = None
        self.comments: str | None = None
        self.rejection_reason: str | None = None
        self.escalated_at: datetime | None = None
        self.payment_reference: str | None = None
        self.paid_on: date | None = None
        self.paid_at: datetime | None = None
        self.tds_deducted: Decimal | None = None
        self.paid_by: str | None = None

    @staticmethod
    def create_id(*, expense_id: UUID, **_: Any) -> UUID:
        """The service chooses it: ``expense_id_for`` (tenant and Idempotency-Key)."""
        return expense_id

    # -- commands -----------------------------------------------------------------------------

    def request_approval(
        self, *, requested_by: str, requested_at: datetime, due_at: datetime, justification: str | None
    ) -> bool:
        """Record the request to the principal with its SLA due time; False when one is open already."""
        if self.approval is not None and self.status == ExpenseStatus.PENDING_APPROVAL:
            return False
        self.check_status(ExpenseStatus.PENDING_APPROVAL, action="request approval")
        self._approval_requested(
            tenant_id=self.tenant_id,
            approval_id=approval_id_for(self.id, 1),
            requested_by=requested_by,
            requested_at=requested_at,
            due_at=due_at,
            justification=justification,
        )
        return True

    def approve(
        self,
        *,
        approved_by: str,
        approver_role: str,
        approver_user_id: str | None,
        approver_name: str | None,
        approved_at: datetime,
        comments: str | None,
        channel: str,
    ) -> None:
        allowed = (ExpenseStatus.SUBMITTED,) if channel == "auto" else (ExpenseStatus.PENDING_APPROVAL,)
        self.check_status(*allowed, action="approve")
        self._approved(
            tenant_id=self.tenant_id,
            approval_id=self.approval["approval_id"] if self.approval else None,
            approved_by=approved_by,
            approver_role=approver_role,
            approver_user_id=approver_user_id,
            approver_name=approver_name,
            approved_at=approved_at,
            comments=comments,
            channel=channel,
        )

    def reject(
        self,
        *,
        rejected_by: str,
        rejector_role: str,
        rejector_user_id: str | None,
        rejector_name: str | None,
        rejected_at: datetime,
        reason: str,
        channel: str,
    ) -> None:
        self.check_status(ExpenseStatus.PENDING_APPROVAL, action="reject")
        self._rejected(
            tenant_id=self.tenant_id,
            approval_id=self.approval["approval_id"] if self.approval else None,
            rejected_by=rejected_by,
            rejector_role=rejector_role,
            rejector_user_id=rejector_user_id,
            rejector_name=rejector_name,
            rejected_at=rejected_at,
            reason=reason,
            channel=channel,
        )

    def escalate(self, *, approval_id: UUID, escalated_at: datetime) -> bool:
        """The approval request's SLA lapsed: escalate once. False when the expense was decided meanwhile
        or this request was escalated already (a timer that crashed after storing the event)."""
        if (
            self.status != ExpenseStatus.PENDING_APPROVAL
            or self.approval is None
            or self.approval["approval_id"] != approval_id
            or self.escalated_at is not None
        ):
            return False
        self._escalated(
            tenant_id=self.tenant_id,
            approval_id=approval_id,
            due_at=self.approval["due_at"],
            escalated_at=escalated_at,
        )
        return True

    def pay(
        self,
        *,
        payment_reference: str,
        paid_on: date,
        tds_deducted: Decimal | None,
        paid_by: str,
        paid_at: datetime,
    ) -> None:
        self.check_status(ExpenseStatus.APPROVED, action="pay")
        self._paid(
            tenant_id=self.tenant_id,
            payment_reference=payment_reference,
            paid_on=paid_on,
            tds_deducted=tds_deducted,
            paid_by=paid_by,
            paid_at=paid_at,
        )

    def check_status(self, *allowed: str, action: str) -> None:
        if self.status not in allowed:
            raise ExpenseStateConflict(
                f"expense {self.expense_number} is {self.status}; {action} needs it {' or '.join(allowed)}",
                {"expense_id": str(self.id), "status": self.status},
            )

    # -- events -------------------------------------------------------------------------------

    class ApprovalRequested(Aggregate.Event):
        tenant_id: UUID
        approval_id: UUID
        requested_by: str
        requested_at: datetime
        due_at: datetime
        justification: str | None

    @event(ApprovalRequested)
    def _approval_requested(
        self,
        tenant_id: UUID,
        approval_id: UUID,
        requested_by: str,
        requested_at: datetime,
        due_at: datetime,
        justification: str | None,
    ) -> None:
        self.approval = {
            "approval_id": approval_id,
            "requested_by": requested_by,
            "requested_at": requested_at,
            "due_at": due_at,
            "justification": justification,
        }

    class Approved(Aggregate.Event):
        tenant_id: UUID
        approval_id: UUID | None
        approved_by: str
        approver_role: str
        approver_user_id: str | None
        approver_name: str | None
        approved_at: datetime
        comments: str | None
        channel: str

    @event(Approved)
    def _approved(
        self,
        tenant_id: UUID,
        approval_id: UUID | None,
        approved_by: str,
        approver_role: str,
        approver_user_id: str | None,
        approver_name: str | None,
        approved_at: datetime,
        comments: str | None,
        channel: str,
    ) -> None:
        self.status = ExpenseStatus.APPROVED
        self._record_decision(
            approved_by, approver_role, approver_user_id, approver_name, approved_at, channel
        )
        self.comments = comments

    class Rejected(Aggregate.Event):
        tenant_id: UUID
        approval_id: UUID | None
        rejected_by: str
        rejector_role: str
        rejector_user_id: str | None
        rejector_name: str | None
        rejected_at: datetime
        reason: str
        channel: str

    @event(Rejected)
    def _rejected(
        self,
        tenant_id: UUID,
        approval_id: UUID | None,
        rejected_by: str,
        rejector_role: str,
        rejector_user_id: str | None,
        rejector_name: str | None,
        rejected_at: datetime,
        reason: str,
        channel: str,
    ) -> None:
        self.status = ExpenseStatus.REJECTED
        self._record_decision(
            rejected_by, rejector_role, rejector_user_id, rejector_name, rejected_at, channel
        )
        self.rejection_reason = reason

    def _record_decision(
        self,
        decided_by: str,
        role: str,
        user_id: str | None,
        name: str | None,
        decided_at: datetime,
        channel: str,
    ) -> None:
        """Who decided, when and how: an approval and a rejection record the same fields (a plain method,
        not an event: each decision's own event calls it)."""
        self.decided_by = decided_by
        self.decided_role = role
        self.decided_user_id = user_id
        self.decided_name = name
        self.decided_at = decided_at
        self.decision_channel = channel

    class Escalated(Aggregate.Event):
        tenant_id: UUID
        approval_id: UUID
        due_at: datetime
        escalated_at: datetime

    @event(Escalated)
    def _escalated(
        self, tenant_id: UUID, approval_id: UUID, due_at: datetime, escalated_at: datetime
    ) -> None:
        self.escalated_at = escalated_at

    class Paid(Aggregate.Event):
        tenant_id: UUID
        payment_reference: str
        paid_on: date
        tds_deducted: Decimal | None
        paid_by: str
        paid_at: datetime

    @event(Paid)
    def _paid(
        self,
        tenant_id: UUID,
        payment_reference: str,
        paid_on: date,
        tds_deducted: Decimal | None,
        paid_by: str,
        paid_at: datetime,
    ) -> None:
        self.status = ExpenseStatus.PAID
        self.payment_reference = payment_reference
        self.paid_on = paid_on
        self.tds_deducted = tds_deducted
        self.paid_by = paid_by
        self.paid_at = paid_at


class ExpenseStateConflict(Conflict):
    """A command the expense's status does not allow (approve a rejected expense, pay a pending one)."""

    code = "invalid_state"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
