"""How a stored domain event becomes a Kafka message (pure: no I/O).

CloudEvents Kafka protocol binding, binary mode: the event's attributes travel as ``ce_*`` headers
and the value is the Avro single-object encoding of the event record. The event id is derived from
(aggregate id, version), so re-publishing after a crash yields the same ``ce_id`` and consumers can
dedupe on it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import orjson

from engine import expense_records, fee_records, payout_records, reconciliation_records
from engine.domain.alert import Alert
from engine.domain.invoice import Invoice
from engine.domain.invoice_draft import InvoiceDraft
from engine.domain.payment import Payment
from engine.domain.product import Product
from engine.domain.subscription import Subscription
from engine.domain.tax_return import TaxReturn
from engine.domain.tds_deduction import TdsDeduction
from engine.domain.tenant import Tenant
from engine.errors import IntegrityFault
from schemas import registry

EVENT_ID_NAMESPACE = uuid5(NAMESPACE_URL, "https://ledgerflow.dev/ns/event")

# Logical topic per aggregate type; the configured prefix is added by the relay.
AGGREGATE_TOPICS = {
    "invoice": "ledger.invoice.v1",
    "tenant": "ledger.tenant.v1",
    "alert": "ledger.alert.v1",
    "payment": "ledger.payment.v1",
    "subscription": "ledger.subscription.v1",
    "tax_return": "ledger.tax_return.v1",
    **payout_records.TOPICS,
    "tds_deduction": "ledger.tds.v1",
    **reconciliation_records.TOPICS,
    # Drafts ride on the invoice topic (issue 13): their own ce_types, keyed by the draft id.
    "invoice_draft": "ledger.invoice.v1",
    "product": "ledger.product.v1",
    **expense_records.TOPICS,
    **fee_records.TOPICS,
}
# Topics keyed by tenant id rather than aggregate id: a tenant's alerts stay in order in one partition,
# and a consumer can compact or filter them per tenant (issue 10: "key = tenant id").
TENANT_KEYED_AGGREGATES = frozenset({"alert"})


def event_id(aggregate_id: UUID, version: int) -> UUID:
    """Stable across re-publishing: the same stored event always has the same id."""
    return uuid5(EVENT_ID_NAMESPACE, f"{aggregate_id}:{version}")


_NAMESPACE_BYTES = EVENT_ID_NAMESPACE.bytes


def event_id_text(aggregate_id: str, version: int, namespace: bytes = _NAMESPACE_BYTES) -> str:
    """``str(event_id(UUID(aggregate_id), version))`` for an aggregate id in its canonical text form,
    without building two UUID objects (RFC 4122 name-based version 5: SHA-1 of namespace and name,
    then the version and variant bits), the relay's hot path."""
    digest = bytearray(hashlib.sha1(namespace + f"{aggregate_id}:{version}".encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_traceparent() -> str:
    """A W3C trace context for a request that arrived without one."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def ce_type_of(event: Any) -> tuple[str, str]:
    """(aggregate name, CloudEvents type) of a domain event, e.g. ("invoice", "ledgerflow.invoice.issued")."""
    aggregate = _snake(type(event).__qualname__.split(".")[0])
    return aggregate, f"ledgerflow.{aggregate}.{_snake(type(event).__name__)}"


@dataclass(frozen=True)
class OutboundEvent:
    """Everything the relay needs to publish one event, before encoding."""

    topic: str
    key: str
    ce_type: str
    ce_id: str
    tenant_id: str
    subject: str
    time: datetime
    traceparent: str
    record: dict[str, Any]
    # False when the event stored no trace context and ``traceparent`` was made up for it here.
    stored_trace: bool = True


def _millis(moment: datetime | str) -> int:
    moment = _unwrap(moment)
    moment = moment if isinstance(moment, datetime) else datetime.fromisoformat(moment)
    return int(moment.astimezone(UTC).timestamp() * 1000)


# The formatters below take Decimals (from domain events) or decimal strings (from the relay's
# fast path over stored JSON). Plain decimal strings already in the wanted form are returned as
# they are: building a Decimal per amount was a measurable share of the relay's time per event.
def _is_plain_decimal(text: str) -> bool:
    """Digits with at most one point and an optional sign: no exponent, no spaces, no NaN."""
    whole, _, fraction = text.lstrip("-").partition(".")
    return whole.isdigit() and (not fraction or fraction.isdigit())


def _money(value: Decimal | str | None) -> str | None:
    if type(value) is dict and "_type_" in value:
        value = value["_data_"]
    if value is None:
        return None
    # str(Decimal) of a 2-place amount, e.g. "90.00", is already the wire form ("E" would mean
    # exponent notation, which needs the Decimal round trip).
    if type(value) is str:
        point = value.find(".")
        if 0 < point == len(value) - 3 and "E" not in value:
            return value
        # "0", "18", "12.5" (a Decimal's str for whole or one-place amounts): pad instead of a
        # Decimal round trip, when the text is exactly what Decimal would print.
        if _is_canonical_decimal(value):
            if point < 0:
                return value + ".00"
            if point == len(value) - 2:
                return value + "0"
    return f"{Decimal(value):.2f}"


def _is_canonical_decimal(text: str) -> bool:
    """ASCII digits, an optional leading minus, at most one point, and no leading zero before it."""
    whole, _, fraction = text.removeprefix("-").partition(".")
    return (
        text.isascii()
        and whole.isdigit()
        and (whole == "0" or whole[0] != "0")
        and (not fraction or fraction.isdigit())
    )


def _number(value: Decimal | str | None) -> str | None:
    """Quantities and rates: exact, without trailing zeros beyond what was given."""
    if type(value) is dict and "_type_" in value:
        value = value["_data_"]
    if value is None:
        return None
    if type(value) is str and _is_plain_decimal(value):
        return value.rstrip("0").rstrip(".") if "." in value else value
    return format(Decimal(value).normalize(), "f")


def _price(value: Decimal | str) -> str:
    """Unit prices: at least two decimals like money, three when the IRP's precision is used."""
    if type(value) is dict and "_type_" in value:
        value = value["_data_"]
    if type(value) is str and _is_plain_decimal(value):
        # Exactly two decimals and no leading zero: already what the formatting below would give.
        whole, _, fraction = value.lstrip("-").partition(".")
        if len(fraction) == 2 and (whole == "0" or whole[0] != "0"):
            return value
    amount = Decimal(value)
    return f"{amount:.3f}" if amount != amount.quantize(Decimal("0.01")) else f"{amount:.2f}"


def _date(value: date | str) -> str:
    return value.isoformat() if isinstance(value, date) else str(_unwrap(value))


def _invoice_issued(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    invoice_id = event.originator_id if type(event) is StoredEventView else UUID(str(event.originator_id))
    return {**base, **invoice_document(event, invoice_id)}


def seller_address(address: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The seller address as issued v3 carries it, or None when the tenant's is incomplete (an
    address without line1 and city cannot be printed; the e-invoice schema requires both)."""
    if not address or not address.get("line1") or not address.get("city"):
        return None
    pincode = address.get("pincode")
    return {
        "line1": str(address["line1"]),
        "line2": address.get("line2") or None,
        "city": str(address["city"]),
        "pincode": str(pincode) if pincode else None,
    }


def invoice_document(event: Any, invoice_id: UUID | str) -> dict[str, Any]:
    """An invoice's issued state as topics and the API show it; ``event`` is the Issued event or the
    Invoice aggregate (both carry the same attribute names). Issued v4: the GST fields are null on
    a Kenyan invoice, the Kenyan ones null (and ``tax_breakdown`` empty) on an Indian one."""
    buyer = dict(event.buyer)
    # Issued events stored before v4 have none of the Kenyan attributes: Indian invoices.
    country = getattr(event, "country", None) or "IN"
    kenyan = country == "KE"
    intra_state = event.intra_state
    return {
        "invoice_id": str(invoice_id),
        "number": event.number,
        "financial_year": event.financial_year,
        "date": _date(event.invoice_date),
        "currency": event.currency,
        "supply_type": event.supply_type,
        "seller": {
            "gstin": event.seller.get("gstin"),
            "legal_name": event.seller["legal_name"],
            "state": event.seller.get("state"),
            # Issued events stored before v3 have neither: null, as the schema's defaults say.
            "trade_name": event.seller.get("trade_name"),
            "address": seller_address(event.seller.get("address")),
            "kra_pin": event.seller.get("kra_pin"),
        },
        "buyer": {
            "name": buyer["name"],
            "gstin": buyer.get("gstin"),
            "state": buyer.get("state"),
            "address": buyer.get("address"),
            "kra_pin": buyer.get("kra_pin"),
            "phone": buyer.get("phone"),
        },
        "place_of_supply": event.place_of_supply,
        "intra_state": None if intra_state is None else bool(intra_state),
        "lines": [_kenyan_line(line) if kenyan else _gst_line(line) for line in event.lines],
        "totals": {**_NO_TOTALS, **{name: _money(value) for name, value in event.totals.items()}},
        "idempotency_key": event.idempotency_key,
        "source": event.source,
        "country": country,
        "document_type": getattr(event, "document_type", None) or "invoice",
        "original_invoice_id": getattr(event, "original_invoice_id", None),
        "original_number": getattr(event, "original_number", None),
        "refund_reason_code": getattr(event, "refund_reason_code", None),
        "environment": getattr(event, "environment", None),
        "branch_id": getattr(event, "branch_id", None),
        "payment_type": getattr(event, "payment_type", None),
        "tax_breakdown": [
            {
                "tax_type": item["tax_type"],
                "rate": _number(item["rate"]),
                "taxable": _money(item["taxable"]),
                "tax": _money(item["tax"]),
            }
            for item in getattr(event, "tax_breakdown", None) or ()
        ],
        # Issued v5 (issue 11): what GSTR-1 needs beyond the tax. Events stored before have none.
        "reverse_charge": bool(getattr(event, "reverse_charge", False)),
        "ecommerce_gstin": getattr(event, "ecommerce_gstin", None),
        "export": _export(getattr(event, "export", None)),
        "note_reason": getattr(event, "note_reason", None),
        "original_invoice_date": _optional_date(getattr(event, "original_invoice_date", None)),
    }


def _export(export: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not export:
        return None
    return {name: export.get(name) for name in EXPORT_FIELDS}


EXPORT_FIELDS = ("shipping_bill_number", "shipping_bill_date", "port_code")


def _optional_date(value: date | str | None) -> str | None:
    return None if value is None else _date(value)


# Every field of the v4 line and totals, the other country's as null: a record that names each
# field is written by the compiled Avro writer; one relying on the schema's defaults falls back to
# fastavro, several times slower (schemas/codec.py).
_NO_TOTALS: dict[str, None] = dict.fromkeys(("cgst", "sgst", "igst", "cess", "vat"))
# The line fields of one country only (the API leaves the other country's out).
KENYAN_LINE_FIELDS = (
    "item_code",
    "tax_type",
    "supply_amount",
    "taxable_amount",
    "tax_rate",
    "tax_amount",
)
GST_LINE_FIELDS = (
    "hsn",
    "unit",
    "taxable_value",
    "gst_rate",
    "rate_source",
    "master_rate",
    "override_reason",
    "cgst",
    "sgst",
    "igst",
    "cess_rate",
    "cess",
    "supply_category",
)
# Both countries' notes name the original line (original_line_no: issued v4 for Kenya, v5 for India).
_NO_KENYAN_LINE: dict[str, None] = dict.fromkeys(KENYAN_LINE_FIELDS)
_NO_GST_LINE: dict[str, None] = dict.fromkeys(GST_LINE_FIELDS)


def _gst_line(line: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **_NO_KENYAN_LINE,
        "line_no": int(line["line_no"]),
        "description": line["description"],
        "hsn": line["hsn"],
        "quantity": _number(line["quantity"]),
        "unit": line["unit"],
        "unit_price": _price(line["unit_price"]),
        "discount": _money(line["discount"]),
        "taxable_value": _money(line["taxable_value"]),
        "gst_rate": _number(line["gst_rate"]),
        "rate_source": line["rate_source"],
        "master_rate": _number(line.get("master_rate")),
        "override_reason": line.get("override_reason"),
        "cgst": _money(line["cgst"]),
        "sgst": _money(line["sgst"]),
        "igst": _money(line["igst"]),
        "cess_rate": _number(line["cess_rate"]),
        "cess": _money(line["cess"]),
        "total": _money(line["total"]),
        # Issued v5; Indian lines stored before are taxable. A note's line names the line it adjusts.
        "supply_category": line.get("supply_category") or "taxable",
        "original_line_no": _int_or_none(line.get("original_line_no")),
    }


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _kenyan_line(line: Mapping[str, Any]) -> dict[str, Any]:
    original = line.get("original_line_no")
    return {
        **_NO_GST_LINE,
        "line_no": int(line["line_no"]),
        "description": line["description"],
        "quantity": _number(line["quantity"]),
        "unit_price": _price(line["unit_price"]),
        "discount": _money(line["discount"]),
        "total": _money(line["total"]),
        "item_code": line["item_code"],
        "tax_type": line["tax_type"],
        "supply_amount": _money(line["supply_amount"]),
        "taxable_amount": _money(line["taxable_amount"]),
        "tax_rate": _number(line["tax_rate"]),
        "tax_amount": _money(line["tax_amount"]),
        "original_line_no": None if original is None else int(original),
        "supply_category": "taxable",
    }


def _invoice_cancelled(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    return {**base, "invoice_id": str(event.originator_id), "reason": event.reason, "remark": event.remark}


def _invoice_result(event: Any, base: dict[str, Any], *fields: str) -> dict[str, Any]:
    """IRN results: the envelope, the invoice id, the job id and the named fields as they are."""
    return {
        **base,
        "invoice_id": str(event.originator_id),
        "job_id": event.job_id,
        **{name: getattr(event, name) for name in fields},
    }


def _invoice_credited(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    """Credited and CreditReleased: the same shape (the note and its lines, per original line)."""
    return {
        **base,
        "invoice_id": str(event.originator_id),
        "credit_note_id": event.credit_note_id,
        "credit_note_number": event.credit_note_number,
        "lines": [
            {
                "line_no": int(line["line_no"]),
                "quantity": _number(line["quantity"]),
                "amount": _money(line["amount"]),
            }
            for line in event.lines
        ],
    }


# The eTIMS results name the environment and branch they belong to (the integration's at the time).
_ETIMS_PLACE = ("environment", "branch_id")
ETIMS_SIGNED_FIELDS = (
    "invc_no",
    "receipt_no",
    "total_receipt_no",
    "internal_data",
    "receipt_signature",
    "sdc_id",
    "mrc_no",
    "sdc_datetime",
    "qr_url",
    "device_type",
    "adopted_existing",
)


def _etims_voided(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    fields = (*_ETIMS_PLACE, "invc_no", "reason", "voided_by")
    return {**base, "invoice_id": str(event.originator_id), **{name: getattr(event, name) for name in fields}}


def _tenant_registered(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    return {
        **base,
        "name": event.name,
        "legal_name": event.legal_name,
        "country": event.country,
        "gstin": event.gstin,
        "state": event.state,
        "einvoicing_enabled": bool(event.einvoicing_enabled),
        "address": getattr(event, "address", None),
        "kra_pin": getattr(event, "kra_pin", None),
    }


def _tenant_api_key_rotated(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    until = event.previous_key_valid_until
    return {
        **base,
        "key_id": event.key_id,
        "previous_key_id": event.previous_key_id,
        "previous_key_valid_until": _millis(until) if until else None,
        "name": getattr(event, "name", None),
        "changed_by": getattr(event, "changed_by", None),
    }


def _json_text(value: Any) -> str | None:
    # Sorted keys: the same change is the same text, whichever path (domain or stored) built it.
    return None if value is None else orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _tenant_profile_updated(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    return {
        **base,
        "changes": [
            {"field": field, "old": _json_text(change["old"]), "new": _json_text(change["new"])}
            for field, change in sorted(event.changes.items())
        ],
        "changed_by": event.changed_by,
    }


def _tenant_user_changed(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    return {
        **base,
        "user_id": event.user_id,
        "changes": [
            {"field": field, "old": _json_text(change["old"]), "new": _json_text(change["new"])}
            for field, change in sorted(event.changes.items())
        ],
        "changed_by": event.changed_by,
    }


def _tenant_read_grant(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    return {
        **base,
        "user_id": event.user_id,
        "home_tenant_id": event.home_tenant_id,
        "changed_by": event.changed_by,
    }


def _tenant_integration_settings_changed(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    return {
        **base,
        "provider": event.provider,
        "enabled": bool(event.enabled),
        "environment": event.environment,
        "base_url": event.base_url,
        "credentials_changed": list(event.credentials_changed),
        "changed_by": event.changed_by,
    }


def _alert_raised(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    return {
        **base,
        "alert_id": str(event.originator_id),
        "severity": event.severity,
        "cause": event.cause,
        "subject": event.subject,
        "message": event.message,
        "details": {str(k): str(v) for k, v in dict(event.details).items()},
        "raised_at": _millis(event.raised_at),
    }


def _payment_recorded(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    return {
        **base,
        "payment_id": str(event.originator_id),
        "provider": event.provider,
        "provider_payment_id": event.provider_payment_id,
        "amount": _money(event.amount),
        "currency": event.currency,
        "method": event.method,
        "customer": {str(k): str(v) for k, v in dict(event.customer).items()},
        "reference": {str(k): str(v) for k, v in dict(event.reference).items()},
        "paid_at": _millis(event.paid_at),
        "provider_event_id": event.provider_event_id,
    }


def _payment_status_changed(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    return {
        **base,
        "payment_id": str(event.originator_id),
        "status": event.status,
        "provider_event_id": event.provider_event_id,
        "reported_at": _millis(event.occurred_at),
        "error_code": event.error_code,
        "error_description": event.error_description,
    }


def _payment_refunded(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    return {
        **base,
        "payment_id": str(event.originator_id),
        "refund_id": event.refund_id,
        "amount": _money(event.amount),
        "provider_event_id": event.provider_event_id,
        "refunded_at": _millis(event.occurred_at),
    }


def _subscription_requested(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    return {
        **base,
        "subscription_id": str(event.originator_id),
        "provider": event.provider,
        "plan_id": event.plan_id,
        "customer_id": event.customer_id,
        "total_count": int(event.total_count),
    }


def _subscription_provider_linked(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    return {
        **base,
        "subscription_id": str(event.originator_id),
        "provider_subscription_id": event.provider_subscription_id,
        "status": event.status,
        "short_url": event.short_url,
        "linked_at": _millis(event.linked_at),
    }


def _subscription_status_changed(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    return {
        **base,
        "subscription_id": str(event.originator_id),
        "status": event.status,
        "provider_event": event.provider_event,
        "provider_event_id": event.provider_event_id,
        "reported_at": _millis(event.reported_at),
        "paid_count": int(event.paid_count),
    }


def _tax_return_base(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    return {**base, "return_id": str(event.originator_id)}


def _tax_return_generated(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    diff = event.diff
    return {
        **_tax_return_base(event, base),
        "form": event.form,
        "gstin": event.gstin,
        "period": event.period,
        "version": int(event.version),
        "content_hash": event.content_hash,
        "parts": [str(p) for p in event.parts],
        "summary": _json_text(event.summary),
        "diff": None if diff is None else _json_text(diff),
        "previous_id": event.previous_id,
        "generated_by": event.generated_by,
        "generated_at": _millis(event.generated_at),
    }


def _tax_return_fields(
    *fields: str, times: tuple[str, ...] = ()
) -> Callable[[Any, dict[str, Any]], dict[str, Any]]:
    def build(event: Any, base: dict[str, Any]) -> dict[str, Any]:
        record = _tax_return_base(event, base)
        for name in fields:
            record[name] = getattr(event, name)
        for name in times:
            record[name] = _millis(getattr(event, name))
        return record

    return build


def _tds_deduction_recorded(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    return {
        **base,
        "deduction_id": str(event.originator_id),
        "reference": event.reference,
        "vendor_pan": event.vendor_pan,
        "vendor_name": event.vendor_name,
        "pan_status": event.pan_status,
        "payment_nature": event.payment_nature,
        "payment_date": _date(event.payment_date),
        "financial_year": event.financial_year,
        "quarter": int(event.quarter),
        "amount": _money(event.amount),
        "act": event.act,
        "section": event.section,
        "section_code": event.section_code,
        "tds_rate": _number(event.tds_rate),
        "tds_amount": _money(event.tds_amount),
        "computed_tds": _money(event.computed_tds),
        "higher_rate": bool(event.higher_rate),
        "recorded_by": event.recorded_by,
    }


def _product_state(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    """Created and Revised: the same shape, the item's whole state."""
    mrp = event.mrp
    return {
        **base,
        "product_id": str(event.originator_id),
        "sku": event.sku,
        "name": event.name,
        "description": event.description,
        "hsn": event.hsn,
        "gst_rate": _number(event.gst_rate),
        "price": _money(event.price),
        "mrp": None if mrp is None else _money(mrp),
        "stock": _number(event.stock),
        "unit": event.unit,
        "status": event.status,
    }


def _aggregate_id(event: Any) -> str:
    return event.originator_id if type(event) is StoredEventView else str(UUID(str(event.originator_id)))


def _draft_content(event: Any, base: dict[str, Any]) -> dict[str, Any]:
    """What a draft's drafted/draft_updated shows (issue 13): who it is for and its computed totals."""
    document = event.document
    buyer = document["buyer"]
    return {
        **base,
        "draft_id": _aggregate_id(event),
        "date": _date(document["invoice_date"]),
        "buyer_name": buyer["name"],
        "buyer_gstin": buyer.get("gstin"),
        "supply_type": document["supply_type"],
        "place_of_supply": document["place_of_supply"],
        "currency": document["currency"],
        "line_count": len(document["lines"]),
        "totals": {name: _money(document["totals"].get(name)) or "0.00" for name in _DRAFT_TOTALS},
    }


_DRAFT_TOTALS = ("taxable", "cgst", "sgst", "igst", "cess", "total")


RECORD_BUILDERS: dict[type, Callable[[Any, dict[str, Any]], dict[str, Any]]] = {
    Invoice.Issued: _invoice_issued,
    Invoice.Cancelled: _invoice_cancelled,
    Invoice.IrnGenerated: lambda e, b: _invoice_result(
        e, b, "irn", "ack_no", "ack_date", "signed_invoice", "signed_qr_code", "adopted_existing"
    ),
    Invoice.IrnFailed: lambda e, b: _invoice_result(
        e, b, "operation", "error_class", "code", "message", "attempts"
    ),
    Invoice.IrnCancelled: lambda e, b: _invoice_result(e, b, "irn", "cancel_date", "reason_code", "remark"),
    Invoice.Credited: _invoice_credited,
    Invoice.CreditReleased: _invoice_credited,
    Invoice.EtimsNumbered: lambda e, b: _invoice_result(e, b, *_ETIMS_PLACE, "invc_no", "device_type"),
    Invoice.EtimsSigned: lambda e, b: _invoice_result(e, b, *_ETIMS_PLACE, *ETIMS_SIGNED_FIELDS),
    Invoice.EtimsFailed: lambda e, b: _invoice_result(
        e, b, *_ETIMS_PLACE, "invc_no", "result_code", "error_class", "message"
    ),
    Invoice.EtimsVoided: _etims_voided,
    Tenant.Registered: _tenant_registered,
    Tenant.ApiKeyRotated: _tenant_api_key_rotated,
    Tenant.ApiKeyAdded: lambda e, b: {**b, "key_id": e.key_id, "name": e.name, "changed_by": e.changed_by},
    Tenant.ApiKeyRevoked: lambda e, b: {**b, "key_id": e.key_id, "changed_by": e.changed_by},
    Tenant.ProfileUpdated: _tenant_profile_updated,
    Tenant.IntegrationSettingsChanged: _tenant_integration_settings_changed,
    Tenant.UserAdded: lambda e, b: {**b, "user_id": e.user_id, "role": e.role, "changed_by": e.changed_by},
    Tenant.UserChanged: _tenant_user_changed,
    Tenant.ReadGrantGiven: _tenant_read_grant,
    Tenant.ReadGrantWithdrawn: _tenant_read_grant,
    Alert.Raised: _alert_raised,
    Payment.Recorded: _payment_recorded,
    Payment.StatusChanged: _payment_status_changed,
    Payment.Refunded: _payment_refunded,
    Subscription.Requested: _subscription_requested,
    Subscription.ProviderLinked: _subscription_provider_linked,
    Subscription.StatusChanged: _subscription_status_changed,
    TaxReturn.Generated: _tax_return_generated,
    TaxReturn.Submitted: _tax_return_fields("job_id", "submitted_by", times=("submitted_at",)),
    TaxReturn.Saved: _tax_return_fields("part", "reference_id", "job_id"),
    TaxReturn.Processed: _tax_return_fields("job_id", "reference_ids"),
    TaxReturn.RejectedRecords: _tax_return_fields("job_id", "reference_ids", "status_code", "errors"),
    TaxReturn.Filed: _tax_return_fields("arn", "filed_by", times=("filed_at",)),
    TaxReturn.Failed: _tax_return_fields("job_id", "error_class", "code", "message", "attempts"),
    **payout_records.RECORD_BUILDERS,
    TdsDeduction.Recorded: _tds_deduction_recorded,
    **reconciliation_records.RECORD_BUILDERS,
    InvoiceDraft.Drafted: lambda e, b: {
        **_draft_content(e, b),
        "source": e.source,
        "external_ref": e.external_ref,
    },
    InvoiceDraft.DraftUpdated: _draft_content,
    InvoiceDraft.DraftDiscarded: lambda e, b: {**b, "draft_id": _aggregate_id(e), "reason": e.reason},
    InvoiceDraft.DraftIssued: lambda e, b: {
        **b,
        "draft_id": _aggregate_id(e),
        "invoice_id": e.invoice_id,
        "number": e.number,
        "financial_year": e.financial_year,
    },
    Product.Created: _product_state,
    Product.Revised: _product_state,
    **expense_records.RECORD_BUILDERS,
    **fee_records.RECORD_BUILDERS,
}


def _ce_type_of_class(event_class: type) -> tuple[str, str]:
    # Snake case, so TaxReturn's events are ledgerflow.tax_return.* (one-word aggregates are unchanged).
    aggregate = _snake(event_class.__qualname__.split(".")[0])
    return aggregate, f"ledgerflow.{aggregate}.{_snake(event_class.__name__)}"


_ce_types = {cls: _ce_type_of_class(cls) for cls in RECORD_BUILDERS}
STORED_TOPICS = {f"{cls.__module__}:{cls.__qualname__}": cls for cls in RECORD_BUILDERS}


def published_ce_types() -> list[str]:
    """Every CloudEvents type the relay can publish, sorted: the contract docs/topics.md must describe."""
    return sorted(ce_type for _, ce_type in _ce_types.values())


class StoredEventView:
    """A stored event read straight from its JSON, for the relay's hot path.

    eventsourcing's mapper rebuilds each event object (decimals, dates, UUIDs) only for the
    publisher to turn it back into strings. Here the JSON is parsed once with orjson and each
    transcoded value ({"_type_": ..., "_data_": "<string>"}) is unwrapped only where the record
    builders read it, decimals kept as their exact strings. ``tests/unit/test_publishing.py`` checks
    that both paths produce identical messages for every event type.
    """

    def __init__(self, originator_id: object, originator_version: int, state: bytes) -> None:
        # Every top-level value unwrapped at once into the instance's attributes: plain attribute
        # reads are several times cheaper than a __getattr__ per read.
        self.__dict__ = {
            name: _unwrap_top(value) if type(value) is dict else value
            for name, value in orjson.loads(state).items()
        }
        # The canonical text of the id (what every record and header shows).
        self.originator_id = str(originator_id if type(originator_id) is UUID else UUID(str(originator_id)))
        self.originator_version = originator_version
        self.timestamp: datetime = datetime.fromisoformat(self.__dict__["timestamp"])


# Tenants are few: their ids' text, by the stored hex.
_uuid_texts: dict[str, str] = {}


def _unwrap_top(value: dict[str, Any]) -> Any:
    """A top-level stored value: a UUID's canonical text, another transcoded scalar's string, or
    the value itself."""
    kind = value.get("_type_")
    if kind is None:
        return value
    if kind == "uuid_hex":
        hex_ = value["_data_"]
        text = _uuid_texts.get(hex_)
        if text is None:
            text = str(UUID(hex=hex_))
            if len(_uuid_texts) < 10_000:
                _uuid_texts[hex_] = text
        return text
    return value["_data_"]


def _unwrap(value: Any) -> Any:
    """A transcoded scalar's string ({"_type_": "decimal_str", "_data_": "90.00"} -> "90.00")."""
    if type(value) is dict and "_type_" in value:
        return value["_data_"]
    return value


def outbound_from_stored(
    originator_id: object, originator_version: int, topic: str, state: bytes
) -> OutboundEvent:
    """The message for a stored event, without rebuilding the domain event object."""
    event_class = STORED_TOPICS.get(topic)
    if event_class is None:
        raise UnpublishableEvent(f"no Kafka mapping for stored event topic {topic}")
    return to_outbound(StoredEventView(originator_id, originator_version, state), event_class)


class UnpublishableEvent(IntegrityFault):
    """An event type with no Avro mapping: a programming error, stops the relay loudly."""


def to_outbound(event: Any, event_class: type | None = None) -> OutboundEvent:
    """The message for a domain event, or for a :class:`StoredEventView` of one (then ``event_class``
    names its type)."""
    event_class = event_class or type(event)
    builder = RECORD_BUILDERS.get(event_class)
    if builder is None:
        raise UnpublishableEvent(f"no Kafka mapping for event type {event_class.__qualname__}")
    aggregate, ce_type = _ce_types[event_class]
    # A stored view holds the canonical text already.
    aggregate_id = (
        event.originator_id if type(event) is StoredEventView else str(UUID(str(event.originator_id)))
    )
    tenant_id = str(getattr(event, "tenant_id", None) or aggregate_id)
    ce_id = event_id_text(aggregate_id, event.originator_version)
    base = {"event_id": ce_id, "tenant_id": tenant_id, "occurred_at": _millis(event.timestamp)}
    stored_traceparent = getattr(event, "traceparent", None)
    return OutboundEvent(
        topic=AGGREGATE_TOPICS[aggregate],
        key=tenant_id if aggregate in TENANT_KEYED_AGGREGATES else aggregate_id,
        ce_type=ce_type,
        ce_id=ce_id,
        tenant_id=tenant_id,
        subject=aggregate_id,
        time=event.timestamp,
        traceparent=stored_traceparent or new_traceparent(),
        record=builder(event, base),
        stored_trace=bool(stored_traceparent),
    )


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    """A stored event as the relay sends it: key, Avro value and CloudEvents headers.

    ``outbound`` keeps the attributes a publish span names; ``headers`` ends with ``traceparent``.
    """

    outbound: OutboundEvent
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def encode_stored(originator_id: object, originator_version: int, topic: str, state: bytes) -> EncodedEvent:
    """The Kafka message for a stored event (``UnpublishableEvent``, ``CodecError`` or a
    ``KeyError``/``TypeError`` from a record builder when it cannot be made)."""
    outbound = outbound_from_stored(originator_id, originator_version, topic, state)
    value, schema = registry.encode_event(outbound.ce_type, outbound.record)
    return EncodedEvent(outbound, outbound.key.encode(), value, headers_for(outbound, schema.fingerprint_hex))


def headers_for(
    event: OutboundEvent, fingerprint_hex: str, traceparent: str | None = None
) -> list[tuple[str, bytes]]:
    """CloudEvents binary-mode headers (names as the Kafka protocol binding spells them).

    ``traceparent`` replaces the event's own, e.g. by the relay's publish span continuing it.
    """
    return envelope_headers(
        type_headers(event.ce_type, fingerprint_hex),
        event.ce_id,
        event.tenant_id,
        event.subject,
        event.time,
        traceparent or event.traceparent,
    )


def envelope_headers(
    constant: tuple[tuple[str, bytes], tuple[str, bytes]],
    ce_id: str,
    tenant_id: str,
    subject: str,
    time: datetime,
    traceparent: str,
) -> list[tuple[str, bytes]]:
    """``headers_for``'s list, from the type's ``constant`` headers (``type_headers``) and the event's
    values."""
    return [
        _SPECVERSION,
        ("ce_id", ce_id.encode()),
        ("ce_source", f"/tenants/{tenant_id}".encode()),
        constant[0],
        ("ce_subject", subject.encode()),
        ("ce_time", time.astimezone(UTC).isoformat().replace("+00:00", "Z").encode()),
        constant[1],
        _CONTENT_TYPE,
        ("traceparent", traceparent.encode()),
    ]


# Headers that depend only on the event type and schema, built once per type (the relay's hot path).
_SPECVERSION = ("ce_specversion", b"1.0")
_CONTENT_TYPE = ("content-type", b"application/avro")
_type_headers: dict[tuple[str, str], tuple[tuple[str, bytes], tuple[str, bytes]]] = {}


def type_headers(ce_type: str, fingerprint_hex: str) -> tuple[tuple[str, bytes], tuple[str, bytes]]:
    """The ``ce_type`` and ``ce_dataschema`` headers of an event type and schema, built once."""
    constant = _type_headers.get((ce_type, fingerprint_hex))
    if constant is None:
        constant = _type_headers[(ce_type, fingerprint_hex)] = (
            ("ce_type", ce_type.encode()),
            ("ce_dataschema", f"/v1/schemas/{fingerprint_hex}".encode()),
        )
    return constant
