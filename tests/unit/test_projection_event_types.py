"""Which records the projection runner may leave undecoded: the ``ce_type`` header read without
decoding the body, and the types each projection declares (issue 15)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from projections.catalogue import PROJECTIONS
from projections.etims_compliance import STATEMENTS
from projections.events import ce_type_of, event_types
from projections.gst_outward_supplies import CHANGES as GST_CHANGES
from projections.invoice_register import CHANGES as REGISTER_CHANGES
from schemas import registry


@dataclass
class Record:
    headers: list[tuple[str, bytes | None]] | None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([("ce_type", b"ledgerflow.invoice.issued")], "ledgerflow.invoice.issued"),
        ([("ce_id", b"x"), ("ce_type", b"ledgerflow.invoice.cancelled")], "ledgerflow.invoice.cancelled"),
        ([], ""),
        (None, ""),
        ([("ce_type", None)], ""),
        # Repeated: the last one counts, as in decode_message's header map.
        ([("ce_type", b"a"), ("ce_type", b"ledgerflow.invoice.issued")], "ledgerflow.invoice.issued"),
        # Not UTF-8: "" so that the record is decoded and refused as before, never skipped.
        ([("ce_type", b"\xff\xfe")], ""),
        ([("ce_type", "ledgerflow.invoice.issued\u0000".encode())], "ledgerflow.invoice.issued\x00"),
    ],
)
def test_the_type_header_is_read_without_the_body(
    headers: list[tuple[str, bytes | None]] | None, expected: str
) -> None:
    assert ce_type_of(Record(headers)) == expected


class Undeclared:
    name = "undeclared"


def test_declared_types_are_the_ones_each_projection_acts_on() -> None:
    by_name = {p.name: event_types(p) for p in PROJECTIONS}
    assert by_name["invoice_register"] == frozenset(REGISTER_CHANGES)
    assert by_name["gst_outward_supplies"] == frozenset(GST_CHANGES)
    assert by_name["etims_compliance"] == frozenset(STATEMENTS)
    assert event_types(Undeclared()) is None  # type: ignore[arg-type]  # sees every event
    # Every declared type is a real event type with a schema.
    known = set(registry.all_types())
    for name, declared in by_name.items():
        assert declared is None or declared <= known, name
