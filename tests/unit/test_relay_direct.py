"""The relay's direct path (stored JSON straight to Avro) writes exactly the general path's messages:
same key, value and headers for every event it takes, and it takes nothing the general path would
refuse (engine/relay_direct.py). Each test runs with the native writer of the plans (the relay's)
and with the generated Python one it hands odd events to."""

from __future__ import annotations

import copy
import dataclasses
import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import _native_kafka, relay_direct
from engine.application import Ledger
from engine.domain.invoice import Invoice
from engine.publishing import (
    _NAMESPACE_BYTES,
    STORED_TOPICS,
    EncodedEvent,
    OutboundEvent,
    _millis,
    encode_stored,
    event_id,
    headers_for,
    new_traceparent,
    type_headers,
)
from engine.relay_direct import (
    PLANS,
    _parsed_key,
    _type_for,
    compile_native_plan,
    compile_plan,
    encode_direct,
    envelope_python,
)

# An ImportError fails this module (not a skip) when the native writer is not built.
from schemas import _native_writer
from tests.unit.test_kenya_invoice_events import all_kenyan_events
from tests.unit.test_publishing import all_kinds_of_events

MAPPER = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}).mapper
STORED = [MAPPER.to_stored_event(e) for e in [*all_kinds_of_events(), *all_kenyan_events()]]
ISSUED_TOPIC = next(topic for topic, cls in STORED_TOPICS.items() if cls is Invoice.Issued)
ISSUED = [s for s in STORED if s.topic == ISSUED_TOPIC]


# The relay's direct path for issued invoices (native), and the same with the Python writer.
NATIVE = _type_for(ISSUED_TOPIC)
assert NATIVE is not None
ISSUED_PLAN = PLANS[Invoice.Issued](NATIVE.schema.schema)
PYTHON_WRITER = compile_plan(ISSUED_PLAN, NATIVE.schema.schema, NATIVE.schema.fingerprint)
WRITERS = {"native": NATIVE, "python": dataclasses.replace(NATIVE, write=PYTHON_WRITER)}
KINDS = list(WRITERS)


@contextmanager
def writing_with(kind: str) -> Iterator[None]:
    """encode_direct with the issued invoices' native or Python writer."""
    previous = relay_direct._types.get(ISSUED_TOPIC)
    relay_direct._types[ISSUED_TOPIC] = WRITERS[kind]
    try:
        yield
    finally:
        relay_direct._types[ISSUED_TOPIC] = previous


def refuse(*args: Any) -> bytes:
    raise AssertionError("the native writer handed on an event it should write itself")


def general(originator_id: Any, version: int, topic: str, state: bytes) -> EncodedEvent | None:
    try:
        return encode_stored(originator_id, version, topic, state)
    except Exception:
        return None


def assert_same(originator_id: Any, version: int, topic: str, state: bytes, kind: str = "native") -> bool:
    """Both paths agree on this stored event; True when the direct path took it."""
    with writing_with(kind):
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


def test_the_relay_writes_planned_types_with_the_native_writer() -> None:
    for event_class in PLANS:
        topic = next(topic for topic, cls in STORED_TOPICS.items() if cls is event_class)
        kind = _type_for(topic)
        assert kind is not None
        assert isinstance(kind.write, _native_writer.Program), event_class.__qualname__


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("stored", STORED, ids=lambda s: s.topic.rsplit(":", 1)[-1])
def test_each_sample_event_gets_the_general_paths_bytes(stored: Any, kind: str) -> None:
    took = assert_same(stored.originator_id, stored.originator_version, stored.topic, stored.state, kind)
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
    "कर बीजक ०१२३४५६७८९",
]
ODD_AMOUNTS = ["0", "-0", "0.00", "12.5", "1E+3", "1e-7", "00.50", "١٢.٣٤", "-0.005", "0.1", "18",
               "99999999999999999999999999999.999", "-123456789012345678901234567890"]  # fmt: skip
