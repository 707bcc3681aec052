"""A thin stand-in for gstr1-core's builder and projection (contracts C5 and C6 of issue 11), used by
the filing tests ONLY while those modules are not in this checkout.

``install()`` registers ``engine.tax.gstr1`` and ``projections.gst_outward_supplies`` in
``sys.modules`` when they cannot be imported, and returns whether it did. The stand-in builds b2b and
b2cs from the invoices a test hands it with :func:`record` (no projection behind it), splits the
return into parts of :data:`ITEM_LIMIT` invoices so multi-part submission is exercised, and keeps the
contract's shapes: ``build_gstr1(gstin, period, documents, *, amendments) -> Gstr1Return(parts,
summary, content_hash)``, ``diff_summaries(old, new)``, ``supplies_for(conn, tenant_id, gstin,
period)``. Once the real modules are merged, ``install()`` does nothing and the tests run against them.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson

from engine.domain.invoice import Invoice

ITEM_LIMIT = 3
_DOCUMENTS: dict[tuple[UUID, str, str], list[SupplyDocument]] = {}


@dataclass(frozen=True)
class SupplyDocument:
    number: str
    date: str  # dd-mm-yyyy as GSTN writes it
    ctin: str | None
    pos: str
    value: Decimal
    lines: list[dict[str, Decimal]]
    cancelled: bool = False
    e_invoiced: bool = False


@dataclass(frozen=True)
class Gstr1Return:
    parts: list[dict[str, Any]]
    summary: dict[str, Any]
    content_hash: str


@dataclass(frozen=True)
class Amendment:
    period: str
    arn: str
    documents: Sequence[Any] = ()
    filed_parts: Sequence[bytes] = field(default_factory=list)


def _period(invoice: Invoice) -> str:
    return invoice.invoice_date.strftime("%m%Y")


def record(invoice: Invoice) -> None:
    """What the projection would hold for an issued invoice (the stand-in has no projection)."""
    document = SupplyDocument(
        number=invoice.number,
        date=invoice.invoice_date.strftime("%d-%m-%Y"),
        ctin=invoice.buyer.get("gstin"),
        pos=str(invoice.place_of_supply),
        value=Decimal(invoice.totals["total"]),
        lines=[
            {
                k: Decimal(str(line.get(k) or 0))
                for k in ("taxable_value", "gst_rate", "igst", "cgst", "sgst", "cess")
            }
            for line in invoice.lines
        ],
    )
    gstin = str(invoice.seller["gstin"])
    _DOCUMENTS.setdefault((invoice.tenant_id, gstin, _period(invoice)), []).append(document)


def supplies_for(conn: Any, tenant_id: UUID, gstin: str, period: str) -> list[SupplyDocument]:
    return list(_DOCUMENTS.get((tenant_id, gstin, period), []))


def _items(doc: SupplyDocument) -> list[dict[str, Any]]:
    return [
        {
            "num": n,
            "itm_det": {
                "txval": float(line["taxable_value"]),
                "rt": float(line["gst_rate"]),
                "iamt": float(line["igst"]),
                "camt": float(line["cgst"]),
                "samt": float(line["sgst"]),
                "csamt": float(line["cess"]),
            },
        }
        for n, line in enumerate(doc.lines, start=1)
    ]


def build_gstr1(
    gstin: str, period: str, documents: Sequence[SupplyDocument], *, amendments: Sequence[Amendment] = ()
) -> Gstr1Return:
    live = sorted((d for d in documents if not d.cancelled), key=lambda d: d.number)
    b2b = [d for d in live if d.ctin]
    b2c = [d for d in live if not d.ctin]
    chunks = [b2b[i : i + ITEM_LIMIT] for i in range(0, len(b2b), ITEM_LIMIT)] or [[]]
    parts: list[dict[str, Any]] = []
    for number, chunk in enumerate(chunks, start=1):
        by_ctin: dict[str, list[dict[str, Any]]] = {}
        for d in chunk:
            by_ctin.setdefault(str(d.ctin), []).append(
                {
                    "inum": d.number,
                    "idt": d.date,
                    "val": float(d.value),
                    "pos": d.pos,
                    "rchrg": "N",
                    "inv_typ": "R",
                    "itms": _items(d),
                }
            )
        part: dict[str, Any] = {"gstin": gstin, "fp": period, "version": "GST3.2", "hash": "hash"}
        part["b2b"] = [{"ctin": c, "inv": inv} for c, inv in sorted(by_ctin.items())]
        if number == 1 and b2c:
            part["b2cs"] = [
                {"sply_ty": "INTER", "pos": d.pos, "typ": "OE", **_items(d)[0]["itm_det"]} for d in b2c
            ]
        parts.append(part)
    summary = {
        "sections": {
            "b2b": {
                "count": len(b2b),
                "txval": str(sum((line["taxable_value"] for d in b2b for line in d.lines), Decimal(0))),
            },
            "b2cs": {"count": len(b2c)},
        },
        "parts": len(parts),
        "e_invoiced": sum(d.e_invoiced for d in live),
        "amended_periods": [a.period for a in amendments],
    }
    digest = hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return Gstr1Return(parts, summary, digest)


def diff_summaries(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    changed: dict[str, Any] = {}
    for name in sorted(set(old.get("sections", {})) | set(new.get("sections", {}))):
        before, after = old.get("sections", {}).get(name), new.get("sections", {}).get(name)
        if before != after:
            changed[name] = {"before": before, "after": after}
    return {"sections": changed}


def install() -> bool:
    """Register the stand-in modules if the real ones are missing; True if it did."""
    try:
        importlib.import_module("engine.tax.gstr1")
        importlib.import_module("projections.gst_outward_supplies")
        return False
    except ImportError:
        pass
    builder = types.ModuleType("engine.tax.gstr1")
    for name in ("SupplyDocument", "Gstr1Return", "Amendment", "build_gstr1", "diff_summaries"):
        setattr(builder, name, globals()[name])
    supplies = types.ModuleType("projections.gst_outward_supplies")
    supplies.supplies_for = supplies_for  # type: ignore[attr-defined]
    sys.modules["engine.tax.gstr1"] = builder
    sys.modules["projections.gst_outward_supplies"] = supplies
    return True
