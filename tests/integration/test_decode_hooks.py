"""What the projections with their own ``apply`` take from each record as it is decoded
(``at_decode``, events.PreparesAtDecode), so that the runner frees the record then: the audit trail,
reconciliation and eTIMS compliance must write exactly the rows they write from the full events
(which the replay and the dead-letter redrive still hand them), and an event they cannot read at
decode time must still be set aside alone, with the error it gave before, its neighbours applied."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from engine import db
from engine.config import Settings
from projections.audit_trail import AuditTrail
from projections.batch import at_decode_of
from projections.dead_letters import Failure, apply_isolating
from projections.etims_compliance import EtimsCompliance
from projections.events import PreparedEvent, ProjectedEvent
from projections.reconciliation import Reconciliation
from tests.integration.test_etims_compliance import Sales, a_day_of_sales
from tests.integration.test_reconciliation import MAY, bank_line, build_month, interleave

pytestmark = pytest.mark.integration

Hooked = AuditTrail | Reconciliation | EtimsCompliance
# Columns the database fills with the time of writing.
NOW_COLUMNS = {"reconciliation": ["updated_at"], "etims_compliance": []}


@pytest.fixture
def conn(settings: Settings) -> Iterator[psycopg.Connection]:
    db.ensure_schema(settings)
    with db.connect(settings) as connection:
        # Twins of the three tables: the full events go to the real ones, the prepared to these.
        for table in ("audit_trail", "reconciliation", "etims_compliance"):
            connection.execute(f"CREATE TABLE {table}_hooked (LIKE {table} INCLUDING ALL)")
        connection.commit()
        yield connection


def rows(conn: psycopg.Connection, table: str, name: str) -> list[Any]:
    left_out = "".join(f" - '{c}'" for c in NOW_COLUMNS.get(name, []))
    found = conn.execute(f"SELECT to_jsonb(t){left_out} FROM {table} AS t").fetchall()
    return sorted((r[0] for r in found), key=repr)


def apply_both(
    conn: psycopg.Connection, projection: Hooked, events: Sequence[ProjectedEvent], batch: int
) -> tuple[list[Failure], list[Failure]]:
    """Apply ``events`` in batches of ``batch`` as they are (the replay, the redrive) to the
    projection's table, and prepared as the runner prepares them to its ``_hooked`` twin."""
    hooked = projection.on_table(f"{projection.table}_hooked")
    hook = at_decode_of(hooked)
    assert hook is not None
    full_failures: list[Failure] = []
    hooked_failures: list[Failure] = []
    for start in range(0, len(events), batch):
        chunk = events[start : start + batch]
        prepared = [hook(e) for e in chunk]
        assert all(type(p) is PreparedEvent and not p.record for p in prepared)
        with conn.transaction():
            full_failures += apply_isolating(conn, projection, chunk, dead_letters_of="full")
        with conn.transaction():
            hooked_failures += apply_isolating(conn, hooked, prepared, dead_letters_of="hooked")
    return full_failures, hooked_failures


def audit_history(tenant: uuid.UUID, entity: str, first: int) -> list[ProjectedEvent]:
    """Events of one invoice, each with the fields it sets after the envelope: unicode, nulls,
    decimals, bytes, a nested document, and an int beyond 64 bits (which orjson refuses)."""
    fields: list[dict[str, Any]] = [
        {
            "status": "issued",
            "number": "INV-\u0928 1 \U0001f600\u200f",
            "note": None,
            "total": Decimal("10.00"),
            "buyer": {"name": 'Reliable "Traders"\t', "gstin": None},
            "lines": [{"qty": 2, "rate": Decimal("5.00")}],
        },
        {"status": "paid", "note": "by UPI", "proof": b"\x00\xff"},
        {"status": "paid", "note": None, "total": Decimal("12.50"), "huge": 2**70},
        {"status": "refunded", "huge": None, "lines": []},
    ]
    return [
        ProjectedEvent(
            "ledger.invoice.v1",
            0,
            first + n,
            "ledgerflow.invoice.changed",
            str(uuid.uuid4()),
            {
                "event_id": str(uuid.uuid4()),
                "tenant_id": tenant,
                "occurred_at": datetime(2026, 1, 19, n, tzinfo=UTC),
                **values,
            },
            key=entity.encode(),
            value=f"value {first + n}".encode(),
            headers=(("ce_subject", entity.encode()),),
        )
        for n, values in enumerate(fields)
    ]


