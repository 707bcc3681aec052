"""The relay's fast path over stored JSON must publish exactly what the domain events say."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.application import Ledger, build_invoice
from engine.commands import IssueInvoice
from engine.domain.tenant import Tenant
from engine.publishing import OutboundEvent, _money, event_id, outbound_from_stored, to_outbound
from schemas import registry

BODY: dict[str, Any] = {
    "number": "INV-9",
    "date": "2026-01-19",
    "buyer": {
        "name": "Reliable Traders",
        "gstin": "27AAACR5055K1Z7",
        "state": "27",
        "address": {"line1": "12 Market Road", "city": "Pune", "pincode": "411001"},
    },
    "lines": [
        {"description": "Coil", "hsn": "8471", "quantity": "10", "unit": "NOS", "unit_price": "100"},
        {
            "description": "Bars",
            "hsn": "7214",
            "quantity": "25.500",
            "unit": "KGS",
            "unit_price": "812.405",
            "discount": "12.5",
        },
        {
            "description": "Service",
            "hsn": "9987",
            "quantity": "1",
            "unit": "OTH",
            "unit_price": "0.10",
            "gst_rate": "18",
            "gst_rate_reason": "contract",
        },
    ],
}


def all_kinds_of_events() -> list[Any]:
    tenant = Tenant(
        name="Acme",
        legal_name="Acme Pvt Ltd",
        country="IN",
        gstin="27AAGCB7383J1Z8",
        state="27",
        einvoicing_enabled=True,
        api_key_id="k1",
        address={"line1": "1 Road", "city": "Pune"},
    )
    tenant.rotate_api_key(
        key_id="k2", previous_key_id="k1", previous_key_valid_until=datetime.now(UTC) + timedelta(1)
    )
    tenant.add_api_key(key_id="k3", name="erp", changed_by="api_key:k2")
    tenant.revoke_api_key(key_id="k3", changed_by="operator:api")
    tenant.update_profile(
        changed_by="api_key:k2",
        name="Acme Trading",
        address={"line1": "2 Road", "line2": None, "city": "Pune", "pincode": "411001"},
        contacts=[{"name": "Asha", "role": "accounts", "email": "a@acme.in", "phone": None}],
    )
    tenant.change_integration_settings(
        provider="gst-irp",
        enabled=True,
        environment="sandbox",
        base_url="https://gsp.example.com",
        credentials_changed=["password"],
        changed_by="api_key:k2",
    )
    user = "0f6b1e52-8c3d-4a79-9e21-7d4c5b6a8f10"
    tenant.add_user(user_id=user, role="accountant", changed_by="api_key:k2")
    changes = {"role": {"old": "accountant", "new": "auditor"}, "disabled": {"old": False, "new": True}}
    tenant.change_user(user_id=user, changes=changes, changed_by=f"user:{user}")
    home = "7c1d3e5f-9a2b-4c6d-8e0f-1a3b5c7d9e2f"
    tenant.give_read_grant(user_id=user, home_tenant_id=home, changed_by="operator:api")
    tenant.withdraw_read_grant(user_id=user, home_tenant_id=home, changed_by="operator:api")
    invoice = build_invoice(
        tenant,
        IssueInvoice.model_validate(BODY),
        "key-1",
        "hash",
        "api",
        "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
    )
    invoice.record_irn(
        job_id="j",
        irn="f" * 64,
        ack_no="112010000000001",
        ack_date="2026-01-19 10:00:00",
        signed_invoice="x.y.z",
        signed_qr_code="q.r.s",
        adopted_existing=False,
        traceparent=None,
    )
    invoice.record_irn_failure(
        job_id="j2",
        operation="cancel",
        error_class="permanent",
        code="2270",
        message="too late",
        attempts=1,
        traceparent=None,
    )
    invoice.record_irn_cancellation(
        job_id="j3",
        irn="f" * 64,
        cancel_date="2026-01-19 11:00:00",
        reason_code=3,
        remark=None,
        traceparent=None,
    )
    invoice.cancel(reason="order_cancelled", remark="buyer withdrew", at=datetime.now(UTC), traceparent=None)
    return [*tenant.collect_events(), *invoice.collect_events()]


def comparable(message: OutboundEvent, event: Any) -> OutboundEvent:
    # Events without a stored trace context get a fresh random one on each publish.
    return message if getattr(event, "traceparent", None) else replace(message, traceparent="-")


EVENTS = all_kinds_of_events()
TENANT_ID = EVENTS[0].originator_id


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__qualname__)
def test_the_fast_path_publishes_the_same_message_as_the_domain_event(event: Any) -> None:
    ledger = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    stored = ledger.mapper.to_stored_event(event)
    slow = to_outbound(ledger.mapper.to_domain_event(stored))
    fast = outbound_from_stored(stored.originator_id, stored.originator_version, stored.topic, stored.state)
    assert comparable(fast, event) == comparable(slow, event)
    assert fast.ce_id == str(event_id(event.originator_id, event.originator_version))
    # Every event names its tenant (ce_source), not its aggregate: routers decide by tenant.
    assert fast.tenant_id == str(TENANT_ID), type(event).__qualname__
    # And the record fits the current schema of its type.
    registry.encode_event(fast.ce_type, fast.record)


def test_amounts_keep_their_decimal_notation_on_both_paths() -> None:
    issued = next(e for e in all_kinds_of_events() if type(e).__name__ == "Issued")
    ledger = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    stored = ledger.mapper.to_stored_event(issued)
    record = outbound_from_stored(
        stored.originator_id, stored.originator_version, stored.topic, stored.state
    ).record
    second = record["lines"][1]
    assert (second["quantity"], second["unit_price"], second["discount"]) == ("25.5", "812.405", "12.50")
    assert record["lines"][2]["unit_price"] == "0.10"
    assert Decimal(record["totals"]["total"]) == sum(Decimal(line["total"]) for line in record["lines"])


@given(st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**12), max_value=10**12, places=3))
def test_an_amount_in_its_stored_text_is_written_as_its_two_place_decimal(amount: Decimal) -> None:
    # The relay's shortcuts for "0", "18" or "12.5" must print what the Decimal round trip prints.
    for text in (str(amount), str(amount.normalize()), f"{amount:f}"):
        if "E" not in text:
            assert _money(text) == f"{Decimal(text):.2f}", text
