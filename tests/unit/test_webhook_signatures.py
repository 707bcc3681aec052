"""Webhook signatures of Razorpay and Stripe, checked against the providers' own Python SDKs.

Our signers (used by the sandbox) must produce what the official SDKs accept, and our verifiers must
accept and refuse exactly what the SDKs accept and refuse, on the raw bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import razorpay
import stripe

from connectors.hooks import DeliveryMalformed, DeliveryStale, InboundHooks, SignatureRejected
from connectors.razorpay import signature as rzp
from connectors.stripe import signature as stp
from engine.integrations import PREVIOUS_SECRET_REPLACED_AT_SUFFIX, PREVIOUS_SECRET_SUFFIX

SECRET = "whsec_test_7Hq2m9Lx"
OTHER = "whsec_other_tenant_3kD"
NOW = datetime(2026, 6, 2, 10, 0, tzinfo=UTC)
# Non-ASCII and spacing that a re-serialisation would change: the signature covers the raw bytes.
BODY = (
    '{"entity":"event","event":"payment.captured","contains":["payment"],'
    '"payload":{"payment":{"entity":{"id":"pay_1","amount":118000,"currency":"INR",'
    '"notes":{"invoice_number":"INV-₹-1"}}}},  "created_at":1780394400}'
).encode()

_razorpay_utility = razorpay.Client(auth=("rzp_test_key", "unused")).utility


def razorpay_sdk_accepts(body: bytes, signature: str, secret: str) -> bool:
    try:
        _razorpay_utility.verify_webhook_signature(body.decode(), signature, secret)
    except razorpay.errors.SignatureVerificationError:
        return False
    return True


def stripe_sdk_accepts(body: bytes, header: str, secret: str, now: datetime) -> bool:
    # The SDK compares the timestamp with the real clock, so the header's t is relative to it.
    try:
        stripe.WebhookSignature.verify_header(body.decode(), header, secret, tolerance=300)
    except stripe.SignatureVerificationError:
        return False
    return True


def razorpay_headers(signature: str | None, event_id: str | None = "evt_1") -> dict[str, str]:
    headers = {}
    if signature is not None:
        headers[rzp.SIGNATURE_HEADER] = signature
    if event_id is not None:
        headers[rzp.EVENT_ID_HEADER] = event_id
    return headers


def test_our_razorpay_signature_is_what_the_razorpay_sdk_accepts() -> None:
    signature = rzp.signature(SECRET, BODY)

    assert razorpay_sdk_accepts(BODY, signature, SECRET)
    verified = rzp.verify(BODY, razorpay_headers(signature), [SECRET], NOW)
    assert (verified.provider_event_id, verified.event_type) == ("evt_1", "payment.captured")


@pytest.mark.parametrize(
    ("case", "body", "signature"),
    [
        ("another tenant's secret", BODY, rzp.signature(OTHER, BODY)),
        ("re-serialised body", orjson.dumps(orjson.loads(BODY)), rzp.signature(SECRET, BODY)),
        ("one byte changed", BODY.replace(b"118000", b"118001"), rzp.signature(SECRET, BODY)),
        ("truncated signature", BODY, rzp.signature(SECRET, BODY)[:-2]),
        ("empty signature", BODY, ""),
        ("base64 instead of hex", BODY, "dGhpcyBpcyBub3QgaGV4"),
        ("control characters", BODY, "\x00\r\nabc"),
    ],
)
def test_razorpay_forgeries_are_refused_by_us_and_by_the_sdk(case: str, body: bytes, signature: str) -> None:
    assert not razorpay_sdk_accepts(body, signature, SECRET), case
    with pytest.raises(SignatureRejected):
        rzp.verify(body, razorpay_headers(signature), [SECRET], NOW)


def test_razorpay_without_a_signature_header_or_any_secret_is_refused() -> None:
    with pytest.raises(SignatureRejected):
        rzp.verify(BODY, razorpay_headers(None), [SECRET], NOW)
    with pytest.raises(SignatureRejected):
        rzp.verify(BODY, razorpay_headers(rzp.signature(SECRET, BODY)), [], NOW)


def test_razorpay_signed_body_without_an_event_or_with_a_hostile_event_id_is_malformed() -> None:
    no_event = b'{"payload": {}}'
    with pytest.raises(DeliveryMalformed):
        rzp.verify(no_event, razorpay_headers(rzp.signature(SECRET, no_event)), [SECRET], NOW)
    with pytest.raises(DeliveryMalformed):
        rzp.verify(BODY, razorpay_headers(rzp.signature(SECRET, BODY), "evt\r\nX: 1"), [SECRET], NOW)
    with pytest.raises(DeliveryMalformed):
        rzp.verify(BODY, razorpay_headers(rzp.signature(SECRET, BODY), "e" * 101), [SECRET], NOW)


def test_razorpay_without_an_event_id_header_dedupes_on_the_body() -> None:
    headers = razorpay_headers(rzp.signature(SECRET, BODY), None)
    first = rzp.verify(BODY, headers, [SECRET], NOW)
    assert first == rzp.verify(BODY, headers, [SECRET], NOW)
    assert first.provider_event_id.startswith("sha256:")


def test_our_stripe_header_is_what_the_stripe_sdk_accepts_and_the_sdk_signature_is_what_we_accept() -> None:
    now = datetime.now(UTC)
    t = int(now.timestamp())
    ours = stp.header(SECRET, t, BODY)
    assert stripe_sdk_accepts(BODY, ours, SECRET, now)
    # The SDK's own HMAC of "t.body" (what Stripe's servers compute).
    sdk_signed = f"t={t},v1={stripe.WebhookSignature._compute_signature(f'{t}.{BODY.decode()}', SECRET)}"
    stripe_body = b'{"id":"evt_1","type":"payment_intent.succeeded","data":{"object":{}}}'
    sdk_signed_body = (
        f"t={t},v1={stripe.WebhookSignature._compute_signature(f'{t}.{stripe_body.decode()}', SECRET)}"
    )
    assert sdk_signed == ours
    verified = stp.verify(stripe_body, {stp.SIGNATURE_HEADER: sdk_signed_body}, [SECRET], now)
    assert (verified.provider_event_id, verified.event_type) == ("evt_1", "payment_intent.succeeded")


def test_stripe_accepts_any_of_several_v1_signatures_as_during_a_secret_roll() -> None:
    now = datetime.now(UTC)
    t = int(now.timestamp())
    body = b'{"id":"evt_2","type":"charge.refunded","data":{"object":{}}}'
    header = f"t={t},v1={stp.signature(OTHER, t, body)},v1={stp.signature(SECRET, t, body)},v0=ignored"
    assert stripe_sdk_accepts(body, header, SECRET, now)
    assert stp.verify(body, {stp.SIGNATURE_HEADER: header}, [SECRET], now).provider_event_id == "evt_2"


@pytest.mark.parametrize(
    ("case", "header_of"),
    [
        ("another tenant's secret", lambda t, b: stp.header(OTHER, t, b)),
        ("signature of another timestamp", lambda t, b: f"t={t},v1={stp.signature(SECRET, t - 1, b)}"),
        ("no timestamp", lambda t, b: f"v1={stp.signature(SECRET, t, b)}"),
        ("no v1", lambda t, b: f"t={t},v0={stp.signature(SECRET, t, b)}"),
        ("garbage", lambda t, b: "garbage"),
        ("empty", lambda t, b: ""),
        ("huge timestamp", lambda t, b: f"t={'9' * 40},v1={stp.signature(SECRET, t, b)}"),
    ],
)
def test_stripe_forgeries_are_refused_by_us_and_by_the_sdk(
    case: str, header_of: Callable[[int, bytes], str]
) -> None:
    now = datetime.now(UTC)
    t = int(now.timestamp())
    body = b'{"id":"evt_3","type":"payment_intent.succeeded","data":{"object":{}}}'
    header = header_of(t, body)
    assert not stripe_sdk_accepts(body, header, SECRET, now), case
    with pytest.raises(SignatureRejected):
        stp.verify(body, {stp.SIGNATURE_HEADER: header}, [SECRET], now)


@pytest.mark.parametrize("age_s", [301, -301, 86_400])
def test_stripe_timestamps_outside_300_seconds_are_stale_for_us_and_the_sdk(age_s: int) -> None:
    now = datetime.now(UTC)
    t = int(now.timestamp()) - age_s
    body = b'{"id":"evt_4","type":"payment_intent.succeeded","data":{"object":{}}}'
    header = stp.header(SECRET, t, body)
    if age_s > 0:  # the SDK checks only the past; a future timestamp is our stricter rule
        assert not stripe_sdk_accepts(body, header, SECRET, now)
    with pytest.raises(DeliveryStale):
        stp.verify(body, {stp.SIGNATURE_HEADER: header}, [SECRET], now)


@pytest.mark.parametrize("age_s", [0, 299, -299])
def test_stripe_timestamps_within_300_seconds_verify(age_s: int) -> None:
    t = int(NOW.timestamp()) - age_s
    body = b'{"id":"evt_5","type":"payment_intent.succeeded","data":{"object":{}}}'
    assert stp.verify(body, {stp.SIGNATURE_HEADER: stp.header(SECRET, t, body)}, [SECRET], NOW)


def test_a_replaced_secret_verifies_for_the_rotation_window_only() -> None:
    hooks = InboundHooks(verify=rzp.verify)
    replaced_at = NOW - timedelta(hours=2)
    credentials = {
        "webhook_secret": "new-secret",
        "webhook_secret" + PREVIOUS_SECRET_SUFFIX: "old-secret",
        "webhook_secret" + PREVIOUS_SECRET_REPLACED_AT_SUFFIX: replaced_at.isoformat(),
    }
    assert hooks.secrets(credentials, NOW) == ["new-secret", "old-secret"]
    old_signed = razorpay_headers(rzp.signature("old-secret", BODY))
    assert rzp.verify(BODY, old_signed, hooks.secrets(credentials, NOW), NOW)

    later = replaced_at + timedelta(hours=24, seconds=1)
    assert hooks.secrets(credentials, later) == ["new-secret"]
    with pytest.raises(SignatureRejected):
        rzp.verify(BODY, old_signed, hooks.secrets(credentials, later), later)
    assert hooks.secrets({}, NOW) == []
