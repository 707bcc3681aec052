"""The relay's direct path (stored JSON straight to Avro) writes exactly the general path's messages:
same key, value and headers for every event it takes, and it takes nothing the general path would
refuse (engine/relay_direct.py)."""

from __future__ import annotations

import copy
import random
from typing import Any
from uuid import uuid4

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.application import Ledger
from engine.domain.invoice import Invoice
from engine.publishing import STORED_TOPICS, EncodedEvent, encode_stored
from engine.relay_direct import PLANS, _type_for, encode_direct
from tests.unit.test_kenya_invoice_events import all_kenyan_events
from tests.unit.test_publishing import all_kinds_of_events

MAPPER = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}).mapper
STORED = [MAPPER.to_stored_event(e) for e in [*all_kinds_of_events(), *all_kenyan_events()]]
ISSUED_TOPIC = next(topic for topic, cls in STORED_TOPICS.items() if cls is Invoice.Issued)
ISSUED = [s for s in STORED if s.topic == ISSUED_TOPIC]


def general(originator_id: Any, version: int, topic: str, state: bytes) -> EncodedEvent | None:
    try:
        return encode_stored(originator_id, version, topic, state)
    except Exception:
        return None


def assert_same(originator_id: Any, version: int, topic: str, state: bytes) -> bool:
    """Both paths agree on this stored event; True when the direct path took it."""
    direct = encode_direct(originator_id, version, topic, state)
    expected = general(originator_id, version, topic, state)
    if expected is None:
        assert direct is None, "the direct path wrote an event the general path refuses"
        return False
    if direct is None:
        return False
    topic_, key, value, headers = direct
    assert value == expected.value
    assert (topic_, key) == (expected.outbound.topic, expected.key)
    # An event stored without a trace context gets a fresh random one on each path.
    if expected.outbound.stored_trace:
        assert headers == expected.headers
    else:
        assert headers[:-1] == expected.headers[:-1]
        assert headers[-1][0] == "traceparent"
    return True


def test_every_plan_fits_the_current_schema_of_its_type() -> None:
    # A plan that no longer fits (a schema or builder changed without it) silently sends its type
    # the general way: correct, but the relay's speed depends on this staying true.
    for event_class in PLANS:
        topic = next(topic for topic, cls in STORED_TOPICS.items() if cls is event_class)
        assert _type_for(topic) is not None, event_class.__qualname__


@pytest.mark.parametrize("stored", STORED, ids=lambda s: s.topic.rsplit(":", 1)[-1])
def test_each_sample_event_gets_the_general_paths_bytes(stored: Any) -> None:
    took = assert_same(stored.originator_id, stored.originator_version, stored.topic, stored.state)
    # The planned types take the direct path (Indian and Kenyan invoices and credit notes).
    assert took == (STORED_TOPICS[stored.topic] in PLANS)


def test_the_samples_cover_both_countries_and_credit_notes() -> None:
    states = [orjson.loads(s.state) for s in ISSUED]
    assert {s.get("country") for s in states} == {"IN", "KE"}
    assert "credit_note" in {s.get("document_type") for s in states}


# -- random invoices -------------------------------------------------------------------------------

ODD_TEXTS = [
    "",
    "\x00\x1f\x7f",
    "e\u0301\u200b",
    "\u202eRTL",
    "🧾" * 300,
    "ñ" * 1023,
    "ñ" * 1024,
    "ab",
    "\ufeff",
]
ODD_AMOUNTS = ["0", "-0", "0.00", "12.5", "1E+3", "1e-7", "00.50", "١٢.٣٤", "-0.005", "0.1", "18",
               "99999999999999999999999999999.999", "-123456789012345678901234567890"]  # fmt: skip
BAD_AMOUNTS = [" 1", "NaN", "1.2.3", "", "Infinity", "1_000"]
WRONG = [0, -1, 2**63 - 1, True, False, 1.5, [], [1], {}, {"_type_": "decimal_str", "_data_": "1"}]


def odd_text(rnd: random.Random) -> str:
    if rnd.random() < 0.5:
        return rnd.choice(ODD_TEXTS)
    # Any code point but surrogates (not encodable), as hypothesis' text would give.
    return "".join(
        chr(rnd.choice([rnd.randrange(0xD800), rnd.randrange(0xE000, 0x110000)])) for _ in range(8)
    )


