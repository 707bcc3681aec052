"""Rupees to paise at the consolidating accountant's edge (exact, never rounded), its payloads, the
daily schedule, the answers' classes, and the monthly P&L rule."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import Decimal

import pytest

from connectors.errors import ErrorClass
from connectors.super_accountant.errors import classify
from connectors.super_accountant.mapping import (
    ExpenseRecord,
    FractionalPaise,
    batch_payload,
    chunks,
    expense_payload,
    from_paise,
    report_payload,
    to_paise,
)
from connectors.super_accountant.sync import due_on
from engine.financial_reports import ExpenseLine, month_bounds, profit_and_loss


@pytest.mark.parametrize(
    ("rupees", "paise"),
    [
        ("5000", 500000),
        ("5000.00", 500000),
        ("0.01", 1),
        ("0.10", 10),
        ("1250.5", 125050),
        ("-12.34", -1234),
        ("99999999999999.99", 9999999999999999),
        ("1E+2", 10000),
    ],
)
def test_whole_paise_convert_exactly(rupees: str, paise: int) -> None:
    assert to_paise(Decimal(rupees)) == paise
    assert from_paise(paise) == Decimal(rupees)


@pytest.mark.parametrize("rupees", ["10.005", "0.001", "NaN", "Infinity", "-Infinity", "1E+30", "1e-9"])
def test_a_fraction_of_a_paisa_or_a_non_amount_is_refused_not_rounded(rupees: str) -> None:
    with pytest.raises(FractionalPaise) as caught:
        to_paise(Decimal(rupees), "expense EXP-1")
    assert caught.value.error_class == ErrorClass.PERMANENT and caught.value.code == "fractional_paise"
    assert "EXP-1" in caught.value.message


EXPENSE = ExpenseRecord(
    expense_number="EXP-2024-000123",
    amount=Decimal("5000.00"),
    category="supplies",
    status="approved",
    expense_date=date(2024, 1, 15),
    gl_code="5200",
    vendor_name="Office Mart",
    approved_at=datetime(2024, 1, 16, 14, 20, tzinfo=UTC),
    approved_by_name="Dr. Principal",
)


def test_an_expense_goes_in_the_seeds_sync_shape_in_paise() -> None:
    sent = expense_payload(EXPENSE, "1")
    assert {
        k: sent[k] for k in ("expense_number", "college_id", "amount", "category", "status", "expense_date")
    } == {
        "expense_number": "EXP-2024-000123",
        "college_id": "1",
        "amount": 500000,
        "category": "supplies",
        "status": "approved",
        "expense_date": "2024-01-15",
    }
    batch = batch_payload("b-1", "1", [sent, sent | {"expense_number": "EXP-2", "amount": 1}])
    assert (batch["expense_count"], batch["total_amount"]) == (2, 500001)


def test_batches_hold_at_most_a_thousand() -> None:
    assert [len(c) for c in chunks(list(range(2501)))] == [1000, 1000, 501]
    assert list(chunks([])) == []
    with pytest.raises(Exception, match="at most 1000"):
        batch_payload("b", "1", [{"amount": 1}] * 1001)


@pytest.mark.parametrize(
    ("now", "run_at", "zone", "last", "due"),
    [
        (datetime(2024, 1, 15, 20, 29, tzinfo=UTC), time(2, 0), "Asia/Kolkata", None, None),  # 01:59 IST
        (datetime(2024, 1, 15, 20, 30, tzinfo=UTC), time(2, 0), "Asia/Kolkata", None, date(2024, 1, 16)),
        (datetime(2024, 1, 15, 20, 30, tzinfo=UTC), time(2, 0), "Asia/Kolkata", date(2024, 1, 16), None),
        (
            datetime(2024, 1, 16, 23, 0, tzinfo=UTC),
            time(2, 0),
            "Asia/Kolkata",
            date(2024, 1, 16),
            date(2024, 1, 17),
        ),
        (datetime(2024, 1, 15, 1, 0, tzinfo=UTC), time(2, 0), "UTC", date(2024, 1, 14), None),
        (datetime(2024, 1, 15, 3, 0, tzinfo=UTC), time(2, 0), "UTC", date(2024, 1, 14), date(2024, 1, 15)),
    ],
)
def test_the_daily_run_is_due_once_a_local_day_after_its_time(
    now: datetime, run_at: time, zone: str, last: date | None, due: date | None
) -> None:
    assert due_on(now, run_at, zone, last) == due


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "code", "retry_after"),
    [
        (503, None, {"retry-after": "7"}, ErrorClass.RETRYABLE, "http_503", 7.0),
        (500, {"error": {"code": "internal"}}, {}, ErrorClass.RETRYABLE, "internal", None),
        (429, None, {}, ErrorClass.RETRYABLE, "http_429", None),
        (
            401,
            {"error": {"code": "invalid_signature"}},
            {},
            ErrorClass.NEEDS_ATTENTION,
            "invalid_signature",
            None,
        ),
        (422, {"error": {"code": "invalid_amount"}}, {}, ErrorClass.PERMANENT, "invalid_amount", None),
        (413, {"error": {"code": "batch_too_large"}}, {}, ErrorClass.PERMANENT, "batch_too_large", None),
        (
            409,
            {"error": {"code": "duplicate_expense"}},
            {},
            ErrorClass.NEEDS_ATTENTION,
            "duplicate_expense",
            None,
        ),
        (400, {"error": {"code": "Robert'); DROP"}}, {}, ErrorClass.PERMANENT, "http_400", None),
    ],
)
def test_answers_are_classified(
    status: int, body: object, headers: dict[str, str], kind: ErrorClass, code: str, retry_after: float | None
) -> None:
    error = classify(status, body, headers)
    assert (error.error_class, error.code, error.retry_after) == (kind, code, retry_after)


def test_the_pl_adds_income_and_groups_spending_by_category_and_gl_code() -> None:
    pl = profit_and_loss(
        "2024-01",
        Decimal("125000.50"),
        Decimal("20000"),
        [
            ExpenseLine("salaries", "5100", Decimal("80000")),
            ExpenseLine("supplies", "5200", Decimal("1500.25")),
            ExpenseLine("supplies", None, Decimal("0.25")),
        ],
    )
    assert pl["income"] == {
        "fees_collected": "125000.50",
        "invoices_issued": "20000.00",
        "total": "145000.50",
    }
    assert pl["expenditure"]["by_category"] == {"salaries": "80000.00", "supplies": "1500.50"}
    assert pl["expenditure"]["by_gl_code"] == {"5100": "80000.00", "5200": "1500.25", "uncoded": "0.25"}
    assert (pl["expenditure"]["total"], pl["net_income"]) == ("81500.50", "63500.00")
    sent = report_payload(
        "1", "2024-01", pl, generated_at=datetime(2024, 2, 1, tzinfo=UTC), generated_by="api_key:k"
    )
    assert sent["data"]["revenue"] - sent["data"]["total_expenses"] == sent["data"]["net_income"] == 6350000
    assert sent["data"]["expenses"] == {"salaries": 8000000, "supplies": 150050}


def test_an_empty_month_is_a_zero_pl_and_a_loss_is_negative() -> None:
    assert profit_and_loss("2024-02", Decimal(0), Decimal(0), [])["net_income"] == "0.00"
    loss = profit_and_loss("2024-02", Decimal(0), Decimal(0), [ExpenseLine("rent", "5300", Decimal("10"))])
    assert loss["net_income"] == "-10.00"


@pytest.mark.parametrize(
    ("period", "bounds"),
    [
        ("2024-02", (date(2024, 2, 1), date(2024, 2, 29))),
        ("2023-12", (date(2023, 12, 1), date(2023, 12, 31))),
        ("2024-13", None),
        ("2024-1", None),
        ("24-01", None),
        ("２０２４-01", None),
        ("2024-01\n", None),
    ],
)
def test_a_period_is_a_calendar_month(period: str, bounds: tuple[date, date] | None) -> None:
    assert month_bounds(period) == bounds
