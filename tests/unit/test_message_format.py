"""The relay's messages, pinned byte for byte: key, CloudEvents headers (names, values, order) and the
Avro single-object value of two stored events, as the relay encoded them before its encoder was
rewritten for speed (issue 15). Downstream consumers decode these bytes; any difference, even one a
decoder would accept, is a change of the published contract and must be made on purpose."""

from __future__ import annotations

import io
from typing import Any
from uuid import UUID

import fastavro
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.publishing import encode_stored, event_id, event_id_text, headers_for, outbound_from_stored
from schemas import codec, registry
from schemas.native_writer import compile_native_writer

INVOICE = UUID("5f0c8a4e-2b1d-4c3e-9a7f-1e2d3c4b5a69")
TENANT_HEX = "adefee0ea0264dbc9f7e0db00b05112f"


def decimal(text: str) -> dict[str, str]:
    """A Decimal as eventsourcing's transcoder stores it."""
    return {"_type_": "decimal_str", "_data_": text}


def stored_line(no: int, description: str, hsn: str, **amounts: Any) -> dict[str, Any]:
    return {
        "line_no": no,
        "description": description,
        "hsn": hsn,
        "quantity": decimal(amounts["quantity"]),
        "unit": amounts["unit"],
        "unit_price": decimal(amounts["unit_price"]),
        "discount": decimal(amounts["discount"]),
        "taxable_value": decimal(amounts["taxable_value"]),
        "gst_rate": decimal(amounts["gst_rate"]),
        "rate_source": amounts.get("rate_source", "master"),
        "master_rate": decimal(amounts.get("master_rate", "18")),
        "override_reason": amounts.get("override_reason"),
        "cgst": decimal(amounts["cgst"]),
        "sgst": decimal(amounts["sgst"]),
        "igst": decimal("0"),
        "cess_rate": decimal("0"),
        "cess": decimal("0.00"),
        "total": decimal(amounts["total"]),
    }


# The stored JSON of an Invoice.Issued event (version 1) and of its Cancelled event (version 2), in
# eventsourcing's transcoded form. The amounts take every path of the formatters: "0" and "12.5" as
# money, "25.500" as a quantity, a three-decimal unit price.
ISSUED_STATE = {
    "timestamp": {"_type_": "datetime_iso", "_data_": "2026-01-19T10:15:30.123456+00:00"},
    "originator_topic": "engine.domain.invoice:Invoice",
    "tenant_id": {"_type_": "uuid_hex", "_data_": TENANT_HEX},
    "number": "INV-2026-001",
    "financial_year": "2025-26",
    "invoice_date": {"_type_": "date_iso", "_data_": "2026-01-19"},
    "currency": "INR",
    "supply_type": "B2B",
    "seller": {
        "gstin": "27AAGCB7383J1Z8",
        "legal_name": "Bench Electricals Private Limited",
        "state": "27",
        "trade_name": "Bench Electricals",
        "address": {"line1": "4 Mill Lane", "line2": None, "city": "Pune", "pincode": "411002"},
    },
    "buyer": {
        "name": "Reliable Traders Pvt Ltd",
        "gstin": "27AAACR5055K1Z7",
        "state": "27",
        "address": {"line1": "12 Market Road", "line2": None, "city": "Pune", "pincode": "411001"},
    },
    "place_of_supply": "27",
    "intra_state": True,
    "lines": [
        stored_line(
            1,
            "Transformer coil",
            "8504",
            quantity="10",
            unit="NOS",
            unit_price="100.00",
            discount="0.00",
            taxable_value="1000.00",
            gst_rate="18",
            cgst="90.00",
            sgst="90.00",
            total="1180.00",
        ),
        stored_line(
            2,
            "Steel bars",
            "7214",
            quantity="25.500",
            unit="KGS",
            unit_price="812.405",
            discount="12.5",
            taxable_value="20703.83",
            gst_rate="18",
            rate_source="override",
            master_rate="12",
            override_reason="contract",
            cgst="1863.34",
            sgst="1863.34",
            total="24430.51",
        ),
    ],
    "totals": {
        "taxable": decimal("21703.83"),
        "cgst": decimal("1953.34"),
        "sgst": decimal("1953.34"),
        "igst": decimal("0"),
        "cess": decimal("0.00"),
        "total": decimal("25610.51"),
    },
    "idempotency_key": "demo-1",
    "request_hash": "f3c5",
    "source": "api",
    "traceparent": "00-93cac1e62bce0719031095a45d63bd3a-275166d3c3ac239b-01",
}
CANCELLED_STATE = {
    "timestamp": {"_type_": "datetime_iso", "_data_": "2026-01-20T08:00:00+00:00"},
    "originator_topic": "engine.domain.invoice:Invoice",
    "reason": "order_cancelled",
    "remark": "buyer withdrew",
    "cancelled_at": {"_type_": "datetime_iso", "_data_": "2026-01-20T08:00:00+00:00"},
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tenant_id": {"_type_": "uuid_hex", "_data_": TENANT_HEX},
}

