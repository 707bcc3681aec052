"""GSTR-1 from a period's documents (engine.tax.gstr1): sections, summaries, doc_issue, parts, hash."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

import orjson
import pytest

from engine.tax import gstr1
from engine.tax.gstr1 import Amendment, ExportDetails, SupplyDocument, SupplyLine, build_gstr1, classify

SELLER = "27AAGCB7383J1Z8"
BUYER = "29AAACR5055K1Z3"
D = Decimal


def line(
    taxable: str = "1000",
    rate: str = "18",
    *,
    intra: bool = False,
    hsn: str = "8504",
    qty: str = "1",
    unit: str | None = "NOS",
    category: str = "taxable",
    cess: str = "0",
    no: int = 1,
) -> SupplyLine:
    txval = D(taxable)
    tax = (txval * D(rate) / 100).quantize(D("0.01"))
    half = (txval * D(rate) / 200).quantize(D("0.01"))
    if category != "taxable":
        tax = half = D(0)
    return SupplyLine(
        line_no=no,
        hsn=hsn,
        description="Transformer coil",
        unit=unit,
        quantity=D(qty),
        taxable_value=txval,
        gst_rate=D(rate) if category == "taxable" else D(0),
        igst=D(0) if intra else tax,
        cgst=half if intra else D(0),
        sgst=half if intra else D(0),
        cess=D(cess),
        supply_category=category,
    )


def doc(
    number: str = "INV-001",
    *,
    day: date = date(2025, 10, 5),
    buyer: str | None = BUYER,
    supply_type: str = "B2B",
    intra: bool = False,
    pos: str = "29",
    lines: tuple[SupplyLine, ...] | None = None,
    document_type: str = "invoice",
    **more: Any,
) -> SupplyDocument:
    lines = lines if lines is not None else (line(intra=intra),)
    total = sum((x.taxable_value + x.igst + x.cgst + x.sgst + x.cess for x in lines), D(0))
    return SupplyDocument(
        document_id=number,
        number=number,
        document_type=document_type,
        date=day,
        supply_type=supply_type,
        seller_gstin=SELLER,
        buyer_gstin=buyer,
        place_of_supply=pos,
        intra_state=intra,
        total=total,
        lines=lines,
        **more,
    )


def b2c(value: str, day: date, *, intra: bool = False) -> SupplyDocument:
    """A B2C invoice whose value (tax included, at 0%) is exactly ``value``."""
    return doc(buyer=None, supply_type="B2C", day=day, intra=intra, lines=(line(value, "0", intra=intra),))


# --- classification -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "section"),
    [
        (doc(), "b2b"),
        (doc(intra=True, pos="27"), "b2b"),
        (doc(supply_type="SEZWP"), "b2b"),
        (doc(supply_type="SEZWOP"), "b2b"),
        (doc(supply_type="DEXP"), "b2b"),
        # B2CL threshold: > 2,50,000 up to 2024-07-31 ...
        (b2c("250000", date(2024, 7, 31)), "b2cs"),
        (b2c("250000.01", date(2024, 7, 31)), "b2cl"),
        (b2c("150000", date(2024, 7, 31)), "b2cs"),
        # ... > 1,00,000 from 2024-08-01
        (b2c("100000", date(2024, 8, 1)), "b2cs"),
        (b2c("100000.01", date(2024, 8, 1)), "b2cl"),
        (b2c("150000", date(2024, 8, 1)), "b2cl"),
        # intra-state B2C is B2CS whatever its value
        (b2c("900000", date(2025, 1, 1), intra=True), "b2cs"),
        (doc(buyer=None, supply_type="EXPWP", pos="96"), "exp"),
        (doc(buyer=None, supply_type="EXPWOP", pos="96"), "exp"),
        (doc(document_type="credit_note"), "cdnr"),
        (doc(document_type="debit_note"), "cdnr"),
        (doc(document_type="credit_note", buyer=None, supply_type="EXPWP", pos="96"), "cdnur"),
        # a note on a B2CL-size inter-state sale -> cdnur; on a small one -> b2cs
        (
            doc(
                document_type="credit_note",
                buyer=None,
                supply_type="B2C",
                original_value=D("300000"),
                original_date=date(2025, 9, 1),
            ),
            "cdnur",
        ),
        (
            doc(
                document_type="credit_note",
                buyer=None,
                supply_type="B2C",
                original_value=D("90000"),
                original_date=date(2025, 9, 1),
            ),
            "b2cs",
        ),
        (
            doc(
                document_type="credit_note",
                buyer=None,
                supply_type="B2C",
                original_value=D("200000"),
                original_date=date(2024, 7, 1),
            ),
            "b2cs",
        ),
    ],
)
def test_classify(document: SupplyDocument, section: str) -> None:
    assert classify(document) == section


@pytest.mark.parametrize(
    ("day", "limit"),
    [(date(2017, 7, 1), "250000"), (date(2024, 7, 31), "250000"), (date(2024, 8, 1), "100000")],
)
def test_b2cl_limit_is_effective_dated(day: date, limit: str) -> None:
    assert gstr1.b2cl_limit(day) == D(limit)


# --- the sections in GSTN's field names -------------------------------------------------------------


def only(documents: list[SupplyDocument], **kw: Any) -> dict[str, Any]:
    result = build_gstr1(SELLER, "102025", documents, **kw)
    assert len(result.parts) == 1
    return result.parts[0]


def test_b2b_invoice_is_rate_wise_with_gstn_fields() -> None:
    d = doc(
        "INV-7",
        lines=(line("1000", "18", no=1), line("500", "18", no=2), line("200", "5", no=3)),
        reverse_charge=True,
    )
    part = only([d])
    assert part["gstin"] == SELLER and part["fp"] == "102025" and part["version"] == gstr1.VERSION
    assert part["b2b"] == [
        {
            "ctin": BUYER,
            "inv": [
                {
                    "inum": "INV-7",
                    "idt": "05-10-2025",
                    "val": D("1980.00"),
                    "pos": "29",
                    "rchrg": "Y",
                    "inv_typ": "R",
                    "itms": [
                        {
                            "num": 1,
                            "itm_det": {
                                "txval": D("200.00"),
                                "rt": D(5),
                                "iamt": D("10.00"),
                                "csamt": D("0.00"),
                            },
                        },
                        {
                            "num": 2,
                            "itm_det": {
                                "txval": D("1500.00"),
                                "rt": D(18),
                                "iamt": D("270.00"),
                                "csamt": D("0.00"),
                            },
                        },
                    ],
                }
            ],
        }
    ]


@pytest.mark.parametrize(
    ("supply_type", "inv_typ"), [("B2B", "R"), ("SEZWP", "SEWP"), ("SEZWOP", "SEWOP"), ("DEXP", "DE")]
)
def test_b2b_invoice_types(supply_type: str, inv_typ: str) -> None:
    assert only([doc(supply_type=supply_type)])["b2b"][0]["inv"][0]["inv_typ"] == inv_typ


def test_intra_state_items_carry_cgst_and_sgst() -> None:
    det = only([doc(intra=True, pos="27")])["b2b"][0]["inv"][0]["itms"][0]["itm_det"]
    assert det == {
        "txval": D("1000.00"),
        "rt": D(18),
        "camt": D("90.00"),
        "samt": D("90.00"),
        "csamt": D("0.00"),
    }


def test_b2cl_grouped_by_place_of_supply_with_ecommerce_operator() -> None:
    big = replace(b2c("150000", date(2025, 10, 2)), number="B-1", ecommerce_gstin="07AAACE1234F1Z5")
    part = only([big])
    assert part["b2cl"] == [
        {
            "pos": "29",
            "inv": [
                {
                    "inum": "B-1",
                    "idt": "02-10-2025",
                    "val": D("150000.00"),
                    "etin": "07AAACE1234F1Z5",
                    "itms": [
                        {
                            "num": 1,
                            "itm_det": {
                                "txval": D("150000.00"),
                                "rt": D(0),
                                "iamt": D("0.00"),
                                "csamt": D("0.00"),
                            },
                        }
                    ],
                }
            ],
        }
    ]


def test_b2cs_is_rate_wise_per_supply_type_and_pos_and_nets_notes() -> None:
    documents = [
        doc(
            "S-1",
            buyer=None,
            supply_type="B2C",
            intra=True,
            pos="27",
            lines=(line("100", "18", intra=True), line("50", "5", intra=True, no=2)),
        ),
        doc(
            "S-2", buyer=None, supply_type="B2C", intra=True, pos="27", lines=(line("300", "18", intra=True),)
        ),
        doc("S-3", buyer=None, supply_type="B2C", pos="29", lines=(line("1000", "18", intra=False),)),
        doc(
            "S-4",
            buyer=None,
            supply_type="B2C",
            pos="29",
            lines=(line("200", "18", intra=False),),
            ecommerce_gstin="07AAACE1234F1Z5",
        ),
        # credit note on S-2: 100 back
        doc(
            "CN-1",
            document_type="credit_note",
            buyer=None,
            supply_type="B2C",
            intra=True,
            pos="27",
            lines=(line("100", "18", intra=True),),
            original_value=D("354"),
        ),
    ]
    rows = only(documents)["b2cs"]
    zero = D("0.00")
    assert rows == [
        {
            "sply_ty": "INTER",
            "pos": "29",
            "typ": "E",
            "etin": "07AAACE1234F1Z5",
            "rt": D(18),
            "txval": D("200.00"),
            "iamt": D("36.00"),
            "csamt": zero,
        },
        {
            "sply_ty": "INTER",
            "pos": "29",
            "typ": "OE",
            "rt": D(18),
            "txval": D("1000.00"),
            "iamt": D("180.00"),
            "csamt": zero,
        },
        {
            "sply_ty": "INTRA",
            "pos": "27",
            "typ": "OE",
            "rt": D(5),
            "txval": D("50.00"),
            "camt": D("1.25"),
            "samt": D("1.25"),
            "csamt": zero,
        },
        {
            "sply_ty": "INTRA",
            "pos": "27",
            "typ": "OE",
            "rt": D(18),
            "txval": D("300.00"),
            "camt": D("27.00"),
            "samt": D("27.00"),
            "csamt": zero,
        },
    ]


def test_exports_with_and_without_payment_carry_the_shipping_bill() -> None:
    bill = ExportDetails("1234567", date(2025, 10, 6), "INBOM1")
    wpay = doc("E-1", buyer=None, supply_type="EXPWP", pos="96", export=bill)
    wopay = doc("E-2", buyer=None, supply_type="EXPWOP", pos="96", lines=(line("800", "0", intra=False),))
    exp = only([wpay, wopay])["exp"]
    assert exp == [
        {
            "exp_typ": "WPAY",
            "inv": [
                {
                    "inum": "E-1",
                    "idt": "05-10-2025",
                    "val": D("1180.00"),
                    "sbpcode": "INBOM1",
                    "sbnum": "1234567",
                    "sbdt": "06-10-2025",
                    "itms": [{"txval": D("1000.00"), "rt": D(18), "iamt": D("180.00"), "csamt": D("0.00")}],
                }
            ],
        },
        {
            "exp_typ": "WOPAY",
            "inv": [
                {
                    "inum": "E-2",
                    "idt": "05-10-2025",
                    "val": D("800.00"),
                    "itms": [{"txval": D("800.00"), "rt": D(0), "iamt": D("0.00"), "csamt": D("0.00")}],
                }
            ],
        },
    ]


def test_nil_exempt_and_non_gst_lines_go_to_nil_by_supply_type() -> None:
    mixed = doc(
        "M-1",
        lines=(line("1000", "18"), line("100", category="nil", no=2), line("40", category="exempt", no=3)),
    )
    intra_b2c = doc(
        "M-2", buyer=None, supply_type="B2C", intra=True, pos="27", lines=(line("70", category="non_gst"),)
    )
    part = only([mixed, intra_b2c])
    zero = D("0.00")
    assert part["nil"] == {
        "inv": [
            {"sply_ty": "INTRB2B", "nil_amt": D("100.00"), "expt_amt": D("40.00"), "ngsup_amt": zero},
            {"sply_ty": "INTRAB2C", "nil_amt": zero, "expt_amt": zero, "ngsup_amt": D("70.00")},
        ]
    }
    # the taxable line alone is in b2b; an invoice of non-GST lines only is in no supply section
    exempt_b2b = doc("M-3", lines=(line("90", category="exempt"),))
    assert "b2b" not in only([exempt_b2b]) and only([exempt_b2b])["nil"]["inv"][0]["expt_amt"] == D("90.00")
    assert [i["itm_det"]["txval"] for i in part["b2b"][0]["inv"][0]["itms"]] == [D("1000.00")]
    assert "b2cs" not in part


def test_notes_to_registered_and_unregistered() -> None:
    cn = doc(
        "CN-9",
        document_type="credit_note",
        original_number="INV-1",
        original_date=date(2025, 9, 3),
        note_reason="sales_return",
    )
    dn = doc("DN-2", document_type="debit_note", intra=True, pos="27")  # lines follow intra
    export_cn = doc("CN-10", document_type="credit_note", buyer=None, supply_type="EXPWOP", pos="96")
    b2cl_cn = doc(
        "CN-11", document_type="credit_note", buyer=None, supply_type="B2C", original_value=D("400000")
    )
    part = only([cn, dn, export_cn, b2cl_cn])
    notes = part["cdnr"][0]["nt"]
    assert part["cdnr"][0]["ctin"] == BUYER
    assert [(n["nt_num"], n["ntty"], n["nt_dt"], n["inv_typ"], n["rchrg"]) for n in notes] == [
        ("CN-9", "C", "05-10-2025", "R", "N"),
        ("DN-2", "D", "05-10-2025", "R", "N"),
    ]
    assert notes[1]["itms"][0]["itm_det"]["camt"] == D("90.00")
    assert [(n["typ"], n["nt_num"], n.get("pos")) for n in part["cdnur"]] == [
        ("EXPWOP", "CN-10", None),
        ("B2CL", "CN-11", "29"),
    ]


def test_hsn_summary_is_split_b2b_b2c_net_of_notes() -> None:
    documents = [
        doc("H-1", lines=(line("1000", "18", qty="10"), line("500", "18", qty="5", no=2))),
        doc("H-2", lines=(line("300", "18", hsn="998314", qty="1", unit=None),)),
        doc(
            "H-3",
            buyer=None,
            supply_type="B2C",
            intra=True,
            pos="27",
            lines=(line("200", "5", qty="2", unit="kgs"),),
        ),
        doc("CN-1", document_type="credit_note", lines=(line("100", "18", qty="1"),)),
        doc(
            "E-1", buyer=None, supply_type="EXPWOP", pos="96", lines=(line("50", "0", qty="1", intra=False),)
        ),
    ]
    hsn = only(documents)["hsn"]
    zero = D("0.00")
    assert hsn["hsn_b2b"] == [
        {
            "num": 1,
            "hsn_sc": "8504",
            "desc": "Transformer coil",
            "uqc": "NOS",
            "qty": D("14.00"),
            "rt": D(18),
            "txval": D("1400.00"),
            "iamt": D("252.00"),
            "camt": zero,
            "samt": zero,
            "csamt": zero,
        },
        {
            "num": 2,
            "hsn_sc": "998314",
            "desc": "Transformer coil",
            "uqc": "NA",
            "qty": zero,
            "rt": D(18),
            "txval": D("300.00"),
            "iamt": D("54.00"),
            "camt": zero,
            "samt": zero,
            "csamt": zero,
        },
    ]
    assert [(r["hsn_sc"], r["uqc"], r["qty"], r["rt"], r["txval"]) for r in hsn["hsn_b2c"]] == [
        ("8504", "KGS", D("2.00"), D(5), D("200.00")),
        ("8504", "NOS", D("1.00"), D(0), D("50.00")),
    ]


# --- doc_issue --------------------------------------------------------------------------------------


def test_doc_issue_runs_split_at_gaps_and_count_cancellations() -> None:
    numbers = ["INV-001", "INV-002", "INV-003", "INV-005", "INV-006", "X/7", "MANUAL"]
    documents = [doc(n, cancelled=(n in ("INV-002", "INV-006"))) for n in numbers]
    documents += [doc("CN-1", document_type="credit_note"), doc("DN-1", document_type="debit_note")]
    part = only(documents)
    assert part["doc_issue"] == {
        "doc_det": [
            {
                "doc_num": 1,
                "docs": [
                    {"num": 1, "from": "INV-001", "to": "INV-003", "totnum": 3, "cancel": 1, "net_issue": 2},
                    {"num": 2, "from": "INV-005", "to": "INV-006", "totnum": 2, "cancel": 1, "net_issue": 1},
                    {"num": 3, "from": "X/7", "to": "X/7", "totnum": 1, "cancel": 0, "net_issue": 1},
                    {"num": 4, "from": "MANUAL", "to": "MANUAL", "totnum": 1, "cancel": 0, "net_issue": 1},
                ],
            },
            {
                "doc_num": 4,
                "docs": [{"num": 1, "from": "DN-1", "to": "DN-1", "totnum": 1, "cancel": 0, "net_issue": 1}],
            },
            {
                "doc_num": 5,
                "docs": [{"num": 1, "from": "CN-1", "to": "CN-1", "totnum": 1, "cancel": 0, "net_issue": 1}],
            },
        ]
    }
    # cancelled documents are no supply
    assert [i["inum"] for i in part["b2b"][0]["inv"]] == ["INV-001", "INV-003", "INV-005", "MANUAL", "X/7"]


def test_doc_issue_series_ignore_padding_and_keep_colliding_numbers() -> None:
    rows = gstr1.doc_issue([doc("A9"), doc("A10"), doc("A010")])["doc_det"][0]["docs"]
    # A010 is another number than A10 with the same serial: reported on its own row
    assert [(r["from"], r["to"], r["totnum"]) for r in rows] == [("A9", "A10", 2), ("A010", "A010", 1)]


# --- amendments -------------------------------------------------------------------------------------


def test_amendments_of_filed_documents() -> None:
    filed = doc("INV-1", day=date(2025, 9, 10))
    changed = replace(filed, lines=(line("2000", "18", intra=False),), total=D("2360"))
    cn = doc("CN-1", day=date(2025, 9, 12), document_type="credit_note")
    cancelled_cn = replace(cn, cancelled=True)
    small = doc("S-1", day=date(2025, 9, 1), buyer=None, supply_type="B2C", intra=True, pos="27")
    small_more = replace(small, lines=(line("1500", "18", intra=True),), total=D("1770"))
    filed_b2cs = {
        "092025": [
            {
                "sply_ty": "INTRA",
                "pos": "27",
                "typ": "OE",
                "rt": 18,
                "txval": 5000,
                "camt": 450,
                "samt": 450,
                "csamt": 0,
            }
        ]
    }
    part = only(
        [],
        amendments=[
            Amendment("092025", filed, changed),
            Amendment("092025", cn, cancelled_cn),
            Amendment("092025", small, small_more),
        ],
        filed_b2cs=filed_b2cs,
    )
    b2ba = part["b2ba"][0]["inv"][0]
    assert (b2ba["oinum"], b2ba["oidt"], b2ba["inum"], b2ba["val"]) == (
        "INV-1",
        "10-09-2025",
        "INV-1",
        D("2360.00"),
    )
    cdnra = part["cdnra"][0]["nt"][0]
    assert (cdnra["ont_num"], cdnra["val"], cdnra["itms"][0]["itm_det"]["txval"]) == (
        "CN-1",
        D("0.00"),
        D("0.00"),
    )
    # the filed 5000 row, revised by +500
    assert part["b2csa"] == [
        {
            "omon": "092025",
            "sply_ty": "INTRA",
            "pos": "27",
            "typ": "OE",
            "itms": [
                {
                    "rt": D(18),
                    "txval": D("5500.00"),
                    "camt": D("495.00"),
                    "samt": D("495.00"),
                    "csamt": D("0.00"),
                }
            ],
        }
    ]
    assert "b2b" not in part


# --- parts, hash, summary ---------------------------------------------------------------------------


def test_split_into_parts_at_the_item_limit_keeps_documents_whole() -> None:
    documents = [doc(f"INV-{i:03d}", lines=(line("100", "18"), line("100", "5", no=2))) for i in range(1, 11)]
    result = build_gstr1(SELLER, "102025", documents, item_limit=7)
    # first part: hsn (2 rows) + doc_issue (1 row) + 2 invoices of 2 items; then up to 3 invoices each
    assert [p["part"] for p in result.summary["parts"]] == [1, 2, 3, 4]
    assert [p["items"] for p in result.summary["parts"]] == [7, 6, 6, 4]
    seen = [i["inum"] for p in result.parts for g in p.get("b2b", []) for i in g["inv"]]
    assert seen == [d.number for d in documents]
    assert all(p["gstin"] == SELLER and p["fp"] == "102025" for p in result.parts)
    assert "hsn" in result.parts[0] and all("hsn" not in p for p in result.parts[1:])
    assert all(p["hash"] == gstr1.part_hash(p) for p in result.parts)


def test_hash_is_stable_and_follows_content() -> None:
    documents = [doc("INV-1"), doc("INV-2", intra=True, pos="27"), b2c("500", date(2025, 10, 3))]
    a = build_gstr1(SELLER, "102025", documents)
    b = build_gstr1(SELLER, "102025", list(reversed(documents)))
    assert a.content_hash == b.content_hash and gstr1.dumps(a.parts[0]) == gstr1.dumps(b.parts[0])
    c = build_gstr1(SELLER, "102025", [*documents, doc("INV-3")])
    assert c.content_hash != a.content_hash


def test_dumps_writes_amounts_as_exact_json_numbers() -> None:
    text = gstr1.dumps({"val": D("12345678901234.50"), "rt": D("0.25"), "s": 'é"', "n": None})
    assert text == b'{"val":12345678901234.50,"rt":0.25,"s":"\xc3\xa9\\"","n":null}'
    assert orjson.loads(text)["rt"] == 0.25


def test_summary_counts_tax_per_section_and_e_invoiced() -> None:
    documents = [
        doc("INV-1", e_invoiced=True),
        doc("INV-2", e_invoiced=True, cancelled=True),
        doc("INV-3", intra=True, pos="27"),
        b2c("500", date(2025, 10, 3)),
    ]
    summary = build_gstr1(SELLER, "102025", documents).summary
    assert summary["documents"] == 4 and summary["cancelled"] == 1 and summary["e_invoiced"] == 1
    assert summary["sections"]["b2b"] == {
        "count": 2,
        "value": "2360.00",
        "txval": "2000.00",
        "iamt": "180.00",
        "camt": "90.00",
        "samt": "90.00",
        "csamt": "0.00",
    }
    assert summary["sections"]["b2cs"]["documents"] == 1
    assert summary["sections"]["doc_issue"] == {"totnum": 4, "cancel": 1, "net_issue": 3}


def test_diff_summaries_names_what_changed() -> None:
    old = build_gstr1(SELLER, "102025", [doc("INV-1")]).summary
    new = build_gstr1(SELLER, "102025", [doc("INV-1"), doc("INV-2")]).summary
    diff = gstr1.diff_summaries(old, new)
    assert diff["documents"] == {"old": 1, "new": 2}
    assert diff["sections"]["b2b"]["count"] == {"old": 1, "new": 2}
    assert diff["sections"]["b2b"]["iamt"] == {"old": "180.00", "new": "360.00"}
    assert gstr1.diff_summaries(old, old) == {}


@pytest.mark.parametrize(("day", "period"), [(date(2025, 1, 31), "012025"), (date(2024, 12, 1), "122024")])
def test_period_of(day: date, period: str) -> None:
    assert gstr1.period_of(day) == period


# --- a mixed month: the return's totals equal sums computed straight from the documents -------------


def _mixed_month(seed: int) -> list[SupplyDocument]:
    import random

    rng = random.Random(seed)
    documents = []
    for i in range(300):
        day = date(2025, 9, 1 + i % 30)  # rates before and after 2025-09-22 (12 and 28 % until then)
        rates = ("5", "12", "18", "28") if day < date(2025, 9, 22) else ("5", "18", "40")
        kind = rng.choice(("b2b", "b2b", "b2c", "b2c", "export", "sez", "credit_note", "debit_note"))
        intra = kind in ("b2b", "b2c", "credit_note", "debit_note") and rng.random() < 0.5
        lines = tuple(
            line(
                str(rng.randint(1, 400_000 if kind == "b2c" else 50_000)),
                rng.choice(rates),
                intra=intra,
                hsn=rng.choice(("8504", "1006", "998314")),
                qty=str(rng.randint(1, 9)),
                category=rng.choice(("taxable", "taxable", "taxable", "nil", "exempt", "non_gst")),
                no=n,
            )
            for n in range(1, rng.randint(1, 4) + 1)
        )
        registered = kind in ("b2b", "sez") or (kind in ("credit_note", "debit_note") and rng.random() < 0.5)
        supply_type = {"export": "EXPWP", "sez": "SEZWP"}.get(kind, "B2B" if registered else "B2C")
        documents.append(
            doc(
                f"{kind[:2].upper()}-{i:04d}",
                day=day,
                buyer=BUYER if registered else None,
                supply_type=supply_type,
                intra=intra,
                pos="27" if intra else ("96" if kind == "export" else "29"),
                lines=lines,
                document_type=kind if kind in ("credit_note", "debit_note") else "invoice",
                original_value=D(rng.randint(1, 300_000)),
                cancelled=rng.random() < 0.05,
            )
        )
    return documents


def _signed(documents: list[SupplyDocument], category: str | None, field: str) -> Decimal:
    """Sum of ``field`` over the lines of live documents (credit notes negative): every line (None),
    the lines reported as taxable supplies ("taxable": all of an export's lines), or the domestic
    lines of one nil/exempt/non-GST category."""
    total = D(0)
    for d in documents:
        if d.cancelled:
            continue
        sign = -1 if d.document_type == "credit_note" else 1
        export = d.supply_type in ("EXPWP", "EXPWOP")
        for x in d.lines:
            if category == "taxable":
                counted = export or x.supply_category == "taxable"
            else:
                counted = category is None or (not export and x.supply_category == category)
            if counted:
                total += sign * getattr(x, field)
    return total


def _sum_items(part: dict[str, Any], field: str) -> Decimal:
    total = D(0)
    for name in ("b2b", "b2cl"):
        total += sum(
            (i["itm_det"].get(field, D(0)) for g in part.get(name, []) for v in g["inv"] for i in v["itms"]),
            D(0),
        )
    total += sum((i.get(field, D(0)) for g in part.get("exp", []) for v in g["inv"] for i in v["itms"]), D(0))
    for notes in [n for g in part.get("cdnr", []) for n in g["nt"]] + part.get("cdnur", []):
        sign = -1 if notes["ntty"] == "C" else 1
        total += sign * sum((i["itm_det"].get(field, D(0)) for i in notes["itms"]), D(0))
    total += sum((r.get(field, D(0)) for r in part.get("b2cs", [])), D(0))
    return total


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_mixed_month_adds_up_across_sections_and_parts(seed: int) -> None:
    documents = _mixed_month(seed)
    result = build_gstr1(SELLER, "092025", documents, item_limit=150)
    assert len(result.parts) > 1
    pairs = {"txval": "taxable_value", "iamt": "igst", "camt": "cgst", "samt": "sgst"}
    for field, attr in pairs.items():
        assert sum((_sum_items(p, field) for p in result.parts), D(0)) == _signed(
            documents, "taxable", attr
        ), field
        hsn = sum((r[field] for p in result.parts if "hsn" in p for t in p["hsn"].values() for r in t), D(0))
        assert hsn == _signed(documents, None, attr), field
    nil = next(p["nil"]["inv"] for p in result.parts if "nil" in p)
    for category, field in (("nil", "nil_amt"), ("exempt", "expt_amt"), ("non_gst", "ngsup_amt")):
        assert sum((r[field] for r in nil), D(0)) == _signed(documents, category, "taxable_value")
    issued = next(p["doc_issue"] for p in result.parts if "doc_issue" in p)
    rows = [r for d in issued["doc_det"] for r in d["docs"]]
    assert sum(r["totnum"] for r in rows) == len(documents)
    assert sum(r["cancel"] for r in rows) == sum(1 for d in documents if d.cancelled)
    numbers = [i["inum"] for p in result.parts for g in p.get("b2b", []) for i in g["inv"]]
    assert len(numbers) == len(set(numbers))  # no document in two parts
