"""Pure parts of the audit log: the chain's link encoding, the projection's changes, the attribution
context, anchors. The chain computed by PostgreSQL's trigger is checked against ``link`` on the real
database in tests/integration/test_audit_log.py."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson
import pytest

from engine import attribution, event_chain
from projections.audit_trail import (
    FIRST_STATE,
    BadCursor,
    _first_changes,
    _state_of,
    changes_of,
    decode_cursor,
    encode_cursor,
    jsonable,
)

A = UUID("11111111-1111-1111-1111-111111111111")
B = UUID("22222222-2222-2222-2222-222222222222")
BASE: dict[str, Any] = {
    "previous": bytes(32),
    "notification_id": 7,
    "originator_id": A,
    "originator_version": 1,
    "topic": "engine.domain.invoice:Invoice.Issued",
    "state": b'{"a":1}',
}


@pytest.mark.parametrize(
    "change",
    [
        {"previous": b"\x01" + bytes(31)},
        {"notification_id": 8},
        {"originator_id": B},
        {"originator_version": 2},
        {"topic": "engine.domain.invoice:Invoice.Cancelled"},
        {"topic": None},
        {"topic": ""},
        {"state": b'{"a":2}'},
        {"state": None},
        {"state": b""},
        # Bytes moved from the end of the topic to the start of the state: length prefixes tell.
        {"topic": BASE["topic"] + '{"a":', "state": b"1}"},
    ],
)
def test_a_link_changes_when_any_stored_field_changes(change: dict[str, Any]) -> None:
    assert event_chain.link(**{**BASE, **change}) != event_chain.link(**BASE)


def test_a_link_is_sha256_sized_and_deterministic() -> None:
    assert len(event_chain.link(**BASE)) == 32
    assert event_chain.link(**BASE) == event_chain.link(**dict(BASE))


def test_null_and_empty_are_different_links() -> None:
    assert event_chain.link(**{**BASE, "topic": None}) != event_chain.link(**{**BASE, "topic": ""})
    assert event_chain.link(**{**BASE, "state": None}) != event_chain.link(**{**BASE, "state": b""})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ledger_events:12:" + "ab" * 32, ("ledger_events", 12, bytes.fromhex("ab" * 32))),
    ],
)
def test_an_anchor_is_table_event_and_hash(text: str, expected: tuple[str, int, bytes]) -> None:
    assert event_chain.parse_anchor(text) == expected


@pytest.mark.parametrize(
    "text", ["ledger_events:12", "ledger_events:x:" + "ab" * 32, "t:1:abcd", ":1:" + "ab" * 32]
)
def test_a_malformed_anchor_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        event_chain.parse_anchor(text)


@pytest.mark.parametrize(
    ("previous", "fields", "expected"),
    [
        ({}, {"status": "issued"}, {"status": {"old": None, "new": "issued"}}),
        ({"status": "issued"}, {"status": "issued"}, {}),
        (
            {"status": "issued", "n": "1"},
            {"status": "cancelled"},
            {"status": {"old": "issued", "new": "cancelled"}},
        ),
        ({"total": "10.00"}, {"total": "10.0"}, {"total": {"old": "10.00", "new": "10.0"}}),
        ({"lines": [1]}, {"lines": [1, 2]}, {"lines": {"old": [1], "new": [1, 2]}}),
        ({"reason": "x"}, {"reason": None}, {"reason": {"old": "x", "new": None}}),
    ],
)
def test_changes_are_the_fields_that_differ_from_the_last_known_state(
    previous: dict[str, Any], fields: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert changes_of(previous, fields) == expected


def test_avro_values_become_exact_json() -> None:
    value = {
        "amount": Decimal("12345678901234567890.01"),
        "at": datetime(2026, 4, 1, 5, 30, tzinfo=UTC),
        "day": date(2026, 4, 1),
        "raw": b"\x00\xff",
        "ids": (A,),
    }
    assert jsonable(value) == {
        "amount": "12345678901234567890.01",
        "at": "2026-04-01T05:30:00+00:00",
        "day": "2026-04-01",
        "raw": "AP8=",
        "ids": [str(A)],
    }


@pytest.mark.parametrize(
    "fields",
    [
        {"number": "INV-1", "status": "issued", "note": None},
        {
            "total": Decimal("-0.00"),
            "due": date(2026, 12, 31),
            "at": datetime(2026, 4, 1, 5, 30, 0, 123456, tzinfo=UTC),
            "naive": datetime(2026, 4, 1, 5, 30),
            "raw": b"\x00\xff",
            "lines": [
                {"qty": Decimal("1E+3"), "hsn": "8504", "id": A},
                {"qty": Decimal("0.5"), "x": (1, None)},
            ],
            "text": "\u0928\u092e\u0938\u094d\u0924\u0947 \u0000 \U0001f600",
            "flag": False,
            "empty": {},
        },
        {},
    ],
)
def test_a_first_events_changes_are_what_the_general_path_writes_and_hold_its_state(
    fields: dict[str, Any],
) -> None:
    change_text = _first_changes(fields)
    assert change_text is not None
    assert orjson.loads(change_text) == changes_of({}, jsonable(fields))
    # Its state_after is left empty: the state read back from the changes is the entity's state,
    # less the fields it left null, which compare the same (previous.get gives None for both).
    state = _state_of(FIRST_STATE, change_text)
    assert state == {k: v for k, v in jsonable(fields).items() if v is not None}
    later = {**jsonable(fields), "note": "changed", "flag": True}
    assert changes_of(state, later) == changes_of(jsonable(fields), later)


def test_a_stored_state_is_read_as_written() -> None:
    written = {"number": "INV-1", "total": "10.00", "cancelled": None}
    assert _state_of(orjson.dumps(written), None) == written


def test_a_value_orjson_refuses_takes_the_general_path() -> None:
    fields = {"huge": 2**70}
    assert _first_changes(fields) is None
    assert jsonable(fields) == {"huge": 2**70}


def test_a_cursor_round_trips_and_a_forged_one_is_refused() -> None:
    at = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    assert decode_cursor(encode_cursor(at, "abc")) == (at, 0, "abc")
    assert decode_cursor(encode_cursor(at, "abc", 41)) == (at, 41, "abc")
    for forged in ("%%%", "bm90IGpzb24", encode_cursor(at, "x")[:-3]):
        with pytest.raises(BadCursor):
            decode_cursor(forged)


def test_events_stored_outside_a_request_are_the_process_s() -> None:
    attribution.set_process_name("relay")
    try:
        assert attribution.current().actor == "process:relay"
        who = attribution.Attribution(actor="user:u1", client_ip="10.0.0.9")
        with attribution.attributed(lambda: who):
            assert attribution.current() == who
            seen: list[attribution.Attribution] = []
            # A thread of its own does not inherit the request (the ingest agent's writer, say).
            worker = threading.Thread(target=lambda: seen.append(attribution.current()))
            worker.start()
            worker.join()
            assert seen[0].actor == "process:relay"
        assert attribution.current().actor == "process:relay"
    finally:
        attribution.set_process_name(None)


def test_a_client_text_loses_nul_and_is_bounded() -> None:
    assert attribution.clean("a\x00b" + "c" * 600, 512) == "ab" + "c" * 510
    assert attribution.clean(None, 10) is None


def _event(
    headers: tuple[tuple[str, bytes | None], ...], record: dict[str, Any], key: bytes | None = None
) -> Any:
    from projections.events import ProjectedEvent

    return ProjectedEvent(
        "ledger.invoice.v1",
        0,
        1,
        "ledgerflow.invoice.line.added",
        "e1",
        record,
        key=key,
        headers=headers,  # type: ignore[arg-type]
    )


def test_identify_reads_the_last_of_a_repeated_header_and_falls_back_to_the_key_and_source() -> None:
    from projections.audit_trail import Identity, identify

    subject = (("ce_subject", b"old"), ("ce_source", b"/t/x"), ("ce_subject", b"inv-1"))
    assert identify(_event(subject, {"tenant_id": A})) == Identity(
        A, "invoice", "inv-1", "ledgerflow.invoice.line.added", "line.added"
    )
    # A null header counts as empty; the entity is then the key, and the tenant the source's tail.
    found = identify(
        _event((("ce_subject", None), ("ce_source", f"/tenants/{B}".encode())), {}, key=b"inv-2")
    )
    assert found is not None and (found.tenant_id, found.entity_id) == (B, "inv-2")
    # The tenant as text (not the decoder's UUID) is the same tenant.
    assert identify(_event(subject, {"tenant_id": str(A)})) == identify(_event(subject, {"tenant_id": A}))
    assert identify(_event((), {"tenant_id": A})) is None  # no subject, no key
    assert identify(_event((("ce_subject", b"s"),), {})) is None  # no tenant in the record or a source
