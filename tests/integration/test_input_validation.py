"""What the write side accepts, the read side can store (docs/validation.md).

A NUL in a line description was once accepted (201) and then stopped the projector, as did amounts
overflowing the register's numeric(18, 2) columns. Here: every refusal through the real API with its
field path and code, the same refusal on the ingest topic, and a property test that issues generated
commands (valid-looking and hostile) through the real API and proves that every one it accepts is
projected into invoice_register and readable through every reporting view.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from psycopg import sql

from engine import db
from engine.application import LedgerService
from engine.config import Settings
from engine.ingest import IngestRejected, apply_ingest_message
from engine.relay import Relay
from engine.security import ingest_keys
from engine.security.secrets import load_key_ring
from engine.tax.india_gst import today_in_india
from engine.tax.limits import MAX_LINE_AMOUNT, MAX_QUANTITY, MAX_UNIT_PRICE
from projections import reporting
from projections.invoice_register import InvoiceRegister
from projections.runner import ProjectionRunner
from tests.conftest import BackgroundLoop, wait_for
from tests.integration.helpers import (
    client_for,
    create_ingest_key,
    ingest_command,
    invoice_body,
    register_tenant,
)
from tests.integration.test_api_contract import assert_error_shape
from tests.integration.test_ingest import dead_letters, publish
from tests.integration.test_ingest import worker as worker

pytestmark = pytest.mark.integration

LINE = invoice_body()["lines"][0]


def with_line(**changes: Any) -> dict[str, Any]:
    return invoice_body(lines=[{**LINE, **changes}])


def with_buyer(**changes: Any) -> dict[str, Any]:
    return invoice_body(buyer={**invoice_body()["buyer"], **changes})


def with_address(**changes: Any) -> dict[str, Any]:
    buyer = invoice_body()["buyer"]
    return invoice_body(buyer={**buyer, "address": {**buyer["address"], **changes}})


def raw(body: dict[str, Any]) -> bytes:
    # The stdlib encoder escapes lone surrogates (\ud800) and writes NaN as a bare literal, both of
    # which the API's JSON parser accepts: exactly what a hostile client can send.
    return json.dumps(body, ensure_ascii=True).encode()


def post(client: Any, key: str, body: dict[str, Any] | bytes, idempotency_key: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    return client.post(
        "/v1/invoices", content=body if isinstance(body, bytes) else raw(body), headers=headers
    )


def in_days(days: int) -> str:
    return (today_in_india(datetime.now(UTC)) + timedelta(days=days)).isoformat()


REFUSALS: list[Any] = [
    # text
    pytest.param(with_line(description="Coil\x00"), "lines[0].description", "control_character", id="nul"),
    pytest.param(with_line(description="a\nb"), "lines[0].description", "control_character", id="newline"),
    pytest.param(with_line(description="a\x1bb"), "lines[0].description", "control_character", id="escape"),
    pytest.param(with_buyer(name="x\ud800"), "buyer.name", "control_character", id="lone-surrogate"),
    pytest.param(with_buyer(name="a\u2028b"), "buyer.name", "control_character", id="line-separator"),
    pytest.param(with_buyer(name="a\ufffeb"), "buyer.name", "control_character", id="noncharacter"),
    pytest.param(with_address(line1="12\tMarket"), "buyer.address.line1", "control_character", id="tab"),
    pytest.param(with_address(line2="\x7f"), "buyer.address.line2", "control_character", id="delete"),
    pytest.param(with_line(unit="NOS\x00"), "lines[0].unit", "control_character", id="unit"),
    pytest.param(
        with_line(gst_rate_reason="r\r\n"), "lines[0].gst_rate_reason", "control_character", id="crlf"
    ),
    # numbers
    pytest.param(with_line(quantity="１０"), "lines[0].quantity", "invalid_number", id="fullwidth-digits"),
    pytest.param(with_line(quantity="١٠"), "lines[0].quantity", "invalid_number", id="arabic-indic-digits"),
    pytest.param(with_line(unit_price="1_000"), "lines[0].unit_price", "invalid_number", id="underscore"),
    pytest.param(with_line(unit_price="1e3"), "lines[0].unit_price", "invalid_number", id="exponent"),
    pytest.param(with_line(unit_price="+100"), "lines[0].unit_price", "invalid_number", id="plus-sign"),
    pytest.param(with_line(unit_price=" 100"), "lines[0].unit_price", "invalid_number", id="space"),
    pytest.param(with_line(quantity=float("nan")), "lines[0].quantity", "invalid_number", id="nan-number"),
    pytest.param(with_line(quantity=True), "lines[0].quantity", "invalid_number", id="boolean"),
    pytest.param(
        with_line(unit_price=1234567890123.456),
        "lines[0].unit_price",
        "invalid_number",
        id="float-too-precise",
    ),
    pytest.param(with_line(quantity="10000000000"), "lines[0].quantity", "too_large", id="quantity-ceiling"),
    pytest.param(with_line(quantity=1e10), "lines[0].quantity", "too_large", id="quantity-ceiling-number"),
    pytest.param(
        with_line(unit_price="1000000000000"), "lines[0].unit_price", "too_large", id="price-ceiling"
    ),
    pytest.param(
        with_line(quantity="9999999999", unit_price="1000"),
        "lines[0]",
        "line_amount_too_large",
        id="line-gross",
    ),
    pytest.param(
        invoice_body(lines=[{**LINE, "quantity": "1", "unit_price": "700000000000"}] * 200),
        "lines",
        "invoice_amount_too_large",
        id="invoice-total",
    ),
    # digits in codes
    pytest.param(with_line(hsn="８５０４"), "lines[0].hsn", "invalid_hsn", id="fullwidth-hsn"),
    pytest.param(
        with_address(pincode="４１１００１"), "buyer.address.pincode", "string_pattern_mismatch", id="pin"
    ),
    # dates
    pytest.param(invoice_body(date=1768780800), "date", "invalid_date", id="timestamp"),
    pytest.param(invoice_body(date="2026-01-19T00:00:00"), "date", "invalid_date", id="datetime"),
    pytest.param(invoice_body(date="19/01/2026"), "date", "invalid_date", id="dd-mm-yyyy"),
    pytest.param(invoice_body(date="2026-02-29"), "date", "invalid_date", id="not-a-day"),
    pytest.param(invoice_body(date="2017-06-30"), "date", "before_gst", id="before-gst"),
    pytest.param(invoice_body(date=in_days(2)), "date", "date_in_future", id="future"),
]


@pytest.mark.parametrize(("body", "path", "code"), REFUSALS)
def test_refused_input_gets_a_422_naming_the_field_and_a_stable_code(
    service: LedgerService, settings: Settings, body: dict[str, Any], path: str, code: str
) -> None:
    _, key = register_tenant(service)
    response = post(client_for(settings), key, body)
    assert response.status_code == 422, response.text
    assert_error_shape(response.json(), "validation_failed")
    fields = response.json()["error"]["details"]["fields"]
    assert (path, code) in [(f["path"], f["code"]) for f in fields], fields


def test_the_refusals_of_amounts_list_the_limits(service: LedgerService, settings: Settings) -> None:
    _, key = register_tenant(service)
    client = client_for(settings)
    [field] = post(client, key, with_line(quantity="10000000000")).json()["error"]["details"]["fields"]
    assert field["limit"] == str(MAX_QUANTITY) and str(MAX_QUANTITY) in field["message"]
    [line] = post(client, key, with_line(quantity="9999999999", unit_price="1000")).json()["error"][
        "details"
    ]["fields"]
    assert line["limits"] == {
        "quantity": str(MAX_QUANTITY),
        "unit_price": str(MAX_UNIT_PRICE),
        "line_amount": str(MAX_LINE_AMOUNT),
        "invoice_amount": "99999999999999.98",
    }


def test_edge_values_inside_the_rules_are_accepted(service: LedgerService, settings: Settings) -> None:
    _, key = register_tenant(service)
    client = client_for(settings)
    accepted = [
        with_line(description="ट्रांसफार्मर कॉइल — \"A\" 'B' ₹"),
        with_line(quantity=12.5, unit_price=100),
        with_line(quantity="1", unit_price="847457627118.64", discount="0.01"),
        invoice_body(date="2017-07-01", lines=[{**LINE, "gst_rate": "18"}]),
        invoice_body(date=in_days(0)),
        invoice_body(date=in_days(1)),
    ]
    for n, body in enumerate(accepted):
        body["number"] = f"EDGE-{n}"
        response = post(client, key, body)
        assert response.status_code == 201, (body, response.text)


def test_the_future_allowance_is_a_setting(service: LedgerService, settings: Settings) -> None:
    from dataclasses import replace

    _, key = register_tenant(service)
    strict = client_for(replace(settings, max_future_days=0))
    response = post(strict, key, invoice_body(date=in_days(1)))
    assert response.status_code == 422
    [field] = response.json()["error"]["details"]["fields"]
    assert (field["path"], field["code"], field["latest"]) == ("date", "date_in_future", in_days(0))


def test_the_openapi_document_shows_the_ceilings_and_formats(settings: Settings) -> None:
    schemas = client_for(settings).get("/openapi.json").json()["components"]["schemas"]
    quantity = schemas["InvoiceLine"]["properties"]["quantity"]["anyOf"]
    assert {"type": "number", "maximum": float(MAX_QUANTITY)} in quantity
    price = schemas["InvoiceLine"]["properties"]["unit_price"]["anyOf"]
    assert {"type": "number", "maximum": float(MAX_UNIT_PRICE)} in price
    assert schemas["IssueInvoice"]["properties"]["date"]["format"] == "date"


def test_a_cancellation_remark_with_a_nul_is_refused_and_the_invoice_stays_issued(
    service: LedgerService, settings: Settings
) -> None:
    _, key = register_tenant(service)
    client = client_for(settings)
    invoice_id = post(client, key, invoice_body()).json()["id"]
    auth = {"Authorization": f"Bearer {key}"}
    response = client.post(
        f"/v1/invoices/{invoice_id}/cancel", json={"reason": "other", "remark": "oops\x00"}, headers=auth
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"]["fields"][0]["path"] == "remark"
    assert client.get(f"/v1/invoices/{invoice_id}", headers=auth).json()["status"] == "issued"


def test_integration_settings_refuse_control_characters(service: LedgerService, settings: Settings) -> None:
    _, key = register_tenant(service)
    response = client_for(settings).put(
        "/v1/integrations/gst-irp",
        json={"base_url": "http://127.0.0.1:1/\x00", "credentials": {"client_id": "a\nb"}},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 422
    paths = {(f["path"], f["code"]) for f in response.json()["error"]["details"]["fields"]}
    assert ("base_url", "control_character") in paths
    assert ("credentials.client_id", "control_character") in paths
    bad_key = client_for(settings).put(
        "/v1/integrations/gst-irp",
        json={"base_url": "http://127.0.0.1:1/", "credentials": {"client\x00id": "a"}},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert bad_key.status_code == 422
    assert [(f["path"], f["code"]) for f in bad_key.json()["error"]["details"]["fields"]] == [
        ("credentials.client\x00id", "control_character")
    ]


def test_a_tenant_name_with_a_control_character_is_refused(
    service: LedgerService, settings: Settings
) -> None:
    from engine.application import ValidationFailed

    with pytest.raises(ValidationFailed) as info:
        service.register_tenant(
            name="Demo\x00", legal_name="Demo\nLtd", country="IN", gstin="27AAGCB7383J1Z8", state="27"
        )
    assert [(f["path"], f["code"]) for f in info.value.details["fields"]] == [
        ("name", "control_character"),
        ("legal_name", "control_character"),
    ]


def signing_keys(service: LedgerService, settings: Settings) -> ingest_keys.SigningKeys:
    """The ingest agent's key look-up, over the test's schema (as streams/ingest.py builds it)."""

    def find(key_id: str) -> ingest_keys.StoredIngestKey | None:
        with db.transaction(service.pool) as conn:
            return ingest_keys.find(conn, key_id)

    def record_use(key_id: str) -> None:
        with db.transaction(service.pool) as conn:
            ingest_keys.record_use(conn, key_id)

    return ingest_keys.SigningKeys(find, record_use, load_key_ring(settings.var_dir))


# -- the ingest topic -------------------------------------------------------------------------------


def test_the_ingest_topic_refuses_with_the_same_field_errors_as_the_api(
    service: LedgerService, settings: Settings
) -> None:
    tenant_id, key = register_tenant(service)
    signing = create_ingest_key(settings, tenant_id)
    keys = signing_keys(service, settings)
    for n, (body, path, code) in enumerate(
        [
            (with_line(description="Coil\x00"), "lines[0].description", "control_character"),
            (with_line(quantity="１０"), "lines[0].quantity", "invalid_number"),
            (invoice_body(date="2017-06-30"), "date", "before_gst"),
            (with_line(quantity="9999999999", unit_price="1000"), "lines[0]", "line_amount_too_large"),
        ]
    ):
        api = post(client_for(settings), key, body).json()["error"]["details"]["fields"]
        headers, value = ingest_command(tenant_id, f"cmd-{n}", raw(body), signing)
        with pytest.raises(IngestRejected) as info:
            apply_ingest_message(service, headers, value, keys)
        assert info.value.code == "validation_failed"
        assert [{k: f[k] for k in ("path", "code")} for f in info.value.fields] == [
            {k: f[k] for k in ("path", "code")} for f in api
        ]
        assert (path, code) in [(f["path"], f["code"]) for f in api]
        assert f"{path} ({code})" in info.value.message or path in info.value.message


def test_an_ingest_id_with_a_control_character_is_refused_before_it_is_stored(
    service: LedgerService, settings: Settings
) -> None:
    tenant_id, _ = register_tenant(service)
    headers, value = ingest_command(
        tenant_id, "cmd-\x00", invoice_body(), create_ingest_key(settings, tenant_id)
    )
    with pytest.raises(IngestRejected) as info:
        apply_ingest_message(service, headers, value, signing_keys(service, settings))
    assert info.value.code == "bad_header"


def test_a_refused_ingest_command_lands_in_the_dlq_with_its_field_error(
    service: LedgerService, settings: Settings, worker: subprocess.Popen[bytes]
) -> None:
    tenant_id, _ = register_tenant(service)
    signing = create_ingest_key(settings, tenant_id)
    publish(settings, [ingest_command(tenant_id, "cmd-nul", raw(with_line(description="Coil\x00")), signing)])
    [letter] = dead_letters(settings, expected=1)
    headers = dict(letter.headers())
    assert headers["error-code"] == b"validation_failed"
    assert b"lines[0].description (control_character)" in headers["error-message"]


# -- the property: accepted means projectable -------------------------------------------------------

HOSTILE_CHARACTERS = [
    "\x00", "\n", "\t", "\r", "\x1f", "\x7f", "\x85", "\x9f", "\ud800", "\udc00", "\u2028", "\u2029",
    "\ufdd0", "\ufffe", "\uffff", "\U0001fffe", "\u200d", "\u202e", "\ufeff", "\\", '"', "'", "%", "\u0301",
]  # fmt: skip
SELLER_GSTIN = "27AAGCB7383J1Z8"
BUYER_GSTIN = "27AAACR5055K1Z7"
# A single rate in the master on every date since July 2017 (table fans 18%, 8471 18%, 998314 18%, other
# cigarettes 28% + 36% cess until February 2026, air conditioners 28% until September 2025, live bovine
# animals nil).
HSNS = ["84145110", "8471", "998314", "24022090", "8415", "0102"]

# Plausible values: what a real upstream sends, in any script, up to the ceilings.
plausible_text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=40
).filter(str.strip)


def plausible_amount(largest: Decimal, places: int) -> st.SearchStrategy[Any]:
    small = st.decimals(min_value=Decimal("0.001"), max_value=Decimal(1000), places=places)
    large = st.decimals(min_value=1, max_value=largest, places=places)
    return st.one_of(small.map(str), small.map(float), st.integers(1, 1000), large.map(str))


# Hostile values: control characters and odd Unicode, numbers in every spelling and size, odd dates.
hostile_text = st.one_of(
    st.text(st.one_of(st.characters(codec="utf-8"), st.sampled_from(HOSTILE_CHARACTERS)), max_size=60),
    st.lists(st.sampled_from(HOSTILE_CHARACTERS), min_size=1, max_size=4).map(lambda cs: "A" + "".join(cs)),
)
hostile_amount = st.one_of(
    st.integers(min_value=-5, max_value=10**22),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(min_value=0, max_value=Decimal(10) ** 14, places=3).map(str),
    st.sampled_from(
        [
            "0",
            "-1",
            "1e3",
            "１２",
            "٣",
            "1_0",
            "+1",
            " 1",
            "NaN",
            "1" + "0" * 40,
            "0." + "0" * 30 + "1",
            "",
            True,
        ]
    ),
)


def hostile_date() -> st.SearchStrategy[Any]:
    today = today_in_india(datetime.now(UTC))
    return st.one_of(
        st.dates(min_value=date(2017, 6, 25), max_value=today + timedelta(days=3)).map(date.isoformat),
        st.sampled_from(["2026-01-19T00:00:00", "19/01/2026", "2026-02-29", "２０２６-01-19", "2017-06-30"]),
        st.integers(min_value=0, max_value=2**33),
    )


@st.composite
def plausible_line(draw: st.DrawFn) -> dict[str, Any]:
    line: dict[str, Any] = {
        "description": draw(plausible_text),
        "hsn": draw(st.sampled_from(HSNS)),
        "quantity": draw(plausible_amount(MAX_QUANTITY, 3)),
        "unit": draw(st.sampled_from(["NOS", "KGS", "MTR"])),
        "unit_price": draw(plausible_amount(MAX_UNIT_PRICE, 3)),
    }
    if draw(st.booleans()):
        line["gst_rate"], line["gst_rate_reason"] = "18", draw(plausible_text)
    return line


LINE_FIELDS = [
    "description",
    "hsn",
    "quantity",
    "unit",
    "unit_price",
    "discount",
    "gst_rate",
    "gst_rate_reason",
]


@st.composite
def invoice_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A plausible invoice with up to three hostile changes, and sometimes hundreds of lines."""
    today = today_in_india(datetime.now(UTC))
    body: dict[str, Any] = {
        "number": "P-1",
        "date": draw(st.dates(min_value=date(2017, 7, 1), max_value=today)).isoformat(),
        "buyer": {"name": draw(plausible_text), "state": "27"},
        "lines": draw(st.lists(plausible_line(), min_size=1, max_size=3)),
    }
    if draw(st.booleans()):
        body["buyer"]["gstin"] = BUYER_GSTIN
    if draw(st.booleans()):
        body["buyer"]["address"] = {"line1": draw(plausible_text), "city": draw(plausible_text)}
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        target = draw(st.sampled_from(["line", "line", "name", "address", "date", "many"]))
        if target == "line":
            line = draw(st.sampled_from(body["lines"]))
            field = draw(st.sampled_from(LINE_FIELDS))
            is_text = field in ("description", "hsn", "unit", "gst_rate_reason")
            line[field] = draw(hostile_text if is_text else hostile_amount)
        elif target == "name":
            body["buyer"]["name"] = draw(hostile_text)
        elif target == "address":
            body["buyer"]["address"] = {
                "line1": draw(hostile_text),
                "city": draw(plausible_text),
                "line2": draw(hostile_text),
            }
        elif target == "date":
            body["date"] = draw(hostile_date())
        else:
            body["lines"] = body["lines"][:1] * draw(st.sampled_from([100, 1000, 1001]))
    return body


