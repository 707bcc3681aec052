"""Alerts (ledger.alert.v1): raised through the write side, published keyed by tenant, collapsed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from engine.application import LedgerService, in_memory_ledger
from engine.config import load_settings
from engine.domain.alert import Alert, InvalidAlert
from engine.publishing import outbound_from_stored, to_outbound
from schemas import registry

T0 = datetime(2026, 6, 2, 8, 0, 5, tzinfo=UTC)


def service() -> LedgerService:
    return LedgerService(load_settings(), in_memory_ledger(), pool=None)  # type: ignore[arg-type]


def stored_alerts(svc: LedgerService) -> list[Alert.Raised]:
    found = []
    for notification in svc.ledger.recorder.select_notifications(start=None, limit=100):
        event = svc.ledger.mapper.to_domain_event(notification)
        if isinstance(event, Alert.Raised):
            found.append(event)
    return found


def raise_offline(svc: LedgerService, tenant: object, at: datetime, subject: str = "device:1") -> None:
    svc.raise_alert(
        tenant,  # type: ignore[arg-type]
        severity="warning",
        cause="etims.device_offline",
        subject=subject,
        message="device of branch 01 is offline",
        details={"bhf_id": "01", "environment": "sandbox"},
        raised_at=at,
    )


def test_an_alert_is_published_on_the_alert_topic_keyed_by_its_tenant() -> None:
    svc, tenant = service(), uuid4()
    raise_offline(svc, tenant, T0)
    (event,) = stored_alerts(svc)
    message = to_outbound(event)
    assert (message.topic, message.key, message.ce_type) == (
        "ledger.alert.v1",
        str(tenant),
        "ledgerflow.alert.raised",
    )
    record = message.record
    assert record["tenant_id"] == str(tenant)
    assert (record["severity"], record["cause"], record["subject"]) == (
        "warning",
        "etims.device_offline",
        "device:1",
    )
    assert record["details"] == {"bhf_id": "01", "environment": "sandbox"}
    assert record["raised_at"] == int(T0.timestamp() * 1000)
    # The record fits the shipped schema, and the relay's fast path gives the same message.
    value, _ = registry.encode_event(message.ce_type, record)
    assert registry.decode_event(value, message.ce_type)["cause"] == "etims.device_offline"
    stored = svc.ledger.mapper.to_stored_event(event)
    fast = outbound_from_stored(stored.originator_id, stored.originator_version, stored.topic, stored.state)
    assert (fast.key, fast.record) == (message.key, message.record)


def test_the_same_alert_raised_again_within_the_window_is_stored_once() -> None:
    svc, tenant = service(), uuid4()
    raise_offline(svc, tenant, T0)
    raise_offline(svc, tenant, T0 + timedelta(minutes=1))
    assert len(stored_alerts(svc)) == 1


def test_a_different_subject_or_a_later_window_is_a_new_alert() -> None:
    svc, tenant = service(), uuid4()
    raise_offline(svc, tenant, T0)
    raise_offline(svc, tenant, T0, subject="device:2")
    raise_offline(svc, tenant, T0 + timedelta(hours=1))
    raise_offline(svc, uuid4(), T0)
    assert len(stored_alerts(svc)) == 4


def test_an_unknown_severity_is_refused() -> None:
    with pytest.raises(InvalidAlert, match="severity"):
        service().raise_alert(uuid4(), severity="panic", cause="x", subject="y", message="z", details={})
