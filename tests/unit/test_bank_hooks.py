"""The bank's callback verifier at the generic receiver (connectors/bank/hooks.py), table-driven."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from connectors.bank.hooks import verify
from connectors.bank.webhook import sign
from connectors.hooks import DeliveryMalformed, DeliveryRejected, SignatureRejected

SECRET = "whsec_bank"
NOW = datetime(2026, 5, 1, tzinfo=UTC)
COMPLETED = {
    "event": "payment.completed",
    "payment_id": "PAY_20260501_0001",
    "reference_number": "PAY-2024-000123",
    "status": "completed",
    "transaction_id": "TXN1",
    "utr_number": "HDFCR52026050100001",
    "completed_at": "2026-05-01T10:00:00Z",
    "charges": 590,
}


def signed(payload: object, secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    body = orjson.dumps(payload)
    return body, {"x-signature": sign(secret, body)}


def test_a_signed_callback_is_one_delivery_per_payment_and_status() -> None:
    body, headers = signed(COMPLETED)
    found = verify(body, headers, [SECRET], NOW)
    assert (found.provider_event_id, found.event_type) == ("PAY_20260501_0001:completed", "payment.completed")
    processing, headers = signed({**COMPLETED, "status": "processing", "utr_number": None})
    assert verify(processing, headers, [SECRET], NOW).provider_event_id == "PAY_20260501_0001:processing"
    # During a rotation the previous secret still verifies.
    body, headers = signed(COMPLETED, "old-secret")
    assert verify(body, headers, [SECRET, "old-secret"], NOW).event_type == "payment.completed"


@pytest.mark.parametrize(
    ("body", "headers", "refused"),
    [
        (orjson.dumps(COMPLETED), {}, SignatureRejected),
        (orjson.dumps(COMPLETED), {"x-signature": "00" * 32}, SignatureRejected),
        (
            orjson.dumps(COMPLETED),
            {"x-signature": sign("another", orjson.dumps(COMPLETED))},
            SignatureRejected,
        ),
        # Signed over other bytes (a re-serialised body): refused.
        (
            orjson.dumps(COMPLETED) + b" ",
            {"x-signature": sign(SECRET, orjson.dumps(COMPLETED))},
            SignatureRejected,
        ),
        (b"not json", {"x-signature": sign(SECRET, b"not json")}, DeliveryMalformed),
        (b"[1, 2]", {"x-signature": sign(SECRET, b"[1, 2]")}, DeliveryMalformed),
        *[
            (orjson.dumps(p), {"x-signature": sign(SECRET, orjson.dumps(p))}, DeliveryMalformed)
            for p in (
                {**COMPLETED, "status": "refunded"},
                {k: v for k, v in COMPLETED.items() if k != "payment_id"},
                {**COMPLETED, "payment_id": "PAY\u0000\u202e1"},
                {**COMPLETED, "payment_id": "P" * 101},
                {**COMPLETED, "charges": "5.90"},
                {**COMPLETED, "completed_at": "yesterday"},
            )
        ],
    ],
)
def test_a_forged_or_malformed_callback_is_refused(
    body: bytes, headers: dict[str, str], refused: type[DeliveryRejected]
) -> None:
    with pytest.raises(refused):
        verify(body, headers, [SECRET], NOW)


def test_no_secret_verifies_nothing() -> None:
    body, headers = signed(COMPLETED, "")
    with pytest.raises(SignatureRejected):
        verify(body, headers, [""], NOW)