def view_rows(settings: Settings, view: str, tenant_id: UUID) -> list[dict[str, Any]]:
    query = sql.SQL("SELECT * FROM {}.{} WHERE tenant_id = %s").format(
        sql.Identifier(settings.reporting_schema), sql.Identifier(view)
    )
    with db.connect(settings) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(query, (tenant_id,)).fetchall()


def test_every_command_the_write_side_accepts_is_projected_and_readable_in_every_view(
    service: LedgerService, settings: Settings, topics: list[str], background: BackgroundLoop
) -> None:
    client = client_for(settings)
    accepted: dict[str, tuple[UUID, str, int, bool]] = {}  # invoice id -> tenant, key, lines, cancelled
    refused: list[str] = []

    @hypothesis_settings(
        max_examples=150,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(body=invoice_bodies(), remark=st.one_of(st.none(), plausible_text, hostile_text))
    def issue(body: dict[str, Any], remark: str | None) -> None:
        # A tenant per example: the monthly summary views then hold exactly this invoice.
        tenant_id, key = register_tenant(service, state="27", gstin=SELLER_GSTIN)
        response = post(client, key, body)
        assert response.status_code in (201, 422), (response.status_code, response.text[:2000])
        if response.status_code == 422:
            assert_error_shape(response.json(), "validation_failed")
            refused.append(response.json()["error"]["details"]["fields"][0]["code"])
            return
        invoice = response.json()
        cancelled = False
        if remark is not None:
            cancel = client.post(
                f"/v1/invoices/{invoice['id']}/cancel",
                content=raw({"reason": "other", "remark": remark}),
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            )
            assert cancel.status_code in (200, 422), cancel.text
            cancelled = cancel.status_code == 200
        accepted[invoice["id"]] = (UUID(tenant_id), key, len(invoice["lines"]), cancelled)

    issue()
    # Not vacuous: plenty of each kind.
    assert len(accepted) >= 20 and len(refused) >= 20, (len(accepted), sorted(set(refused)))

    background.start(Relay(settings).run)
    background.start(ProjectionRunner(settings, InvoiceRegister()).run)

    def projected() -> int | None:
        background.check()  # a projector that died on an accepted command fails here
        with db.connect(settings) as conn:
            rows = conn.execute("SELECT invoice_id::text, status FROM invoice_register").fetchall()
        done = {r[0] for r in rows if (r[1] == "cancelled") == accepted.get(r[0], (None, "", 0, False))[3]}
        return len(done) if done >= set(accepted) else None

    wait_for(projected, timeout=240, what=f"all {len(accepted)} accepted invoices projected")
    for invoice_id, (tenant_id, key, line_count, cancelled) in accepted.items():
        # The API reads it back from the register (not the event store fallback).
        read = client.get(f"/v1/invoices/{invoice_id}", headers={"Authorization": f"Bearer {key}"})
        assert read.status_code == 200 and "X-Ledgerflow-Read-Source" not in read.headers, read.text[:500]
        assert len(read.json()["lines"]) == line_count
        [row] = view_rows(settings, "invoices", tenant_id)
        assert str(row["invoice_id"]) == invoice_id
        assert row["status"] == ("cancelled" if cancelled else "issued")
        assert len(view_rows(settings, "invoice_lines", tenant_id)) == line_count
        for view in reporting.REPORTS:
            view_rows(settings, view, tenant_id)  # every view reads without an error