BAD_AMOUNTS = [" 1", "NaN", "1.2.3", "", "Infinity", "1_000"]
WRONG = [0, -1, 2**63 - 1, -(2**63), 2**63, 2**64 - 1, 2**31, True, False, 1.5, [], [1], {},
         {"_type_": "decimal_str", "_data_": "1"}]  # fmt: skip


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


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=150, deadline=None)
@given(st.randoms(use_true_random=False), st.sampled_from(ISSUED), st.booleans())
def test_random_invoices_get_the_general_paths_bytes_or_the_general_path(
    kind: str, rnd: random.Random, stored: Any, wild: bool
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
    assert_same(aggregate, version, stored.topic, orjson.dumps(state), kind)


@pytest.mark.parametrize("kind", KINDS)
def test_the_direct_path_takes_well_formed_odd_invoices(kind: str) -> None:
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
        assert assert_same(uuid4(), 7, ISSUED_TOPIC, orjson.dumps(variant), kind)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("traceparent", [12345, 1.5, ["00-abc"], {"t": 1}, True])
def test_a_stored_trace_context_that_is_not_text_is_left_to_the_general_path(
    kind: str, traceparent: Any
) -> None:
    # Found by the random test above: the direct path raised AttributeError building the headers,
    # after its guarded part, instead of handing the event on.
    state = orjson.loads(next(s for s in ISSUED if b'"IN"' in s.state).state)
    state["traceparent"] = traceparent
    assert not assert_same(uuid4(), 7, ISSUED_TOPIC, orjson.dumps(state), kind)


# -- the native writer's own shortcuts: what it computes in C, against the Python writer ------------

# Amounts around the helpers' early returns (_money, _number, _price in engine/publishing.py), each
# written into every amount field of an invoice: the native writer must write exactly the Python
# writer's bytes, itself where its C takes the case, through the helper otherwise.
AMOUNTS = ["0", "-0", "0.00", "0.0", "0.", "18", "12.5", "12.50", "12.505", "007", "07.5", "07.50", "-01.25",
           "-12.5", "--1.00", "-", "", ".", ".50", "1.", "1..0", "1.0.0", "100.000", "25.5000", "1E+3", "1e2",
           "1.5E", "١٢.٣٤", "१२.५०", "12.5\x00", " 1", "NaN", "-Infinity", "1_000",
           "99999999999999999999999999999.99", "-123456789012345678901234567890"]  # fmt: skip
AMOUNT_FIELDS = {"quantity", "unit_price", "discount", "total", "taxable_value", "gst_rate", "master_rate",
                 "cgst", "sgst", "igst", "cess_rate", "cess", "supply_amount", "taxable_amount", "tax_rate",
                 "tax_amount", "rate", "taxable", "tax"}  # fmt: skip


def with_amount(value: Any, amount: str, wrapped: bool) -> Any:
    """``value`` with each amount field (any depth) set to ``amount``, bare or as stored."""
    if isinstance(value, list):
        return [with_amount(item, amount, wrapped) for item in value]
    if not isinstance(value, dict) or "_type_" in value:
        return value
    return {
        name: ({"_type_": "decimal_str", "_data_": amount} if wrapped else amount)
        if name in AMOUNT_FIELDS
        else with_amount(item, amount, wrapped)
        for name, item in value.items()
    }


def write_both(state: dict[str, Any], slow: Any = None) -> tuple[Any, Any]:
    """The native and the Python writer's outcome (bytes, or the exception's type) for ``state``."""
    schema = NATIVE.schema
    native = compile_native_plan(ISSUED_PLAN, schema.schema, schema.fingerprint, slow or PYTHON_WRITER)
    assert native is not None
    outcomes = []
    for write in (native, PYTHON_WRITER):
        try:
            outcomes.append(write(state, "agg", "ce", "tenant", 1))
        except Exception as exc:
            outcomes.append(type(exc))
    return outcomes[0], outcomes[1]


@pytest.mark.parametrize("wrapped", [True, False], ids=["stored", "bare"])
@pytest.mark.parametrize("amount", AMOUNTS)
def test_the_native_writer_writes_odd_amounts_as_the_python_writer(amount: str, wrapped: bool) -> None:
    for stored in ISSUED:
        state = with_amount(orjson.loads(stored.state), amount, wrapped)
        native, python = write_both(state)
        assert native == python


@pytest.mark.parametrize("stored", ISSUED, ids=lambda s: str(s.originator_version))
def test_the_native_writer_writes_the_samples_itself(stored: Any) -> None:
    state = orjson.loads(stored.state)
    native, python = write_both(state, refuse)
    assert isinstance(native, bytes)
    assert native == python


@pytest.mark.parametrize("amount", ["0", "18", "12.5", "0.00", "1180.00", "25.5000", "--1.00", "-0"])
def test_amounts_in_wire_form_or_a_pad_away_are_written_in_c(amount: str) -> None:
    # The bench's amounts ("0" and "18" for rates and zero taxes, "25.5" quantities): the native
    # writer writes them without asking the Python writer (refuse fails otherwise).
    state = with_amount(orjson.loads(ISSUED[0].state), amount, True)
    native, python = write_both(state, refuse)
    assert native == python


# -- the envelope: event id, occurred_at and headers in one call (C when built) ---------------------

_OFFSETS = st.builds(
    lambda minutes, seconds: timezone(timedelta(minutes=minutes, seconds=seconds)),
    st.integers(-23 * 60 - 59, 23 * 60 + 59),
    st.sampled_from([0, 0, 0, 30]),
)
_TIMES = st.one_of(
    st.datetimes(timezones=st.just(UTC)),
    st.datetimes(timezones=_OFFSETS),
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=_OFFSETS),
    st.datetimes(),  # naive: both read it as local time
)
_TYPE_HEADERS = type_headers("ledgerflow.invoice.issued", "00ff" * 8)