def odd_amount(rnd: random.Random, wild: bool) -> str:
    if wild and rnd.random() < 0.1:
        return rnd.choice(BAD_AMOUNTS)
    if rnd.random() < 0.5:
        return rnd.choice(ODD_AMOUNTS)
    digits = str(rnd.randrange(10 ** rnd.randrange(1, 40)))
    point = rnd.randrange(len(digits) + 1)
    return rnd.choice(["", "-"]) + (digits[:point] + "." + digits[point:] if point < len(digits) else digits)


# Fields the builders read with .get (or as getattr(..., None)): well formed when left out or empty.
OPTIONAL = {"override_reason", "master_rate", "original_line_no", "supply_category", "gstin", "state",
            "trade_name", "kra_pin", "phone", "address", "document_type", "original_invoice_id",
            "original_number", "refund_reason_code", "environment", "branch_id", "payment_type",
            "tax_breakdown", "reverse_charge", "ecommerce_gstin", "export", "note_reason",
            "original_invoice_date", "traceparent", "country", "line2", "pincode"}  # fmt: skip


def mutate(rnd: random.Random, value: dict[str, Any], wild: bool) -> None:
    """Replace some of ``value``'s fields in place: odd text, huge or odd amounts, optional fields
    empty or left out; with ``wild`` also values of the wrong type and required keys left out."""
    for name in list(value):
        current = value[name]
        if name == "lines" and isinstance(current, list):
            for line in current:
                mutate(rnd, line, wild)
            if rnd.random() < 0.1:
                value[name] = current * rnd.randrange(4)
            continue
        if isinstance(current, dict) and "_type_" not in current:
            mutate(rnd, current, wild)
        choice = rnd.randrange(10)
        if choice == 0 and type(current) is str:
            value[name] = odd_text(rnd)
        elif choice == 1 and isinstance(current, dict) and current.get("_type_") == "decimal_str":
            amount = odd_amount(rnd, wild)
            value[name] = amount if wild and rnd.random() < 0.1 else {**current, "_data_": amount}
        elif choice == 2 and (name in OPTIONAL or (wild and rnd.random() < 0.05)):
            value[name] = None
        elif choice == 3 and (name in OPTIONAL or (wild and rnd.random() < 0.05)):
            del value[name]
        elif choice == 4 and wild and rnd.random() < 0.05:
            value[name] = rnd.choice(WRONG)


@settings(max_examples=150, deadline=None)
@given(st.randoms(use_true_random=False), st.sampled_from(ISSUED), st.booleans())
def test_random_invoices_get_the_general_paths_bytes_or_the_general_path(
    rnd: random.Random, stored: Any, wild: bool
) -> None:
    state = orjson.loads(stored.state)
    mutate(rnd, state, wild)
    version = rnd.randrange(1, 2**31)
    # As the relay reads it (PostgreSQL's text), and forms only UUID() accepts, which must come out
    # canonical on both paths.
    other = uuid4()
    aggregate = rnd.choice(
        [stored.originator_id, other, str(other), str(other).upper(), f"{{{other}}}", other.hex, "not-a-uuid"]
    )
    assert_same(aggregate, version, stored.topic, orjson.dumps(state))


def test_the_direct_path_takes_well_formed_odd_invoices() -> None:
    # Odd but valid: the direct path must write them itself (not merely hand them on).
    state = orjson.loads(next(s for s in ISSUED if b'"IN"' in s.state).state)
    odd = copy.deepcopy(state)
    odd["number"] = "\u202e\x00🧾" * 400
    odd["buyer"]["name"] = "e\u0301" * 600
    odd["lines"] = odd["lines"] * 40
    odd["lines"][0]["quantity"] = {"_type_": "decimal_str", "_data_": "99999999999999999999999.125"}
    odd["lines"][0]["discount"] = {"_type_": "decimal_str", "_data_": "1E+30"}
    odd["totals"]["total"] = {"_type_": "decimal_str", "_data_": "-123456789012345678901234567890"}
    for name in ("original_invoice_date", "export", "tax_breakdown", "country", "document_type"):
        odd.pop(name, None)
    odd["export"] = {"shipping_bill_number": "", "port_code": "INNSA1"}
    for variant in (state, odd):
        assert assert_same(uuid4(), 7, ISSUED_TOPIC, orjson.dumps(variant))