TENANT_SOURCE = b"/tenants/adefee0e-a026-4dbc-9f7e-0db00b05112f"
# The issued event as the relay wrote it with schema v3, before v4 (country-neutral, Kenya) was
# issued; v4 adds fields with defaults, so a v3 reader must still read the v4 message as this.
ISSUED_V3_HEX = (
    "c3010be690a476e659cc4865373163623232362d613466642d353435352d613962392d32333733363339623462343448"
    "61646566656530652d613032362d346462632d396637652d3064623030623035313132664835663063386134652d3262"
    "31642d346333652d396137662d316532643363346235613639968985dcfa6618494e562d323032362d3030310e323032"
    "352d323614323032362d30312d313906494e5206423242021e32374141474342373338334a315a384242656e63682045"
    "6c656374726963616c732050726976617465204c696d69746564043237022242656e636820456c656374726963616c73"
    "021634204d696c6c204c616e65000850756e65020c3431313030323052656c6961626c65205472616465727320507674"
    "204c7464021e32374141414352353035354b315a37043237021c3132204d61726b657420526f6164000850756e65020c"
    "343131303031043237010402205472616e73666f726d657220636f696c0838353034043130064e4f530c3130302e3030"
    "08302e30300e313030302e30300431380c6d617374657202043138000a39302e30300a39302e303008302e3030023008"
    "302e30300e313138302e30300414537465656c206261727308373231340832352e35064b47530e3831322e3430350a31"
    "322e35301032303730332e3833043138106f76657272696465020431320210636f6e74726163740e313836332e33340e"
    "313836332e333408302e3030023008302e30301032343433302e3531001032313730332e38330e313935332e33340e31"
    "3935332e333408302e303008302e30301032353631302e3531020c64656d6f2d3106617069"
)
ISSUED_V4_HEX = (
    "c301ba89f274d30da11e4865373163623232362d613466642d353435352d613962392d32333733363339623462343448"
    "61646566656530652d613032362d346462632d396637652d3064623030623035313132664835663063386134652d3262"
    "31642d346333652d396137662d316532643363346235613639968985dcfa6618494e562d323032362d3030310e323032"
    "352d323614323032362d30312d313906494e5206423242021e32374141474342373338334a315a384242656e63682045"
    "6c656374726963616c732050726976617465204c696d6974656402043237022242656e636820456c656374726963616c"
    "73021634204d696c6c204c616e65000850756e65020c343131303032003052656c6961626c6520547261646572732050"
    "7674204c7464021e32374141414352353035354b315a3702043237021c3132204d61726b657420526f6164000850756e"
    "65020c34313130303100000204323702010402205472616e73666f726d657220636f696c02083835303404313002064e"
    "4f530c3130302e303008302e3030020e313030302e303002043138020c6d61737465720204313800020a39302e303002"
    "0a39302e30300208302e30300202300208302e30300e313138302e3030000000000000000414537465656c2062617273"
    "0208373231340832352e3502064b47530e3831322e3430350a31322e3530021032303730332e38330204313802106f76"
    "657272696465020431320210636f6e7472616374020e313836332e3334020e313836332e33340208302e303002023002"
    "08302e30301032343433302e353100000000000000001032313730332e3833020e313935332e3334020e313935332e33"
    "340208302e30300208302e30301032353631302e353100020c64656d6f2d310661706904494e0e696e766f6963650000"
    "0000000000"
)

