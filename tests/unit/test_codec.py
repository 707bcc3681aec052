"""Single-object codec: byte layout, fingerprints, round trips and rejection of bad input."""

from __future__ import annotations

import copy
import io
import json
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest
from fastavro.schema import to_parsing_canonical_form

from schemas import codec, registry
from schemas.codec import MAGIC, CodecError

# --- an independent CRC-64-AVRO, written from the Avro specification's reference algorithm --------------
# Kept separate from schemas.codec (which relies on fastavro) so the two implementations check each other.
_EMPTY64 = 0xC15D213AA4D7A795


def _rabin_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY64 & -(fp & 1))
        table.append(fp)
    return table


_TABLE = _rabin_table()


def rabin64(data: bytes) -> int:
    fp = _EMPTY64
    for byte in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ byte) & 0xFF]
    return fp


def signed(value: int) -> int:
    """The Java test vectors print the fingerprint as a signed 64-bit long."""
    return value - (1 << 64) if value >= 1 << 63 else value


# Published in the Apache Avro repository (share/test/data/schema-tests.txt) as signed longs.
PUBLISHED = [
    ('"null"', 7195948357588979594),
    ('"boolean"', -6970731678124411036),
    ('"int"', 8247732601305521295),
    ('"long"', -3434872931120570953),
    ('"string"', -8142146995180207161),
    ('{"name":"foo","type":"fixed","size":15}', 1756455273707447556),
    ('{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"}]}', 7843277075252814651),
]


@pytest.mark.parametrize(("canonical", "expected"), PUBLISHED)
def test_reference_rabin_matches_published_vectors(canonical: str, expected: int) -> None:
    assert signed(rabin64(canonical.encode())) == expected


