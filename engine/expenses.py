"""College expenses for a tenant (issue 14, seed "College Accounts" file 002; docs/college-accounts.md):
submission with approval routing and the budget check, the principal's approval request with its SLA,
decisions by an approver or the signed callback, payment, budgets and their utilisation, the export,
and the per-tenant configuration (categories, GL codes, threshold, SLA, alert levels).

Every state change is an event of the Expense or Budget aggregate (engine/domain/expense.py, budget.py)
published by the relay on ``ledger.expense.v1`` / ``ledger.budget.v1``. The read tables
``expense_register`` and ``budget_register`` (engine/expenses.sql) are written right after each save and
rebuilt from the event store by :meth:`ExpenseBook.rebuild`. Every query is scoped to one tenant.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError, OperationalError
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from engine import db
from engine.application import CLAIM_WAIT_SECONDS, IdempotencyKeyInProgress, LedgerService, ServiceError
from engine.domain.budget import Budget, budget_id_for
from engine.domain.expense import AUTO_APPROVER, Expense, ExpenseStatus, approval_id_for, expense_id_for
from engine.domain.expense_rules import (
    DEFAULT_APPROVAL_THRESHOLD,
    DEFAULT_CRITICAL_PERCENT,
    DEFAULT_SLA_HOURS,
    DEFAULT_WARNING_PERCENT,
    BudgetPosition,
    Route,
    alert_level,
    budget_allows,
    expense_number,
    financial_year_of,
    level_rose,
    receipt_required,
    route_expense,
    utilization_percentage,
)
from engine.errors import Conflict, InvalidInput, NotFound

log = logging.getLogger(__name__)

ZERO = Decimal("0.00")
# A budget check lost to a concurrent approval in the same category is checked again this often.
SAVE_ATTEMPTS = 8

# Seed 002, section 1.5: GL codes and categories. The seed shows salaries (5100) and supplies (5200);
# the other categories are the ones its monthly P&L example names, with codes following its pattern.
DEFAULT_GL_CODES: list[dict[str, Any]] = [
    {"id": 1, "code": "5100", "name": "Salaries & Wages", "category": "salaries", "is_active": True},
    {"id": 2, "code": "5200", "name": "Office Supplies", "category": "supplies", "is_active": True},
    {"id": 3, "code": "5300", "name": "Utilities", "category": "utilities", "is_active": True},
    {"id": 4, "code": "5400", "name": "Repairs & Maintenance", "category": "maintenance", "is_active": True},
    {
        "id": 5,
        "code": "5500",
        "name": "Infrastructure & Equipment",
        "category": "infrastructure",
        "is_active": True,
    },
]
DEFAULT_CATEGORIES: list[dict[str, Any]] = [
    # Seed 002: salaries always need approval and a receipt (threshold 0); supplies need neither
    # below 5,000.
    {
        "value": "salaries",
        "label": "Salaries & Wages",
        "requires_approval": True,
        "receipt_threshold": "0.00",
        "gl_code": "5100",
    },
    {
        "value": "supplies",
        "label": "Office Supplies",
        "requires_approval": False,
        "receipt_threshold": "5000.00",
        "gl_code": "5200",
    },
    {
        "value": "utilities",
        "label": "Utilities",
        "requires_approval": False,
        "receipt_threshold": "5000.00",
        "gl_code": "5300",
    },
    {
        "value": "maintenance",
        "label": "Repairs & Maintenance",
        "requires_approval": False,
        "receipt_threshold": "5000.00",
        "gl_code": "5400",
    },
    {
        "value": "infrastructure",
        "label": "Infrastructure & Equipment",
        "requires_approval": False,
        "receipt_threshold": "5000.00",
        "gl_code": "5500",
    },
]


# -- errors ---------------------------------------------------------------------------------------


class ExpenseNotFound(ServiceError, NotFound):
    code = "not_found"


class ExpenseInputRefused(ServiceError, InvalidInput):
    """A field the tenant's configuration refuses (unknown category or GL code, a missing receipt)."""

    code = "validation_failed"

    def __init__(self, path: str, code: str, message: str) -> None:
        super().__init__(message, {"fields": [{"path": path, "code": code, "message": message}]})
        self.code = code


class InsufficientBudget(ServiceError, InvalidInput):
    """Seed 002 section 5.2: the budget's remaining amount is less than the expense."""

    code = "insufficient_budget"


class ExpenseKeyReused(ServiceError, InvalidInput):
    code = "idempotency_key_reused"


class ExpenseDecided(ServiceError, Conflict):
    code = "invalid_state"


# -- configuration --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpenseConfig:
    approval_threshold: Decimal = DEFAULT_APPROVAL_THRESHOLD
    sla_hours: Decimal = DEFAULT_SLA_HOURS
    warning_percent: Decimal = DEFAULT_WARNING_PERCENT
    critical_percent: Decimal = DEFAULT_CRITICAL_PERCENT
    categories: list[dict[str, Any]] = field(default_factory=lambda: [dict(c) for c in DEFAULT_CATEGORIES])
    gl_codes: list[dict[str, Any]] = field(default_factory=lambda: [dict(g) for g in DEFAULT_GL_CODES])

    def category(self, value: str) -> dict[str, Any] | None:
        return next((c for c in self.categories if c["value"] == value), None)

    def active_gl_code(self, code: str) -> dict[str, Any] | None:
        return next((g for g in self.gl_codes if g["code"] == code and g.get("is_active", True)), None)

    def settings_view(self) -> dict[str, Any]:
        return {
            "approval_threshold": money(self.approval_threshold),
            "sla_hours": number(self.sla_hours),
            "budget_alerts": {
                "warning_percentage": number(self.warning_percent),
                "critical_percentage": number(self.critical_percent),
            },
        }

    def level(self, percentage: Decimal) -> str:
        return alert_level(percentage, warning=self.warning_percent, critical=self.critical_percent)


