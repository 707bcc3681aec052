"""The ``gst_outward_supplies`` projection: every Indian invoice, credit note and debit note by tenant,
seller GSTIN and return period, the documents GSTR-1 is built from (``engine.tax.gstr1``).

From ``ledger.invoice.v1``::

    issued (country IN)  -> the document's row (its lines in a jsonb column)
    cancelled            -> cancelled = true (no supply; still counted in the return's doc_issue)
    irn_generated        -> irn (the document was e-invoiced; GSTN auto-populates it from the IRP)

Kenyan sales are skipped. Each event changes one row to fixed values (``projections.batch``), so a
replay, a duplicate or a rebuild changes nothing. The GST return fields added to the issued event by
issue 11 (``reverse_charge``, ``ecommerce_gstin``, ``export``, ``note_reason``,
``original_invoice_date``, the lines' ``supply_category``) are read when present and take their
defaults on older events (issued v1-v4), which therefore read as regular taxable supplies.

``supplies_for`` (a list) and ``iter_supplies`` (streamed) are the read side for the return: one
period's documents of one seller GSTIN of one tenant, as :class:`engine.tax.gstr1.SupplyDocument`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import set_json_loads

from engine.tax.gstr1 import ExportDetails, SupplyDocument, SupplyLine, period_of
from projections.batch import RowChange, RowProjection
from projections.events import ProjectedEvent

NAME = "gst_outward_supplies"
TOPICS = ["ledger.invoice.v1"]
ZERO = "0.00"


def _ts(value: datetime | int) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromtimestamp(value / 1000, UTC)


def _day(value: date | str | None) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(value)


# A line's keys go in the order jsonb keeps an object's keys: shorter first, equal lengths bytewise
# (lengthCompareJsonbString, PostgreSQL src/backend/utils/adt/jsonb_util.c). jsonb_in sorts the keys
# of every object it parses, and its qsort (src/include/lib/sort_template.h) returns after one pass
# over input already in order. 5 lines' jsonb input: 8.2-8.8 against 9.8-10.6 us of server CPU
# (COPY of the bench topic's lines alone, three runs each; docs/performance.md gst-register). The
# stored jsonb is the same either way.
def _line(line: dict[str, Any]) -> dict[str, Any]:
    get = line.get  # bound once: twelve lookups per line, five lines per invoice
    # Read in the event's own field order (the issued schema's), written in jsonb's (above): reads in
    # jsonb's order were slower on cold records (change() alone on 20,000 decoded bench events,
    # alternated, best of 12: 13.7-14.5 us per invoice against the old order's 12.5-13.3; this
    # order 13.2-13.4).
    line_no = int(line["line_no"])
    description = get("description")
    hsn = get("hsn")
    quantity = get("quantity")
    unit = get("unit")
    taxable_value = get("taxable_value")
    gst_rate = get("gst_rate")
    cgst = get("cgst")
    sgst = get("sgst")
    igst = get("igst")
    cess = get("cess")
    # Issue 11 (C2); absent on older events, which were all taxable supplies.
    supply_category = get("supply_category") or "taxable"
    return {
        "hsn": hsn or "",
        "cess": str(cess or ZERO),
        "cgst": str(cgst or ZERO),
        "igst": str(igst or ZERO),
        "sgst": str(sgst or ZERO),
        "unit": unit,
        "line_no": line_no,
        "gst_rate": str(gst_rate or "0"),
        "quantity": str(quantity or "0"),
        "description": description or "",
        "taxable_value": str(taxable_value or ZERO),
        "supply_category": supply_category,
    }


def _export(value: dict[str, Any] | None) -> str | None:
    if not value:
        return None
    shipping_date = value.get("shipping_bill_date")
    return orjson.dumps(
        {  # in jsonb's key order too (see _line)
            "port_code": value.get("port_code"),
            "shipping_bill_date": None if shipping_date is None else str(shipping_date),
            "shipping_bill_number": value.get("shipping_bill_number"),
        }
    ).decode()


def _issued(r: dict[str, Any], ce_id: str) -> RowChange | None:
    if (r.get("country") or "IN") != "IN":
        return None  # a Kenyan sale: no GST return
    seller = r["seller"]
    buyer = r["buyer"]
    totals = r["totals"]
    day = _day(r["date"])
    assert day is not None
    return RowChange(
        r["invoice_id"],
        insert={
            "document_id": r["invoice_id"],
            "tenant_id": r["tenant_id"],
            "seller_gstin": seller["gstin"],
            "period": period_of(day),
            "document_date": day,
            "number": r["number"],
            "document_type": r.get("document_type") or "invoice",
            "supply_type": r["supply_type"],
            "buyer_gstin": buyer.get("gstin"),
            "buyer_name": buyer["name"],
            "place_of_supply": r["place_of_supply"],
            "intra_state": bool(r["intra_state"]),
            "reverse_charge": bool(r.get("reverse_charge")),
            "ecommerce_gstin": r.get("ecommerce_gstin"),
            "export": _export(r.get("export")),
            "original_invoice_id": r.get("original_invoice_id"),
            "original_number": r.get("original_number"),
            "original_invoice_date": _day(r.get("original_invoice_date")),
            "note_reason": r.get("note_reason"),
            "taxable": totals["taxable"],
            "igst": totals.get("igst") or ZERO,
            "cgst": totals.get("cgst") or ZERO,
            "sgst": totals.get("sgst") or ZERO,
            "cess": totals.get("cess") or ZERO,
            "total": totals["total"],
            "lines": orjson.dumps([_line(x) for x in r["lines"]]).decode(),
            "cancelled": False,
            "irn": None,
            "issued_at": _ts(r["occurred_at"]),
            "last_event_id": ce_id,
        },
    )


def _cancelled(r: dict[str, Any], ce_id: str) -> RowChange:
    # On a Kenyan sale's id this finds no row and changes nothing.
    return RowChange(r["invoice_id"], set={"cancelled": True, "last_event_id": ce_id})


def _irn_generated(r: dict[str, Any], ce_id: str) -> RowChange:
    return RowChange(r["invoice_id"], set={"irn": r["irn"], "last_event_id": ce_id})


CHANGES: dict[str, Callable[[dict[str, Any], str], RowChange | None]] = {
    "ledgerflow.invoice.issued": _issued,
    "ledgerflow.invoice.cancelled": _cancelled,
    "ledgerflow.invoice.irn_generated": _irn_generated,
}


class GstOutwardSupplies(RowProjection):
    """Projection writer, driven by the runner, rebuild, replay and redrive like the register."""

    name = NAME
    topics = TOPICS
    event_types = frozenset(CHANGES)  # the runner leaves other types undecoded
    key = "document_id"

    def change(self, event: ProjectedEvent) -> RowChange | None:
        build = CHANGES.get(event.ce_type)
        return None if build is None else build(event.record, event.ce_id)


# ---------------------------------------------------------------------------------------------
# Read side (the return's builder)

_SELECT = """
SELECT s.*, o.total AS original_value
FROM {table} AS s
LEFT JOIN {table} AS o ON o.document_id = s.original_invoice_id AND o.tenant_id = s.tenant_id
WHERE s.tenant_id = %s AND s.seller_gstin = %s AND s.period = %s
ORDER BY s.document_date, s.number, s.document_id
"""


_SHARED_LIMIT = 4096
"""Distinct values ``_Shared`` keeps per kind. Unbounded, it held every distinct amount of the month
(235,866 of 345,390 in the bench's 100,000 documents: 45-50 MB until the stream ended; docs/
performance.md bench-gstr1); the builder no longer keeps documents (gstr1-memory), so sharing only
saves building a Decimal again, and the values that repeat (0.00, rates, quantities, HSN codes,
units) come early in a month."""


class _Shared:
    """One object per distinct value while reading a period, up to ``_SHARED_LIMIT`` of each kind:
    most amounts of a line repeat across the month (0.00 taxes, rates, small quantities), as do HSN
    codes, units and descriptions. Both are immutable, so sharing changes no value."""

    def __init__(self) -> None:
        self.numbers: dict[str, Decimal] = {}
        self.texts: dict[str, str] = {}

    def number(self, text: str) -> Decimal:
        found = self.numbers.get(text)
        if found is None:
            found = Decimal(text)
            if len(self.numbers) < _SHARED_LIMIT:
                self.numbers[text] = found
        return found

    def text(self, value: str | None) -> str | None:
        if value is None:
            return None
        found = self.texts.get(value)
        if found is None:
            found = value
            if len(self.texts) < _SHARED_LIMIT:
                self.texts[value] = value
        return found


def _document(row: dict[str, Any], shared: _Shared | None = None) -> SupplyDocument:
    export = row["export"]
    shared = shared or _Shared()
    number, text = shared.number, shared.text
    lines = tuple(
        SupplyLine(
            line_no=int(x["line_no"]),
            hsn=text(x["hsn"]) or "",
            description=text(x["description"]) or "",
            unit=text(x["unit"]),
            quantity=number(x["quantity"]),
            taxable_value=number(x["taxable_value"]),
            gst_rate=number(x["gst_rate"]),
            igst=number(x["igst"]),
            cgst=number(x["cgst"]),
            sgst=number(x["sgst"]),
            cess=number(x["cess"]),
            supply_category=text(x["supply_category"]) or "taxable",
        )
        for x in row["lines"]
    )
    return SupplyDocument(
        document_id=str(row["document_id"]),
        number=row["number"],
        document_type=text(row["document_type"]) or "invoice",
        date=row["document_date"],
        supply_type=text(row["supply_type"]) or "B2B",
        seller_gstin=text(row["seller_gstin"]) or "",
        buyer_gstin=text(row["buyer_gstin"]),
        buyer_name=text(row["buyer_name"]) or "",
        place_of_supply=text(row["place_of_supply"]) or "",
        intra_state=row["intra_state"],
        total=row["total"],
        lines=lines,
        reverse_charge=row["reverse_charge"],
        ecommerce_gstin=row["ecommerce_gstin"],
        export=(
            ExportDetails(
                export.get("shipping_bill_number"),
                _day(export.get("shipping_bill_date")),
                export.get("port_code"),
            )
            if export
            else None
        ),
        cancelled=row["cancelled"],
        e_invoiced=row["irn"] is not None,
        original_number=row["original_number"],
        original_date=row["original_invoice_date"],
        original_value=row["original_value"],
        note_reason=row["note_reason"],
    )


def iter_supplies(
    conn: psycopg.Connection, tenant_id: UUID, gstin: str, period: str, *, table: str = NAME
) -> Iterator[SupplyDocument]:
    """Every document (cancelled ones too) of ``tenant_id``'s seller ``gstin`` dated in ``period``
    (MMYYYY), ordered by date and number, read from a server-side cursor in chunks: ``build_gstr1``
    takes this iterator and never holds the whole month. A note's ``original_value`` is its original
    invoice's value when the original is in this projection (of the same tenant). Keeps a transaction
    open on ``conn`` until exhausted or closed."""
    query = _SELECT.format(table=psycopg.sql.Identifier(table).as_string(conn))
    shared = _Shared()
    with (
        conn.transaction(),
        conn.cursor(name="gst_outward_supplies_read", row_factory=dict_row) as cur,
    ):
        # jsonb parsed with orjson: stdlib json was a third of the read (bench/gstr1.py).
        set_json_loads(orjson.loads, cur)
        cur.itersize = 2000
        cur.execute(query, (tenant_id, gstin, period))
        for row in cur:
            yield _document(row, shared)


def supplies_for(
    conn: psycopg.Connection, tenant_id: UUID, gstin: str, period: str, *, table: str = NAME
) -> list[SupplyDocument]:
    """``iter_supplies`` as a list (C5)."""
    return list(iter_supplies(conn, tenant_id, gstin, period, table=table))
