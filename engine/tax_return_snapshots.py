"""What a generated GSTR-1 was built from: each document as the builder saw it, written while the
return is built (table ``tax_return_snapshots``, engine/tax_return_parts.sql). For a filed period
this is "as filed", which later amendments are computed against (engine/api/gstr1.py
``changes_since_filing``). Kept apart from engine/tax_returns.py so that generating a return
(projections/gstr1_build.py) loads no more than the database and the builder: memory is the budget
of a 100,000-document month.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import orjson
import psycopg
from psycopg_pool import ConnectionPool

from engine import db
from engine.tax import gstr1


def document_json(doc: gstr1.SupplyDocument) -> bytes:
    """A SupplyDocument as JSON (amounts as decimal strings), read back by ``document_from_json``."""
    return orjson.dumps(doc, default=str)


def document_digest(doc: gstr1.SupplyDocument) -> str:
    """What makes a document's content: everything but ``e_invoiced`` (an IRN obtained after filing
    changes nothing the taxpayer reported; GSTN takes it from the IRP)."""
    return hashlib.sha256(document_json(replace(doc, e_invoiced=False))).hexdigest()


def _dec(value: Any) -> Decimal | None:
    return None if value is None else Decimal(value)


def _date(value: Any) -> date | None:
    return None if value is None else date.fromisoformat(value)


def document_from_json(text: bytes | str) -> gstr1.SupplyDocument:
    raw = orjson.loads(text)
    export = raw["export"]
    return gstr1.SupplyDocument(
        **{
            **raw,
            "date": date.fromisoformat(raw["date"]),
            "total": Decimal(raw["total"]),
            "lines": tuple(
                gstr1.SupplyLine(
                    **{
                        **x,
                        **{
                            k: Decimal(x[k])
                            for k in ("quantity", "taxable_value", "gst_rate", "igst", "cgst", "sgst", "cess")
                        },
                    }
                )
                for x in raw["lines"]
            ),
            "export": None
            if export is None
            else gstr1.ExportDetails(
                export["shipping_bill_number"], _date(export["shipping_bill_date"]), export["port_code"]
            ),
            "original_date": _date(raw["original_date"]),
            "original_value": _dec(raw["original_value"]),
        }
    )


class Snapshot:
    """The documents one generation is built from, written (COPY) while the builder reads them, so
    that memory stays that of the stream. ``content_hash`` is set once the return is built."""

    def __init__(self, copy: psycopg.Copy, tenant_id: UUID, snapshot_id: UUID) -> None:
        self._copy = copy
        self.tenant_id = tenant_id
        self.snapshot_id = snapshot_id
        self.content_hash: str | None = None

    def write(self, doc: gstr1.SupplyDocument, kind: str = "document") -> None:
        text = document_json(doc)
        # Without an IRN the stored text is what the digest hashes: one serialisation, not two.
        digest = document_digest(doc) if doc.e_invoiced else hashlib.sha256(text).hexdigest()
        self._copy.write_row(
            (
                self.tenant_id,
                self.snapshot_id,
                doc.document_id,
                gstr1.period_of(doc.date),
                kind,
                digest,
                text.decode(),
            )
        )

    def tee(self, docs: Iterable[gstr1.SupplyDocument]) -> Iterator[gstr1.SupplyDocument]:
        for doc in docs:
            self.write(doc)
            yield doc


@contextmanager
def snapshot(pool: ConnectionPool, tenant_id: UUID, gstin: str, period: str) -> Iterator[Snapshot]:
    """Record what a generation of ``period`` reads. Kept when the body set ``content_hash`` and
    no snapshot of that content exists yet (the same content was built from the same documents);
    otherwise rolled back."""
    snapshot_id = uuid4()
    with db.transaction(pool) as conn:
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY tax_return_snapshots (tenant_id, snapshot_id, document_id, origin_period, kind,"
                " digest, document) FROM STDIN"
            ) as copy,
        ):
            snap = Snapshot(copy, tenant_id, snapshot_id)
            yield snap
        kept = None
        if snap.content_hash is not None:
            kept = conn.execute(
                "INSERT INTO tax_return_snapshot_heads"
                " (tenant_id, gstin, period, content_hash, snapshot_id) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING RETURNING snapshot_id",
                (tenant_id, gstin, period, snap.content_hash, snapshot_id),
            ).fetchone()
        if kept is None:
            raise psycopg.Rollback()


@dataclass(frozen=True)
class Baseline:
    """A document of a filed period as last reported: in its own period's filed return, or in the
    amendment section of a later filed return."""

    snapshot_id: UUID
    kind: str
    digest: str


__all__ = [
    "Baseline",
    "Snapshot",
    "document_digest",
    "document_from_json",
    "document_json",
    "snapshot",
]
