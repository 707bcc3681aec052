"""GSTR-1 generation over a generated month in PostgreSQL (bench/gstr1.py's mix: B2B, B2C, B2CL,
exports, credit notes, cancellations): the return streamed from the projection, whose entries and
parts the builder writes out as it goes (gstr1-memory), is the same return, byte for byte, as the
one built from the same documents in any other order; every document is in it once, in order, and
its amounts add up to a bare SQL aggregation of the rows. The frozen version stores exactly those
bytes, and hashes them as it hashed parts given as objects."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
import pytest

from bench import gstr1 as month
from engine import db
from engine.application import LedgerService
from engine.config import Settings
from engine.tax import gstr1
from engine.tax_returns import TaxReturns
from projections.gst_outward_supplies import iter_supplies, supplies_for
from projections.gstr1_build import build_return
from tests.integration.helpers import register_tenant

pytestmark = pytest.mark.integration

DOCUMENTS = 3_000
LIMIT = 700  # line items per part: about ten parts for this month, so documents cross part ends
SECTIONS = {"b2b": "inv", "b2cl": "inv", "exp": "inv", "cdnr": "nt"}


def _loaded(service: LedgerService, settings: Settings) -> UUID:
    tenant_id = UUID(register_tenant(service, gstin=month.SELLER)[0])
    with psycopg.connect(
        settings.database_url, autocommit=True, options=f"-c search_path={settings.db_schema}"
    ) as conn:
        month.load(conn, tenant_id, DOCUMENTS)
    return tenant_id


def _entries(parts: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each section's document entries across the parts."""
    found: dict[str, list[dict[str, Any]]] = {name: [] for name in SECTIONS}
    for part in parts:
        for name, inner in SECTIONS.items():
            for group in part.get(name, []):
                found[name].extend(group[inner])
    return found


def _items(part: dict[str, Any]) -> int:
    # Counted from the JSON itself, not from the builder's units.
    count = sum(len(e["itms"]) for name in SECTIONS for g in part.get(name, []) for e in g[SECTIONS[name]])
    count += sum(len(e["itms"]) for e in part.get("cdnur", []))
    count += len(part.get("b2cs", [])) + len(part.get("nil", {}).get("inv", []))
    count += sum(len(rows) for rows in part.get("hsn", {}).values())
    count += sum(len(d["docs"]) for d in part.get("doc_issue", {}).get("doc_det", []))
    return count


def _day(text: str) -> tuple[str, str, str]:
    day, mon, year = text.split("-")
    return year, mon, day


def test_a_generated_month_streamed_from_postgres_is_one_return_whatever_the_order(
    service: LedgerService, settings: Settings
) -> None:
    tenant_id = _loaded(service, settings)
    with db.connect(settings) as conn:
        streamed = gstr1.build_gstr1(
            month.SELLER,
            month.PERIOD,
            iter_supplies(conn, tenant_id, month.SELLER, month.PERIOD),
            item_limit=LIMIT,
        )
        docs = supplies_for(conn, tenant_id, month.SELLER, month.PERIOD)
        _, sql_sums = month.bare_sql(conn, tenant_id)
    shuffled = random.Random(7).sample(docs, len(docs))
    other = gstr1.build_gstr1(month.SELLER, month.PERIOD, shuffled, item_limit=LIMIT)

    texts = list(streamed.texts())
    assert len(texts) >= 5  # the month really is split
    assert texts == list(other.texts())
    assert streamed.content_hash == other.content_hash and streamed.summary == other.summary
    assert streamed.part_hashes == [hashlib.sha256(t).hexdigest() for t in texts]
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text)
    assert streamed.content_hash == digest.hexdigest()

    parts = streamed.parts
    for text, part, summary in zip(texts, parts, streamed.summary["parts"], strict=True):
        assert gstr1.dumps(part) == text  # the objects give the same bytes back
        assert part["hash"] == gstr1.part_hash(part)
        assert _items(part) == summary["items"] <= LIMIT
    assert "hsn" in parts[0] and all("hsn" not in p for p in parts[1:])

    # Every reported document once, each section in date and number order.
    entries = _entries(parts)
    numbers = [e.get("inum") or e.get("nt_num") for found in entries.values() for e in found]
    assert not [n for n, c in Counter(numbers).items() if c > 1]
    expected = {d.number for d in docs if not d.cancelled and gstr1.classify(d) != "b2cs"}
    assert set(numbers) == expected
    for name, inner in SECTIONS.items():
        number, day = ("nt_num", "nt_dt") if name == "cdnr" else ("inum", "idt")
        last: tuple[tuple[str, str, str], str] | None = None
        for part in parts:
            # Within a part a section's entries are grouped (by buyer, state or export type), each
            # group in date and number order; a part's all come after the previous part's.
            groups = [[(_day(e[day]), e[number]) for e in g[inner]] for g in part.get(name, [])]
            assert all(places == sorted(places) for places in groups), name
            flat = [p for places in groups for p in places]
            if flat:
                assert last is None or min(flat) > last, name
                last = max(flat)

    # The invoices' amounts add up to the bare SQL aggregation of the same rows.
    txval = tax = Decimal(0)
    for part in parts:
        details = [
            i["itm_det"]
            for n in ("b2b", "b2cl")
            for g in part.get(n, [])
            for e in g["inv"]
            for i in e["itms"]
        ]
        details += [i for g in part.get("exp", []) for e in g["inv"] for i in e["itms"]]
        details += part.get("b2cs", [])
        for d in details:
            txval += d["txval"]
            tax += sum((d.get(k, Decimal(0)) for k in ("iamt", "camt", "samt")), Decimal(0))
    assert (txval, tax) == (sql_sums["txval"], sql_sums["tax"])


def test_the_generation_path_stores_the_parts_as_built(service: LedgerService, settings: Settings) -> None:
    tenant_id = _loaded(service, settings)
    built = build_return(service.pool, tenant_id, month.SELLER, month.PERIOD)
    returns = TaxReturns(service)
    made = returns.generate(
        tenant_id,
        month.SELLER,
        month.PERIOD,
        parts=built,
        summary=built.summary,
        diff=gstr1.diff_summaries,
        generated_by="test",
    )
    assert made.created and made.tax_return.content_hash == built.content_hash
    assert made.tax_return.parts == built.part_hashes
    assert [
        returns.part(tenant_id, made.tax_return.id, n) for n in range(1, len(built.part_hashes) + 1)
    ] == list(built.texts())
    # The same return given as objects is the same content: no new version.
    again = returns.generate(
        tenant_id,
        month.SELLER,
        month.PERIOD,
        parts=[json.loads(t, parse_float=Decimal) for t in built.texts()],
        summary=built.summary,
        diff=gstr1.diff_summaries,
        generated_by="test",
    )
    assert not again.created and again.tax_return.id == made.tax_return.id
