"""Kenyan invoices and credit notes: the checks and the (unsaved) aggregates, plus the two things they
read from PostgreSQL: the tenant's etims integration (environment and branch) and the synced VAT rates.

The eTIMS connector (connectors/etims) reports them to KRA and records its results through
``LedgerService.record_etims_*``; nothing here talks to KRA.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import psycopg

from engine import integrations
from engine.commands import IssueCreditNote, IssueKenyanInvoice
from engine.domain.invoice import DocumentType, Invoice
from engine.domain.tenant import Tenant
from engine.security.secrets import KeyRing
from engine.tax.errors import TaxRuleError, Violation
from engine.tax.kenya_vat import SaleLine, SaleTax, compute_sale_tax
from engine.tax.kra_pin import validate_kra_pin

ETIMS_PROVIDER = "etims"
# KRA dates sales in Nairobi time (EAT, UTC+3, no daylight saving): reference notes, saveTrnsSalesOsdc.
NAIROBI = timezone(timedelta(hours=3), "EAT")


def today_in_kenya(now: datetime | None = None) -> date:
    return (now or datetime.now(UTC)).astimezone(NAIROBI).date()


def kenya_financial_year(day: date) -> str:
    """Kenya's fiscal year (1 July - 30 June, Public Finance Management Act 2012), e.g. "2026-27".
    It only partitions invoice numbers (an invoice's id is derived from it); KRA's invcNo is ours."""
    start = day.year if day.month >= 7 else day.year - 1
    return f"{start}-{(start + 1) % 100:02d}"


@dataclass(frozen=True)
class EtimsPlace:
    """Where a tenant's sales go: the etims integration's environment and its first branch."""

    environment: str
    bhf_id: str


def etims_place(conn: psycopg.Connection, ring: KeyRing, tenant_id: Any) -> EtimsPlace | None:
    """The tenant's etims integration as invoices need it, or None when it has none. The bhf_id is a
    (non-secret) credential of the integration, sealed with the others."""
    loaded = integrations.load(conn, ring, tenant_id, ETIMS_PROVIDER)
    if loaded is None:
        return None
    bhf_id = str(loaded.credentials.get("bhf_id") or "")
    return EtimsPlace(environment=str(loaded.environment), bhf_id=bhf_id)


def synced_rates(conn: psycopg.Connection, environment: str) -> dict[str, Decimal]:
    """Class-04 rates synced from KRA for ``environment`` (etims-devices writes them); types not
    synced yet fall back to kenya_vat.DEFAULT_RATES where they are used."""
    rows = conn.execute(
        "SELECT tax_type, rate FROM etims_tax_rates WHERE environment = %s", (environment,)
    ).fetchall()
    found: dict[str, Decimal] = {}
    for row in rows:
        tax_type, rate = (row["tax_type"], row["rate"]) if isinstance(row, dict) else (row[0], row[1])
        found[str(tax_type)] = Decimal(rate)
    return found


def _date_violations(day: date, today: date, max_future_days: int) -> list[Violation]:
    latest = today + timedelta(days=max_future_days)
    if day > latest:
        return [
            Violation(
                "date",
                "date_in_future",
                f"date: {day.isoformat()} is in the future; the latest accepted date is "
                f"{latest.isoformat()} (today in Kenya plus {max_future_days} day(s)).",
                {"latest": latest.isoformat(), "today": today.isoformat()},
            )
        ]
    return []


def _lines_record(tax: SaleTax) -> list[dict[str, Any]]:
    return [
        {
            "line_no": x.line_no,
            "item_code": x.item_code,
            "description": x.description,
            "quantity": x.quantity,
            "unit_price": x.unit_price,
            "discount": x.discount,
            "tax_type": x.tax_type,
            "supply_amount": x.supply_amount,
            "taxable_amount": x.taxable_amount,
            "tax_rate": x.tax_rate,
            "tax_amount": x.tax_amount,
            "total": x.total,
            "original_line_no": None,
        }
        for x in tax.lines
    ]


def _breakdown_record(tax: SaleTax) -> list[dict[str, Any]]:
    return [
        {"tax_type": b.tax_type, "rate": b.rate, "taxable": b.taxable, "tax": b.tax} for b in tax.breakdown
    ]


def _seller(tenant: Tenant) -> dict[str, Any]:
    return {
        "gstin": None,
        "legal_name": tenant.legal_name,
        "state": None,
        "trade_name": tenant.name,
        "address": tenant.address,
        "kra_pin": tenant.kra_pin,
    }


def build_kenyan_invoice(
    tenant: Tenant,
    command: IssueKenyanInvoice,
    *,
    place: EtimsPlace,
    rates: Mapping[str, Decimal],
    idempotency_key: str | None,
    request_hash: str,
    source: str,
    traceparent: str | None,
    today: date,
    max_future_days: int = 1,
) -> Invoice:
    """Check a Kenyan sale and build its (unsaved) invoice; ValidationFailed-ready TaxRuleError."""
    violations = _date_violations(command.date, today, max_future_days)
    buyer_pin = None
    if command.buyer.kra_pin:
        try:
            buyer_pin = validate_kra_pin(command.buyer.kra_pin, "buyer.kra_pin")
        except TaxRuleError as exc:
            violations.extend(exc.violations)
    tax: SaleTax | None = None
    try:
        tax = compute_sale_tax(
            [
                SaleLine(
                    item_code=line.item_code,
                    description=line.description,
                    quantity=line.quantity,
                    unit_price=line.unit_price,
                    tax_type=line.tax_type,
                    discount=line.discount,
                )
                for line in command.lines
            ],
            rates,
            prices_include_tax=command.prices_include_tax,
        )
    except TaxRuleError as exc:
        violations.extend(exc.violations)
    if violations or tax is None:
        raise TaxRuleError(violations)
    return Invoice(
        country="KE",
        document_type=DocumentType.INVOICE,
        environment=place.environment,
        branch_id=command.branch_id or place.bhf_id,
        payment_type=command.payment_type,
        tax_breakdown=_breakdown_record(tax),
        prices_include_tax=command.prices_include_tax,
        tenant_id=tenant.id,
        number=command.number,
        financial_year=kenya_financial_year(command.date),
        invoice_date=command.date,
        currency="KES",
        # KRA's custTin decides B2B: a sale to a PIN-registered buyer lets the buyer claim the VAT.
        supply_type="B2B" if buyer_pin else "B2C",
        seller=_seller(tenant),
        buyer={
            "name": command.buyer.name,
            "gstin": None,
            "state": None,
            "address": None,
            "kra_pin": buyer_pin,
            "phone": command.buyer.phone,
        },
        place_of_supply=None,
        intra_state=None,
        lines=_lines_record(tax),
        totals={"taxable": tax.taxable, "vat": tax.vat, "total": tax.total},
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        source=source,
        traceparent=traceparent,
    )


@dataclass(frozen=True)
class CreditNote:
    note: Invoice
    credited: list[dict[str, Any]]  # {line_no, quantity, amount} of the original


def build_credit_note(
    tenant: Tenant,
    original: Invoice,
    command: IssueCreditNote,
    *,
    environment: str,
    request_hash: str,
    traceparent: str | None,
    today: date,
    max_future_days: int = 1,
) -> CreditNote:
    """A credit note for ``original``, refused (TaxRuleError, code ``credit_note_exceeds_original``
    on the offending line) when a line's quantity or amount exceeds what earlier credit notes left.

    The credit reverses the VAT the original charged: each line keeps the original's tax type and
    rate (a rate synced since does not apply to a supply already made), and its unit price unless
    one is given. KRA does not check any of this (reference notes, "Credit notes"): we must."""
    day = command.date or today
    violations = _date_violations(day, today, max_future_days)
    if day < original.invoice_date:
        violations.append(
            Violation(
                "date",
                "before_original",
                "date: a credit note cannot be dated before its invoice "
                f"({original.invoice_date.isoformat()})",
            )
        )
    by_no = {int(line["line_no"]): line for line in original.lines}
    seen: set[int] = set()
    priced: list[tuple[int, Any, SaleLine, Decimal]] = []
    for index, wanted in enumerate(command.lines):
        path = f"lines[{index}]"
        source_line = by_no.get(wanted.line_no)
        if source_line is None:
            violations.append(
                Violation(
                    f"{path}.line_no",
                    "unknown_line",
                    f"{path}.line_no: invoice {original.number} has no line {wanted.line_no}",
                    {"lines": sorted(by_no)},
                )
            )
            continue
        if wanted.line_no in seen:
            violations.append(
                Violation(
                    f"{path}.line_no",
                    "duplicate_line",
                    f"{path}.line_no: line {wanted.line_no} is credited twice in one credit note",
                )
            )
            continue
        seen.add(wanted.line_no)
        sale_line = SaleLine(
            item_code=str(source_line["item_code"]),
            description=str(source_line["description"]),
            quantity=wanted.quantity,
            unit_price=wanted.unit_price
            if wanted.unit_price is not None
            else Decimal(source_line["unit_price"]),
            tax_type=str(source_line["tax_type"]),
            discount=wanted.discount,
        )
        priced.append((index, wanted, sale_line, Decimal(source_line["tax_rate"])))
    if violations:
        raise TaxRuleError(violations)
    # The original's own rates, per type (all its lines of one type share one rate).
    rates = {sale_line.tax_type: rate for _, _, sale_line, rate in priced}
    tax = compute_sale_tax([p[2] for p in priced], rates, prices_include_tax=original.prices_include_tax)
    credited: list[dict[str, Any]] = []
    for (index, wanted, _, _), taxed in zip(priced, tax.lines, strict=True):
        left_quantity, left_amount = original.remaining(wanted.line_no)
        path = f"lines[{index}]"
        if taxed.quantity > left_quantity or taxed.total > left_amount:
            violations.append(
                Violation(
                    path,
                    "credit_note_exceeds_original",
                    f"{path}: line {wanted.line_no} of invoice {original.number} has {_plain(left_quantity)} "
                    f"left to credit, worth {left_amount:.2f}; this credit note asks for "
                    f"{_plain(taxed.quantity)} worth {taxed.total:.2f}",
                    {
                        "line_no": wanted.line_no,
                        "remaining_quantity": _plain(left_quantity),
                        "remaining_amount": f"{left_amount:.2f}",
                        "quantity": _plain(taxed.quantity),
                        "amount": f"{taxed.total:.2f}",
                    },
                )
            )
        credited.append({"line_no": wanted.line_no, "quantity": taxed.quantity, "amount": taxed.total})
    if violations:
        raise TaxRuleError(violations)
    lines = _lines_record(tax)
    for line, (_, wanted, _, _) in zip(lines, priced, strict=True):
        line["original_line_no"] = wanted.line_no
    note = Invoice(
        country="KE",
        document_type=DocumentType.CREDIT_NOTE,
        original_invoice_id=str(original.id),
        original_number=original.number,
        refund_reason_code=command.refund_reason_code,
        environment=environment,
        # Credit notes must come from the solution (and branch) that issued the original.
        branch_id=original.branch_id,
        payment_type=command.payment_type or original.payment_type,
        tax_breakdown=_breakdown_record(tax),
        prices_include_tax=original.prices_include_tax,
        tenant_id=tenant.id,
        number=command.number,
        financial_year=kenya_financial_year(day),
        invoice_date=day,
        currency="KES",
        supply_type=original.supply_type,
        seller=_seller(tenant),
        buyer=dict(original.buyer),
        place_of_supply=None,
        intra_state=None,
        lines=lines,
        totals={"taxable": tax.taxable, "vat": tax.vat, "total": tax.total},
        idempotency_key=None,
        request_hash=request_hash,
        source="api",
        traceparent=traceparent,
    )
    return CreditNote(note=note, credited=credited)


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f")


def codes_of(violations: Sequence[Violation]) -> set[str]:
    return {v.code for v in violations}
