"""GSTR-1 over a month of invoices: ``python -m bench --only gstr1``.

The stage bulk-loads a month of documents of one seller into the ``gst_outward_supplies`` projection
table (COPY, as the projection's rows would be after the projector; going through the write side,
the relay and the projector for 100,000 invoices is what the other stages measure), then

1. generates the return as ``POST /v1/gst/gstr1/generate`` does (``build_return`` of
   projections/gstr1_build.py: ``iter_supplies`` streamed into ``build_gstr1`` while the snapshot of
   what was read is written), in a fresh Python process of its own, which reports its wall time and
   peak RSS;
2. runs a bare SQL aggregation of the same rows (per section and rate, over the jsonb lines) in the
   same run, as the floor the generation is compared with;
3. checks that both give the same taxable value and tax, so the two timings cover the same work.

The mix is a plausible trader's month: 60 % B2B to 2,000 buyers (some intra-state, some SEZ), 34 %
small B2C, 3 % B2CL, 2 % exports, 1 % credit notes; 1 % of the documents cancelled; 1-5 lines each
over 40 HSN codes and the 5/18/40 % rates of the period.
"""

from __future__ import annotations

import argparse
import random
import resource
import subprocess
import sys
import time
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
import psycopg
from psycopg_pool import ConnectionPool

from projections.gstr1_build import build_return

SELLER = "27AAGCB7383J1Z8"
PERIOD = "012026"
FIRST_DAY = date(2026, 1, 1)
CENT = Decimal("0.01")
RATES = (Decimal(5), Decimal(18), Decimal(18), Decimal(40))
STATES = ("27", "29", "07", "24", "33", "09", "19", "36")

COLUMNS = (
    "document_id",
    "tenant_id",
    "seller_gstin",
    "period",
    "document_date",
    "number",
    "document_type",
    "supply_type",
    "buyer_gstin",
    "buyer_name",
    "place_of_supply",
    "intra_state",
    "reverse_charge",
    "ecommerce_gstin",
    "export",
    "original_invoice_id",
    "original_number",
    "original_invoice_date",
    "note_reason",
    "taxable",
    "igst",
    "cgst",
    "sgst",
    "cess",
    "total",
    "lines",
    "cancelled",
    "irn",
    "issued_at",
    "last_event_id",
)


def _buyer(i: int) -> str:
    # Buyer GSTINs are not validated by the projection; the return only groups by them.
    state = STATES[i % len(STATES)]
    return f"{state}AAACR{i:04d}K1Z{i % 10}"


def _document(rng: random.Random, tenant_id: uuid.UUID, i: int) -> tuple[Any, ...]:
    roll = rng.random()
    kind, supply_type, buyer, pos = "invoice", "B2B", None, "27"
    export = None
    if roll < 0.60:
        b = rng.randrange(2000)
        buyer, pos = _buyer(b), STATES[b % len(STATES)]
        supply_type = "SEZWP" if b % 97 == 0 else "B2B"
    elif roll < 0.94:
        supply_type, pos = "B2C", rng.choice(("27", "27", "27", "29"))
    elif roll < 0.97:
        supply_type, pos = "B2C", rng.choice(("29", "07"))
    elif roll < 0.99:
        supply_type, pos = rng.choice(("EXPWP", "EXPWOP")), "96"
        export = orjson.dumps(
            {"shipping_bill_number": f"{i:07d}", "shipping_bill_date": "2026-01-20", "port_code": "INNSA1"}
        ).decode()
    else:
        kind = "credit_note"
        b = rng.randrange(2000)
        buyer, pos = _buyer(b), STATES[b % len(STATES)]
    intra = pos == "27" and supply_type in ("B2B", "B2C")
    big = roll >= 0.94 and roll < 0.97
    lines = []
    totals = dict.fromkeys(("taxable", "igst", "cgst", "sgst", "cess"), Decimal(0))
    for n in range(1, rng.randint(1, 5) + 1):
        rate = RATES[rng.randrange(len(RATES))]
        taxable = Decimal(rng.randint(150_000, 400_000) if big else rng.randint(100, 50_000)).quantize(CENT)
        tax = Decimal(0) if supply_type in ("EXPWOP",) else (taxable * rate / 100).quantize(CENT)
        half = (taxable * rate / 200).quantize(CENT) if intra else Decimal(0)
        igst = Decimal(0) if intra else tax
        cgst = sgst = half
        hsn = f"{8400 + (i * 7 + n) % 40}"
        lines.append(
            {
                "line_no": n,
                "hsn": hsn,
                "description": f"Item {hsn}",
                "unit": "NOS",
                "quantity": str(rng.randint(1, 20)),
                "taxable_value": str(taxable),
                "gst_rate": str(rate),
                "igst": str(igst),
                "cgst": str(cgst),
                "sgst": str(sgst),
                "cess": "0.00",
                "supply_category": "taxable",
            }
        )
        totals["taxable"] += taxable
        totals["igst"] += igst
        totals["cgst"] += cgst
        totals["sgst"] += sgst
    total = totals["taxable"] + totals["igst"] + totals["cgst"] + totals["sgst"]
    day = FIRST_DAY.replace(day=1 + i % 31)
    document_id = uuid.uuid5(uuid.NAMESPACE_URL, f"gstr1-bench-{i}")
    number = f"CN-{i:06d}" if kind == "credit_note" else f"INV-{i:06d}"
    return (
        document_id,
        tenant_id,
        SELLER,
        PERIOD,
        day,
        number,
        kind,
        supply_type,
        buyer,
        "Buyer",
        pos,
        intra,
        False,
        None,
        export,
        None,
        None,
        None,
        "sales_return" if kind == "credit_note" else None,
        totals["taxable"],
        totals["igst"],
        totals["cgst"],
        totals["sgst"],
        totals["cess"],
        total,
        orjson.dumps(lines).decode(),
        rng.random() < 0.01,
        f"{i:064x}" if buyer and rng.random() < 0.5 else None,
        datetime.now(UTC),
        f"bench-{i}",
    )


