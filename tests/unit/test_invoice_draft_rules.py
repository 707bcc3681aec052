"""Draft invoices and the number series (issue 13): the pure rules, table-driven."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest

from connectors.registry import CONNECTORS
from engine.domain.invoice_draft import DraftNotOpen, DraftStatus, InvoiceDraft, draft_id_for
from engine.invoice_series import Series, SeriesExhausted, check_series
from engine.publishing import published_ce_types
from engine.tax.india_gst import financial_year
from projections.gst_outward_supplies import CHANGES as OUTWARD_CHANGES
from projections.invoice_register import CHANGES as REGISTER_CHANGES

DRAFT_TYPES = [t for t in published_ce_types() if t.startswith("ledgerflow.invoice_draft.")]


@pytest.mark.parametrize(
    ("prefix", "digits", "year", "sequence", "number"),
    [
        ("INV/{fy}/", 4, "2026-27", 1, "INV/2026-27/0001"),
        ("INV/{fy}/", 4, "2026-27", 9999, "INV/2026-27/9999"),
        ("INV/{fy}/", 4, "2027-28", 1, "INV/2027-28/0001"),
        ("S-", 6, "2026-27", 42, "S-000042"),
        ("{fy}-", 3, "2026-27", 7, "2026-27-007"),
        ("", 1, "2026-27", 5, "5"),
        ("A", 1, "2026-27", 123456, "A123456"),  # digits is a minimum, not a cap
    ],
)
def test_a_series_number_is_the_prefix_for_the_year_and_the_padded_sequence(
    prefix: str, digits: int, year: str, sequence: int, number: str
) -> None:
    assert Series(prefix, digits).number(year, sequence) == number


def test_a_number_past_the_irps_sixteen_characters_is_refused() -> None:
    series = Series("INV/{fy}/", 4)
    assert series.capacity("2026-27") == 9999
    with pytest.raises(SeriesExhausted):
        series.number("2026-27", 10_000)


@pytest.mark.parametrize(
    ("day", "year"),
    [
        (date(2027, 3, 31), "2026-27"),  # the last day of a financial year
        (date(2027, 4, 1), "2027-28"),  # the next day starts the next one: its series restarts at 1
        (date(2099, 12, 31), "2099-00"),
    ],
)
def test_the_financial_year_rolls_over_on_the_first_of_april(day: date, year: str) -> None:
    assert financial_year(day) == year
    assert Series().number(financial_year(day), 1) == f"INV/{year}/0001"


@pytest.mark.parametrize(
    ("prefix", "digits", "code"),
    [
        ("INV/{fy}/", 4, None),
        ("INV/{fy}/", 5, "number_too_long"),  # 17 characters
        ("INVOICE/{fy}/", 1, "number_too_long"),
        ("", 4, "invalid_number"),  # "0001" starts with 0
        ("0/", 1, "invalid_number"),
        ("/A", 1, "invalid_number"),
        ("INV {fy}", 4, "invalid_prefix"),  # a space
        ("INV_", 4, "invalid_prefix"),
        ("ÎNV/", 4, "invalid_prefix"),  # non-ASCII
        ("INV/{year}/", 4, "invalid_prefix"),  # an unknown placeholder
        ("INV/", 0, "invalid_digits"),
        ("INV/", 11, "invalid_digits"),
    ],
)
def test_a_series_is_checked_against_the_irps_number_rules(
    prefix: str, digits: int, code: str | None
) -> None:
    found = check_series(Series(prefix, digits))
    assert [v.code for v in found] == ([] if code is None else [code])


def _document() -> dict[str, Any]:
    return {
        "financial_year": "2026-27",
        "invoice_date": date(2026, 5, 3),
        "currency": "INR",
        "supply_type": "B2C",
        "seller": {"legal_name": "Seller"},
        "buyer": {"name": "Buyer", "gstin": None},
        "place_of_supply": "27",
        "intra_state": True,
        "lines": [],
        "totals": {"taxable": Decimal("100.00"), "total": Decimal("118.00")},
        "reverse_charge": False,
        "ecommerce_gstin": None,
        "export": None,
    }


def _draft(external_ref: str | None = None) -> InvoiceDraft:
    return InvoiceDraft(
        tenant_id=uuid4(),
        source="veekaart",
        external_ref=external_ref,
        request_hash="h",
        command={},
        document=_document(),
        traceparent=None,
    )


def test_a_draft_made_from_a_reference_has_the_id_of_that_reference() -> None:
    draft = _draft("order-1")
    assert draft.id == draft_id_for(draft.tenant_id, "veekaart", "order-1")
    assert draft.id != draft_id_for(uuid4(), "veekaart", "order-1")  # another tenant's order
    assert draft.id != draft_id_for(draft.tenant_id, "api", "order-1")
    assert _draft().id != _draft().id  # without a reference, every draft is new


def test_a_draft_has_no_number_and_shows_its_computed_totals() -> None:
    draft = _draft()
    assert (draft.status, draft.number) == (DraftStatus.DRAFT, None)
    assert draft.totals["total"] == Decimal("118.00")


def test_an_issued_draft_cannot_be_changed_discarded_or_issued_again() -> None:
    draft = _draft()
    draft.issue(invoice_id=uuid4(), number="INV/2026-27/0001", financial_year="2026-27", traceparent=None)
    assert draft.status == DraftStatus.ISSUED
    with pytest.raises(DraftNotOpen):
        draft.update(request_hash="x", command={}, document=_document(), traceparent=None)
    with pytest.raises(DraftNotOpen):
        draft.discard(reason=None, traceparent=None)
    with pytest.raises(DraftNotOpen):
        draft.issue(invoice_id=uuid4(), number="INV/2026-27/0002", financial_year="2026-27", traceparent=None)


def test_discarding_twice_changes_nothing_and_a_discarded_draft_is_never_issued() -> None:
    draft = _draft()
    assert draft.discard(reason="order cancelled", traceparent=None) is True
    assert draft.discard(reason="again", traceparent=None) is False
    assert (draft.status, draft.discard_reason, draft.version) == (
        DraftStatus.DISCARDED,
        "order cancelled",
        2,
    )
    with pytest.raises(DraftNotOpen):
        draft.issue(invoice_id=uuid4(), number="X1", financial_year="2026-27", traceparent=None)


def test_draft_events_are_published_and_nothing_tax_related_acts_on_them() -> None:
    assert DRAFT_TYPES == [
        "ledgerflow.invoice_draft.draft_discarded",
        "ledgerflow.invoice_draft.draft_issued",
        "ledgerflow.invoice_draft.draft_updated",
        "ledgerflow.invoice_draft.drafted",
    ]
    for ce_type in DRAFT_TYPES:
        # The router hands a connector only the types it names: no IRP, eTIMS, GSTIN or return job.
        assert not [c.name for c in CONNECTORS if ce_type in c.route_event_types], ce_type
        # Neither the invoice register nor GSTR-1's outward supplies take a row from a draft.
        assert ce_type not in OUTWARD_CHANGES
        assert ce_type not in REGISTER_CHANGES
