"""Pure eTIMS mapping: invoice records -> saveTrnsSalesOsdc / saveSales / saveItem, item codes, QR
links, Nairobi dates and receipts (kenya-etims.md, "saveTrnsSalesOsdc")."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.errors import NeedsAttentionError
from connectors.etims.mapping import (
    ItemCode,
    MappingError,
    build_item_code,
    item_payload,
    parse_item_code,
    parse_receipt,
    receipt_qr_url,
    sale_payload,
)

FLOUR = "KE2NTXU0000001"
WATER = "KE2BXXU0000002"
VEG = "KE1BGXKGX0000003"
CLASSES = {FLOUR: "5059690800", WATER: "5020230100", VEG: "5010150000"}
ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
NOW = datetime(2026, 3, 31, 22, 30, 5, tzinfo=UTC)  # 1 April 01:30:05 in Nairobi (UTC+3)


def line(no: int, code: str, qty: str, price: str, discount: str, tax_type: str, rate: str) -> dict[str, Any]:
    supply = Decimal(qty) * Decimal(price)
    taxable = supply - Decimal(discount)
    tax = (taxable * Decimal(rate) / 100).quantize(Decimal("0.01"))
    return {
        "line_no": no,
        "item_code": code,
        "description": f"item {no}",
        "quantity": qty,
        "unit_price": price,
        "discount": discount,
        "tax_type": tax_type,
        "supply_amount": str(supply),
        "taxable_amount": str(taxable),
        "tax_rate": rate,
        "tax_amount": str(tax),
        "total": str(taxable + tax),
    }


def record(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "number": "KE-2026-0042",
        "date": "2026-03-31",
        "country": "KE",
        "document_type": "invoice",
        "currency": "KES",
        "payment_type": "06",
        "seller": {
            "kra_pin": "P051234567X",
            "legal_name": "Duka Fresh Limited",
            "trade_name": "Duka Fresh",
            "address": {"line1": "Moi Avenue 12", "city": "Nairobi"},
        },
        "buyer": {"name": "Wanjiku Traders", "kra_pin": "p000111222q", "phone": "0712345678"},
        "lines": [
            line(1, FLOUR, "2", "1000.00", "0", "B", "16"),
            line(2, WATER, "3", "50.00", "15.00", "E", "8"),
            line(3, VEG, "1.5", "120.00", "0", "A", "0"),
        ],
        "tax_breakdown": [
            {"tax_type": "A", "rate": "0", "taxable": "180.00", "tax": "0.00"},
            {"tax_type": "B", "rate": "16", "taxable": "2000.00", "tax": "320.00"},
            {"tax_type": "E", "rate": "8", "taxable": "135.00", "tax": "10.80"},
        ],
        "totals": {"taxable": "2315.00", "vat": "330.80", "total": "2645.80"},
    }
    base.update(changes)
    return base


def payload(rec: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "invc_no": 7,
        "org_invc_no": None,
        "item_classes": CLASSES,
        "now": NOW,
        "device_type": "oscu",
    }
    args.update(kw)
    return sale_payload(rec if rec is not None else record(), **args)


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("trdInvcNo", "KE-2026-0042"),
        ("invcNo", 7),
        ("orgInvcNo", 0),
        ("custTin", "P000111222Q"),
        ("custNm", "Wanjiku Traders"),
        ("salesTyCd", "N"),
        ("rcptTyCd", "S"),
        ("pmtTyCd", "06"),
        ("salesSttsCd", "02"),
        ("cfmDt", "20260401013005"),
        ("salesDt", "20260331"),
        ("rfdDt", None),
        ("rfdRsnCd", None),
        ("totItemCnt", 3),
        ("totTaxblAmt", 2315.00),
        ("totTaxAmt", 330.80),
        ("totAmt", 2645.80),
    ],
)
def test_a_sale_payload_carries_each_header_field(field: str, expected: Any) -> None:
    assert payload()[field] == expected


@pytest.mark.parametrize(
    ("tax_type", "taxable", "rate", "tax"),
    [
        ("A", 180.00, 0, 0.00),
        ("B", 2000.00, 16, 320.00),
        ("C", 0.00, 0, 0.00),
        ("D", 0.00, 0, 0.00),
        ("E", 135.00, 8, 10.80),
    ],
)
def test_each_tax_type_gets_its_taxable_amount_rate_and_tax(
    tax_type: str, taxable: float, rate: int, tax: float
) -> None:
    sale = payload()

    assert (sale[f"taxblAmt{tax_type}"], sale[f"taxRt{tax_type}"], sale[f"taxAmt{tax_type}"]) == (
        taxable,
        rate,
        tax,
    )


def test_a_tax_type_the_invoice_does_not_use_takes_the_synced_rate_with_zero_amounts() -> None:
    sale = payload(rates={"E": Decimal("10"), "C": Decimal("0")})

    assert (sale["taxRtE"], sale["taxRtC"], sale["taxblAmtC"]) == (8, 0, 0.0)  # E is used: its own rate
    unused = payload(record(tax_breakdown=[]), rates={"E": Decimal("10")})
    assert (unused["taxRtB"], unused["taxRtE"], unused["taxAmtE"]) == (16, 10, 0.0)


@pytest.mark.parametrize(
    ("index", "expected"),
    [
        (
            0,
            {"itemSeq": 1, "itemCd": FLOUR, "itemClsCd": "5059690800", "pkgUnitCd": "NT", "qtyUnitCd": "U"},
        ),
        (0, {"qty": 2.0, "pkg": 2.0, "prc": 1000.0, "splyAmt": 2000.0, "dcRt": 0.0, "dcAmt": 0.0}),
        (0, {"taxTyCd": "B", "taxblAmt": 2000.0, "taxAmt": 320.0, "totAmt": 2320.0}),
        (1, {"splyAmt": 150.0, "dcAmt": 15.0, "dcRt": 10.0, "taxblAmt": 135.0, "taxAmt": 10.8}),
        (2, {"pkgUnitCd": "BG", "qtyUnitCd": "KG", "qty": 1.5, "taxTyCd": "A", "taxAmt": 0.0}),
    ],
)
def test_each_line_becomes_an_item_with_units_from_its_item_code(
    index: int, expected: dict[str, Any]
) -> None:
    item = payload()["itemList"][index]

    assert {k: item[k] for k in expected} == expected


def test_the_receipt_block_names_buyer_and_seller() -> None:
    receipt = payload()["receipt"]

    assert receipt == {
        "custTin": "P000111222Q",
        "custMblNo": "0712345678",
        "rcptPbctDt": "20260401013005",
        "trdeNm": "Duka Fresh",
        "adrs": "Moi Avenue 12, Nairobi",
        "topMsg": None,
        "btmMsg": None,
        "prchrAcptcYn": "N",
    }


def test_a_buyer_without_a_pin_is_sent_without_one_and_cash_is_the_default_payment() -> None:
    rec = record(buyer={"name": "Walk-in customer"}, payment_type=None)

    sale = payload(rec)

    assert (sale["custTin"], sale["receipt"]["custTin"], sale["pmtTyCd"]) == (None, None, "01")


@pytest.mark.parametrize(
    ("now", "date", "cfm_dt", "sales_dt"),
    [
        (datetime(2026, 3, 31, 22, 30, 5, tzinfo=UTC), None, "20260401013005", "20260401"),
        (datetime(2026, 3, 31, 20, 59, 59, tzinfo=UTC), None, "20260331235959", "20260331"),
        (datetime(2026, 12, 31, 21, 0, 0, tzinfo=UTC), "2026-12-31", "20270101000000", "20261231"),
    ],
)
def test_dates_are_nairobi_local_time(now: datetime, date: str | None, cfm_dt: str, sales_dt: str) -> None:
    sale = payload(record(date=date), now=now)

    assert (sale["cfmDt"], sale["salesDt"]) == (cfm_dt, sales_dt)


def test_a_naive_time_is_refused_rather_than_guessed() -> None:
    with pytest.raises(ValueError, match="naive"):
        payload(now=datetime(2026, 4, 1, 12, 0))


def test_a_credit_note_is_an_r_receipt_naming_the_original_and_the_reason() -> None:
    rec = record(document_type="credit_note", refund_reason_code="06", number="KE-CN-0001")

    sale = payload(rec, invc_no=9, org_invc_no=7)

    assert (sale["rcptTyCd"], sale["orgInvcNo"], sale["rfdRsnCd"], sale["rfdDt"]) == (
        "R",
        7,
        "06",
        sale["cfmDt"],
    )
    assert sale["totAmt"] > 0 and all(item["qty"] > 0 for item in sale["itemList"])


@pytest.mark.parametrize(
    ("changes", "org", "message"),
    [
        ({"document_type": "credit_note", "refund_reason_code": "06"}, None, "orgInvcNo"),
        ({"document_type": "credit_note"}, 7, "refund_reason_code"),
        ({"lines": []}, None, "at least one line"),
        ({"tax_breakdown": [{"tax_type": "F", "rate": "1", "taxable": "1", "tax": "0"}]}, None, "tax type"),
    ],
)
def test_a_record_that_cannot_become_a_sale_is_a_permanent_mapping_error(
    changes: dict[str, Any], org: int | None, message: str
) -> None:
    with pytest.raises(MappingError, match=message):
        payload(record(**changes), org_invc_no=org)


def test_a_line_without_a_registered_item_class_or_with_a_bad_tax_type_is_refused() -> None:
    with pytest.raises(MappingError, match="no item class"):
        payload(item_classes={FLOUR: "5059690800"})
    rec = record()
    bad = copy.deepcopy(rec)
    bad["lines"][0]["tax_type"] = "Z"
    with pytest.raises(MappingError, match="tax_type"):
        payload(bad)
    bad["lines"][0]["item_code"] = "FLOUR-1"
    with pytest.raises(MappingError, match="not an eTIMS item code"):
        payload(bad)


def test_the_vscu_variant_has_no_trade_invoice_number_and_keeps_ours_in_the_remark() -> None:
    oscu, vscu = payload(), payload(device_type="vscu")

    assert "trdInvcNo" not in vscu and vscu["remark"] == "KE-2026-0042"
    assert {k: v for k, v in oscu.items() if k not in ("trdInvcNo", "remark")} == {
        k: v for k, v in vscu.items() if k != "remark"
    }


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("KE", "1", "NT", "U", 1), "KE1NTXU0000001"),
        (("KE", "2", "NT", "U", 1), "KE2NTXU0000001"),
        (("KE", "2", "BG", "KG", 42), "KE2BGXKGX0000042"),
        (("KE", "3", "NT", "LTR", 7), "KE3NTXLTR0000007"),
        (("ke", "1", "ct", "bx", 9_999_999), "KE1CTXBXX9999999"),
    ],
)
def test_item_codes_are_country_type_units_and_a_seven_digit_sequence(
    args: tuple[Any, ...], code: str
) -> None:
    built = build_item_code(*args)

    assert built == code
    country, item_type, pkg, qty, seq = args
    assert parse_item_code(built) == ItemCode(country.upper(), item_type, pkg.upper(), qty.upper(), seq)


@pytest.mark.parametrize(
    "args",
    [
        ("KEN", "1", "NT", "U", 1),
        ("KE", "4", "NT", "U", 1),
        ("KE", "1", "NETT", "U", 1),
        ("KE", "1", "N", "U", 1),
        ("KE", "1", "NT", "LTX", 1),
        ("KE", "1", "NT", "", 1),
        ("KE", "1", "NT", "U", 0),
        ("KE", "1", "NT", "U", 10_000_000),
    ],
)
def test_an_item_code_from_bad_parts_is_refused(args: tuple[Any, ...]) -> None:
    with pytest.raises(ValueError):
        build_item_code(*args)


@given(
    pkg=st.text(alphabet=ALNUM, min_size=2, max_size=2),
    qty=st.text(alphabet=ALNUM, min_size=1, max_size=3).filter(
        lambda u: not (len(u) == 3 and u.endswith("X"))
    ),
    item_type=st.sampled_from(["1", "2", "3"]),
    sequence=st.integers(min_value=1, max_value=9_999_999),
)
def test_every_item_code_reads_back_into_the_parts_it_was_built_from(
    pkg: str, qty: str, item_type: str, sequence: int
) -> None:
    code = build_item_code("KE", item_type, pkg, qty, sequence)

    assert parse_item_code(code) == ItemCode("KE", item_type, pkg, qty, sequence)


@pytest.mark.parametrize(
    "code", ["KE1NTXU000001", "KE4NTXU0000001", "1KENTXU0000001", "KE1NTXUU0000001", "KE1NTU0000001"]
)
def test_a_string_that_is_not_an_item_code_does_not_parse(code: str) -> None:
    with pytest.raises(ValueError):
        parse_item_code(code)


def test_an_item_payload_takes_type_and_units_from_its_code() -> None:
    item = item_payload(
        item_code=VEG,
        item_class_code="5010150000",
        name="Sukuma wiki",
        origin="ke",
        tax_type="a",
        default_price="40",
    )

    assert {k: item[k] for k in ("itemCd", "itemTyCd", "pkgUnitCd", "qtyUnitCd", "orgnNatCd", "taxTyCd")} == {
        "itemCd": VEG,
        "itemTyCd": "1",
        "pkgUnitCd": "BG",
        "qtyUnitCd": "KG",
        "orgnNatCd": "KE",
        "taxTyCd": "A",
    }
    assert (item["dftPrc"], item["useYn"], item["isrcAplcbYn"], item["itemClsCd"]) == (
        40.0,
        "Y",
        "N",
        "5010150000",
    )
    with pytest.raises(ValueError, match="disagrees"):
        item_payload(
            item_code=VEG,
            item_class_code="x",
            name="x",
            origin="KE",
            tax_type="A",
            default_price=1,
            qty_unit="U",
        )


@pytest.mark.parametrize(
    ("environment", "url"),
    [
        (
            "sandbox",
            "https://etims-sbx.kra.go.ke/common/link/etims/receipt/indexEtimsReceiptData?Data=P051234567X01ABCD1234EFGH5678",
        ),
        (
            "production",
            "https://etims.kra.go.ke/common/link/etims/receipt/indexEtimsReceiptData?Data=P051234567X01ABCD1234EFGH5678",
        ),
    ],
)
def test_the_receipt_qr_url_is_pin_branch_and_signature_on_the_environments_host(
    environment: str, url: str
) -> None:
    assert receipt_qr_url(environment, "p051234567x", "01", "ABCD1234EFGH5678") == url


def test_a_qr_url_for_an_unknown_environment_is_refused() -> None:
    with pytest.raises(ValueError):
        receipt_qr_url("staging", "P051234567X", "01", "X")


def test_an_oscu_receipt_is_read_with_string_counters() -> None:
    data = {
        "curRcptNo": "12",
        "totRcptNo": "40",
        "intrlData": "ABC",
        "rcptSign": "SIG",
        "sdcDateTime": "20260401013005",
    }

    receipt = parse_receipt(data, invc_no=7)

    assert (receipt.invc_no, receipt.receipt_no, receipt.total_receipt_no) == (7, 12, 40)
    assert (receipt.internal_data, receipt.receipt_signature, receipt.sdc_datetime) == (
        "ABC",
        "SIG",
        "20260401013005",
    )
    assert (receipt.sdc_id, receipt.mrc_no) == (None, None)


def test_a_vscu_receipt_brings_its_sdc_id_mrc_number_and_publication_date() -> None:
    data = {
        "rcptNo": 3,
        "totRcptNo": 5,
        "intrlData": "I",
        "rcptSign": "S",
        "vsdcRcptPbctDate": "20260401013005",
        "sdcId": "KRAVSCU0000001",
        "mrcNo": "WIS00000001",
    }

    receipt = parse_receipt(data)

    assert (receipt.receipt_no, receipt.sdc_datetime, receipt.sdc_id, receipt.mrc_no) == (
        3,
        "20260401013005",
        "KRAVSCU0000001",
        "WIS00000001",
    )


def test_an_answer_without_a_signature_is_no_receipt() -> None:
    with pytest.raises(NeedsAttentionError, match="rcptSign"):
        parse_receipt({"curRcptNo": "1", "totRcptNo": "1", "intrlData": "I", "sdcDateTime": "20260401013005"})