def load(conn: psycopg.Connection, tenant_id: uuid.UUID, count: int, progress: Any = None) -> None:
    """``count`` documents of the month into gst_outward_supplies (COPY in chunks)."""
    rng = random.Random(11)
    step = 5_000
    with conn.cursor() as cur:
        for start in range(0, count, step):
            with cur.copy(f"COPY gst_outward_supplies ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for i in range(start, min(count, start + step)):
                    copy.write_row(_document(rng, tenant_id, i))
            if progress:
                progress(min(step, count - start))
    conn.execute("ANALYZE gst_outward_supplies")


# The same rows aggregated in SQL only: per section (b2b-like / b2c / export / note) and rate.
BARE_SQL = """
SELECT
    CASE WHEN s.document_type <> 'invoice' THEN 'note'
         WHEN s.supply_type IN ('EXPWP', 'EXPWOP') THEN 'exp'
         WHEN s.buyer_gstin IS NOT NULL THEN 'b2b'
         ELSE 'b2c' END AS section,
    s.place_of_supply,
    (l->>'gst_rate')::numeric AS rate,
    count(DISTINCT s.document_id) AS documents,
    sum((l->>'taxable_value')::numeric) AS txval,
    sum((l->>'igst')::numeric) AS iamt,
    sum((l->>'cgst')::numeric) AS camt,
    sum((l->>'sgst')::numeric) AS samt
FROM gst_outward_supplies AS s, jsonb_array_elements(s.lines) AS l
WHERE s.tenant_id = %s AND s.seller_gstin = %s AND s.period = %s AND NOT s.cancelled
GROUP BY 1, 2, 3
"""


def bare_sql(conn: psycopg.Connection, tenant_id: uuid.UUID) -> tuple[float, dict[str, Decimal]]:
    """Seconds of the bare aggregation, and its invoice (not note) txval and tax totals."""
    started = time.perf_counter()
    rows = conn.execute(BARE_SQL, (tenant_id, SELLER, PERIOD)).fetchall()
    seconds = time.perf_counter() - started
    sums = {"txval": Decimal(0), "tax": Decimal(0)}
    for section, _pos, _rate, _docs, txval, iamt, camt, samt in rows:
        if section != "note":
            sums["txval"] += txval
            sums["tax"] += iamt + camt + samt
    return seconds, sums


def generate(database_url: str, schema: str, tenant_id: uuid.UUID) -> dict[str, Any]:
    """Read the period and build its return, as the generate endpoint does; in this process."""
    started = time.perf_counter()
    # The endpoint's own path (engine/api/gstr1.py build_return): the projection streamed into the
    # builder while the snapshot of what it read is written; a pool of two, as it holds two connections.
    with ConnectionPool(
        database_url, min_size=1, max_size=2, kwargs={"options": f"-c search_path={schema}"}
    ) as pool:
        result = build_return(pool, tenant_id, SELLER, PERIOD)
    size = sum(len(text) for text in result.texts())
    seconds = time.perf_counter() - started
    sections = result.summary["sections"]
    txval = sum(Decimal(sections[s]["txval"]) for s in ("b2b", "b2cl", "exp", "b2cs"))
    tax = sum(
        Decimal(sections[s][k]) for s in ("b2b", "b2cl", "exp", "b2cs") for k in ("iamt", "camt", "samt")
    )
    return {
        "seconds": seconds,
        "documents": result.summary["documents"],
        "parts": len(result.part_hashes),
        "items": [p["items"] for p in result.summary["parts"]],
        "json_bytes": size,
        "content_hash": result.content_hash,
        "peak_rss_mb": own_peak_rss_mb(),
        # Linux reports ru_maxrss in KiB; kept to compare with runs before 2026-12-03 (see below).
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "txval": str(txval),
        "tax": str(tax),
        "e_invoiced": result.summary["e_invoiced"],
    }


def own_peak_rss_mb() -> float:
    """Peak RSS of this process's own memory: ``VmHWM``, the high-water mark of its address space.

    Not ``ru_maxrss``: Linux carries the high-water mark of the address space replaced at exec into
    it, and subprocess starts children with vfork, so that address space is the bench's own. Measured:
    a child of a parent holding 400 MB reports ru_maxrss 411 MB at its start, 11 MB from a small parent.
    The 371 MB of the full run of 2026-12-03 was the bench process's peak by the GSTR-1 stage; the
    generation's own was about 265 MB (``--only gstr1``, same data)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate_in_child(database_url: str, schema: str, tenant_id: uuid.UUID) -> dict[str, Any]:
    """``generate`` in a fresh interpreter, so its peak RSS is the generation's alone."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.gstr1", database_url, schema, str(tenant_id)],
        capture_output=True,
        check=True,
        timeout=3600,
    )
    result: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1])
    return result


def _main() -> None:
    parser = argparse.ArgumentParser(
        description="generate the bench month's GSTR-1 (child of the gstr1 stage)"
    )
    parser.add_argument("database_url")
    parser.add_argument("schema")
    parser.add_argument("tenant_id", type=uuid.UUID)
    args = parser.parse_args()
    sys.stdout.write(orjson.dumps(generate(args.database_url, args.schema, args.tenant_id)).decode() + "\n")


if __name__ == "__main__":
    _main()
