"""The Kafka records of the Payout aggregate's events (topic ``ledger.payout.v1``) and of the
BankTransaction aggregate's (``ledger.bank_transaction.v1``), pure.

Kept beside engine/publishing.py, which adds them to its ``RECORD_BUILDERS``; each builder reads a
domain event or the relay's stored view of one (where decimals and times are still their stored text).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from engine.domain.bank_transaction import BankTransaction
from engine.domain.payout import Payout

TOPIC = "ledger.payout.v1"
BANK_TRANSACTION_TOPIC = "ledger.bank_transaction.v1"
TOPICS = {"payout": TOPIC, "bank_transaction": BANK_TRANSACTION_TOPIC}


def _plain(value: Any) -> Any:
    if type(value) is dict and "_type_" in value:
        return value["_data_"]
    return value


def _money(value: Any) -> str:
    return f"{Decimal(str(_plain(value))):.2f}"


def _millis(value: Any) -> int:
    value = _plain(value)
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return int(moment.astimezone(UTC).timestamp() * 1000)


def masked_account(account: str) -> str:
    """All but the last four digits masked: enough to recognise an account, not to pay into it."""
    return "X" * max(len(account) - 4, 0) + account[-4:]


def _with(event: Any, base: dict[str, Any], *names: str) -> dict[str, Any]:
    return {**base, "payout_id": str(event.originator_id), **{n: _plain(getattr(event, n)) for n in names}}


def _requested(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    return {
        **_with(event, base, "reference", "currency", "mode", "beneficiary_name", "beneficiary_ifsc"),
        "amount": _money(event.amount),
        "beneficiary_account_masked": masked_account(str(event.beneficiary_account)),
        "purpose": event.purpose,
        "requested_by": event.requested_by,
    }


def _completed(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    return {
        **_with(event, base, "utr", "transaction_id"),
        "charges": _money(event.charges),
        "completed_at": _millis(event.completed_at),
    }


def _optional_date(value: Any) -> str | None:
    value = _plain(value)
    return None if value is None else str(value)[:10]


def _bank_transaction_recorded(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    return {
        **base,
        "transaction_id": str(event.originator_id),
        "account": event.account,
        "value_date": _optional_date(event.value_date),
        "booking_date": _optional_date(event.booking_date),
        "amount": _money(event.amount),
        "currency": event.currency,
        "reference": event.reference,
        "description": event.description,
        "position": int(event.position),
        "dedupe_key": event.dedupe_key,
        "statement_id": str(_plain(event.statement_id)),
        "source": event.source,
    }


RECORD_BUILDERS: dict[type, Callable[[Any, dict[str, Any]], dict[str, Any]]] = {
    Payout.Requested: _requested,
    Payout.Submitted: lambda e, b: _with(e, b, "provider_payment_id", "round"),
    Payout.Completed: _completed,
    Payout.Failed: lambda e, b: _with(e, b, "code", "message"),
    Payout.Held: lambda e, b: _with(e, b, "code", "message", "round"),
    Payout.Bounced: lambda e, b: _with(e, b, "code", "message", "round"),
    Payout.Released: lambda e, b: _with(e, b, "released_by", "round"),
    BankTransaction.Recorded: _bank_transaction_recorded,
}