def _outcome(function: Any, *args: Any) -> Any:
    try:
        return function(*args)
    except Exception as e:
        return type(e)


@settings(max_examples=500, deadline=None)
@given(
    aggregate_id=st.one_of(st.uuids().map(str), st.text(max_size=50)),
    version=st.one_of(st.integers(0, 10**6), st.integers()),
    time=_TIMES,
    tenant_id=st.text(max_size=40),
    traceparent=st.text(max_size=60),
)
def test_the_c_envelope_is_the_python_one(
    aggregate_id: str, version: int, time: datetime, tenant_id: str, traceparent: str
) -> None:
    args = (_NAMESPACE_BYTES, aggregate_id, version, time, tenant_id, traceparent, _TYPE_HEADERS)
    assert _outcome(_native_kafka.envelope, *args) == _outcome(envelope_python, *args)


@settings(max_examples=200, deadline=None)
@given(time=_TIMES, version=st.integers(1, 10**6))
def test_the_envelope_has_the_headers_and_time_the_general_path_gives_an_outbound_event(
    time: datetime, version: int
) -> None:
    aggregate_id, tenant_id = str(uuid4()), str(uuid4())
    outbound = OutboundEvent(
        topic="ledgerflow.invoice",
        key=aggregate_id,
        ce_type="ledgerflow.invoice.issued",
        ce_id=str(event_id(UUID(aggregate_id), version)),
        tenant_id=tenant_id,
        subject=aggregate_id,
        time=time,
        traceparent=new_traceparent(),
        record={},
    )
    try:
        expected = (outbound.ce_id, _millis(time), headers_for(outbound, "00ff" * 8))
    except OverflowError:  # a time at the end of datetime's range, in UTC
        return
    args = (_NAMESPACE_BYTES, aggregate_id, version, time, tenant_id, outbound.traceparent, _TYPE_HEADERS)
    assert envelope_python(*args) == expected
    assert _native_kafka.envelope(*args) == expected


def test_the_direct_path_builds_envelopes_with_the_c_build() -> None:
    # `pip install -e .` builds engine/_native_kafka.pyx; without it encode_direct spends ~2 µs more
    # per event in the Python envelope (docs/performance.md, "relay-glue").
    assert relay_direct.envelope is _native_kafka.envelope


@given(key=st.text(max_size=80))
def test_a_native_program_reads_keys_by_the_objects_orjson_makes_of_them(key: str) -> None:
    parsed = _parsed_key(key)
    assert parsed == key
    if len(key.encode("utf-8", "surrogatepass")) <= 64 and key.isascii():
        # orjson's key cache: the same object in every loaded dict, so a lookup skips comparing text.
        assert parsed is next(iter(orjson.loads(orjson.dumps({key: 1}))))