# Issued v5 (issue 11: GST return fields) changed the bytes again on purpose; v3 and v4 readers must
# read it as they read the messages pinned above.
ISSUED_V5_HEX = (
    "c301fff551ebb8c8099f4865373163623232362d613466642d353435352d613962392d32333733363339623462343448"
    "61646566656530652d613032362d346462632d396637652d3064623030623035313132664835663063386134652d3262"
    "31642d346333652d396137662d316532643363346235613639968985dcfa6618494e562d323032362d3030310e323032"
    "352d323614323032362d30312d313906494e5206423242021e32374141474342373338334a315a384242656e63682045"
    "6c656374726963616c732050726976617465204c696d6974656402043237022242656e636820456c656374726963616c"
    "73021634204d696c6c204c616e65000850756e65020c343131303032003052656c6961626c6520547261646572732050"
    "7674204c7464021e32374141414352353035354b315a3702043237021c3132204d61726b657420526f6164000850756e"
    "65020c34313130303100000204323702010402205472616e73666f726d657220636f696c02083835303404313002064e"
    "4f530c3130302e303008302e3030020e313030302e303002043138020c6d61737465720204313800020a39302e303002"
    "0a39302e30300208302e30300202300208302e30300e313138302e3030000000000000000e74617861626c6504145374"
    "65656c20626172730208373231340832352e3502064b47530e3831322e3430350a31322e3530021032303730332e3833"
    "0204313802106f76657272696465020431320210636f6e7472616374020e313836332e3334020e313836332e33340208"
    "302e30300202300208302e30301032343433302e3531000000000000000e74617861626c65001032313730332e383302"
    "0e313935332e3334020e313935332e33340208302e30300208302e30301032353631302e353100020c64656d6f2d3106"
    "61706904494e0e696e766f696365000000000000000000000000"
)

PINNED: list[tuple[str, int, dict[str, Any], list[tuple[str, bytes]], str]] = [
    (
        "engine.domain.invoice:Invoice.Issued",
        1,
        ISSUED_STATE,
        [
            ("ce_specversion", b"1.0"),
            ("ce_id", b"e71cb226-a4fd-5455-a9b9-2373639b4b44"),
            ("ce_source", TENANT_SOURCE),
            ("ce_type", b"ledgerflow.invoice.issued"),
            ("ce_subject", str(INVOICE).encode()),
            ("ce_time", b"2026-01-19T10:15:30.123456Z"),
            ("ce_dataschema", b"/v1/schemas/fff551ebb8c8099f"),
            ("content-type", b"application/avro"),
            ("traceparent", b"00-93cac1e62bce0719031095a45d63bd3a-275166d3c3ac239b-01"),
        ],
        ISSUED_V5_HEX,
    ),
    (
        "engine.domain.invoice:Invoice.Cancelled",
        2,
        CANCELLED_STATE,
        [
            ("ce_specversion", b"1.0"),
            ("ce_id", b"f6940b37-29b0-53d8-beeb-caf266f6f165"),
            ("ce_source", TENANT_SOURCE),
            ("ce_type", b"ledgerflow.invoice.cancelled"),
            ("ce_subject", str(INVOICE).encode()),
            ("ce_time", b"2026-01-20T08:00:00Z"),
            ("ce_dataschema", b"/v1/schemas/95e4c58bb43031e2"),
            ("content-type", b"application/avro"),
            ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ],
        "c30195e4c58bb43031e24866363934306233372d323962302d353364382d626565622d63616632363666366631363548"
        "61646566656530652d613032362d346462632d396637652d3064623030623035313132664835663063386134652d3262"
        "31642d346333652d396137662d31653264336334623561363980c0d7a6fb661e6f726465725f63616e63656c6c656402"
        "1c6275796572207769746864726577",
    ),
]


@pytest.mark.parametrize(
    ("stored_topic", "version", "state", "headers", "value_hex"), PINNED, ids=["issued", "cancelled"]
)
def test_the_relay_encodes_a_stored_event_exactly_as_the_published_contract_pins_it(
    stored_topic: str, version: int, state: dict[str, Any], headers: list[tuple[str, bytes]], value_hex: str
) -> None:
    message = encode_stored(INVOICE, version, stored_topic, orjson.dumps(state))
    assert message.outbound.topic == "ledger.invoice.v1"
    assert message.key == str(INVOICE).encode()
    assert [(name, bytes(value)) for name, value in message.headers] == headers
    assert message.value.hex() == value_hex


