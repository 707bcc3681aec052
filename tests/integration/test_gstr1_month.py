"""Issue 11's end-to-end GSTR-1: two months of ~150 mixed documents each, issued through the API, one
month before the rate change of 2025-09-22 and one after (Notification 9/2025-CT(Rate): 12 % and 28 %
gone, 40 % added), with credit and debit notes (POST /v1/invoices/{id}/credit-notes, /debit-notes) and
cancellations of invoices and notes; the generated return's section totals must equal sums the test
computes itself from what it issued (its own tax arithmetic, never the builder). The first month is
submitted through a faulty GST network and completes by retries; the second carries a B2B invoice to
a GSTIN the network does not know, which comes back on the return as a rejected record with its error.

Real PostgreSQL, Kafka, relay, projector, connector worker, and the GST returns sandbox over HTTP.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest

from connectors.gstn_returns.sandbox import UNKNOWN_CTIN, create_app
from engine.application import LedgerService
from engine.config import Settings
from engine.tax.gstin import check_character
from tests.connectors.contract import LiveServer, Operator
from tests.integration.helpers import client_for
from tests.integration.processes import Processes
from tests.integration.test_gstr1_filing import ACCOUNT, BASE, SELLER, call, start_engine, tenant, wait_status

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CENT = Decimal("0.01")
SELLER_STATE = SELLER[:2]  # 29, Karnataka
LOCAL_BUYER = "29AAACR5055K1Z" + check_character("29AAACR5055K1Z")
OTHER_BUYER = "27AAACR5055K1Z7"  # Maharashtra
# Rates in force on each month's invoice dates (india-gst.md section 3: before / from 2025-09-22).
MONTHS = {
    "082025": (date(2025, 8, 1), ("5", "12", "18", "28")),
    "102025": (date(2025, 10, 1), ("5", "18", "40")),
}
PER_MONTH = 150
CANCEL_EVERY = 13
NOTE_EVERY = 9
KINDS = ("b2b_intra", "b2b_inter", "b2c_intra", "b2c_inter", "b2cl")


def money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass
class Planned:
    """One invoice as the test means it, with its tax worked out here (CGST Act: intra-state supplies
    carry CGST + SGST, each half the rate; inter-state IGST; each rounded half-up to the paisa)."""

    number: str
    kind: str
    day: date
    pos: str
    lines: list[tuple[Decimal, Decimal, Decimal]]  # quantity, unit price, rate
    cancelled: bool = False
    sums: dict[str, Decimal] = field(default_factory=dict)
    doc_type: str = "invoice"  # or credit_note / debit_note, against ``original``
    original: Planned | None = None
    id: str = ""

    @property
    def intra(self) -> bool:
        return self.pos == SELLER_STATE

    def work_out(self) -> None:
        s = dict.fromkeys(("txval", "iamt", "camt", "samt"), Decimal("0.00"))
        for quantity, price, rate in self.lines:
            taxable = money(quantity * price)
            s["txval"] += taxable
            if self.intra:
                half = money(taxable * rate / 200)
                s["camt"] += half
                s["samt"] += half
            else:
                s["iamt"] += money(taxable * rate / 100)
        s["val"] = s["txval"] + s["iamt"] + s["camt"] + s["samt"]
        self.sums = s

    def body(self) -> dict[str, Any]:
        if self.original is not None:  # a note: line 1 of the original, at its rate (C2)
            [(quantity, price, _)] = self.lines
            line: dict[str, Any] = {"line_no": 1, "quantity": str(quantity)}
            if self.doc_type == "debit_note":
                line["unit_price"] = str(price)
            reason = "sales_return" if self.doc_type == "credit_note" else "others"
            return {"number": self.number, "date": self.day.isoformat(), "reason": reason, "lines": [line]}
        buyer: dict[str, Any] = {"name": f"Buyer {self.number}", "state": self.pos}
        if self.kind.startswith("b2b"):
            buyer["gstin"] = LOCAL_BUYER if self.kind == "b2b_intra" else OTHER_BUYER
            buyer["address"] = {"line1": "1 Market Road", "city": "Somewhere", "pincode": "560001"}
        return {
            "number": self.number,
            "date": self.day.isoformat(),
            "buyer": buyer,
            "place_of_supply": self.pos,
            "lines": [
                {
                    "description": f"Item {n}",
                    "hsn": "8504",
                    "quantity": str(q),
                    "unit": "NOS",
                    "unit_price": str(p),
                    "discount": "0.00",
                    "gst_rate": str(r),
                }
                for n, (q, p, r) in enumerate(self.lines, start=1)
            ],
        }


def plan(period: str, rng: random.Random) -> list[Planned]:
    first, rates = MONTHS[period]
    docs = []
    for n in range(PER_MONTH):
        kind = KINDS[n % len(KINDS)]
        pos = {"b2b_intra": "29", "b2c_intra": "29", "b2b_inter": "27", "b2c_inter": "33", "b2cl": "07"}[kind]
        lines = []
        for _ in range(rng.randint(1, 3)):
            rate = Decimal(rng.choice(rates))
            if kind == "b2cl":  # well above the Rs 1,00,000 B2CL threshold in force since 2024-08-01
                lines.append((Decimal(1), Decimal(rng.randint(110_000, 300_000)) + Decimal("0.55"), rate))
            else:  # B2C inter-state stays far below it (at most 3 lines of 10 x 2,000.99 plus tax)
                lines.append((Decimal(rng.randint(1, 10)), Decimal(rng.randint(1, 2000)) + CENT * 99, rate))
        doc = Planned(f"M{period}-{n:04d}", kind, first + timedelta(days=n % 28), pos, lines)
        doc.cancelled = n % CANCEL_EVERY == 7
        doc.work_out()
        docs.append(doc)
        if not doc.cancelled and n % NOTE_EVERY in (3, 4):
            # A credit note taking back one unit of line 1, or a debit note charging more for it.
            _, price, rate = doc.lines[0]
            credit = n % NOTE_EVERY == 3
            note = Planned(
                f"{'CN' if credit else 'DN'}{period}-{n:04d}",
                doc.kind,
                doc.day,
                doc.pos,
                [(Decimal(1), price if credit else Decimal("7.35"), rate)],
                doc_type="credit_note" if credit else "debit_note",
                original=doc,
            )
            note.cancelled = credit and n % 4 == 0  # some credit notes cancelled in turn
            note.work_out()
            docs.append(note)
    return docs


SECTION = {"b2b_intra": "b2b", "b2b_inter": "b2b", "b2c_intra": "b2cs", "b2c_inter": "b2cs", "b2cl": "b2cl"}
# Where a note goes (india-gst.md section 2): on a registered buyer's invoice cdnr, on a B2CL invoice
# cdnur, on a small B2C sale into the b2cs rows themselves (netted).
NOTE_SECTION = {"b2b": "cdnr", "b2cl": "cdnur", "b2cs": "b2cs"}


def section_of(doc: Planned) -> str:
    section = SECTION[doc.kind]
    return section if doc.original is None else NOTE_SECTION[section]


def sign(doc: Planned) -> int:
    return -1 if doc.doc_type == "credit_note" else 1


def expected(docs: list[Planned]) -> dict[str, dict[str, Decimal]]:
    """Per section: count and amounts as the form reports them (documents and notes positive, b2cs
    rows net of the notes on them); ``hsn_b2b`` / ``hsn_b2c``: the taxable value net of all notes."""
    sums: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for doc in docs:
        if doc.cancelled:
            continue
        name = section_of(doc)
        section = sums[name]
        section["count"] += 1
        netted = sign(doc) if name == "b2cs" else 1
        for k, v in doc.sums.items():
            section[k] += netted * v
        hsn = "hsn_b2b" if doc.kind.startswith("b2b") else "hsn_b2c"
        sums[hsn]["txval"] += sign(doc) * doc.sums["txval"]
    return sums


def from_json(part: dict[str, Any]) -> dict[str, dict[str, Decimal]]:
    """The section totals read off the uploaded file itself."""
    sums: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for section in ("b2b", "b2cl"):
        for group in part.get(section, []):
            for inv in group["inv"]:
                sums[section]["count"] += 1
                sums[section]["val"] += inv["val"]
                for item in inv["itms"]:
                    for k, v in item["itm_det"].items():
                        if k in ("txval", "iamt", "camt", "samt"):
                            sums[section][k] += v
    for group in part.get("cdnr", []):
        for note in group["nt"]:
            sums["cdnr"]["count"] += 1
            sums["cdnr"]["val"] += note["val"]
            for item in note["itms"]:
                for k, v in item["itm_det"].items():
                    if k in ("txval", "iamt", "camt", "samt"):
                        sums["cdnr"][k] += v
    for note in part.get("cdnur", []):
        sums["cdnur"]["count"] += 1
        sums["cdnur"]["val"] += note["val"]
        for item in note["itms"]:
            for k, v in item["itm_det"].items():
                if k in ("txval", "iamt", "camt", "samt"):
                    sums["cdnur"][k] += v
    for row in part.get("b2cs", []):
        for k in ("txval", "iamt", "camt", "samt"):
            sums["b2cs"][k] += row.get(k, 0)
    return sums


@pytest.fixture
def gstn() -> Iterator[tuple[str, Operator]]:
    with LiveServer(create_app(account=ACCOUNT, processing_s=0.5)) as server:
        yield server.url, Operator(server.url)


@pytest.fixture
def fast(settings: Settings) -> Settings:
    return replace(settings, retry_delays=(0, 1, 1, 2, 2, 3, 3, 5, 5, 8, 8, 13), breaker_open_seconds=2)


@pytest.fixture
def processes(fast: Settings, tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(fast, tmp_path)
    yield procs
    procs.close()


def test_two_months_of_mixed_documents_give_the_sums_computed_here_and_submit_through_faults(
    service: LedgerService,
    fast: Settings,
    topics: list[str],
    gstn: tuple[str, Operator],
    processes: Processes,
) -> None:
    url, operator = gstn
    tenant_id, key = tenant(service, fast, url)
    api = client_for(fast)
    engine = start_engine(processes)
    rng = random.Random(20251)
    months = {period: plan(period, rng) for period in MONTHS}
    refused = Planned(
        "M102025-BAD", "b2b_inter", date(2025, 10, 30), "27", [(Decimal(2), Decimal("10.00"), Decimal(18))]
    )
    refused.work_out()
    months["102025"].append(refused)

    for docs in months.values():
        for doc in docs:
            body = doc.body()
            if doc is refused:
                body["buyer"]["gstin"] = UNKNOWN_CTIN
            if doc.original is None:
                answer = call(api, key, "POST", "/v1/invoices", json=body)
            else:
                kind = "credit-notes" if doc.doc_type == "credit_note" else "debit-notes"
                answer = call(api, key, "POST", f"/v1/invoices/{doc.original.id}/{kind}", json=body)
            assert answer.status_code == 201, answer.text
            issued = answer.json()
            doc.id = issued["id"]
            # The engine's own tax equals the arithmetic here, line for line summed.
            totals = issued["totals"]
            assert Decimal(totals["taxable"]) == doc.sums["txval"], doc.number
            assert Decimal(totals["total"]) == doc.sums["val"], doc.number
            if doc.cancelled:
                cancel = call(
                    api, key, "POST", f"/v1/invoices/{issued['id']}/cancel", json={"reason": "other"}
                )
                assert cancel.status_code == 200, cancel.text

    def projected() -> bool:
        return all(
            _cancelled_and_count(service, tenant_id, period) == (sum(d.cancelled for d in docs), len(docs))
            for period, docs in months.items()
        )

    processes.wait_for(projected, what="both months in the projection", watch=engine, timeout=180)

    returns = {}
    for period, docs in months.items():
        generated = call(api, key, "POST", f"{BASE}/generate", json={"gstin": SELLER, "period": period})
        assert generated.status_code == 201, generated.text
        summary = generated.json()
        returns[period] = summary["id"]
        assert len(summary["parts"]) == 1
        part = json.loads(
            call(api, key, "GET", f"{BASE}/{summary['id']}/json", params={"part": 1}).content,
            parse_float=Decimal,
        )
        want = expected(docs)
        got = from_json(part)
        sections = summary["summary"]["sections"]
        assert want["cdnr"]["count"] and want["cdnur"]["count"]  # the mix has notes of both kinds
        for section in ("b2b", "b2cl", "cdnr", "cdnur"):
            for k in ("count", "val", "txval", "iamt", "camt", "samt"):
                assert got[section][k] == want[section][k], (period, section, k)
            for k in ("txval", "iamt", "camt", "samt"):
                assert Decimal(sections[section][k]) == want[section][k], (period, section, k)
            assert sections[section]["count"] == want[section]["count"]
        for k in ("txval", "iamt", "camt", "samt"):
            assert got["b2cs"][k] == want["b2cs"][k] == Decimal(sections["b2cs"][k]), (period, "b2cs", k)
        # b2cs is rate-wise per place of supply: the rows are the test's own grouping.
        rows: dict[tuple[str, str, Decimal], Decimal] = defaultdict(Decimal)
        for doc in docs:
            if section_of(doc) == "b2cs" and not doc.cancelled:
                for quantity, price, rate in doc.lines:
                    rows[("INTRA" if doc.intra else "INTER", doc.pos, rate)] += sign(doc) * money(
                        quantity * price
                    )
        assert {(r["sply_ty"], r["pos"], Decimal(r["rt"])): r["txval"] for r in part["b2cs"]} == dict(rows)
        # Each month has the rates of its own dates: 12 % and 28 % in August, 40 % in October.
        assert {Decimal(r["rt"]) for r in part["b2cs"]} == {Decimal(r) for r in MONTHS[period][1]}
        # HSN summary, split B2B / B2C, net of the notes.
        for table in ("hsn_b2b", "hsn_b2c"):
            assert sum((r["txval"] for r in part["hsn"][table]), Decimal(0)) == want[table]["txval"], table
        # doc_issue: every number issued (invoices, credit notes, debit notes), cancelled ones as such.
        cancelled = sum(d.cancelled for d in docs)
        kinds = {r["doc_num"]: sum(x["totnum"] for x in r["docs"]) for r in part["doc_issue"]["doc_det"]}
        assert kinds == dict(
            Counter({"invoice": 1, "credit_note": 5, "debit_note": 4}[d.doc_type] for d in docs)
        )
        assert sections["doc_issue"] == {
            "totnum": len(docs),
            "cancel": cancelled,
            "net_issue": len(docs) - cancelled,
        }
        assert summary["summary"]["documents"] == len(docs)

    # August through a faulty network: transient errors, rate limits, lost answers; retries finish it.
    operator.faults(error_rate=0.3, rate_limit_rate=0.1, after_effect_failure_rate=0.2, seed=7, max_faults=8)
    assert call(api, key, "POST", f"{BASE}/{returns['082025']}/submit").status_code == 202
    ready = wait_status(processes, engine, fast, api, key, returns["082025"], "ready_to_file")
    assert ready["errors"] == [] and sorted(ready["reference_ids"]) == ["1"]
    assert sum(operator.stats()["faults_injected"].values()) > 0

    # October: the network refuses the invoice to a GSTIN it does not know, and says why.
    operator.faults()
    assert call(api, key, "POST", f"{BASE}/{returns['102025']}/submit").status_code == 202
    rejected = wait_status(processes, engine, fast, api, key, returns["102025"], "rejected_records")
    assert [(e["section"], e["ctin"], e["inum"], e["error_cd"]) for e in rejected["errors"]] == [
        ("b2b", UNKNOWN_CTIN, refused.number, "RET_CTIN_INVALID")
    ]
    assert rejected["errors"][0]["error_msg"]
    processes.assert_alive(*engine)


def _cancelled_and_count(service: LedgerService, tenant_id: Any, period: str) -> tuple[int, int]:
    from engine import db
    from projections.gst_outward_supplies import supplies_for

    with db.transaction(service.pool) as conn:
        docs = supplies_for(conn, tenant_id, SELLER, period)
    return sum(d.cancelled for d in docs), len(docs)
