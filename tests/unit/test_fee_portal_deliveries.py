"""The fee portal's deliveries, pure: the seed's signature over the raw body, paise to exact rupees,
and every malformed delivery refused with the fields at fault."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from connectors.fee_portal.webhooks import parse, verify
from connectors.hooks import DeliveryMalformed, SignatureRejected, hex_hmac_sha256

SECRET = "portal-secret"
NOW = datetime(2024, 1, 10, tzinfo=UTC)


def delivery(**data: Any) -> bytes:
    fee = {
        "receipt_number": "FEE-2024-001234",
        "student_id": 5678,
        "student_name": "Jane Student",
        "amount": 5000000,
        "payment_mode": "upi",
        "payment_date": "2024-01-10",
        "fee_type": "tuition",
        "academic_year": "2023-24",
        "semester": 1,
    }
    return orjson.dumps(
        {"event": "fee.collected", "timestamp": "2024-01-10T10:30:00Z", "data": {**fee, **data}}
    )


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"x-signature": hex_hmac_sha256(secret, body)}


def test_a_signed_delivery_is_the_receipt_in_exact_rupees() -> None:
    body = delivery(amount=125050)

    verified = verify(body, signed(body), [SECRET], NOW)

    assert (verified.provider_event_id, verified.event_type) == ("FEE-2024-001234", "fee.collected")
    assert parse(body).amount == Decimal("1250.50")


def test_the_previous_secret_still_verifies_and_upper_case_hex_is_accepted() -> None:
    body = delivery()
    assert verify(body, {"x-signature": hex_hmac_sha256("old", body).upper()}, [SECRET, "old"], NOW)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-signature": ""},
        {"x-signature": "00" * 32},
        {"x-signature": "not hex at all \u202e"},
    ],
    ids=["missing", "empty", "zeros", "garbage"],
)
def test_unsigned_or_forged_deliveries_are_rejected(headers: dict[str, str]) -> None:
    with pytest.raises(SignatureRejected):
        verify(delivery(), headers, [SECRET], NOW)


def test_a_signature_over_another_body_or_with_another_secret_is_rejected() -> None:
    body = delivery()
    with pytest.raises(SignatureRejected):
        verify(body, signed(delivery(amount=1)), [SECRET], NOW)
    with pytest.raises(SignatureRejected):
        verify(body, signed(body, "someone-else"), [SECRET], NOW)
    with pytest.raises(SignatureRejected):
        verify(body, signed(body), [], NOW)


@pytest.mark.parametrize(
    ("body", "path", "code"),
    [
        (b"not json", "", "invalid_json"),
        (orjson.dumps({"event": "fee.refunded", "data": {}}), "event", "unknown_event"),
        (orjson.dumps({"event": "fee.collected"}), "data", "missing"),
        (delivery(amount="5000.00"), "data.amount", "invalid_paise"),
        (delivery(amount=5000.5), "data.amount", "invalid_paise"),
        (delivery(amount=True), "data.amount", "invalid_paise"),
        (delivery(amount=0), "data.amount", "invalid_paise"),
        # Beyond 64 bits a JSON integer is read as a float; beyond a double, it is no number at all.
        (
            delivery(amount=7).replace(b'"amount":7', b'"amount":1' + b"0" * 30),
            "data.amount",
            "invalid_paise",
        ),
        (delivery(amount=7).replace(b'"amount":7', b'"amount":1e400'), "", "invalid_json"),
        (delivery(student_name="Jane\u0000"), "data.student_name", None),
        (delivery(payment_mode="bitcoin"), "data.payment_mode", None),
        (delivery(receipt_number=""), "data.receipt_number", None),
        (delivery(college_id=1), "data.college_id", None),
    ],
)
def test_malformed_deliveries_name_the_field(body: bytes, path: str, code: str | None) -> None:
    with pytest.raises(DeliveryMalformed) as caught:
        verify(body, signed(body), [SECRET], NOW)
    paths = [f["path"] for f in caught.value.fields]
    assert path in paths, caught.value.fields
    if code is not None:
        assert code in [f["code"] for f in caught.value.fields]
