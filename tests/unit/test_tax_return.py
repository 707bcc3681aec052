"""The TaxReturn aggregate through its life, its events on the relay's two paths, and the pure rules
of GSTR-1 filing (periods, error reports), all in memory."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest

from connectors.gstn_returns.client import error_rows
from connectors.gstn_returns.sandbox import UNKNOWN_CTIN, error_report
from engine.api.errors import ApiError
from engine.api.gstr1 import check_period
from engine.application import in_memory_ledger
from engine.domain.tax_return import (
    FORM_GSTR1,
    InvalidReturnResult,
    ReturnStateConflict,
    ReturnStatus,
    TaxReturn,
    tax_return_id_for,
)
from engine.publishing import outbound_from_stored, to_outbound
from schemas import registry

TENANT = UUID("5b2e9d7a-3c41-4e8f-a6b0-1d2c3e4f5a6b")
GSTIN = "29AAGCB7383J1Z4"
NOW = datetime(2026, 2, 3, 10, 0, tzinfo=UTC)


def generated(version: int = 1, parts: int = 1, **changes: Any) -> TaxReturn:
    fields: dict[str, Any] = {
        "tenant_id": TENANT,
        "form": FORM_GSTR1,
        "gstin": GSTIN,
        "period": "012026",
        "version": version,
        "content_hash": "ab" * 32,
        "parts": [f"{n:02d}" * 32 for n in range(parts)],
        "summary": {"sections": {"b2b": {"count": 3, "txval": "300.00"}}},
        "diff": None if version == 1 else {"b2b": {"count": [2, 3]}},
        "previous_id": None if version == 1 else str(uuid4()),
        "generated_by": "api_key:k1",
        "generated_at": NOW,
    }
    return TaxReturn(**{**fields, **changes})


def test_a_versions_id_derives_from_tenant_gstin_period_and_version() -> None:
    one, two = generated(1), generated(2)
    assert one.id == tax_return_id_for(TENANT, FORM_GSTR1, GSTIN, "012026", 1)
    assert two.id != one.id
    assert one.id == generated(1).id, (
        "the same version twice is the same aggregate: the second save is refused"
    )


def test_a_return_is_saved_processed_and_filed_and_each_result_is_recorded_once() -> None:
    r = generated(parts=2)
    assert r.submit(job_id="j1", submitted_by="api_key:k1", submitted_at=NOW)
    assert not r.submit(job_id="j1", submitted_by="api_key:k1", submitted_at=NOW), "already on its way"
    assert r.record_saved(part=1, reference_id="R1", job_id="j1")
    assert not r.record_saved(part=1, reference_id="R1", job_id="j1")
    with pytest.raises(InvalidReturnResult):
        r.record_processed(job_id="j1")  # part 2 has no reference id yet
    assert r.record_saved(part=2, reference_id="R2", job_id="j1")
    assert r.record_processed(job_id="j1") and r.status == ReturnStatus.READY_TO_FILE
    assert not r.record_processed(job_id="j1")
    assert not r.record_failure(job_id="j1", error_class="retryable", code="x", message="late", attempts=9)
    assert r.file(arn="AA2901260000001", filed_by="api_key:k1", filed_at=NOW)
    assert not r.file(arn="AA2901260000001", filed_by="api_key:k1", filed_at=NOW)
    with pytest.raises(ReturnStateConflict):
        r.file(arn="AA2901260000002", filed_by="api_key:k1", filed_at=NOW)
    assert (r.status, r.arn, r.reference_ids) == (ReturnStatus.FILED, "AA2901260000001", {1: "R1", 2: "R2"})


def test_refused_documents_are_kept_with_their_errors_and_the_return_cannot_be_filed() -> None:
    r = generated()
    r.submit(job_id="j1", submitted_by="k", submitted_at=NOW)
    r.record_saved(part=1, reference_id="R1", job_id="j1")
    refused = [
        {"section": "b2b", "ctin": UNKNOWN_CTIN, "inum": "INV-7", "error_cd": "RET", "error_msg": None}
    ]
    assert r.record_rejected_records(job_id="j1", status_code="PE", errors=refused)  # type: ignore[arg-type]
    assert r.status == ReturnStatus.REJECTED_RECORDS
    assert r.errors == [{**refused[0], "error_msg": ""}]
    with pytest.raises(ReturnStateConflict):
        r.file(arn="AA1", filed_by="k", filed_at=NOW)
    with pytest.raises(ReturnStateConflict):
        r.submit(job_id="j2", submitted_by="k", submitted_at=NOW)  # a new version is the way on


def test_a_failed_submission_can_be_submitted_again_and_counts_its_submissions() -> None:
    r = generated()
    r.submit(job_id="j1", submitted_by="k", submitted_at=NOW)
    assert r.record_failure(
        job_id="j1", error_class="needs_attention", code="AUTH4033", message="m", attempts=1
    )
    assert r.status == ReturnStatus.FAILED and r.failure is not None
    assert r.submit(job_id="j2", submitted_by="k", submitted_at=NOW)
    assert (r.status, r.submissions, r.failure) == (ReturnStatus.SUBMITTED, 2, None)


def test_results_outside_a_submission_are_refused() -> None:
    with pytest.raises(ReturnStateConflict):
        generated().record_saved(part=1, reference_id="R", job_id="j")
    r = generated()
    r.submit(job_id="j1", submitted_by="k", submitted_at=NOW)
    with pytest.raises(InvalidReturnResult):
        r.record_saved(part=2, reference_id="R", job_id="j1")  # it has one part


def all_events() -> list[Any]:
    r = generated(version=2)
    r.submit(job_id="j1", submitted_by="k", submitted_at=NOW)
    r.record_saved(part=1, reference_id="R1", job_id="j1")
    r.record_rejected_records(job_id="j1", status_code="PE", errors=[{"section": "b2b", "error_cd": "X"}])
    other = generated(version=3)
    other.submit(job_id="j2", submitted_by="k", submitted_at=NOW)
    other.record_failure(job_id="j2", error_class="permanent", code="RET191106", message="m", attempts=1)
    other.submit(job_id="j3", submitted_by="k", submitted_at=NOW)
    other.record_saved(part=1, reference_id="R2", job_id="j3")
    other.record_processed(job_id="j3")
    other.file(arn="AA2901260000001", filed_by="k", filed_at=NOW)
    return [*r.collect_events(), *other.collect_events()]


@pytest.mark.parametrize("event", all_events(), ids=lambda e: type(e).__qualname__)
def test_every_tax_return_event_publishes_the_same_message_on_both_relay_paths(event: Any) -> None:
    ledger = in_memory_ledger()
    stored = ledger.mapper.to_stored_event(event)
    slow = to_outbound(ledger.mapper.to_domain_event(stored))
    fast = outbound_from_stored(stored.originator_id, stored.originator_version, stored.topic, stored.state)
    assert fast.record == slow.record
    assert fast.topic == "ledger.tax_return.v1" and fast.ce_type.startswith("ledgerflow.tax_return.")
    assert (fast.tenant_id, fast.key) == (str(TENANT), str(event.originator_id))
    value, _ = registry.encode_event(fast.ce_type, fast.record)
    assert registry.decode_event(value, fast.ce_type)["return_id"] == str(event.originator_id)


@pytest.mark.parametrize(
    ("period", "ok"),
    [
        ("012026", True),
        ("072017", True),
        ("062017", False),  # before GST
        ("132025", False),
        ("002025", False),
        ("12026", False),
        ("032026", False),  # after "today" below
        ("０１2026", False),  # full-width digits
        ("01202\x00", False),
    ],
)
def test_a_period_is_a_real_month_since_gst_began_and_not_in_the_future(period: str, ok: bool) -> None:
    if ok:
        check_period(period, date(2026, 2, 3))
    else:
        with pytest.raises(ApiError) as refused:
            check_period(period, date(2026, 2, 3))
        assert (refused.value.status, refused.value.code) == (422, "invalid_period")


def _b2b(ctin: str, pos: str, tax: dict[str, str]) -> dict[str, Any]:
    item = {"num": 1, "itm_det": {"txval": "100.00", "rt": 18, **tax}}
    return {
        "ctin": ctin,
        "inv": [{"inum": "INV-1", "idt": "19-01-2026", "val": "118.00", "pos": pos, "itms": [item]}],
    }


@pytest.mark.parametrize(
    ("party", "expected"),
    [
        (_b2b("27AAACR5055K1Z7", "27", {"iamt": "18.00"}), None),
        (_b2b("29AABCT1332L1ZA", "29", {"camt": "9.00", "samt": "9.00"}), None),
        (
            _b2b("29AABCT1332L1ZA", "27", {"camt": "9.00", "samt": "9.00"}),
            "RET191114",
        ),  # CGST+SGST, other POS
        (_b2b(UNKNOWN_CTIN, "27", {"iamt": "18.00"}), "RET_CTIN_INVALID"),
        (_b2b("27AAACR5055K1Z8", "27", {"iamt": "18.00"}), "RET_CTIN_INVALID"),  # bad check character
        (_b2b(GSTIN, "29", {"camt": "9.00", "samt": "9.00"}), "RET_CTIN_INVALID"),  # to oneself
    ],
)
def test_the_sandbox_refuses_an_unknown_recipient_and_a_place_of_supply_that_contradicts_the_tax(
    party: dict[str, Any], expected: str | None
) -> None:
    report = error_report(GSTIN, {"gstin": GSTIN, "fp": "012026", "b2b": [party]}, frozenset({UNKNOWN_CTIN}))
    rows = error_rows(report)
    if expected is None:
        assert rows == []
    else:
        assert [(r["section"], r["ctin"], r["inum"], r["error_cd"]) for r in rows] == [
            ("b2b", party["ctin"], "INV-1", expected)
        ]


def test_error_rows_flatten_documents_and_summary_rows_and_ignore_garbage() -> None:
    report = {
        "cdnr": [
            {"ctin": "X", "nt": [{"nt_num": "CN-1"}, {"nt_num": "CN-2", "error_cd": "B"}], "error_cd": "A"}
        ],
        "b2cs": [{"pos": "27", "rt": 18, "sply_ty": "INTER", "error_cd": "C", "error_msg": "m"}],
        "b2b": "not a list",
        "hsn": [None, 5],
    }
    rows = error_rows(report)
    assert [(r["section"], r.get("nt_num"), r["error_cd"]) for r in rows] == [
        ("cdnr", "CN-1", "A"),
        ("cdnr", "CN-2", "B"),
        ("b2cs", None, "C"),
    ]
    assert error_rows(None) == [] and error_rows([1]) == []


def test_a_frozen_part_is_the_builders_serialisation_with_exact_decimal_numbers() -> None:
    from decimal import Decimal

    from engine.tax import gstr1
    from engine.tax_returns import content_hash_of, part_hash, part_text

    part = {"fp": "012026", "b2cs": [{"txval": Decimal("12345678901234.10"), "rt": Decimal("18")}]}
    text = part_text(part)
    # Exact, in the builder's key order: no float rounding of large amounts, no trailing-zero loss.
    assert text == b'{"fp":"012026","b2cs":[{"txval":12345678901234.10,"rt":18}]}' == gstr1.dumps(part)
    assert part_hash(text) != part_hash(part_text({**part, "fp": "022026"}))
    built = gstr1.build_gstr1("27AAGCB7383J1Z8", "012026", [])
    assert content_hash_of([part_text(p) for p in built.parts]) == built.content_hash


def test_a_snapshot_document_reads_back_equal_and_its_digest_ignores_only_the_irn() -> None:
    import hashlib
    from dataclasses import replace
    from datetime import date
    from decimal import Decimal

    from engine.tax import gstr1
    from engine.tax_return_snapshots import document_digest, document_from_json, document_json

    line = gstr1.SupplyLine(
        line_no=1,
        hsn="85044010",
        description="Transformer coil \u0000 \u202e",
        unit="NOS",
        quantity=Decimal("10.000"),
        taxable_value=Decimal("99999999999999.99"),
        gst_rate=Decimal("0.25"),
        igst=Decimal("250000000000.00"),
        supply_category="taxable",
    )
    doc = gstr1.SupplyDocument(
        document_id="d-1",
        number="CN/2026/001",
        document_type="credit_note",
        date=date(2026, 1, 31),
        supply_type="EXPWP",
        seller_gstin="29AAGCB7383J1Z4",
        buyer_gstin=None,
        place_of_supply="96",
        intra_state=False,
        total=Decimal("100249999999999.99"),
        lines=(line,),
        export=gstr1.ExportDetails("1234567", date(2026, 2, 1), "INBOM4"),
        original_number="INV-1",
        original_date=date(2026, 1, 2),
        original_value=Decimal("1.10"),
        note_reason="sales_return",
    )
    back = document_from_json(document_json(doc))
    assert back == doc and str(back.lines[0].quantity) == "10.000"  # exact, scale kept
    assert document_digest(replace(doc, e_invoiced=True)) == document_digest(doc)
    # Snapshot.write hashes the stored text itself for a document without an IRN: the same digest.
    assert document_digest(doc) == hashlib.sha256(document_json(doc)).hexdigest()
    for change in ({"cancelled": True}, {"total": Decimal("100249999999999.98")}, {"place_of_supply": "27"}):
        assert document_digest(replace(doc, **change)) != document_digest(doc), change
