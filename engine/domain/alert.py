"""The Alert aggregate: something an operator or the tenant should look at (a device offline, a sale
KRA refused), recorded as an event so that it is published on ``ledger.alert.v1`` by the relay like
every other event and can never be lost between "noticed" and "told".

An alert is raised once and never changes. Its id derives from what it says and a time window
(:func:`alert_id_for`), so the same alert raised again within ``COLLAPSE_WINDOW`` (a retrying job, two
workers noticing the same offline device) is the same aggregate: the second save is refused by the
event store's optimistic concurrency and the alert is published once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from engine.errors import IntegrityFault

SEVERITIES = ("info", "warning", "critical")
# Identical alerts (same tenant, severity, cause, subject and message) within one window are one.
COLLAPSE_WINDOW = timedelta(minutes=15)
_ALERT_NAMESPACE = uuid5(NAMESPACE_URL, "https://ledgerflow.dev/ns/alert")


def alert_id_for(
    tenant_id: UUID, *, severity: str, cause: str, subject: str, message: str, raised_at: datetime
) -> UUID:
    """Stable for the same alert within the same ``COLLAPSE_WINDOW``-long window (UTC-aligned)."""
    window = int(raised_at.astimezone(UTC).timestamp() // COLLAPSE_WINDOW.total_seconds())
    text = "\x1f".join((str(tenant_id), severity, cause, subject, message, str(window)))
    return uuid5(_ALERT_NAMESPACE, text)


class Alert(Aggregate):
    """One raised alert of one tenant."""

    class Raised(Aggregate.Created):
        tenant_id: UUID
        severity: str
        cause: str
        subject: str
        message: str
        details: dict[str, str]
        raised_at: datetime

    @event(Raised)
    def __init__(
        self,
        *,
        tenant_id: UUID,
        severity: str,
        cause: str,
        subject: str,
        message: str,
        details: dict[str, str],
        raised_at: datetime,
    ) -> None:
        self.tenant_id = tenant_id
        self.severity = severity
        self.cause = cause
        self.subject = subject
        self.message = message
        self.details = details
        self.raised_at = raised_at

    @staticmethod
    def create_id(
        *,
        tenant_id: UUID,
        severity: str,
        cause: str,
        subject: str,
        message: str,
        raised_at: datetime,
        **_: Any,
    ) -> UUID:
        return alert_id_for(
            tenant_id, severity=severity, cause=cause, subject=subject, message=message, raised_at=raised_at
        )


class InvalidAlert(IntegrityFault):
    """An alert with a severity outside ``SEVERITIES`` or an empty cause: a programming error."""


def check_alert(severity: str, cause: str, details: dict[str, Any]) -> dict[str, str]:
    """The details as the topic carries them (a map of strings); refuses what the schema cannot hold."""
    if severity not in SEVERITIES:
        raise InvalidAlert(f"alert severity {severity!r}: use one of {', '.join(SEVERITIES)}")
    if not cause:
        raise InvalidAlert("an alert needs a cause")
    return {str(k): "" if v is None else str(v) for k, v in details.items()}
