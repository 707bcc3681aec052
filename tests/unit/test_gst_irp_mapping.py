"""Invoice record -> e-invoice v1.1: table-driven cases from india-gst.md section 1, each checked against
the NIC schema and the arithmetic the IRP re-does (AssAmt, CGST = SGST, TotItemVal, ValDtls sums)."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator

from connectors.errors import ErrorClass, PermanentError
from connectors.gst_irp.mapping import (
    MappingError,
    SellerProfile,
    financial_year,
    irn_for,
    to_einvoice,
)

SAMPLE = Path(__file__).resolve().parents[2] / "schemas" / "samples" / "invoice" / "issued.v2.json"
SCHEMA = Draft7Validator(
    json.loads(
        (Path(__file__).resolve().parents[2] / "connectors/gst_irp/einvoice-v1.1.schema.json").read_text()
    )
)
SELLER = SellerProfile(
    gstin="29AAACA1234F1Z5",
    legal_name="Anand Traders Private Limited",
    trade_name="Anand Traders",
    address_line1="12 MG Road",
    address_line2="Ashok Nagar",
    location="Bengaluru",
    pincode="560001",
    state_code="29",
)
CENT = Decimal("0.01")


def money(value: Decimal) -> str:
    return str(value.quantize(CENT, rounding=ROUND_HALF_UP))


@dataclass(frozen=True)
class L:
    """One invoice line as the engine would have computed it."""

    hsn: str
    qty: str
    price: str
    rate: str
    discount: str = "0"
    cess_rate: str = "0"
    description: str = "Stainless steel tiffin box"


def invoice(
    lines: list[L], *, supply: str = "B2B", pos: str = "33", buyer_state: str = "33", **extra: Any
) -> dict[str, Any]:
    """A ledgerflow.invoice.issued record, taxed per line (ROUND_HALF_UP per amount, as the engine does)."""
    record: dict[str, Any] = json.loads(SAMPLE.read_text())
    intra = supply == "B2B" and pos == SELLER.state_code
    zero_rated = supply in ("SEZWOP", "EXPWOP")
    out: list[dict[str, Any]] = []
    for number, spec in enumerate(lines, start=1):
        gross = Decimal(spec.qty) * Decimal(spec.price)
        taxable = (gross - Decimal(spec.discount)).quantize(CENT, rounding=ROUND_HALF_UP)
        rate, cess_rate = Decimal(spec.rate), Decimal(spec.cess_rate)
        half = Decimal(money(taxable * rate / 200)) if intra and not zero_rated else Decimal(0)
        igst = Decimal(money(taxable * rate / 100)) if not intra and not zero_rated else Decimal(0)
        cess = Decimal(money(taxable * cess_rate / 100)) if not zero_rated else Decimal(0)
        out.append(
            {
                "line_no": number,
                "description": spec.description,
                "hsn": spec.hsn,
                "quantity": spec.qty,
                "unit": "NOS",
                "unit_price": spec.price,
                "discount": spec.discount,
                "taxable_value": money(taxable),
                "gst_rate": spec.rate,
                "rate_source": "master",
                "master_rate": spec.rate,
                "override_reason": None,
                "cgst": money(half),
                "sgst": money(half),
                "igst": money(igst),
                "cess_rate": spec.cess_rate,
                "cess": money(cess),
                "total": money(taxable + 2 * half + igst + cess),
            }
        )
    record.update(supply_type=supply, place_of_supply=pos, intra_state=intra, lines=out)
    record["buyer"]["state"] = buyer_state
    record["totals"] = {
        name: money(sum((Decimal(str(line[key])) for line in out), Decimal(0)))
        for name, key in (
            ("taxable", "taxable_value"),
            ("cgst", "cgst"),
            ("sgst", "sgst"),
            ("igst", "igst"),
            ("cess", "cess"),
            ("total", "total"),
        )
    }
    if supply in ("EXPWP", "EXPWOP"):
        record["buyer"].update(
            gstin=None,
            name="Harbour Imports Pte Ltd",
            address={"line1": "1 Marina Boulevard", "line2": None, "city": "Singapore", "pincode": None},
        )
    record.update(extra)
    return record


def d(value: float) -> Decimal:
    """A JSON number back to an exact 2-dp Decimal, the way the IRP reads it."""
    return Decimal(str(value))


def assert_irp_arithmetic(doc: dict[str, Any]) -> None:
    assert not list(SCHEMA.iter_errors(doc)), [e.message for e in SCHEMA.iter_errors(doc)]
    values = doc["ValDtls"]
    intra = doc["BuyerDtls"]["Pos"] == doc["SellerDtls"]["Stcd"] and doc["TranDtls"]["SupTyp"] == "B2B"
    for item in doc["ItemList"]:
        assert d(item["TotAmt"]) == (d(item["Qty"]) * d(item["UnitPrice"])).quantize(CENT, ROUND_HALF_UP)
        assert d(item["AssAmt"]) == d(item["TotAmt"]) - d(item["Discount"])
        assert d(item["CgstAmt"]) == d(item["SgstAmt"])
        if intra:
            assert item["IgstAmt"] == 0
        else:
            assert item["CgstAmt"] == 0
        taxes = d(item["CgstAmt"]) + d(item["SgstAmt"]) + d(item["IgstAmt"]) + d(item["CesAmt"])
        assert d(item["TotItemVal"]) == d(item["AssAmt"]) + taxes
        assert item["IsServc"] == ("Y" if item["HsnCd"].startswith("99") else "N")
    for total, key in (
        ("AssVal", "AssAmt"),
        ("CgstVal", "CgstAmt"),
        ("SgstVal", "SgstAmt"),
        ("IgstVal", "IgstAmt"),
        ("CesVal", "CesAmt"),
    ):
        assert d(values[total]) == sum((d(item[key]) for item in doc["ItemList"]), Decimal(0)), total
    assert values["Discount"] == 0  # item discounts live in AssAmt only
    assert -99.99 <= values["RndOffAmt"] <= 99.99
    assert d(values["TotInvVal"]) == sum((d(item["TotItemVal"]) for item in doc["ItemList"]), Decimal(0)) + d(
        values["RndOffAmt"]
    )


CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "intra-state": (
        invoice([L("7323", "10", "100.00", "18"), L("7323", "2", "50.00", "18")], pos="29", buyer_state="29"),
        {"SupTyp": "B2B", "Pos": "29", "CgstVal": 99.0, "SgstVal": 99.0, "IgstVal": 0.0, "TotInvVal": 1298.0},
    ),
    "inter-state": (
        invoice([L("7323", "10", "100.00", "18")]),
        {"SupTyp": "B2B", "Pos": "33", "IgstVal": 180.0, "CgstVal": 0.0, "TotInvVal": 1180.0},
    ),
    "SEZ with payment": (
        invoice([L("8471", "1", "50000.00", "18")], supply="SEZWP"),
        {"SupTyp": "SEZWP", "IgstVal": 9000.0, "TotInvVal": 59000.0},
    ),
    "SEZ without payment": (
        invoice([L("8471", "1", "50000.00", "18")], supply="SEZWOP"),
        {"SupTyp": "SEZWOP", "IgstVal": 0.0, "TotInvVal": 50000.0},
    ),
    "export with payment": (
        invoice([L("6109", "100", "250.00", "5")], supply="EXPWP"),
        {"SupTyp": "EXPWP", "Pos": "96", "BuyerGstin": "URP", "IgstVal": 1250.0, "TotInvVal": 26250.0},
    ),
    "export without payment": (
        invoice([L("6109", "100", "250.00", "5")], supply="EXPWOP"),
        {"SupTyp": "EXPWOP", "Pos": "96", "BuyerGstin": "URP", "IgstVal": 0.0, "TotInvVal": 25000.0},
    ),
    "discounts": (
        invoice([L("7323", "3", "333.33", "18", discount="99.99")]),
        {"AssVal": 900.0, "IgstVal": 162.0, "TotInvVal": 1062.0},
    ),
    "multi-rate with cess": (
        invoice(
            [
                L("1905", "4", "25.00", "5"),
                L("3004", "1", "120.00", "12"),
                L("7323", "2", "499.50", "18"),
                L("8703", "1", "500000.00", "28", cess_rate="15"),
            ]
        ),
        {"AssVal": 501219.0, "IgstVal": 140199.22, "CesVal": 75000.0, "TotInvVal": 716418.22},
    ),
    "rounding: 3-dp price, half-paisa tax": (
        invoice([L("7323", "7", "12.345", "18"), L("7323", "1", "0.25", "18")], pos="29", buyer_state="29"),
        # 7 x 12.345 = 86.415 -> 86.42; 86.42 x 9% = 7.7778 -> 7.78; 0.25 x 9% = 0.0225 -> 0.02
        {"AssVal": 86.67, "CgstVal": 7.80, "SgstVal": 7.80, "TotInvVal": 102.27},
    ),
    "service (SAC 99)": (
        invoice([L("998314", "1", "15000.00", "18", description="IT consulting services")]),
        {"IsServc": "Y", "IgstVal": 2700.0, "TotInvVal": 17700.0},
    ),
}


@pytest.mark.parametrize("record, expected", CASES.values(), ids=CASES.keys())
def test_every_case_is_schema_valid_and_adds_up_like_the_irp(
    record: dict[str, Any], expected: dict[str, Any]
) -> None:
    doc = to_einvoice(record, SELLER)

    assert_irp_arithmetic(doc)
    assert doc["Version"] == "1.1"
    assert doc["TranDtls"] == {
        "TaxSch": "GST",
        "SupTyp": expected.get("SupTyp", "B2B"),
        "RegRev": "N",
    }
    assert doc["DocDtls"] == {"Typ": "INV", "No": "INV/25-26/00042", "Dt": "01/05/2025"}
    for key, value in expected.items():
        if key in ("SupTyp",):
            continue
        elif key == "Pos":
            assert doc["BuyerDtls"]["Pos"] == value
        elif key == "BuyerGstin":
            assert doc["BuyerDtls"]["Gstin"] == value
        elif key == "IsServc":
            assert {item["IsServc"] for item in doc["ItemList"]} == {value}
        else:
            assert doc["ValDtls"][key] == value, key


def test_seller_details_come_from_the_profile() -> None:
    doc = to_einvoice(CASES["inter-state"][0], SELLER)

    assert doc["SellerDtls"] == {
        "Gstin": "29AAACA1234F1Z5",
        "LglNm": "Anand Traders Private Limited",
        "TrdNm": "Anand Traders",
        "Addr1": "12 MG Road",
        "Addr2": "Ashok Nagar",
        "Loc": "Bengaluru",
        "Pin": 560001,
        "Stcd": "29",
    }
    assert doc["BuyerDtls"] == {
        "Gstin": "33AAJFK5678L1Z2",
        "LglNm": "Kaveri Foods LLP",
        "Pos": "33",
        "Stcd": "33",
        "Addr1": "14 Anna Salai",
        "Loc": "Chennai",
        "Pin": 600002,
    }


def test_item_fields_carry_quantity_price_and_rates() -> None:
    doc = to_einvoice(invoice([L("7323", "3", "333.33", "18", discount="99.99")]), SELLER)

    assert doc["ItemList"] == [
        {
            "SlNo": "1",
            "PrdDesc": "Stainless steel tiffin box",
            "IsServc": "N",
            "HsnCd": "7323",
            "Qty": 3.0,
            "Unit": "NOS",
            "UnitPrice": 333.33,
            "TotAmt": 999.99,
            "Discount": 99.99,
            "AssAmt": 900.0,
            "GstRt": 18.0,
            "IgstAmt": 162.0,
            "CgstAmt": 0.0,
            "SgstAmt": 0.0,
            "CesRt": 0.0,
            "CesAmt": 0.0,
            "TotItemVal": 1062.0,
        }
    ]


def test_exports_use_unregistered_buyer_foreign_state_and_pin() -> None:
    doc = to_einvoice(invoice([L("6109", "1", "100.00", "5")], supply="EXPWOP"), SELLER)

    assert {k: doc["BuyerDtls"][k] for k in ("Gstin", "Pos", "Stcd", "Pin")} == {
        "Gstin": "URP",
        "Pos": "96",
        "Stcd": "96",
        "Pin": 999999,
    }


def test_round_off_rounds_the_invoice_value_to_rupees_and_reports_the_difference() -> None:
    record = CASES["rounding: 3-dp price, half-paisa tax"][0]

    doc = to_einvoice(record, SELLER, round_off=True)

    assert doc["ValDtls"]["TotInvVal"] == 102.0
    assert doc["ValDtls"]["RndOffAmt"] == -0.27
    assert_irp_arithmetic(doc)


def test_numbers_are_json_numbers_with_exact_decimals() -> None:
    doc = to_einvoice(CASES["multi-rate with cess"][0], SELLER)

    text = json.dumps(doc)
    assert '"IgstVal": 140199.22' in text
    assert '"UnitPrice": 499.5' in text


def problems_of(record: dict[str, Any], seller: SellerProfile = SELLER) -> dict[str, str]:
    with pytest.raises(MappingError) as caught:
        to_einvoice(record, seller)
    return {p.path: p.message for p in caught.value.problems}


def test_b2c_has_no_einvoice() -> None:
    assert "supply_type" in problems_of(invoice([L("7323", "1", "10.00", "18")], supply="B2C"))


def test_mapping_error_is_permanent_and_lists_its_problems_in_details() -> None:
    with pytest.raises(PermanentError) as caught:
        to_einvoice(invoice([L("7323", "1", "10.00", "18")], supply="B2C"), SELLER)

    assert caught.value.error_class is ErrorClass.PERMANENT
    assert caught.value.code == "einvoice_mapping"
    assert caught.value.details["problems"][0]["path"] == "supply_type"


def test_a_missing_buyer_address_is_reported_with_its_path() -> None:
    record = invoice([L("7323", "1", "10.00", "18")])
    record["buyer"]["address"] = None

    assert "buyer.address" in problems_of(record)


def test_a_missing_buyer_pincode_is_reported_for_buyers_in_india() -> None:
    record = invoice([L("7323", "1", "10.00", "18")])
    record["buyer"]["address"]["pincode"] = None

    assert "buyer.address.pincode" in problems_of(record)


def test_a_double_quote_anywhere_is_refused_with_the_schema_path() -> None:
    record = invoice([L("7323", "1", "10.00", "18", description='12" steel plate')])

    problems = problems_of(record)

    assert list(problems) == ["ItemList/0/PrdDesc"]


def test_a_registered_buyer_needs_a_gstin_different_from_the_sellers() -> None:
    record = invoice([L("7323", "1", "10.00", "18")])
    without = copy.deepcopy(record)
    without["buyer"]["gstin"] = None
    to_self = copy.deepcopy(record)
    to_self["buyer"]["gstin"] = SELLER.gstin

    assert "buyer.gstin" in problems_of(without)
    assert "buyer.gstin" in problems_of(to_self)


def test_a_taxable_value_that_is_not_qty_times_price_minus_discount_is_refused() -> None:
    record = invoice([L("7323", "10", "100.00", "18")])
    record["lines"][0]["taxable_value"] = "990.00"

    assert "lines[0].taxable_value" in problems_of(record)


def test_totals_that_do_not_add_up_are_refused() -> None:
    record = invoice([L("7323", "10", "100.00", "18")])
    record["totals"]["total"] = "1181.00"

    assert "totals.total" in problems_of(record)


def test_an_intra_state_line_with_igst_is_refused() -> None:
    record = invoice([L("7323", "10", "100.00", "18")], pos="29", buyer_state="29")
    record["lines"][0].update(cgst="0.00", sgst="0.00", igst="180.00")

    assert "lines[0]" in problems_of(record)


def test_the_seller_gstin_on_the_invoice_must_be_the_profiles() -> None:
    record = invoice([L("7323", "1", "10.00", "18")])
    record["seller"]["gstin"] = "27AAACA1234F1Z5"

    assert "seller.gstin" in problems_of(record)


def test_irn_hashes_gstin_financial_year_type_and_number() -> None:
    # india-gst.md section 1: the example input string, byte for byte.
    expected = hashlib.sha256(b"01AAAAA9999A19N2019-20INVABC01234").hexdigest()

    assert irn_for("01AAAAA9999A19N", date(2019, 4, 1), "INV", "ABC01234") == expected
    assert irn_for("01AAAAA9999A19N", date(2020, 3, 31), "INV", "ABC01234") == expected
    assert irn_for("01AAAAA9999A19N", date(2020, 4, 1), "INV", "ABC01234") != expected


@pytest.mark.parametrize(
    "day, year",
    [(date(2025, 3, 31), "2024-25"), (date(2025, 4, 1), "2025-26"), (date(1999, 12, 31), "1999-00")],
)
def test_financial_year_runs_april_to_march(day: date, year: str) -> None:
    assert financial_year(day) == year
