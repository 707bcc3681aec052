"""The bank's pure rules: payout requests (IFSC, mode limits, paise), the error codes' rules and the
retry schedule they pick, the payout's life in memory, statement parsing and the dedupe key, and the
payout and bank transaction records on Kafka."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from connectors.bank import errors, webhook
from connectors.bank.client import classify
from connectors.bank.routes import routes
from connectors.bank.statement_formats import StatementError, StatementLine, dedupe_key, parse, with_positions
from connectors.errors import ErrorClass, NotYet, RetryableError
from engine.application import Ledger
from engine.domain.bank_transaction import BankTransaction
from engine.domain.payout import (
    Payout,
    PayoutRuleError,
    PayoutStateConflict,
    check_ifsc,
    check_mode_limit,
    check_payout,
    payout_id_for,
    to_paise,
)
from engine.publishing import outbound_from_stored, to_outbound
from schemas import registry
from streams.connectors.retry import Retry, RetryPolicy, next_step
from streams.connectors.worker import breaker_class

SAMPLES = Path(__file__).parent.parent / "samples" / "bank"


@pytest.mark.parametrize(
    ("ifsc", "valid"),
    [
        ("HDFC0001234", True),
        ("hdfc0001234", True),  # upper-cased
        ("SBIN0ABC123", True),  # the branch part may hold letters
        ("HDFC1001234", False),  # the fifth character is always 0
        ("HDF00001234", False),
        ("HDFC000123", False),
        ("HDFC00012345", False),
        ("HDFC0001 34", False),
        ("ＨDFC0001234", False),  # a fullwidth letter
        ("", False),
    ],
)
def test_an_ifsc_is_four_letters_a_zero_and_six_letters_or_digits(ifsc: str, valid: bool) -> None:
    if valid:
        assert check_ifsc(ifsc) == ifsc.upper()
    else:
        with pytest.raises(PayoutRuleError):
            check_ifsc(ifsc)


@pytest.mark.parametrize(
    ("mode", "amount", "allowed"),
    [
        ("NEFT", "1.00", True),
        ("NEFT", "99999999.99", True),
        ("RTGS", "199999.99", False),
        ("RTGS", "200000.00", True),
        ("RTGS", "75000000.00", True),
        ("IMPS", "500000.00", True),
        ("IMPS", "500000.01", False),
        ("UPI", "10.00", False),
    ],
)
def test_rtgs_starts_at_two_lakh_and_imps_stops_at_five_lakh(mode: str, amount: str, allowed: bool) -> None:
    if allowed:
        check_mode_limit(mode, Decimal(amount))
    else:
        with pytest.raises(PayoutRuleError):
            check_mode_limit(mode, Decimal(amount))


@pytest.mark.parametrize(
    ("amount", "paise"),
    [
        (Decimal("5000"), 500000),
        (Decimal("5000.5"), 500050),
        (Decimal("0.01"), 1),
        (Decimal("200000.00"), 20000000),
    ],
)
def test_amounts_go_to_the_bank_in_exact_paise(amount: Decimal, paise: int) -> None:
    assert to_paise(amount) == paise


@pytest.mark.parametrize("amount", ["0", "-5", "1.001", "NaN", "Infinity", "1e3x", 12.5, True, "99999999999"])
def test_an_amount_that_is_not_whole_paise_above_zero_is_refused(amount: Any) -> None:
    with pytest.raises(PayoutRuleError) as caught:
        check_payout(
            amount=amount,
            currency="INR",
            mode="NEFT",
            beneficiary={"name": "A", "account_number": "1234567890", "ifsc": "HDFC0001234"},
            purpose="p",
            reference="R-1",
        )
    assert caught.value.field == "amount"


@pytest.mark.parametrize(
    ("code", "rule", "error_class", "wait"),
    [
        ("bank_offline", errors.Rule.RETRY_LATER, ErrorClass.RETRYABLE, 1800.0),
        ("insufficient_funds", errors.Rule.WAIT_FOR_PERSON, ErrorClass.NEEDS_ATTENTION, None),
        ("invalid_account", errors.Rule.NEVER_RETRY, ErrorClass.PERMANENT, None),
        ("daily_limit_exceeded", errors.Rule.RETRY_NEXT_DAY, ErrorClass.RETRYABLE, 86400.0),
        ("something_new", errors.Rule.WAIT_FOR_PERSON, ErrorClass.NEEDS_ATTENTION, None),
    ],
)
def test_each_bank_code_has_its_rule_class_and_wait(
    code: str, rule: errors.Rule, error_class: ErrorClass, wait: float | None
) -> None:
    assert errors.rule_for(code) is rule
    assert classify(code, 422) is error_class
    assert errors.retry_after(code) == wait


def test_the_retry_tiers_wait_30_minutes_for_bank_offline_and_a_day_for_the_daily_limit() -> None:
    policy = RetryPolicy(per_code=errors.RETRY_PER_CODE, forever=True)
    for attempt in (1, 2, 7):
        offline = next_step(policy, attempt=attempt, code="bank_offline", retry_after=1800.0)
        daily = next_step(policy, attempt=attempt, code="daily_limit_exceeded", retry_after=86400.0)
        assert isinstance(offline, Retry) and (offline.wait, offline.tier) == (1800.0, 1800.0)
        assert isinstance(daily, Retry) and (daily.wait, daily.tier) == (86400.0, 86400.0)
    polls = [next_step(policy, attempt=a, code="payout_processing", retry_after=None) for a in range(1, 7)]
    assert [p.wait for p in polls if isinstance(p, Retry)] == [60.0, 300.0, 900.0, 1800.0, 1800.0, 1800.0]


def test_a_payout_lives_requested_processing_completed_and_tells_each_fact_once() -> None:
    tenant = uuid4()
    payout = Payout(
        tenant_id=tenant,
        reference="PAY-1",
        amount=Decimal("5000.00"),
        currency="INR",
        mode="NEFT",
        beneficiary_name="Tech Supplies Ltd",
        beneficiary_account="1234567890",
        beneficiary_ifsc="HDFC0001234",
        purpose="p",
        requested_by="api_key:k1",
    )
    assert payout.id == payout_id_for(tenant, "pay-1")
    assert payout.idempotency_key == f"{payout.id}:1"
    assert payout.submit("pay_1") and not payout.submit("pay_1")
    assert not payout.bounce(code="bank_offline", message="", provider_payment_id="pay_other")
    assert payout.bounce(code="bank_offline", message="", provider_payment_id="pay_1")
    assert (payout.status, payout.idempotency_key) == ("requested", f"{payout.id}:2")
    payout.submit("pay_2")
    done = dict(utr="U1", transaction_id=None, charges=Decimal("5.00"), completed_at=datetime.now(UTC))
    assert payout.complete(**done) and not payout.complete(**done)
    with pytest.raises(PayoutStateConflict):
        payout.release("api_key:k1")


def test_a_held_payout_is_released_into_a_new_round() -> None:
    payout = Payout(
        tenant_id=uuid4(),
        reference="PAY-2",
        amount=Decimal("1.00"),
        currency="INR",
        mode="IMPS",
        beneficiary_name="A",
        beneficiary_account="1234567890",
        beneficiary_ifsc="HDFC0001234",
        purpose="p",
        requested_by="x",
    )
    assert payout.hold(code="insufficient_funds", message="low") and not payout.hold(code="x", message="y")
    payout.release("api_key:k1")
    assert (payout.status, payout.round) == ("requested", 2)


def _line(value_date: str, amount: str, reference: str | None) -> StatementLine:
    return StatementLine(date.fromisoformat(value_date), None, Decimal(amount), "INR", reference, "text")


def test_the_dedupe_key_tells_identical_lines_apart_by_position_and_nothing_else() -> None:
    lines = with_positions(
        [
            _line("2024-01-16", "2500.00", None),  # NONREF
            _line("2024-01-16", "2500.00", None),  # the same again: a second fee
            _line("2024-01-16", "2500.00", "UTR1"),  # a shared UTR ...
            _line("2024-01-16", "-2500.00", "UTR1"),  # ... on a debit and its reversal
        ]
    )
    keys = [dedupe_key("9876543210", line) for line in lines]
    assert [line.position for line in lines] == [1, 2, 1, 1]
    assert len(set(keys)) == 4
    # The same line in another statement (another description, another place in it) is the same key.
    again = replace(lines[1], description="FEE", booking_date=date(2024, 1, 17))
    assert dedupe_key("9876543210", again) == keys[1]
    assert dedupe_key("1111111111", lines[0]) != keys[0]


def test_the_mt940_and_camt053_samples_read_alike_with_nonref_and_the_utr() -> None:
    [mt940] = parse((SAMPLES / "january.mt940").read_bytes())
    [camt] = parse((SAMPLES / "january.camt053.xml").read_bytes())
    for statement in (mt940, camt):
        assert (statement.account, statement.opening, statement.closing) == (
            "9876543210",
            Decimal("100000.00"),
            Decimal("99995.00"),
        )
        assert statement.balanced
        assert [(line.reference, line.position) for line in statement.lines] == [
            ("HDFC2024011598765", 1),
            (None, 1),
            (None, 2),
        ]
    assert [dedupe_key(mt940.account, line) for line in mt940.lines] == [
        dedupe_key(camt.account, line) for line in camt.lines
    ]


def test_a_statement_that_does_not_add_up_says_so() -> None:
    data = (SAMPLES / "january.mt940").read_bytes().replace(b"INR99995,00", b"INR99985,00")
    [statement] = parse(data)
    assert not statement.balanced and statement.computed_closing - statement.closing == Decimal("10.00")


@pytest.mark.parametrize(
    "data",
    [
        b"no statement",
        b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY e 'boom'>]><x>&e;</x>",
        b"<Document xmlns='urn:iso:std:iso:20022:tech:xsd:pain.001.001.09'/>",
        b"<Document xmlns='urn:iso:std:iso:20022:tech:xsd:camt.053.001.08'><BkToCstmrStmt/></Document>",
    ],
)
def test_what_is_not_a_statement_is_refused_with_a_reason(data: bytes) -> None:
    with pytest.raises(StatementError):
        parse(data)


def test_a_callback_verifies_only_with_its_secret_and_body() -> None:
    body = b'{"event":"payment.completed","payment_id":"pay_1","status":"completed"}'
    signature = webhook.sign("s3cret", body)
    assert webhook.verify(body, signature, ["old", "s3cret"])
    assert webhook.verify(body, signature.upper(), ["s3cret"])
    assert not webhook.verify(body, signature, ["old"])
    assert not webhook.verify(body, None, ["s3cret"])
    assert not webhook.verify(body, signature, [""])
    assert not webhook.verify(body.replace(b"pay_1", b"pay_2"), signature, ["s3cret"])


def _events() -> list[Any]:
    tenant = uuid4()
    payout = Payout(
        tenant_id=tenant,
        reference="PAY-3",
        amount=Decimal("250000.50"),
        currency="INR",
        mode="RTGS",
        beneficiary_name="B",
        beneficiary_account="123456789012",
        beneficiary_ifsc="ICIC0005678",
        purpose="p",
        requested_by="api_key:k1",
    )
    payout.hold(code="insufficient_funds", message="low")
    payout.release("api_key:k1")
    payout.submit("pay_1")
    payout.bounce(code="bank_offline", message="away", provider_payment_id="pay_1")
    payout.submit("pay_2")
    payout.complete(utr="U", transaction_id="T", charges=Decimal("25"), completed_at=datetime.now(UTC))
    failed = Payout(
        tenant_id=tenant,
        reference="PAY-4",
        amount=Decimal("1"),
        currency="INR",
        mode="NEFT",
        beneficiary_name="B",
        beneficiary_account="123456789012",
        beneficiary_ifsc="ICIC0005678",
        purpose="p",
        requested_by="x",
    )
    failed.fail(code="invalid_account", message="no such account")
    line = BankTransaction(
        tenant_id=tenant,
        account="9876543210",
        value_date=date(2024, 1, 15),
        booking_date=None,
        amount=Decimal("-5005.00"),
        currency="INR",
        reference=None,
        description="NEFT",
        position=2,
        dedupe_key="k" * 64,
        statement_id=uuid4(),
        source="mt940",
    )
    return [*payout.collect_events(), *failed.collect_events(), *line.collect_events()]


@pytest.mark.parametrize("event", _events(), ids=lambda e: type(e).__qualname__)
def test_payout_and_bank_transaction_events_publish_alike_on_both_paths(event: Any) -> None:
    ledger = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    stored = ledger.mapper.to_stored_event(event)
    slow = to_outbound(ledger.mapper.to_domain_event(stored))
    fast = outbound_from_stored(stored.originator_id, stored.originator_version, stored.topic, stored.state)
    assert replace(fast, traceparent="-") == replace(slow, traceparent="-")
    assert fast.tenant_id == str(event.tenant_id)
    assert "1234567890" not in str(fast.record) and "123456789012" not in str(fast.record)
    registry.encode_event(fast.ce_type, fast.record)


def test_requested_and_released_payouts_and_an_enabled_bank_integration_make_jobs() -> None:
    tenant = str(uuid4())
    payout = str(uuid4())
    [job] = routes("ledgerflow.payout.requested", "ce-1", {"tenant_id": tenant, "payout_id": payout})
    assert (job.kind, job.subject, job.payload, job.job_id) == (
        "payout",
        payout,
        {"payout_id": payout},
        "ce-1:payout",
    )
    assert routes("ledgerflow.payout.completed", "ce-2", {"tenant_id": tenant, "payout_id": payout}) == ()
    saved = {"tenant_id": tenant, "provider": "bank", "enabled": True}
    [poll] = routes("ledgerflow.tenant.integration_settings_changed", "ce-3", saved)
    assert poll.kind == "statements" and UUID(poll.subject)  # the router keys jobs by a UUID
    assert routes("ledgerflow.tenant.integration_settings_changed", "ce-4", {**saved, "enabled": False}) == ()
    assert (
        routes("ledgerflow.tenant.integration_settings_changed", "ce-5", {**saved, "provider": "etims"}) == ()
    )


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("", 21600.0), ("3600", 3600.0), ("0.5", 0.5), ("0", None), ("six", None), ("inf", None)],
)
def test_the_statement_poll_interval_comes_from_the_environment(value: str, seconds: float | None) -> None:
    environ = {"LEDGERFLOW_BANK_STATEMENT_POLL_S": value}
    if seconds is None:
        with pytest.raises(ValueError):
            errors.statement_poll_interval(environ)
    else:
        assert errors.statement_poll_interval(environ) == seconds


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"payment_id": "pay_1"},
        {"payment_id": "pay_1", "status": "refunded"},
        {"payment_id": "pay_1", "status": "completed", "charges": 5.5},
        {"payment_id": "pay_1", "status": "completed", "charges": "-5"},
        {"payment_id": "pay_1", "status": "completed", "charges": True},
        {"payment_id": "pay_1", "status": "completed", "completed_at": "yesterday"},
    ],
)
def test_a_verified_callback_we_cannot_read_is_refused_before_anything_is_recorded(payload: Any) -> None:
    with pytest.raises(webhook.InvalidCallback):
        webhook.status_of(payload)


def test_a_callback_reads_as_the_status_a_poll_returns() -> None:
    status = webhook.status_of(
        {
            "event": "payment.completed",
            "payment_id": "pay_xyz123",
            "reference_number": "PAY-2024-000123",
            "status": "completed",
            "transaction_id": "TXN987654321",
            "utr_number": "HDFC2024011598765",
            "completed_at": "2024-01-15T15:45:00Z",
            "charges": 500,
        }
    )
    assert (status.payment_id, status.utr, status.charges_paise) == ("pay_xyz123", "HDFC2024011598765", 500)
    assert status.completed_at == datetime(2024, 1, 15, 15, 45, tzinfo=UTC)


def test_a_bank_still_processing_is_no_failure_for_the_circuit_breaker() -> None:
    assert breaker_class(NotYet(errors.PAYOUT_PROCESSING)) is None
    assert breaker_class(None) is None
    assert breaker_class(RetryableError("bank_offline")) is ErrorClass.RETRYABLE
