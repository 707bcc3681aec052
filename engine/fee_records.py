"""The Kafka record of the FeeCollection aggregate's event (topic ``ledger.fee_collection.v1``), pure.

Kept beside engine/publishing.py, which adds it to its ``RECORD_BUILDERS``; the builder reads a domain
event or the relay's stored view of one (where decimals and dates are still their stored text).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Any

from engine.domain.fee_collection import FeeCollection

TOPIC = "ledger.fee_collection.v1"
TOPICS = {"fee_collection": TOPIC}


def _plain(value: Any) -> Any:
    if type(value) is dict and "_type_" in value:
        return value["_data_"]
    return value


def _money(value: Any) -> str:
    return f"{Decimal(str(_plain(value))):.2f}"


def _day(value: Any) -> str:
    value = _plain(value)
    return value.isoformat() if isinstance(value, date) else str(value)


def _recorded(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    semester = _plain(event.semester)
    return {
        **base,
        "collection_id": str(_plain(event.originator_id)),
        "receipt_number": event.receipt_number,
        "student_id": event.student_id,
        "student_name": event.student_name,
        "amount": _money(event.amount),
        "currency": event.currency,
        "payment_mode": event.payment_mode,
        "payment_date": _day(event.payment_date),
        "payment_reference": event.payment_reference,
        "fee_type": event.fee_type,
        "academic_year": event.academic_year,
        "semester": None if semester is None else int(semester),
        "source": event.source,
        "recorded_by": event.recorded_by,
    }


RECORD_BUILDERS: dict[type, Callable[[Any, dict[str, Any]], dict[str, Any]]] = {
    FeeCollection.Recorded: _recorded,
}