def test_the_audit_trail_writes_the_same_rows_from_what_it_took_at_decode(conn: psycopg.Connection) -> None:
    tenant = uuid.uuid4()
    # Ten invoices' histories interleaved: batches of 3 see an entity's earlier rows in the table,
    # in the same batch, or none (its first event, whose state is only its changes).
    histories = [audit_history(tenant, str(uuid.uuid4()), 10 * i) for i in range(10)]
    events = [e for n in range(4) for h in histories for e in h[n : n + 1]]
    events += audit_history(tenant, str(uuid.uuid4()), 500)  # one history inside one batch
    assert apply_both(conn, AuditTrail(), events, batch=3) == ([], [])
    written = rows(conn, "audit_trail", "audit_trail")
    assert len(written) == len(events)
    assert rows(conn, "audit_trail_hooked", "audit_trail") == written
    # As main wrote them before the hook (17d11b8, the same events): an entity's later events, from
    # its earlier rows in the table (1-3) or in the same batch (501, 503); a field set to null, an
    # int beyond 64 bits (written by the standard library; read back by orjson as a float).
    changes = {r["kafka_offset"]: r["changes"] for r in written}
    assert (
        changes[1]
        == changes[501]
        == (
            '{"status":{"old":"issued","new":"paid"},"note":{"old":null,"new":"by UPI"},'
            '"proof":{"old":null,"new":"AP8="}}'
        )
    )
    assert changes[2] == (
        '{"note": {"old": "by UPI", "new": null}, "total": {"old": "10.00", "new": "12.50"},'
        ' "huge": {"old": null, "new": 1180591620717411303424}}'
    )
    assert changes[3] == (
        '{"status":{"old":"paid","new":"refunded"},"huge":{"old":1.1805916207174113e+21,"new":null},'
        '"lines":{"old":[{"qty":2,"rate":"5.00"}],"new":[]}}'
    )
    assert changes[503] == (
        '{"status": {"old": "paid", "new": "refunded"}, "huge": {"old": 1180591620717411303424, "new": null},'
        ' "lines": {"old": [{"qty": 2, "rate": "5.00"}], "new": []}}'
    )


def test_reconciliation_writes_the_same_rows_from_what_it_took_at_decode(conn: psycopg.Connection) -> None:
    month = build_month(uuid.uuid4(), seed=3, per_kind=6)
    events = interleave(month.streams, random.Random(5))
    assert apply_both(conn, Reconciliation(), events, batch=17) == ([], [])
    written = rows(conn, "reconciliation", "reconciliation")
    assert {r["status"] for r in written if r["kind"] == "line"} >= {"matched", "unmatched", "discrepancy"}
    assert rows(conn, "reconciliation_hooked", "reconciliation") == written


def test_etims_compliance_writes_the_same_rows_from_what_it_took_at_decode(conn: psycopg.Connection) -> None:
    events, _ = a_day_of_sales(Sales(uuid.uuid4()))
    assert apply_both(conn, EtimsCompliance(), events, batch=4) == ([], [])
    written = rows(conn, "etims_compliance", "etims_compliance")
    assert {r["status"] for r in written} == {"pending", "signed", "failed", "voided"}
    assert rows(conn, "etims_compliance_hooked", "etims_compliance") == written


def audit_poison() -> tuple[list[ProjectedEvent], int]:
    tenant = uuid.uuid4()
    events = [e for i in range(6) for e in audit_history(tenant, str(uuid.uuid4()), 10 * i)[:1]]
    bad = audit_history(tenant, str(uuid.uuid4()), 99)[0]
    # A tenant that is no UUID: identify raises ValueError as the record is read.
    bad.record["tenant_id"] = "tenant\x00\u202e"
    return [*events[:3], bad, *events[3:]], 99


def reconciliation_poison() -> tuple[list[ProjectedEvent], int]:
    tenant = uuid.uuid4()
    events = [bank_line(tenant, MAY, Decimal(f"{10 + n}.00"), f"LINE {n}") for n in range(6)]
    bad = bank_line(tenant, MAY, Decimal("10.00"), "NO ACCOUNT")
    del bad.record["account"]  # KeyError as the record is read
    ordered = [*events[:3], bad, *events[3:]]
    return [
        ProjectedEvent(e.topic, 0, n, e.ce_type, e.ce_id, e.record, f"k{n}".encode(), b"v", e.headers)
        for n, e in enumerate(ordered)
    ], 3


def etims_poison() -> tuple[list[ProjectedEvent], int]:
    sales = Sales(uuid.uuid4())
    ids = [uuid.uuid4() for _ in range(4)]
    bad = sales.numbered(ids[1], "00", 7)
    bad.record["invc_no"] = "9" * 5000 + "x"  # int() refuses it as the record is read
    events = [sales.issued(ids[0], "00"), sales.issued(ids[1], "00"), bad, sales.signed(ids[0], "00", 1)]
    events += [sales.issued(ids[2], "00"), sales.numbered(ids[2], "00", 8)]
    return events, bad.offset


@pytest.mark.parametrize(
    ("projection", "poisoned"),
    [
        (AuditTrail(), audit_poison),
        (Reconciliation(), reconciliation_poison),
        (EtimsCompliance(), etims_poison),
    ],
    ids=["audit_trail", "reconciliation", "etims_compliance"],
)
def test_an_event_that_cannot_be_read_at_decode_is_set_aside_alone_with_the_error_it_gave_before(
    conn: psycopg.Connection, projection: Hooked, poisoned: Any
) -> None:
    events, bad_offset = poisoned()
    full, hooked = apply_both(conn, projection, events, batch=len(events))
    assert [f.offset for f in hooked] == [f.offset for f in full] == [bad_offset]
    assert (hooked[0].error_class, hooked[0].error_message) == (full[0].error_class, full[0].error_message)
    bad = next(e for e in events if e.offset == bad_offset)
    # The letter holds the record as it travelled, for a redrive.
    assert (hooked[0].key, hooked[0].value, hooked[0].headers) == (bad.key, bad.value, bad.headers)
    table = projection.table
    applied = rows(conn, f"{table}_hooked", table)
    assert applied and applied == rows(conn, table, table)