@pytest.mark.parametrize(
    ("stored_topic", "version", "state", "headers", "value_hex"), PINNED, ids=["issued", "cancelled"]
)
def test_the_reference_encoding_path_still_gives_the_pinned_bytes(
    stored_topic: str, version: int, state: dict[str, Any], headers: list[tuple[str, bytes]], value_hex: str
) -> None:
    # What bench/, projections/rebuild.py and the tests build messages with (record -> fastavro).
    outbound = outbound_from_stored(INVOICE, version, stored_topic, orjson.dumps(state))
    value, schema = registry.encode_event(outbound.ce_type, outbound.record)
    assert headers_for(outbound, schema.fingerprint_hex) == headers
    assert value.hex() == value_hex


@given(st.uuids(), st.integers(1, 2**40))
def test_the_relays_event_id_is_the_name_based_uuid_of_the_aggregate_and_version(
    aggregate: UUID, version: int
) -> None:
    assert event_id_text(str(aggregate), version) == str(event_id(aggregate, version))


def test_a_v3_reader_reads_the_v4_issued_message_as_it_read_the_v3_one() -> None:
    # Issued v4 (issue 10) changed the bytes on purpose; readers still on v3 must see no change.
    v3 = next(sv for sv in registry.versions("ledgerflow.invoice.issued") if sv.version == 3)
    v4 = next(sv for sv in registry.versions("ledgerflow.invoice.issued") if sv.version == 4)
    header = 10  # C3 01 and the 8-byte fingerprint
    as_written = fastavro.schemaless_reader(
        io.BytesIO(bytes.fromhex(ISSUED_V3_HEX)[header:]), v3.parsed, None
    )
    as_read_now = fastavro.schemaless_reader(
        io.BytesIO(bytes.fromhex(ISSUED_V4_HEX)[header:]), v4.parsed, v3.parsed
    )
    assert as_read_now == as_written


@pytest.mark.parametrize(("old", "pinned"), [(3, ISSUED_V3_HEX), (4, ISSUED_V4_HEX)])
def test_v3_and_v4_readers_read_the_v5_issued_message_as_they_read_their_own(old: int, pinned: str) -> None:
    # Issued v5 (issue 11) added the GST return fields with defaults: older readers see no change.
    reader = next(sv for sv in registry.versions("ledgerflow.invoice.issued") if sv.version == old)
    v5 = registry.current("ledgerflow.invoice.issued")
    assert v5.version == 5
    header = 10
    as_written = fastavro.schemaless_reader(io.BytesIO(bytes.fromhex(pinned)[header:]), reader.parsed, None)
    as_read_now = fastavro.schemaless_reader(
        io.BytesIO(bytes.fromhex(ISSUED_V5_HEX)[header:]), v5.parsed, reader.parsed
    )
    assert as_read_now == as_written


@pytest.mark.parametrize("kind", ["compiled", "native"])
def test_the_issued_record_the_relay_builds_takes_the_compiled_writer_not_the_fastavro_fallback(
    kind: str,
) -> None:
    # The compiled writer gives fastavro's bytes either way, but falls back to fastavro (five times
    # slower) for a record that does not name every field: the relay's speed depends on this. The
    # native writer (the registry's) must write it itself too, not hand it to the compiled one.
    outbound = outbound_from_stored(
        INVOICE, 1, "engine.domain.invoice:Invoice.Issued", orjson.dumps(ISSUED_STATE)
    )
    sv = registry.current(outbound.ce_type)
    expected = codec.encode(sv.parsed, outbound.record, fp=sv.fingerprint)
    if kind == "compiled":
        writer = codec.compile_writer(sv.schema, sv.fingerprint)
        strict = writer.source.replace("    except Exception:\n", "    except ZeroDivisionError:\n")  # type: ignore[attr-defined]
        scope = dict(writer.__globals__)
        exec(compile(strict, "<strict writer>", "exec"), scope)
        assert scope["write"](outbound.record) == expected
    else:

        def refuse(record: Any) -> bytes:
            raise AssertionError("the native writer handed the issued record on")

        assert compile_native_writer(sv.schema, sv.fingerprint, refuse)(outbound.record) == expected
        assert sv.write(outbound.record) == expected