@pytest.mark.parametrize(("canonical", "expected"), PUBLISHED)
def test_fingerprint_matches_published_vectors_little_endian(canonical: str, expected: int) -> None:
    schema = json.loads(canonical)
    fp = codec.fingerprint(schema)
    assert len(fp) == 8
    # The single-object spec puts the 64-bit fingerprint on the wire little-endian.
    assert fp == (expected & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")
    assert codec.fingerprint_hex(schema) == fp.hex()


def test_int_fingerprint_hex_in_message_order() -> None:
    # "int" -> 8247732601305521295 = 0x7275d51a3f395c8f, little-endian bytes 8f 5c 39 3f 1a d5 75 72.
    assert codec.fingerprint_hex("int") == "8f5c393f1ad57572"


def _all_versions() -> list[registry.SchemaVersion]:
    return [sv for t in registry.all_types() for sv in registry.versions(t)]


@pytest.mark.parametrize("sv", _all_versions(), ids=lambda sv: f"{sv.ce_type}.v{sv.version}")
def test_registry_fingerprints_match_independent_crc(sv: registry.SchemaVersion) -> None:
    canonical = to_parsing_canonical_form(sv.schema).encode()
    assert sv.fingerprint == rabin64(canonical).to_bytes(8, "little")
    assert sv.fingerprint_hex == sv.fingerprint.hex()
    assert sv.dataschema == f"/v1/schemas/{sv.fingerprint_hex}"


def test_fingerprint_ignores_docs_and_formatting() -> None:
    sv = registry.current("ledgerflow.invoice.cancelled")
    reworded = copy.deepcopy(sv.schema)
    reworded["doc"] = "something else"
    for field in reworded["fields"]:
        field.pop("doc", None)
    assert codec.fingerprint(reworded) == sv.fingerprint
    assert codec.fingerprint(json.loads(json.dumps(sv.schema, indent=7))) == sv.fingerprint
    assert codec.fingerprint(sv.parsed) == sv.fingerprint


# --- byte layout ----------------------------------------------------------------------------------------


def _cancelled(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "event_id": "c4e6a8f0-1b3d-4f5a-8c7e-9a0b2c4d6e81",
        "tenant_id": "5b2e9d7a-3c41-4e8f-a6b0-1d2c3e4f5a6b",
        "invoice_id": "7a1f3e5c-9b2d-4c8e-a0f6-3e5d7c9b1a24",
        "occurred_at": datetime(2025, 5, 3, 8, 0, 0, 123000, tzinfo=UTC),
        "reason": "duplicate",
        "remark": None,
    }
    record.update(overrides)
    return record


def test_header_layout_and_body_readable_by_plain_avro() -> None:
    sv = registry.current("ledgerflow.invoice.cancelled")
    data, used = registry.encode_event(sv.ce_type, _cancelled())
    assert used is sv
    assert data[:2] == b"\xc3\x01" == MAGIC
    assert data[2:10] == sv.fingerprint
    assert data[2:10].hex() == sv.fingerprint_hex
    # What a consumer in another language does: drop 10 bytes, read the body with the published JSON.
    body = fastavro.schemaless_reader(io.BytesIO(data[10:]), fastavro.parse_schema(sv.schema))
    assert body == _cancelled()


def test_encode_without_precomputed_fingerprint_is_identical() -> None:
    sv = registry.current("ledgerflow.invoice.cancelled")
    assert codec.encode(sv.parsed, _cancelled()) == codec.encode(sv.parsed, _cancelled(), fp=sv.fingerprint)
    assert codec.encode(sv.schema, _cancelled()) == codec.encode(sv.parsed, _cancelled())


# --- round trips ----------------------------------------------------------------------------------------


def _issued(**overrides: Any) -> dict[str, Any]:
    sample = json.loads(registry.current("ledgerflow.invoice.issued").sample_path.read_text("utf-8"))
    sample.update(overrides)
    return sample


def _as_millis(record: dict[str, Any]) -> dict[str, Any]:
    out = dict(record)
    out["occurred_at"] = int(out["occurred_at"].timestamp() * 1000)
    return out


def test_round_trip_issued_sample() -> None:
    data, _ = registry.encode_event("ledgerflow.invoice.issued", _issued())
    decoded = registry.decode_event(data, "ledgerflow.invoice.issued")
    assert decoded["occurred_at"].tzinfo is not None
    assert _as_millis(decoded) == _issued()


def test_round_trip_unicode() -> None:
    buyer = {
        "name": "श्री गणेश स्वीट्स — தமிழ் கடை 🍬",
        "gstin": None,
        "state": "33",
        "address": {"line1": "12, காந்தி சாலை", "line2": "पहली मंज़िल", "city": "Chennai", "pincode": None},
        "kra_pin": None,  # v4's Kenyan buyer fields
        "phone": None,
    }
    record = _issued(buyer=buyer, number="INV/२०२५/１")
    data, _ = registry.encode_event("ledgerflow.invoice.issued", record)
    assert _as_millis(registry.decode_event(data)) == record


def test_round_trip_nullable_fields_null_and_empty_lines() -> None:
    record = _issued(
        lines=[],
        idempotency_key=None,
        seller={
            "gstin": None,
            "legal_name": "Unregistered Seller",
            "state": "07",
            "trade_name": None,
            "address": None,
            "kra_pin": None,
        },
        buyer={
            "name": "Walk-in",
            "gstin": None,
            "state": "07",
            "address": None,
            "kra_pin": None,
            "phone": None,
        },
    )
    data, _ = registry.encode_event("ledgerflow.invoice.issued", record)
    decoded = registry.decode_event(data)
    assert decoded["lines"] == []
    assert decoded["buyer"]["address"] is None
    assert _as_millis(decoded) == record


def test_round_trip_nullable_timestamp() -> None:
    ce_type = "ledgerflow.tenant.api_key_rotated"
    base = {
        "event_id": "e1",
        "tenant_id": "t1",
        "occurred_at": datetime(2025, 5, 2, tzinfo=UTC),
        "key_id": "k2",
    }
    for extra in (
        {"previous_key_id": None, "previous_key_valid_until": None},
        {"previous_key_id": "k1", "previous_key_valid_until": datetime(2025, 5, 9, tzinfo=UTC)},
    ):
        data, _ = registry.encode_event(ce_type, {**base, **extra})
        # v2 added the key's name and who rotated it, both defaulting to null.
        assert registry.decode_event(data, ce_type) == {**base, **extra, "name": None, "changed_by": None}


def test_defaults_filled_when_producer_omits_fields() -> None:
    record = _issued()
    del record["source"], record["idempotency_key"], record["currency"]
    decoded = registry.decode_event(registry.encode_event("ledgerflow.invoice.issued", record)[0])
    assert (decoded["source"], decoded["idempotency_key"], decoded["currency"]) == ("api", None, "INR")


def test_unknown_field_is_rejected_not_dropped() -> None:
    with pytest.raises(CodecError):
        registry.encode_event("ledgerflow.invoice.cancelled", _cancelled(reasn="typo"))


def test_missing_required_field_is_rejected() -> None:
    record = _cancelled()
    del record["reason"]
    with pytest.raises(CodecError):
        registry.encode_event("ledgerflow.invoice.cancelled", record)


# --- bad input ------------------------------------------------------------------------------------------


def _good() -> bytes:
    return registry.encode_event("ledgerflow.invoice.cancelled", _cancelled(remark="ok"))[0]


def test_bad_magic_raises() -> None:
    data = bytearray(_good())
    data[0] = 0x00
    with pytest.raises(CodecError, match="magic"):
        registry.decode_event(bytes(data))
    # Confluent wire format (magic 0 + 4-byte id) must not be mistaken for single-object encoding.
    with pytest.raises(CodecError):
        codec.decode(b"\x00\x00\x00\x00\x01" + _good()[10:], lambda fp: None)


def test_unknown_fingerprint_raises() -> None:
    data = bytearray(_good())
    data[5] ^= 0xFF
    with pytest.raises(CodecError, match="unknown schema fingerprint"):
        registry.decode_event(bytes(data))
    with pytest.raises(CodecError, match="unknown schema fingerprint"):
        codec.decode(bytes(data), lambda fp: None)

    def raising(fp: bytes) -> dict[str, Any]:
        raise KeyError(fp)

    with pytest.raises(CodecError, match="unknown schema fingerprint"):
        codec.decode(_good(), raising)


@pytest.mark.parametrize("cut", [0, 1, 2, 9, 10, 11, 30, -1])
def test_truncated_message_raises(cut: int) -> None:
    data = _good()
    with pytest.raises(CodecError):
        registry.decode_event(data[:cut])


def test_trailing_bytes_raise() -> None:
    with pytest.raises(CodecError, match="trailing"):
        registry.decode_event(_good() + b"\x00")


def test_wrong_declared_type_raises() -> None:
    with pytest.raises(CodecError, match="belongs to"):
        registry.decode_event(_good(), "ledgerflow.invoice.issued")


def test_codec_decode_with_lookup_and_reader_schema() -> None:
    v1, current = (
        registry.versions("ledgerflow.invoice.issued")[0],
        registry.current("ledgerflow.invoice.issued"),
    )
    sample = json.loads(v1.sample_path.read_text("utf-8"))
    data = codec.encode(v1.parsed, sample)
    lookup = {v1.fingerprint: v1.schema}.get  # raw JSON works as a writer schema too
    decoded = codec.decode(data, lookup, reader_schema=current.schema)
    assert decoded["source"] == "api"
    assert codec.decode(data, lookup)["number"] == sample["number"]


# --- registry look-ups ----------------------------------------------------------------------------------


def test_registry_lookups() -> None:
    assert registry.all_types() == [
        "ledgerflow.alert.raised",
        "ledgerflow.bank_transaction.recorded",
        "ledgerflow.budget.allocated",
        "ledgerflow.budget.revised",
        "ledgerflow.budget.utilised",
        "ledgerflow.expense.approval_requested",
        "ledgerflow.expense.approved",
        "ledgerflow.expense.escalated",
        "ledgerflow.expense.paid",
        "ledgerflow.expense.rejected",
        "ledgerflow.expense.submitted",
        "ledgerflow.fee_collection.recorded",
        "ledgerflow.invoice.cancelled",
        "ledgerflow.invoice.credit_released",
        "ledgerflow.invoice.credited",
        "ledgerflow.invoice.etims_failed",
        "ledgerflow.invoice.etims_numbered",
        "ledgerflow.invoice.etims_signed",
        "ledgerflow.invoice.etims_voided",
        "ledgerflow.invoice.irn_cancelled",
        "ledgerflow.invoice.irn_failed",
        "ledgerflow.invoice.irn_generated",
        "ledgerflow.invoice.issued",
        "ledgerflow.invoice_draft.draft_discarded",
        "ledgerflow.invoice_draft.draft_issued",
        "ledgerflow.invoice_draft.draft_updated",
        "ledgerflow.invoice_draft.drafted",
        "ledgerflow.payment.recorded",
        "ledgerflow.payment.refunded",
        "ledgerflow.payment.status_changed",
        "ledgerflow.payout.bounced",
        "ledgerflow.payout.completed",
        "ledgerflow.payout.failed",
        "ledgerflow.payout.held",
        "ledgerflow.payout.released",
        "ledgerflow.payout.requested",
        "ledgerflow.payout.submitted",
        "ledgerflow.product.created",
        "ledgerflow.product.revised",
        "ledgerflow.reconciliation_match.made",
        "ledgerflow.reconciliation_match.undone",
        "ledgerflow.subscription.provider_linked",
        "ledgerflow.subscription.requested",
        "ledgerflow.subscription.status_changed",
        "ledgerflow.tax_return.failed",
        "ledgerflow.tax_return.filed",
        "ledgerflow.tax_return.generated",
        "ledgerflow.tax_return.processed",
        "ledgerflow.tax_return.rejected_records",
        "ledgerflow.tax_return.saved",
        "ledgerflow.tax_return.submitted",
        "ledgerflow.tds_deduction.recorded",
        "ledgerflow.tenant.api_key_added",
        "ledgerflow.tenant.api_key_revoked",
        "ledgerflow.tenant.api_key_rotated",
        "ledgerflow.tenant.integration_settings_changed",
        "ledgerflow.tenant.profile_updated",
        "ledgerflow.tenant.read_grant_given",
        "ledgerflow.tenant.read_grant_withdrawn",
        "ledgerflow.tenant.registered",
        "ledgerflow.tenant.user_added",
        "ledgerflow.tenant.user_changed",
    ]
    issued = registry.versions("ledgerflow.invoice.issued")
    assert [sv.version for sv in issued] == [1, 2, 3, 4, 5]
    assert registry.current("ledgerflow.invoice.issued") is issued[-1]
    for sv in issued:
        assert registry.by_fingerprint(sv.fingerprint) is sv
        assert registry.by_fingerprint(sv.fingerprint_hex) is sv
        assert registry.by_fingerprint(sv.fingerprint_hex.upper()) is sv
    assert registry.by_fingerprint("not hex") is None
    assert registry.by_fingerprint(b"\x00" * 8) is None


def test_unknown_event_type() -> None:
    with pytest.raises(registry.UnknownEventType):
        registry.current("ledgerflow.invoice.paid")
    with pytest.raises(KeyError):
        registry.versions("nope")