def money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))


def number(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def request_hash(document: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(document, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()


@dataclass(frozen=True)
class SubmitInput:
    amount: Decimal
    category: str
    expense_date: date
    description: str
    vendor_name: str
    vendor_pan: str | None
    gl_code: str | None
    receipt_url: str | None

    def fingerprint(self) -> str:
        return request_hash(
            {
                "amount": str(self.amount),
                "category": self.category,
                "date": self.expense_date.isoformat(),
                "description": self.description,
                "vendor_name": self.vendor_name,
                "vendor_pan": self.vendor_pan,
                "gl_code": self.gl_code,
                "receipt_url": self.receipt_url,
            }
        )


@dataclass(frozen=True)
class Actor:
    """Who acts, from the authenticated principal (engine/api/principal.py) or the signed callback."""

    actor: str
    role: str
    user_id: str | None = None
    name: str | None = None


def expense_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["expense_id"]),
        "expense_number": row["expense_number"],
        "status": row["status"],
        "amount": money(row["amount"]),
        "category": row["category"],
        "gl_code": row["gl_code"],
        "date": row["expense_date"].isoformat(),
        "financial_year": row["financial_year"],
        "description": row["description"],
        "vendor_name": row["vendor_name"],
        "vendor_pan": row["vendor_pan"],
        "receipt_url": row["receipt_url"],
        "submitted_by": row["submitted_by"],
        "submitted_at": _iso(row["submitted_at"]),
        "approval": None
        if row["approval_id"] is None
        else {
            "approval_id": str(row["approval_id"]),
            "due_at": _iso(row["approval_due_at"]),
            "escalated_at": _iso(row["escalated_at"]),
        },
        "approved_by": row["approved_by"],
        "approved_by_name": row["approved_by_name"],
        "approver_role": row["approver_role"],
        "approved_at": _iso(row["approved_at"]),
        "comments": row["comments"],
        "rejected_by": row["rejected_by"],
        "rejected_at": _iso(row["rejected_at"]),
        "rejection_reason": row["rejection_reason"],
        "paid_at": _iso(row["paid_at"]),
        "paid_on": row["paid_on"].isoformat() if row["paid_on"] else None,
        "payment_reference": row["payment_reference"],
        "tds_deducted": money(row["tds_deducted"]) if row["tds_deducted"] is not None else None,
    }


def _register_row(e: Expense) -> dict[str, Any]:
    approved = e.status in (ExpenseStatus.APPROVED, ExpenseStatus.PAID)
    rejected = e.status == ExpenseStatus.REJECTED
    return {
        "expense_id": e.id,
        "tenant_id": e.tenant_id,
        "expense_number": e.expense_number,
        "category": e.category,
        "gl_code": e.gl_code,
        "amount": e.amount,
        "status": e.status,
        "expense_date": e.expense_date,
        "financial_year": e.financial_year,
        "description": e.description,
        "vendor_name": e.vendor_name,
        "vendor_pan": e.vendor_pan,
        "receipt_url": e.receipt_url,
        "submitted_by": e.submitted_by,
        "submitted_at": e.created_on,
        "approval_id": e.approval["approval_id"] if e.approval else None,
        "approval_due_at": e.approval["due_at"] if e.approval else None,
        "escalated_at": e.escalated_at,
        "approved_by": e.decided_by if approved else None,
        "approved_by_name": e.decided_name if approved else None,
        "approver_role": e.decided_role if approved else None,
        "approved_at": e.decided_at if approved else None,
        "comments": e.comments,
        "rejected_by": e.decided_by if rejected else None,
        "rejected_at": e.decided_at if rejected else None,
        "rejection_reason": e.rejection_reason,
        "paid_at": e.paid_at,
        "paid_on": e.paid_on,
        "payment_reference": e.payment_reference,
        "tds_deducted": e.tds_deducted,
        "version": e.version,
    }


_REGISTER_COLUMNS = [
    "expense_id", "tenant_id", "expense_number", "category", "gl_code", "amount", "status", "expense_date",
    "financial_year", "description", "vendor_name", "vendor_pan", "receipt_url", "submitted_by",
    "submitted_at", "approval_id", "approval_due_at", "escalated_at", "approved_by", "approved_by_name",
    "approver_role", "approved_at", "comments", "rejected_by", "rejected_at", "rejection_reason", "paid_at",
    "paid_on", "payment_reference", "tds_deducted", "version",
]  # fmt: skip
_REGISTER_UPSERT = (
    f"INSERT INTO expense_register ({', '.join(_REGISTER_COLUMNS)})"
    f" VALUES ({', '.join('%(' + c + ')s' for c in _REGISTER_COLUMNS)})"
    " ON CONFLICT (expense_id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in _REGISTER_COLUMNS if c != "expense_id")
    + " WHERE expense_register.version < EXCLUDED.version"
)


class ExpenseBook:
    """Command handling and queries for expenses and budgets, beside the ledger's ``LedgerService``."""

    def __init__(self, service: LedgerService) -> None:
        self.service = service

    # -- configuration ----------------------------------------------------------------------------

    def config(self, tenant_id: UUID) -> ExpenseConfig:
        with db.transaction(self.service.pool) as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute("SELECT * FROM expense_settings WHERE tenant_id = %s", (tenant_id,)).fetchone()
        if row is None:
            return ExpenseConfig()
        base = ExpenseConfig()
        return ExpenseConfig(
            approval_threshold=_dec(row["approval_threshold"], base.approval_threshold),
            sla_hours=_dec(row["sla_hours"], base.sla_hours),
            warning_percent=_dec(row["warning_percent"], base.warning_percent),
            critical_percent=_dec(row["critical_percent"], base.critical_percent),
            categories=row["categories"] if row["categories"] is not None else base.categories,
            gl_codes=row["gl_codes"] if row["gl_codes"] is not None else base.gl_codes,
        )

    def set_settings(
        self,
        tenant_id: UUID,
        *,
        approval_threshold: Decimal,
        sla_hours: Decimal,
        warning_percent: Decimal,
        critical_percent: Decimal,
    ) -> ExpenseConfig:
        with db.transaction(self.service.pool) as conn:
            conn.execute(
                "INSERT INTO expense_settings (tenant_id, approval_threshold, sla_hours, warning_percent,"
                " critical_percent) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (tenant_id) DO UPDATE SET"
                " approval_threshold = EXCLUDED.approval_threshold, sla_hours = EXCLUDED.sla_hours,"
                " warning_percent = EXCLUDED.warning_percent, critical_percent = EXCLUDED.critical_percent,"
                " updated_at = now()",
                (tenant_id, approval_threshold, sla_hours, warning_percent, critical_percent),
            )
        return self.config(tenant_id)

    def set_list(self, tenant_id: UUID, column: str, items: list[dict[str, Any]]) -> None:
        assert column in ("categories", "gl_codes")
        with db.transaction(self.service.pool) as conn:
            conn.execute(
                f"INSERT INTO expense_settings (tenant_id, {column}) VALUES (%s, %s)"
                f" ON CONFLICT (tenant_id) DO UPDATE SET {column} = EXCLUDED.{column}, updated_at = now()",
                (tenant_id, Jsonb(items)),
            )

    def set_callback_secret(self, tenant_id: UUID, sealed: str) -> None:
        with db.transaction(self.service.pool) as conn:
            conn.execute(
                "INSERT INTO expense_settings (tenant_id, callback_secret) VALUES (%s, %s)"
                " ON CONFLICT (tenant_id) DO UPDATE SET callback_secret = EXCLUDED.callback_secret,"
                " updated_at = now()",
                (tenant_id, sealed),
            )

    def callback_secret(self, tenant_id: UUID) -> str | None:
        with db.transaction(self.service.pool) as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                "SELECT callback_secret FROM expense_settings WHERE tenant_id = %s", (tenant_id,)
            ).fetchone()
        return None if row is None else row["callback_secret"]

    # -- loading ----------------------------------------------------------------------------------

    def _load(self, aggregate_id: UUID) -> Any:
        try:
            return self.service.ledger.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
        except OperationalError as exc:
            raise db.DatabaseUnavailable(str(exc)) from exc

    def load_expense(self, tenant_id: UUID, expense_id: UUID) -> Expense:
        found = self._load(expense_id)
        if not isinstance(found, Expense) or found.tenant_id != tenant_id:
            raise ExpenseNotFound(f"no expense {expense_id}", {"expense_id": str(expense_id)})
        return found

    def load_budget(self, tenant_id: UUID, category: str, financial_year: str) -> Budget | None:
        found = self._load(budget_id_for(tenant_id, category, financial_year))
        if not isinstance(found, Budget) or found.tenant_id != tenant_id:
            return None
        return found

    # -- submission -------------------------------------------------------------------------------

    def submit(
        self, tenant_id: UUID, given: SubmitInput, actor: Actor, idempotency_key: str | None
    ) -> tuple[dict[str, Any], bool]:
        """Record an expense; (its view, True when new). The same Idempotency-Key with the same body is
        the expense recorded before (False); with another body, :class:`ExpenseKeyReused`."""
        if idempotency_key is None:
            return self._submit(tenant_id, given, actor, None)
        # Requests with one key wait for each other (a transaction-scoped advisory lock held while the
        # first is handled): the later ones find its expense, and no racer takes an expense number.
        # A request that hangs must not hold the others for ever: they give up after the wait the
        # invoices' Idempotency-Key claims use (engine/application.py).
        busy = IdempotencyKeyInProgress(
            f"a request with Idempotency-Key {idempotency_key!r} is still being processed; retry shortly",
            {"idempotency_key": idempotency_key},
        )
        name = f"expense/{tenant_id}/{idempotency_key}"
        with db.locked_transaction(self.service.pool, name, wait_seconds=CLAIM_WAIT_SECONDS, busy=busy):
            return self._submit(tenant_id, given, actor, idempotency_key)

    def _submit(
        self, tenant_id: UUID, given: SubmitInput, actor: Actor, idempotency_key: str | None
    ) -> tuple[dict[str, Any], bool]:
        fingerprint = given.fingerprint()
        expense_id = expense_id_for(tenant_id, idempotency_key)
        if idempotency_key is not None:
            earlier = self._earlier(tenant_id, expense_id, fingerprint, idempotency_key)
            if earlier is not None:
                return earlier, False
        config = self.config(tenant_id)
        category = config.category(given.category)
        if category is None:
            raise ExpenseInputRefused(
                "category",
                "unknown_category",
                f"category: {given.category!r} is not one of this college's expense categories"
                " (GET /v1/config/expense-categories)",
            )
        gl_code = given.gl_code or str(category.get("gl_code") or "")
        if not gl_code or config.active_gl_code(gl_code) is None:
            raise ExpenseInputRefused(
                "gl_code",
                "unknown_gl_code",
                f"gl_code: {gl_code!r} is not an active GL code (GET /v1/config/gl-codes)",
            )
        threshold = Decimal(str(category.get("receipt_threshold", "0")))
        if receipt_required(given.amount, threshold) and not given.receipt_url:
            raise ExpenseInputRefused(
                "receipt_url",
                "receipt_required",
                f"receipt_url: a receipt is required for {given.category} expenses above {money(threshold)}",
            )
        year = financial_year_of(given.expense_date)
        number: str | None = None
        for _ in range(SAVE_ATTEMPTS):
            budget = self.load_budget(tenant_id, given.category, year)
            with self._unbudgeted_lock(tenant_id, given.category, year, budget):
                submitted = self._submit_once(
                    tenant_id, given, actor, idempotency_key, config, category, gl_code, year, budget, number
                )
            if isinstance(submitted, str):
                number = submitted  # the budget moved under us: check again, keeping the number taken
                continue
            return submitted
        raise ExpenseDecided("the budget kept changing while this expense was checked: retry")

    def _submit_once(
        self,
        tenant_id: UUID,
        given: SubmitInput,
        actor: Actor,
        idempotency_key: str | None,
        config: ExpenseConfig,
        category: dict[str, Any],
        gl_code: str,
        year: str,
        budget: Budget | None,
        number: str | None,
    ) -> tuple[dict[str, Any], bool] | str:
        """One attempt: the expense's view and whether new, or the number taken when a concurrent
        change of the budget means the attempt must be made again."""
        fingerprint = given.fingerprint()
        expense_id = expense_id_for(tenant_id, idempotency_key)
        if budget is None:
            # Under the category's lock: a budget allocated meanwhile is the one to check against.
            budget = self.load_budget(tenant_id, given.category, year)
        route = route_expense(
            given.amount,
            threshold=config.approval_threshold,
            category_requires_approval=bool(category.get("requires_approval")),
            budget=budget.position if budget else None,
        )
        if route == Route.INSUFFICIENT_BUDGET:
            assert budget is not None
            raise self._insufficient(given.category, budget.position, given.amount)
        # Taken only for an expense that will be recorded: a refusal leaves no gap in the numbers.
        number = number or self._next_number(tenant_id, given.expense_date.year)
        expense = Expense(
            expense_id=expense_id,
            tenant_id=tenant_id,
            expense_number=number,
            amount=given.amount,
            category=given.category,
            gl_code=gl_code,
            expense_date=given.expense_date,
            financial_year=year,
            description=given.description,
            vendor_name=given.vendor_name,
            vendor_pan=given.vendor_pan,
            receipt_url=given.receipt_url,
            requires_approval=route == Route.PENDING_APPROVAL,
            submitted_by=actor.actor,
            request_hash=fingerprint,
        )
        touched: list[Any] = [expense]
        level_before = None
        if route == Route.APPROVED:
            expense.approve(
                approved_by=AUTO_APPROVER,
                approver_role="system",
                approver_user_id=None,
                approver_name=None,
                approved_at=datetime.now(UTC),
                comments=f"at or below the approval threshold {money(config.approval_threshold)}",
                channel="auto",
            )
            if budget is not None:
                level_before = self._utilise(config, budget, expense)
                touched.append(budget)
        try:
            self.service._save(*touched)
        except IntegrityError:
            if idempotency_key is not None:
                earlier = self._earlier(tenant_id, expense_id, fingerprint, idempotency_key)
                if earlier is not None:
                    return earlier, False
            return number
        self._after_save(expense, budget if level_before else None, level_before)
        return self.get(tenant_id, expense.id), True

    def _earlier(
        self, tenant_id: UUID, expense_id: UUID, fingerprint: str, key: str
    ) -> dict[str, Any] | None:
        found = self._load(expense_id)
        if found is None:
            return None
        if (
            not isinstance(found, Expense)
            or found.tenant_id != tenant_id
            or found.request_hash != fingerprint
        ):
            raise ExpenseKeyReused(
                f"Idempotency-Key {key!r} was already used with a different request body",
                {"idempotency_key": key},
            )
        self.project(found)  # the read model may lag after a crash between the two writes
        return self.get(tenant_id, found.id)

    def _next_number(self, tenant_id: UUID, year: int) -> str:
        with db.transaction(self.service.pool) as conn:
            row = conn.execute(
                "INSERT INTO expense_number_sequences (tenant_id, year, last_number) VALUES (%s, %s, 1)"
                " ON CONFLICT (tenant_id, year) DO UPDATE"
                " SET last_number = expense_number_sequences.last_number + 1 RETURNING last_number",
                (tenant_id, year),
            ).fetchone()
        assert row is not None
        return expense_number(year, int(row["last_number"]))  # type: ignore[call-overload]

    @staticmethod
    def _insufficient(category: str, position: BudgetPosition, amount: Decimal) -> InsufficientBudget:
        available = max(position.remaining, ZERO)
        return InsufficientBudget(
            f"Available budget (₹{money(available)}) is less than expense amount (₹{money(amount)})",
            {"category": category, "available": money(available), "required": money(amount)},
        )

    def _utilise(self, config: ExpenseConfig, budget: Budget, expense: Expense) -> str:
        """The expense's use of the budget (an event on it); the alert level before."""
        before = str(budget.alert_level)
        utilized = budget.utilized_amount + expense.amount
        percentage = utilization_percentage(budget.allocated_amount, utilized)
        budget.utilise(
            expense_id=expense.id,
            expense_number=expense.expense_number,
            amount=expense.amount,
            utilization_percentage=percentage,
            alert_level=config.level(percentage),
        )
        return before

    def _after_save(self, expense: Expense, budget: Budget | None, level_before: str | None) -> None:
        """The read tables, and an alert when the approval raised the budget's alert level."""
        self.project(expense)
        if budget is None or level_before is None:
            return
        self.project_budget(budget)
        self._alert_if_rose(budget, level_before, expense_id=expense.id)

    def _alert_if_rose(self, budget: Budget, level_before: str, expense_id: UUID | None) -> None:
        """An alert when the budget's level rose: by an approval, or at allocation over the year's
        earlier approvals (from normal, the level of a budget with nothing used)."""
        if level_rose(level_before, budget.alert_level):
            percentage = utilization_percentage(budget.allocated_amount, budget.utilized_amount)
            details: dict[str, Any] = {
                "category": budget.category,
                "financial_year": budget.financial_year,
                "allocated_amount": money(budget.allocated_amount),
                "utilized_amount": money(budget.utilized_amount),
                "utilization_percentage": str(percentage),
                "alert_level": budget.alert_level,
            }
            if expense_id is not None:
                details["expense_id"] = str(expense_id)
            self.service.raise_alert(
                budget.tenant_id,
                severity="critical" if budget.alert_level == "critical" else "warning",
                cause=f"budget.{budget.alert_level}",
                subject=f"budget/{budget.category}/{budget.financial_year}",
                message=(
                    f"The {budget.category} budget for {budget.financial_year} is {percentage}% used"
                    f" ({money(budget.utilized_amount)} of {money(budget.allocated_amount)})"
                ),
                details=details,
            )

    # -- approvals --------------------------------------------------------------------------------

    def request_approval(
        self, tenant_id: UUID, expense_id: UUID, actor: Actor, justification: str | None
    ) -> tuple[dict[str, Any], bool]:
        """Record the request to the principal, due after the tenant's SLA; (its view, True when new)."""
        config = self.config(tenant_id)
        expense = self.load_expense(tenant_id, expense_id)
        if expense.approval is not None and expense.status == ExpenseStatus.PENDING_APPROVAL:
            self._arm_timer(expense, expense.approval["approval_id"], expense.approval["due_at"])
            return self.approval_view(expense), False
        now = datetime.now(UTC)
        due = now + timedelta(hours=float(config.sla_hours))
        # The timer row first: if the event's save then fails, the timer finds no open request with
        # this id and records nothing; the other order could lose the escalation in a crash.
        if expense.status == ExpenseStatus.PENDING_APPROVAL:
            self._arm_timer(expense, approval_id_for(expense.id, 1), due)
        expense.request_approval(
            requested_by=actor.actor, requested_at=now, due_at=due, justification=justification
        )
        try:
            self.service._save(expense)
        except IntegrityError:
            # Requested (or decided) concurrently: answer from what was stored.
            stored = self.load_expense(tenant_id, expense_id)
            if stored.approval is None:
                raise ExpenseDecided("the expense changed while its approval was requested: retry") from None
            self.project(stored)
            return self.approval_view(stored), False
        self.project(expense)
        return self.approval_view(expense), True

    @staticmethod
    def approval_view(expense: Expense) -> dict[str, Any]:
        assert expense.approval is not None
        return {
            "approval_id": str(expense.approval["approval_id"]),
            "expense_id": str(expense.id),
            "status": "pending" if expense.status == ExpenseStatus.PENDING_APPROVAL else expense.status,
            "created_at": _iso(expense.approval["requested_at"]),
            "estimated_response": _iso(expense.approval["due_at"]),
            "escalated_at": _iso(expense.escalated_at),
        }

    def _arm_timer(self, expense: Expense, approval_id: UUID, due: datetime) -> None:
        with db.transaction(self.service.pool) as conn:
            conn.execute(
                "INSERT INTO expense_approval_timers (approval_id, tenant_id, expense_id, due_at)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (approval_id) DO NOTHING",
                (approval_id, expense.tenant_id, expense.id, due),
            )

    def approve(
        self, tenant_id: UUID, expense_id: UUID, actor: Actor, comments: str | None, channel: str
    ) -> dict[str, Any]:
        """Approve a pending expense after the budget check; the approval and the budget's utilisation
        are one event-store transaction (a concurrent approval in the category makes it check again)."""
        config = self.config(tenant_id)
        for _ in range(SAVE_ATTEMPTS):
            expense = self.load_expense(tenant_id, expense_id)
            expense.check_status(ExpenseStatus.PENDING_APPROVAL, action="approve")
            budget = self.load_budget(tenant_id, expense.category, expense.financial_year)
            with self._unbudgeted_lock(tenant_id, expense.category, expense.financial_year, budget):
                if self._approve_once(config, expense, budget, actor, comments, channel):
                    return self.get(tenant_id, expense_id)
        raise ExpenseDecided("the expense or its budget kept changing: retry")

    def _approve_once(
        self,
        config: ExpenseConfig,
        expense: Expense,
        budget: Budget | None,
        actor: Actor,
        comments: str | None,
        channel: str,
    ) -> bool:
        """One attempt; False when the expense or its budget changed concurrently (try again)."""
        if budget is None:
            # Under the category's lock: a budget allocated meanwhile is the one to use.
            budget = self.load_budget(expense.tenant_id, expense.category, expense.financial_year)
        if budget is not None and not budget_allows(budget.position, expense.amount):
            raise self._insufficient(expense.category, budget.position, expense.amount)
        expense.approve(
            approved_by=actor.actor,
            approver_role=actor.role,
            approver_user_id=actor.user_id,
            approver_name=actor.name,
            approved_at=datetime.now(UTC),
            comments=comments,
            channel=channel,
        )
        touched: list[Any] = [expense]
        level_before = None
        if budget is not None:
            level_before = self._utilise(config, budget, expense)
            touched.append(budget)
        try:
            self.service._save(*touched)
        except IntegrityError:
            return False
        self._after_save(expense, budget, level_before)
        return True

    def reject(
        self, tenant_id: UUID, expense_id: UUID, actor: Actor, reason: str, channel: str
    ) -> dict[str, Any]:
        for _ in range(SAVE_ATTEMPTS):
            expense = self.load_expense(tenant_id, expense_id)
            expense.reject(
                rejected_by=actor.actor,
                rejector_role=actor.role,
                rejector_user_id=actor.user_id,
                rejector_name=actor.name,
                rejected_at=datetime.now(UTC),
                reason=reason,
                channel=channel,
            )
            try:
                self.service._save(expense)
            except IntegrityError:
                continue
            self.project(expense)
            return self.get(tenant_id, expense_id)
        raise ExpenseDecided("the expense kept changing: retry")

    def pay(
        self,
        tenant_id: UUID,
        expense_id: UUID,
        actor: Actor,
        *,
        payment_reference: str,
        paid_on: date,
        tds_deducted: Decimal | None,
    ) -> dict[str, Any]:
        for _ in range(SAVE_ATTEMPTS):
            expense = self.load_expense(tenant_id, expense_id)
            expense.pay(
                payment_reference=payment_reference,
                paid_on=paid_on,
                tds_deducted=tds_deducted,
                paid_by=actor.actor,
                paid_at=datetime.now(UTC),
            )
            try:
                self.service._save(expense)
            except IntegrityError:
                continue
            self.project(expense)
            return self.get(tenant_id, expense_id)
        raise ExpenseDecided("the expense kept changing: retry")

    # -- the durable SLA timer --------------------------------------------------------------------

    def fire_due(self, now: datetime | None = None, limit: int = 100) -> list[UUID]:
        """Escalate every approval request whose SLA lapsed while its expense is still pending; the
        expenses escalated now. Due rows are claimed with FOR UPDATE SKIP LOCKED, so timers running
        side by side never take the same row, and the aggregate refuses a second escalation of one
        request, so a timer killed between storing the event and marking its row escalates nothing
        twice when the row is claimed again."""
        moment = now or datetime.now(UTC)
        escalated: list[UUID] = []
        with db.transaction(self.service.pool) as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                "SELECT approval_id, tenant_id, expense_id FROM expense_approval_timers"
                " WHERE fired_at IS NULL AND due_at <= %s ORDER BY due_at LIMIT %s FOR UPDATE SKIP LOCKED",
                (moment, limit),
            ).fetchall()
            for row in rows:
                outcome = self._escalate(row["tenant_id"], row["expense_id"], row["approval_id"], moment)
                if outcome == "escalated":
                    escalated.append(row["expense_id"])
                cur.execute(
                    "UPDATE expense_approval_timers SET fired_at = %s, outcome = %s WHERE approval_id = %s",
                    (moment, outcome, row["approval_id"]),
                )
        return escalated

    def _escalate(self, tenant_id: UUID, expense_id: UUID, approval_id: UUID, moment: datetime) -> str:
        for _ in range(SAVE_ATTEMPTS):
            found = self._load(expense_id)
            if not isinstance(found, Expense) or found.tenant_id != tenant_id:
                return "no_expense"
            if not found.escalate(approval_id=approval_id, escalated_at=moment):
                return "not_pending" if found.escalated_at is None else "escalated_before"
            try:
                self.service._save(found)
            except IntegrityError:
                continue  # decided or changed meanwhile: look again
            self.project(found)
            self.service.raise_alert(
                tenant_id,
                severity="warning",
                cause="expense.approval_overdue",
                subject=f"expense/{expense_id}",
                message=f"Expense {found.expense_number} has waited for approval beyond its SLA",
                details={"expense_id": str(expense_id), "approval_id": str(approval_id)},
            )
            return "escalated"
        return "contended"

    # -- read model -------------------------------------------------------------------------------

    def project(self, expense: Expense) -> None:
        with db.transaction(self.service.pool) as conn:
            conn.execute(_REGISTER_UPSERT, _register_row(expense))

    def project_budget(self, budget: Budget) -> None:
        with db.transaction(self.service.pool) as conn:
            conn.execute(
                "INSERT INTO budget_register (budget_id, tenant_id, category, financial_year,"
                " allocated_amount, utilized_amount, alert_level, version)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (budget_id) DO UPDATE SET allocated_amount = EXCLUDED.allocated_amount,"
                " utilized_amount = EXCLUDED.utilized_amount, alert_level = EXCLUDED.alert_level,"
                " version = EXCLUDED.version WHERE budget_register.version < EXCLUDED.version",
                (
                    budget.id,
                    budget.tenant_id,
                    budget.category,
                    budget.financial_year,
                    budget.allocated_amount,
                    budget.utilized_amount,
                    budget.alert_level,
                    budget.version,
                ),
            )

    def rebuild(self) -> tuple[int, int]:
        """Both read tables again from the event store: (expenses, budgets) projected."""
        ids = self._ids_of(Expense.Submitted), self._ids_of(Budget.Allocated)
        with db.transaction(self.service.pool) as conn:
            conn.execute("DELETE FROM expense_register")
            conn.execute("DELETE FROM budget_register")
        for expense_id in ids[0]:
            found = self._load(expense_id)
            if isinstance(found, Expense):
                self.project(found)
        for budget_id in ids[1]:
            found = self._load(budget_id)
            if isinstance(found, Budget):
                self.project_budget(found)
        return len(ids[0]), len(ids[1])

    def _ids_of(self, created: type) -> list[UUID]:
        topic = f"{created.__module__}:{created.__qualname__}"
        found: list[UUID] = []
        start: int | None = None
        while True:
            batch = list(
                self.service.ledger.recorder.select_notifications(start=start, limit=1000, topics=[topic])
            )
            found += [UUID(str(n.originator_id)) for n in batch]
            if len(batch) < 1000:
                return found
            start = batch[-1].id + 1

    # -- queries ----------------------------------------------------------------------------------

    def get(self, tenant_id: UUID, expense_id: UUID) -> dict[str, Any]:
        with db.transaction(self.service.pool) as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                "SELECT * FROM expense_register WHERE tenant_id = %s AND expense_id = %s",
                (tenant_id, expense_id),
            ).fetchone()
        if row is None:
            # Stored but not yet projected (a crash between the two writes): project it now.
            expense = self.load_expense(tenant_id, expense_id)
            self.project(expense)
            return self.get(tenant_id, expense_id)
        return expense_view(row)

    def list(
        self,
        tenant_id: UUID,
        *,
        status: str | None,
        category: str | None,
        after: tuple[datetime, UUID] | None,
        limit: int,
    ) -> tuple[list[dict[str, Any]], tuple[datetime, UUID] | None]:
        where = ["tenant_id = %s"]
        params: list[Any] = [tenant_id]
        if status is not None:
            where.append("status = %s")
            params.append(status)
        if category is not None:
            where.append("category = %s")
            params.append(category)
        if after is not None:
            where.append("(submitted_at, expense_id) > (%s, %s)")
            params += list(after)
        params.append(limit + 1)
        with db.transaction(self.service.pool) as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                "SELECT * FROM expense_register WHERE "
                + " AND ".join(where)
                + " ORDER BY submitted_at, expense_id LIMIT %s",
                params,
            ).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        cursor = (rows[-1]["submitted_at"], rows[-1]["expense_id"]) if more and rows else None
        return [expense_view(r) for r in rows], cursor

    def export(self, tenant_id: UUID, from_date: date, to_date: date, status: str | None) -> dict[str, Any]:
        """Seed 002 section 1.3: the expenses dated in the period, and the summary (totals by category)."""
        params: list[Any] = [tenant_id, from_date, to_date]
        where = ""
        if status is not None:
            where = " AND status = %s"
            params.append(status)
        with db.transaction(self.service.pool) as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                "SELECT * FROM expense_register WHERE tenant_id = %s AND expense_date BETWEEN %s AND %s"
                + where
                + " ORDER BY expense_date, expense_number",
                params,
            ).fetchall()
        college_name = self._college_name(tenant_id)
        by_category: dict[str, dict[str, Any]] = {}
        total = ZERO
        for row in rows:
            bucket = by_category.setdefault(
                row["category"], {"category": row["category"], "count": 0, "total": ZERO}
            )
            bucket["count"] += 1
            bucket["total"] += row["amount"]
            total += row["amount"]
        return {
            "college_id": str(tenant_id),
            "from_date": from_date.isoformat(),
            "to_date": to_date.isoformat(),
            "status": status,
            "data": [
                {
                    "id": str(r["expense_id"]),
                    "expense_number": r["expense_number"],
                    "college_id": str(tenant_id),
                    "college_name": college_name,
                    "category": r["category"],
                    "amount": money(r["amount"]),
                    "expense_date": r["expense_date"].isoformat(),
                    "vendor_name": r["vendor_name"],
                    "vendor_pan": r["vendor_pan"],
                    "gl_code": r["gl_code"],
                    "status": r["status"],
                    "approved_by": r["approved_by"],
                    "approved_by_name": r["approved_by_name"],
                    "approved_at": _iso(r["approved_at"]),
                    "paid_at": _iso(r["paid_at"]),
                    "payment_reference": r["payment_reference"],
                }
                for r in rows
            ],
            "summary": {
                "total_expenses": money(total),
                "expense_count": len(rows),
                "by_category": [
                    {
                        "category": b["category"],
                        "expense_count": b["count"],
                        "total_expenses": money(b["total"]),
                    }
                    for b in sorted(by_category.values(), key=lambda b: b["category"])
                ],
            },
        }

    def _college_name(self, tenant_id: UUID) -> str | None:
        try:
            tenant = self.service.get_tenant(tenant_id)
        except ServiceError:
            return None
        return str(getattr(tenant, "legal_name", None) or getattr(tenant, "name", None) or "") or None

    # -- budgets ----------------------------------------------------------------------------------

    def allocate(
        self, tenant_id: UUID, category: str, financial_year: str, amount: Decimal, actor: Actor
    ) -> tuple[dict[str, Any], bool]:
        """Allocate (True) or revise (False) a category's budget for a year."""
        config = self.config(tenant_id)
        if config.category(category) is None:
            raise ExpenseInputRefused(
                "category",
                "unknown_category",
                f"category: {category!r} is not one of this college's expense categories",
            )
        # The approvals' lock: an approval made while the category had no budget is either in the
        # register before the sum below, or finds this budget and is utilised on it; never both, never
        # neither.
        with self._budget_lock(tenant_id, category, financial_year):
            for _ in range(SAVE_ATTEMPTS):
                budget = self.load_budget(tenant_id, category, financial_year)
                created = budget is None
                if budget is None:
                    carried = self._approved_total(tenant_id, category, financial_year)
                    budget = Budget(
                        tenant_id=tenant_id,
                        category=category,
                        financial_year=financial_year,
                        allocated_amount=amount,
                        allocated_by=actor.actor,
                        utilized_amount=carried,
                        alert_level=config.level(utilization_percentage(amount, carried)),
                    )
                elif not budget.revise(allocated_amount=amount, revised_by=actor.actor):
                    self.project_budget(budget)
                    return self.budget_view(config, budget), False
                try:
                    self.service._save(budget)
                except IntegrityError:
                    continue
                self.project_budget(budget)
                if created:
                    self._alert_if_rose(budget, "normal", expense_id=None)
                return self.budget_view(config, budget), created
        raise ExpenseDecided("the budget kept changing: retry")

    def _approved_total(self, tenant_id: UUID, category: str, financial_year: str) -> Decimal:
        """The approved and paid expenses of a category and year (read under the category's lock,
        after which every approval made without a budget has been projected)."""
        # A decision stored but not projected (a crash between the two writes) would be missed: the
        # undecided rows are refreshed from the event store first, as ``get`` does for a missing row.
        with db.transaction(self.service.pool) as conn:
            undecided = conn.execute(
                "SELECT expense_id FROM expense_register WHERE tenant_id = %s AND category = %s"
                " AND financial_year = %s AND status IN ('submitted', 'pending_approval')",
                (tenant_id, category, financial_year),
            ).fetchall()
        for undecided_row in undecided:
            found = self._load(undecided_row["expense_id"])  # type: ignore[call-overload]
            if isinstance(found, Expense) and found.tenant_id == tenant_id:
                self.project(found)
        with db.transaction(self.service.pool) as conn:
            row = conn.execute(
                "SELECT coalesce(sum(amount), 0) AS total FROM expense_register WHERE tenant_id = %s"
                " AND category = %s AND financial_year = %s AND status IN ('approved', 'paid')",
                (tenant_id, category, financial_year),
            ).fetchone()
        assert row is not None
        return Decimal(row["total"]).quantize(Decimal("0.01"))  # type: ignore[call-overload]

    def _unbudgeted_lock(
        self, tenant_id: UUID, category: str, financial_year: str, budget: Budget | None
    ) -> AbstractContextManager[None]:
        """The category's lock when it had no budget: the approval then races a first allocation.
        Once a budget exists, its version (optimistic concurrency) orders approvals and revisions."""
        if budget is not None:
            return nullcontext()
        return self._budget_lock(tenant_id, category, financial_year)

    @contextmanager
    def _budget_lock(self, tenant_id: UUID, category: str, financial_year: str) -> Iterator[None]:
        """A transaction-scoped advisory lock per (tenant, category, financial year), held while the
        caller saves and projects; the wait is bounded like the Idempotency-Key claims'."""
        busy = ExpenseDecided(f"the {category} budget for {financial_year} is being changed: retry")
        name = f"budget/{tenant_id}/{category}/{financial_year}"
        with db.locked_transaction(self.service.pool, name, wait_seconds=CLAIM_WAIT_SECONDS, busy=busy):
            yield

    @staticmethod
    def budget_view(config: ExpenseConfig, budget: Budget | dict[str, Any]) -> dict[str, Any]:
        if isinstance(budget, Budget):
            allocated, utilized = budget.allocated_amount, budget.utilized_amount
            category, year, budget_id = budget.category, budget.financial_year, budget.id
        else:
            allocated, utilized = budget["allocated_amount"], budget["utilized_amount"]
            category, year, budget_id = budget["category"], budget["financial_year"], budget["budget_id"]
        percentage = utilization_percentage(allocated, utilized)
        return {
            "id": str(budget_id),
            "category": category,
            "financial_year": year,
            "allocated_amount": money(allocated),
            "utilized_amount": money(utilized),
            "remaining_amount": money(allocated - utilized),
            "utilization_percentage": str(percentage),
            "alert_level": config.level(percentage),
        }

    def summary(self, tenant_id: UUID, financial_year: str) -> dict[str, Any]:
        config = self.config(tenant_id)
        with db.transaction(self.service.pool) as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                "SELECT * FROM budget_register WHERE tenant_id = %s AND financial_year = %s"
                " ORDER BY category",
                (tenant_id, financial_year),
            ).fetchall()
        return {
            "college_id": str(tenant_id),
            "financial_year": financial_year,
            "budgets": [self.budget_view(config, r) for r in rows],
        }


def _dec(value: Any, default: Decimal) -> Decimal:
    return default if value is None else Decimal(value)


def encode_cursor(after: tuple[datetime, UUID]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([after[0].isoformat(), str(after[1])])).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[datetime, UUID] | None:
    try:
        moment, expense_id = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        return datetime.fromisoformat(moment), UUID(expense_id)
    except (ValueError, TypeError, orjson.JSONDecodeError):
        return None
