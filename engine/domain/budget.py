"""The Budget aggregate: what a college (a tenant) allocated to one expense category for one financial
year, and how much of it approved expenses have used (issue 14, seed "College Accounts" file 002).

The id derives from (tenant, category, financial year): one budget per category and year, so a second
``POST /v1/budgets`` for them is a revision of the same aggregate (a ``Revised`` event), never a second
budget. Every approval that uses the budget is a ``Utilised`` event on it, saved in the same event-store
transaction as the expense's ``Approved``: two concurrent approvals cannot both spend the last rupees,
because the second save meets the budget's new version (optimistic concurrency) and is checked again.
The ``Utilised`` record is the seed's real-time "budget utilisation" sync (section 4.1).

Expenses approved while the category had no budget for the year are carried into ``Allocated``
(``utilized_amount``), summed under the same per-(tenant, category, year) lock approvals take
(engine/expenses.py), so each approval is counted once: by the allocation or by its own ``Utilised``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from engine.domain.expense_rules import BudgetPosition

_BUDGET_NAMESPACE = uuid5(NAMESPACE_URL, "https://ledgerflow.dev/ns/budget")


def budget_id_for(tenant_id: UUID, category: str, financial_year: str) -> UUID:
    return uuid5(_BUDGET_NAMESPACE, f"{tenant_id}/{category}/{financial_year}")


class Budget(Aggregate):
    """One category's budget of one tenant for one financial year."""

    class Allocated(Aggregate.Created):
        tenant_id: UUID
        category: str
        financial_year: str
        allocated_amount: Decimal
        allocated_by: str
        # Approved and paid expenses of the category and year recorded before the budget existed: the
        # budget starts from them (issue 14: utilised = the year's approvals). Events stored before this
        # field existed carry none and replay as 0.00, the state they produced then.
        utilized_amount: Decimal = Decimal("0.00")
        alert_level: str = "normal"

    @event(Allocated)
    def __init__(
        self,
        *,
        tenant_id: UUID,
        category: str,
        financial_year: str,
        allocated_amount: Decimal,
        allocated_by: str,
        utilized_amount: Decimal = Decimal("0.00"),
        alert_level: str = "normal",
    ) -> None:
        self.tenant_id = tenant_id
        self.category = category
        self.financial_year = financial_year
        self.allocated_amount = allocated_amount
        self.allocated_by = allocated_by
        self.utilized_amount = utilized_amount
        self.alert_level = alert_level
        self.expense_ids: set[str] = set()

    @staticmethod
    def create_id(*, tenant_id: UUID, category: str, financial_year: str, **_: Any) -> UUID:
        return budget_id_for(tenant_id, category, financial_year)

    @property
    def position(self) -> BudgetPosition:
        return BudgetPosition(allocated=self.allocated_amount, utilized=self.utilized_amount)

    # -- commands -----------------------------------------------------------------------------

    def revise(self, *, allocated_amount: Decimal, revised_by: str) -> bool:
        """A new allocation; False when it is the amount already allocated."""
        if allocated_amount == self.allocated_amount:
            return False
        self._revised(
            tenant_id=self.tenant_id,
            allocated_amount=allocated_amount,
            previous_amount=self.allocated_amount,
            revised_by=revised_by,
        )
        return True

    def utilise(
        self,
        *,
        expense_id: UUID,
        expense_number: str,
        amount: Decimal,
        utilization_percentage: Decimal,
        alert_level: str,
    ) -> None:
        """An approved expense uses ``amount`` of the budget (the caller checked it fits)."""
        self._utilised(
            tenant_id=self.tenant_id,
            category=self.category,
            financial_year=self.financial_year,
            expense_id=expense_id,
            expense_number=expense_number,
            amount=amount,
            utilized_amount=self.utilized_amount + amount,
            allocated_amount=self.allocated_amount,
            utilization_percentage=utilization_percentage,
            alert_level=alert_level,
            previous_alert_level=self.alert_level,
        )

    # -- events -------------------------------------------------------------------------------

    class Revised(Aggregate.Event):
        tenant_id: UUID
        allocated_amount: Decimal
        previous_amount: Decimal
        revised_by: str

    @event(Revised)
    def _revised(
        self, tenant_id: UUID, allocated_amount: Decimal, previous_amount: Decimal, revised_by: str
    ) -> None:
        self.allocated_amount = allocated_amount

    class Utilised(Aggregate.Event):
        tenant_id: UUID
        category: str
        financial_year: str
        expense_id: UUID
        expense_number: str
        amount: Decimal
        utilized_amount: Decimal
        allocated_amount: Decimal
        utilization_percentage: Decimal
        alert_level: str
        previous_alert_level: str

    @event(Utilised)
    def _utilised(
        self,
        tenant_id: UUID,
        category: str,
        financial_year: str,
        expense_id: UUID,
        expense_number: str,
        amount: Decimal,
        utilized_amount: Decimal,
        allocated_amount: Decimal,
        utilization_percentage: Decimal,
        alert_level: str,
        previous_alert_level: str,
    ) -> None:
        self.utilized_amount = utilized_amount
        self.alert_level = alert_level
        self.expense_ids.add(str(expense_id))
