"""The pure rules of outbound webhooks: event type filters, URL checks, the 5-day rule, bodies and
signatures (checked against the standardwebhooks library and against HMAC computed by hand)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID

import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from engine.domain.webhook_endpoint import (
    EndpointDeleted,
    InvalidEndpoint,
    WebhookEndpoint,
    check_description,
    check_event_types,
    covered_by,
    should_disable,
    wants,
)
from engine.webhook_signing import LedgerEvent, body, hex_signature, new_secret, signature_headers
from engine.webhooks import check_url
from streams.webhooks import settings_from

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
EVENT_TENANT = UUID("0b5d2f0e-1111-4222-8333-444455556666")
EVENT = LedgerEvent(
    id="2f0c8c1e-0d1b-5c55-9a42-3c6f0b1d2e3f",
    type="ledgerflow.invoice.issued",
    source=f"/tenants/{EVENT_TENANT}",
    subject="6a3e1f00-aaaa-4bbb-8ccc-dddddddddddd",
    time="2026-12-02T12:00:00Z",
    data={"number": "INV-1", "total": Decimal("1180.00"), "issued_at": NOW},
)


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        (["ledgerflow.invoice.issued"], ["ledgerflow.invoice.issued"]),
        (["invoice.issued"], ["ledgerflow.invoice.issued"]),
        (["ledgerflow.invoice.*", "invoice.*"], ["ledgerflow.invoice.*"]),
        (["*"], ["*"]),
    ],
)
def test_event_type_filters_are_stored_in_their_full_form(given: list[str], stored: list[str]) -> None:
    assert check_event_types(given) == stored


@pytest.mark.parametrize(
    "given",
    [
        [],
        ["ledgerflow.Invoice.issued"],
        ["invoice"],
        ["ledgerflow.invoice.issued\n"],
        ["a.b.c.d"],
        ["*"] * 51,
    ],
)
def test_event_type_filters_that_name_nothing_are_refused(given: list[str]) -> None:
    with pytest.raises(InvalidEndpoint) as refused:
        check_event_types(given)
    assert refused.value.field == "event_types"


@pytest.mark.parametrize(
    ("filters", "ce_type", "wanted"),
    [
        (["*"], "ledgerflow.alert.raised", True),
        (["ledgerflow.invoice.*"], "ledgerflow.invoice.cancelled", True),
        (["ledgerflow.invoice.*"], "ledgerflow.invoices.cancelled", False),
        (["ledgerflow.invoice.issued"], "ledgerflow.invoice.issued", True),
        (["ledgerflow.invoice.issued"], "ledgerflow.invoice.irn_generated", False),
        (["ledgerflow.tenant.*", "ledgerflow.alert.raised"], "ledgerflow.alert.raised", True),
    ],
)
def test_an_endpoint_wants_the_types_its_filters_name(filters: list[str], ce_type: str, wanted: bool) -> None:
    assert wants(filters, ce_type) is wanted


def test_filters_matching_no_known_type_are_found() -> None:
    known = ["ledgerflow.invoice.issued", "ledgerflow.alert.raised"]
    assert covered_by(["ledgerflow.invoice.*", "ledgerflow.invoice.exploded", "*"], known) == [
        "ledgerflow.invoice.exploded"
    ]


@pytest.mark.parametrize(
    ("url", "mode", "allowed"),
    [
        ("https://erp.example.com/hooks", "production", True),
        ("http://erp.example.com/hooks", "production", False),
        ("https://127.0.0.1/x", "production", False),
        ("https://10.0.0.8/x", "production", False),
        ("https://[fe80::1]/x", "production", False),
        ("https://[::ffff:192.168.1.1]/x", "production", False),
        ("https://localhost/x", "production", False),
        ("https://93.184.216.34/x", "production", True),
        ("http://127.0.0.1:9110/hooks/a", "development", True),
        ("https://u:p@erp.example.com/", "development", False),
        ("javascript:alert(1)", "development", False),
        ("https://erp.example.com/\u2028", "development", True),
        ("https://erp.example.com/a b", "development", False),
        ("https://erp.example.com/\x7f", "development", False),
        ("https://\u2028x.example.com/", "development", False),
        ("https://例え.テスト/hooks", "development", True),
    ],
)
def test_receiver_urls(url: str, mode: str, allowed: bool) -> None:
    if allowed:
        assert check_url(url, mode) == url  # type: ignore[arg-type]
    else:
        with pytest.raises(InvalidEndpoint):
            check_url(url, mode)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("failing_for", "disable"),
    [(None, False), (timedelta(0), False), (timedelta(days=4, hours=23), False), (timedelta(days=5), True)],
)
def test_an_endpoint_failing_for_five_days_is_disabled(failing_for: timedelta | None, disable: bool) -> None:
    since = None if failing_for is None else NOW - failing_for
    assert should_disable(since, NOW) is disable


def test_descriptions_refuse_control_characters_but_keep_newlines() -> None:
    assert check_description("ERP\nsecond line") == "ERP\nsecond line"
    with pytest.raises(InvalidEndpoint):
        check_description("bell\x07")


def test_a_deleted_endpoint_refuses_every_change() -> None:
    endpoint = WebhookEndpoint(
        tenant_id=EVENT_TENANT,
        url="https://a.example/",
        event_types=["*"],
        description="",
        body_format="legacy",
    )
    endpoint.delete()
    for change in (endpoint.resume, endpoint.pause, endpoint.delete):
        with pytest.raises(EndpointDeleted):
            change()
    assert endpoint.version == 2


def test_a_cloudevents_body_carries_the_event_attributes_and_money_as_decimal_strings() -> None:
    raw, content_type = body(EVENT, "cloudevents")
    document = orjson.loads(raw)
    assert content_type == "application/cloudevents+json"
    assert document["specversion"] == "1.0" and document["id"] == EVENT.id and document["type"] == EVENT.type
    assert document["data"] == {"number": "INV-1", "total": "1180.00", "issued_at": "2026-12-02T12:00:00Z"}


def test_a_legacy_body_is_the_seeds_event_timestamp_data() -> None:
    raw, content_type = body(EVENT, "legacy")
    assert content_type == "application/json"
    assert orjson.loads(raw) == {
        "event": "invoice.issued",
        "timestamp": "2026-12-02T12:00:00Z",
        "data": {"number": "INV-1", "total": "1180.00", "issued_at": "2026-12-02T12:00:00Z"},
    }


def test_signatures_match_the_standard_webhooks_definition_computed_by_hand() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    raw = b'{"a":"1.10"}'
    headers = signature_headers("msg_1", raw, [secret], datetime.fromtimestamp(1_700_000_000, UTC))
    by_hand = hmac.new(b"k" * 32, b"msg_1.1700000000." + raw, hashlib.sha256).digest()
    assert headers["webhook-id"] == "msg_1" and headers["webhook-timestamp"] == "1700000000"
    assert headers["webhook-signature"] == "v1," + base64.b64encode(by_hand).decode()
    assert headers["X-Signature"] == hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def test_during_a_rotation_both_secrets_sign_and_each_verifies_alone() -> None:
    new, old = new_secret(), new_secret()
    raw, _ = body(EVENT, "cloudevents")
    headers = signature_headers(EVENT.id, raw, [new, old], datetime.now(UTC))
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (new, old):
        assert Webhook(secret).verify(raw, headers)["id"] == EVENT.id
    assert headers["X-Signature"] == hex_signature(new, raw)


def test_new_secrets_are_32_random_bytes_in_standard_webhooks_form() -> None:
    first, second = new_secret(), new_secret()
    assert first.startswith("whsec_") and len(base64.b64decode(first[6:])) == 32 and first != second


@pytest.mark.parametrize(
    ("environ", "rate", "first_delays"),
    [
        ({}, 50.0, (0.0, 60.0, 300.0, 900.0, 3600.0)),
        (
            {"LEDGERFLOW_WEBHOOK_RATE": "none", "LEDGERFLOW_WEBHOOK_RETRY_SCALE": "0.01"},
            float("inf"),
            (0.0, 0.6, 3.0, 9.0, 36.0),
        ),
        ({"LEDGERFLOW_WEBHOOK_RATE": "2.5"}, 2.5, (0.0, 60.0, 300.0, 900.0, 3600.0)),
    ],
)
def test_the_worker_settings_from_the_environment(
    environ: dict[str, str], rate: float, first_delays: tuple[float, ...]
) -> None:
    options = settings_from(environ)
    assert options.rate_per_s == rate
    assert options.retry_policy.delays == pytest.approx(first_delays)


@pytest.mark.parametrize(
    "environ",
    [
        {"LEDGERFLOW_WEBHOOK_RATE": "0"},
        {"LEDGERFLOW_WEBHOOK_RATE": "fast"},
        {"LEDGERFLOW_WEBHOOK_RATE": "-1"},
        {"LEDGERFLOW_WEBHOOK_RETRY_SCALE": "0"},
        {"LEDGERFLOW_WEBHOOK_RETRY_SCALE": "nan"},
    ],
)
def test_worker_settings_that_make_no_sense_are_refused_with_the_variable_named(
    environ: dict[str, str],
) -> None:
    with pytest.raises(ValueError, match="LEDGERFLOW_WEBHOOK_"):
        settings_from(environ)
