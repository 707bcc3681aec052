"""The Kafka records of the ReconciliationMatch aggregate's events (topic
``ledger.reconciliation_match.v1``), pure. engine/publishing.py adds them to its ``RECORD_BUILDERS``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from engine.domain.reconciliation_match import ReconciliationMatch

TOPIC = "ledger.reconciliation_match.v1"
TOPICS = {"reconciliation_match": TOPIC}


def _millis(value: Any) -> int:
    if type(value) is dict and "_type_" in value:
        value = value["_data_"]
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return int(moment.astimezone(UTC).timestamp() * 1000)


def _made(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    return {
        **base,
        "match_id": str(event.originator_id),
        "bank_line_id": event.bank_line_id,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "made_by": event.made_by,
        "made_at": _millis(event.made_at),
    }


def _undone(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    return {
        **base,
        "match_id": str(event.originator_id),
        "undone_by": event.undone_by,
        "undone_at": _millis(event.undone_at),
    }


RECORD_BUILDERS: dict[type, Callable[[Any, dict[str, Any]], dict[str, Any]]] = {
    ReconciliationMatch.Made: _made,
    ReconciliationMatch.Undone: _undone,
}
