"""The invoices the bench sends and stores: 5 lines each, intra-state, valid under the tax rules."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from statistics import mean
from typing import Any

from engine.application import LedgerService, build_invoice
from engine.commands import IssueInvoice
from engine.domain.invoice import Invoice
from engine.domain.tenant import Tenant
from engine.publishing import headers_for, new_traceparent, to_outbound
from schemas import registry

LINES_PER_INVOICE = 5
SELLER_GSTIN = "27AAGCB7383J1Z8"

# The rate table leaves 8504 and 9987 at 5% or 18% by facts a code does not carry (engine/tax), so
# those lines state theirs, as a seller's API call must.
_LINES = [
    ("Transformer coil", "8504", "10", "NOS", "100.00", "18"),
    ("Steel bars", "7214", "25.5", "KGS", "812.40", None),
    ("Air conditioner", "8415", "4", "NOS", "356.00", None),
    ("Storage battery", "8507", "6", "NOS", "1240.00", None),
    ("Installation service", "9987", "1", "OTH", "4500.00", "18"),
]

BODY: dict[str, Any] = {
    "number": "B-0",
    "date": "2026-01-19",
    "buyer": {
        "name": "Reliable Traders Pvt Ltd",
        "gstin": "27AAACR5055K1Z7",
        "state": "27",
        "address": {"line1": "12 Market Road", "city": "Pune", "pincode": "411001"},
    },
    "place_of_supply": "27",
    "lines": [
        {
            "description": d,
            "hsn": hsn,
            "quantity": q,
            "unit": unit,
            "unit_price": price,
            "discount": "0.00",
            **({"gst_rate": rate} if rate else {}),
        }
        for d, hsn, q, unit, price, rate in _LINES[:LINES_PER_INVOICE]
    ],
}


def invoice_body(number: str) -> dict[str, Any]:
    body = copy.deepcopy(BODY)
    body["number"] = number
    return body


def register_tenant(service: LedgerService) -> tuple[Tenant, str]:
    registered = service.register_tenant(
        name="Bench Electricals",
        legal_name="Bench Electricals Private Limited",
        country="IN",
        gstin=SELLER_GSTIN,
        state="27",
    )
    return service.get_tenant(registered.tenant_id), registered.api_key


def build(tenant: Tenant, number: str) -> Invoice:
    command = IssueInvoice.model_validate(invoice_body(number))
    # Like the API, which stores the request's trace context with the invoice.
    return build_invoice(tenant, command, None, command.fingerprint(), "bench", new_traceparent())


def message_shape(invoices: list[Invoice]) -> dict[str, Any]:
    """What the relay would publish for these invoices: mean value, key and header sizes."""
    values, keys, header_bytes = [], [], []
    sample_headers: list[tuple[str, bytes]] = []
    for invoice in invoices:
        for event in invoice.pending_events:
            outbound = to_outbound(event)
            value, schema = registry.encode_event(outbound.ce_type, outbound.record)
            headers = headers_for(outbound, schema.fingerprint_hex)
            values.append(len(value))
            keys.append(len(outbound.key.encode()))
            header_bytes.append(sum(len(k) + len(v) for k, v in headers))
            sample_headers = headers
    return {
        "value_bytes": round(mean(values)),
        "key_bytes": round(mean(keys)),
        "header_bytes": round(mean(header_bytes)),
        "headers": sample_headers,
    }


def seed(
    service: LedgerService,
    tenant: Tenant,
    events: int,
    *,
    batch: int = 500,
    progress: Callable[[int], None] | None = None,
    prefix: str = "S",
) -> tuple[int, dict[str, Any], float]:
    """Store ``events`` Invoice.Issued events (one per invoice) in batches; returns (stored, message
    shape, seconds)."""
    started = time.perf_counter()
    shape: dict[str, Any] = {}
    stored = 0
    while stored < events:
        size = min(batch, events - stored)
        invoices = [build(tenant, f"{prefix}{stored + i}") for i in range(size)]
        if not shape:
            shape = message_shape(invoices[:200])
        service.ledger.save(*invoices)
        stored += size
        if progress:
            progress(size)
    return stored, shape, time.perf_counter() - started
