"""The BankTransaction aggregate: one line of a tenant's bank statement, recorded once.

Its id derives from (tenant, dedupe key) (connectors/bank/statement_formats.py: account + value date
+ amount + reference + position among identical lines), so a line seen again in an overlapping
statement, an API poll or a second upload is the same aggregate and the event store refuses the
second ``Recorded``: the topic ``ledger.bank_transaction.v1`` carries each line once.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

BANK_TRANSACTION_NAMESPACE = uuid5(NAMESPACE_URL, "https://ledgerflow.dev/ns/bank-transaction")


def bank_transaction_id_for(tenant_id: UUID, dedupe_key: str) -> UUID:
    return uuid5(BANK_TRANSACTION_NAMESPACE, f"{tenant_id}/{dedupe_key}")


class BankTransaction(Aggregate):
    class Recorded(Aggregate.Created):
        tenant_id: UUID
        account: str
        value_date: date
        booking_date: date | None
        amount: Decimal
        currency: str
        reference: str | None
        description: str
        position: int
        dedupe_key: str
        statement_id: UUID
        source: str

    @event(Recorded)
    def __init__(
        self,
        *,
        tenant_id: UUID,
        account: str,
        value_date: date,
        booking_date: date | None,
        amount: Decimal,
        currency: str,
        reference: str | None,
        description: str,
        position: int,
        dedupe_key: str,
        statement_id: UUID,
        source: str,
    ) -> None:
        self.tenant_id = tenant_id
        self.account = account
        self.value_date = value_date
        self.booking_date = booking_date
        self.amount = amount
        self.currency = currency
        self.reference = reference
        self.description = description
        self.position = position
        self.dedupe_key = dedupe_key
        self.statement_id = statement_id
        self.source = source

    @staticmethod
    def create_id(*, tenant_id: UUID, dedupe_key: str, **_: Any) -> UUID:
        return bank_transaction_id_for(tenant_id, dedupe_key)
