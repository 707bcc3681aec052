"""Set-based projection writes on PostgreSQL (projections/batch.py through InvoiceRegister.apply): a
whole batch, with the same invoice several times, duplicates and poison among it, must leave the
register exactly as applying its events one at a time does."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from engine import db
from engine.config import Settings
from projections import dead_letters
from projections.batch import ChangedEvent, RowChange, at_decode_of, write
from projections.dead_letters import apply_isolating
from projections.events import ProjectedEvent
from projections.gst_outward_supplies import GstOutwardSupplies
from projections.invoice_register import InvoiceRegister

pytestmark = pytest.mark.integration

TENANT = "0b9a3c1e-6d1f-4a53-9d7e-2f0c6a1b8e11"
INVOICES = [str(uuid.UUID(int=i + 1)) for i in range(3)]
AT = datetime(2026, 1, 19, 10, 0, tzinfo=UTC)
ISSUED = "ledgerflow.invoice.issued"


def issued(invoice_id: str, *, buyer: str = "Reliable Traders", total: str = "1180.00") -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "tenant_id": TENANT,
        "invoice_id": invoice_id,
        "occurred_at": AT,
        "number": f"INV-{invoice_id[-4:]}",
        "financial_year": "2025-26",
        "date": "2026-01-19",
        "supply_type": "B2B",
        "buyer": {"name": buyer, "gstin": "27AAACR5055K1Z7", "state": "27"},
        "place_of_supply": "27",
        "intra_state": False,
        "lines": [],
        "totals": {
            "taxable": "1000.00",
            "cgst": "0.00",
            "sgst": "0.00",
            "igst": "180.00",
            "cess": "0.00",
            "total": total,
        },
    }


def event(ce_type: str, record: dict[str, Any], n: int) -> ProjectedEvent:
    return ProjectedEvent("ledger.invoice.v1", 0, n, ce_type, f"ce-{n}", record)


def of_kind(kind: str, invoice_id: str, n: int) -> ProjectedEvent:
    """One event of each kind the register shows, numbered so that later ones carry other values."""
    base = {"invoice_id": invoice_id, "tenant_id": TENANT, "occurred_at": AT + timedelta(minutes=n)}
    if kind == "issued":
        return event(ISSUED, issued(invoice_id, total=f"{1000 + n}.00"), n)
    if kind == "cancelled":
        return event("ledgerflow.invoice.cancelled", {**base, "reason": "other", "remark": f"r{n}"}, n)
    if kind == "irn_generated":
        irn = {"irn": f"{n:064x}", "ack_no": str(n), "ack_date": "2026-01-19 10:00:00"}
        signed = {"signed_invoice": "eyJ", "signed_qr_code": "eyJ", "adopted_existing": False}
        return event("ledgerflow.invoice.irn_generated", {**base, **irn, **signed}, n)
    if kind == "irn_failed":
        failure = {"operation": "generate", "error_class": "permanent", "code": "2150", "message": f"m{n}"}
        return event("ledgerflow.invoice.irn_failed", {**base, **failure, "attempts": 1, "job_id": "j"}, n)
    cancel = {"irn": "f" * 64, "cancel_date": "2026-01-20 10:00:00", "reason_code": 1, "remark": f"c{n}"}
    return event("ledgerflow.invoice.irn_cancelled", {**base, **cancel}, n)


KINDS = ["issued", "cancelled", "irn_generated", "irn_failed", "irn_cancelled"]


@pytest.fixture
def conn(settings: Settings) -> Iterator[psycopg.Connection]:
    db.ensure_schema(settings)
    with db.connect(settings) as connection:
        # A twin of the register that receives the same events one at a time.
        connection.execute("CREATE TABLE one_by_one (LIKE invoice_register INCLUDING ALL)")
        connection.commit()
        yield connection


def rows(conn: psycopg.Connection, table: str) -> dict[str, tuple[Any, ...]]:
    found = conn.execute(
        f"SELECT invoice_id::text, to_jsonb(t) - 'invoice_id' FROM {table} AS t ORDER BY invoice_id"
    ).fetchall()
    return {r[0]: r[1] for r in found}


def apply_one_by_one(conn: psycopg.Connection, events: list[ProjectedEvent]) -> None:
    twin = InvoiceRegister().on_table("one_by_one")
    for e in events:
        twin.apply(conn, [e])


events_strategy = st.lists(
    st.tuples(st.sampled_from(KINDS), st.sampled_from(INVOICES)), min_size=1, max_size=15
)


@hypothesis_settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(before=events_strategy, batch=events_strategy)
def test_a_batch_leaves_the_register_exactly_as_applying_its_events_one_at_a_time(
    conn: psycopg.Connection, before: list[tuple[str, str]], batch: list[tuple[str, str]]
) -> None:
    register = InvoiceRegister()
    with conn.transaction(force_rollback=True):
        # Rows already there from earlier batches (applied one at a time to both tables).
        earlier = [of_kind(kind, invoice, n) for n, (kind, invoice) in enumerate(before)]
        apply_one_by_one(conn, earlier)
        for e in earlier:
            register.apply(conn, [e])
        events = [of_kind(kind, invoice, 100 + n) for n, (kind, invoice) in enumerate(batch)]
        register.apply(conn, events)
        apply_one_by_one(conn, events)
        assert rows(conn, "invoice_register") == rows(conn, "one_by_one")


def test_duplicates_within_one_batch_change_nothing_more_than_one_delivery(conn: psycopg.Connection) -> None:
    events = [of_kind(k, INVOICES[0], n) for n, k in enumerate(["issued", "irn_generated", "cancelled"])]
    InvoiceRegister().apply(conn, events + events)
    apply_one_by_one(conn, events)
    once = rows(conn, "one_by_one")
    assert rows(conn, "invoice_register") == once
    assert once[INVOICES[0]]["status"] == "cancelled" and once[INVOICES[0]]["irn"] == f"{1:064x}"


def test_one_poison_event_in_a_batch_is_dead_lettered_alone_and_its_invoices_later_events_apply(
    conn: psycopg.Connection,
) -> None:
    good = [event(ISSUED, issued(str(uuid.uuid4())), n) for n in range(500)]
    poisoned_id = str(uuid.uuid4())
    batch = [
        *good[:250],
        event(ISSUED, issued(poisoned_id, buyer="Reliable\x00Traders"), 900),
        event(ISSUED, issued(INVOICES[0]), 901),
        of_kind("irn_generated", INVOICES[0], 902),
        of_kind("cancelled", INVOICES[0], 903),
        # The poisoned invoice's cancellation finds no row, as it would one at a time.
        of_kind("cancelled", poisoned_id, 904),
        *good[250:],
    ]
    with conn.transaction():
        failed = apply_isolating(conn, InvoiceRegister(), batch, dead_letters_of="invoice_register")
    assert [f.offset for f in failed] == [900]
    assert "NUL" in failed[0].error_message and failed[0].error_class == "DataError"
    register = rows(conn, "invoice_register")
    assert len(register) == 501 and poisoned_id not in register
    assert register[INVOICES[0]]["status"] == "cancelled" and register[INVOICES[0]]["irn"] == f"{902:064x}"
    assert [d.offset for d in dead_letters.select(conn, "invoice_register")] == [900]


def test_rows_worked_out_as_records_are_decoded_leave_the_register_as_the_events_themselves(
    conn: psycopg.Connection,
) -> None:
    # What the runner does: each event's change is worked out as it is decoded, its record dropped.
    register = InvoiceRegister()
    events = [of_kind(kind, INVOICES[n % 3], n) for n, kind in enumerate(KINDS * 4)]
    changed = [register.at_decode(e) for e in events]
    assert all(type(c) is ChangedEvent and not c.record for c in changed)
    with conn.transaction(force_rollback=True):
        register.apply(conn, changed)
        apply_one_by_one(conn, events)
        assert rows(conn, "invoice_register") == rows(conn, "one_by_one")
        assert {r["status"] for r in rows(conn, "invoice_register").values()} >= {"cancelled"}


def test_an_event_whose_change_fails_at_decode_is_dead_lettered_alone_when_its_batch_is_applied(
    conn: psycopg.Connection,
) -> None:
    register = InvoiceRegister()
    good = [event(ISSUED, issued(str(uuid.uuid4())), n) for n in range(40)]
    unreadable = {k: v for k, v in issued(str(uuid.uuid4())).items() if k != "totals"}
    batch = [
        *good[:20],
        event(ISSUED, unreadable, 800),  # change() raises KeyError as it is decoded
        event(ISSUED, issued(str(uuid.uuid4()), buyer="Reliable\x00Traders"), 900),  # PostgreSQL refuses it
        *good[20:],
    ]
    with conn.transaction():
        failed = apply_isolating(
            conn, register, [register.at_decode(e) for e in batch], dead_letters_of="invoice_register"
        )
    assert [(f.offset, f.error_class) for f in failed] == [(800, "KeyError"), (900, "DataError")]
    assert "totals" in failed[0].error_message
    assert len(rows(conn, "invoice_register")) == 40
    letters = dead_letters.select(conn, "invoice_register")
    assert [d.offset for d in letters] == [800, 900]


def test_only_the_projection_that_worked_out_a_change_may_apply_it(conn: psycopg.Connection) -> None:
    changed = InvoiceRegister().at_decode(of_kind("issued", INVOICES[0], 1))
    with pytest.raises(ValueError, match="prepared by invoice_register"):
        GstOutwardSupplies().apply(conn, [changed])
    with pytest.raises(KeyError):
        changed.record["invoice_id"]  # the record is not kept


class OwnApply(InvoiceRegister):
    """A row projection with its own ``apply``, which may read records: it is handed them."""

    def apply(self, conn: psycopg.Connection, events: Sequence[ProjectedEvent]) -> None:
        super().apply(conn, events)


def test_only_projections_applying_through_row_changes_take_their_changes_at_decode() -> None:
    assert at_decode_of(InvoiceRegister()) is not None
    assert at_decode_of(GstOutwardSupplies()) is not None
    assert at_decode_of(OwnApply()) is None
    assert at_decode_of(NumberLog()) is None


class NumberLog:
    """A projection of the older kind, applying its events one statement each (the ``Projection``
    protocol's own ``apply``): it must keep working beside the set-based ones."""

    def __init__(self, table: str = "number_log") -> None:
        self.name = "number_log"
        self.topics = ["ledger.invoice.v1"]
        self.table = table

    def on_table(self, table: str) -> NumberLog:
        return NumberLog(table)

    def apply(self, conn: psycopg.Connection, events: Sequence[ProjectedEvent]) -> None:
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {self.table} (invoice_id, number) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                [(e.record["invoice_id"], e.record["number"]) for e in events if e.ce_type == ISSUED],
            )


def test_a_projection_that_applies_event_by_event_still_isolates_its_poison(conn: psycopg.Connection) -> None:
    conn.execute("CREATE TABLE number_log (invoice_id uuid PRIMARY KEY, number text NOT NULL)")
    good = [event(ISSUED, issued(str(uuid.uuid4())), n) for n in range(20)]
    bad = event(ISSUED, {**issued(str(uuid.uuid4())), "number": "NUL\x00"}, 99)
    with conn.transaction():
        failed = apply_isolating(
            conn, NumberLog(), [*good[:10], bad, *good[10:]], dead_letters_of="number_log"
        )
    assert [f.offset for f in failed] == [99]
    logged = conn.execute("SELECT count(*) FROM number_log").fetchone()
    assert logged is not None and logged[0] == 20


def test_a_batch_of_inserts_only_keeps_the_first_insert_of_an_invoice_delivered_twice(
    conn: psycopg.Connection,
) -> None:
    """Inserts of different rows skip the fold (projections.batch.write); a repeated key must not."""
    events = [
        of_kind("issued", INVOICES[0], 1),
        of_kind("issued", INVOICES[1], 2),
        of_kind("issued", INVOICES[0], 3),
    ]
    with conn.transaction(force_rollback=True):
        InvoiceRegister().apply(conn, events)
        apply_one_by_one(conn, events)
        assert rows(conn, "invoice_register") == rows(conn, "one_by_one")
        assert rows(conn, "invoice_register")[INVOICES[0]]["total"] == 1001.00


def test_a_column_an_insert_leaves_out_takes_the_tables_default(conn: psycopg.Connection) -> None:
    """As in a plain INSERT naming only its columns: a NOT NULL column with a DEFAULT may be left
    out, in a batch whose other rows name it, and the update of a row inserted in the same batch
    still applies."""
    conn.execute(
        "CREATE TABLE ledger_marks (id text PRIMARY KEY, label text NOT NULL,"
        " weight numeric NOT NULL DEFAULT 7, tags text[] NOT NULL DEFAULT '{x}',"
        " noted_at timestamptz NOT NULL DEFAULT now())"
    )
    with conn.transaction(force_rollback=True):
        started = conn.execute("SELECT now()").fetchone()
        write(
            conn,
            "ledger_marks",
            "id",
            [
                RowChange("a", insert={"id": "a", "label": "plain"}),
                RowChange("b", insert={"id": "b", "label": "named", "weight": 2, "tags": ["y"]}),
                RowChange("c", insert={"id": "c", "label": "then set"}),
                RowChange("c", set={"weight": 9}),
            ],
        )
        found = conn.execute(
            "SELECT id, label, weight, tags, noted_at FROM ledger_marks ORDER BY id"
        ).fetchall()
    assert started is not None
    assert found == [
        ("a", "plain", 7, ["x"], started[0]),
        ("b", "named", 2, ["y"], started[0]),
        ("c", "then set", 9, ["x"], started[0]),
    ]
    # Inserts only, each row once: the path that skips the fold.
    with conn.transaction(force_rollback=True):
        write(conn, "ledger_marks", "id", [RowChange("d", insert={"id": "d", "label": "alone"})])
        alone = conn.execute("SELECT weight, tags FROM ledger_marks WHERE id = 'd'").fetchone()
    assert alone == (7, ["x"])


def test_a_batch_of_new_rows_meeting_one_already_stored_inserts_the_others_and_keeps_the_stored_one(
    conn: psycopg.Connection,
) -> None:
    """Inserts of different rows go straight into the table by COPY; a row stored by an earlier
    batch (a redelivered event) makes the batch take the ON CONFLICT path instead, whole."""
    conn.execute("CREATE TABLE ledger_marks (id text PRIMARY KEY, label text NOT NULL)")
    with conn.transaction(force_rollback=True):
        write(conn, "ledger_marks", "id", [RowChange("b", insert={"id": "b", "label": "first"})])
        write(
            conn,
            "ledger_marks",
            "id",
            [RowChange(k, insert={"id": k, "label": f"second {k}"}) for k in ("a", "b", "c")],
        )
        found = conn.execute("SELECT id, label FROM ledger_marks ORDER BY id").fetchall()
    assert found == [("a", "second a"), ("b", "first"), ("c", "second c")]


def test_new_rows_reach_a_table_under_row_level_security_where_copy_is_refused(
    conn: psycopg.Connection,
) -> None:
    """The runtime role's tables have row-level security, where PostgreSQL refuses COPY FROM: the
    batch goes through the staging table's INSERT instead, for this batch and the next."""
    conn.execute("CREATE TABLE ledger_marks (id text PRIMARY KEY, label text NOT NULL)")
    with conn.transaction(force_rollback=True):
        conn.execute("CREATE ROLE ledger_marks_writer NOLOGIN")
        conn.execute(
            "GRANT USAGE ON SCHEMA "
            + conn.execute("SELECT current_schema()").fetchone()[0]
            + " TO ledger_marks_writer"
        )  # type: ignore[index]
        conn.execute("GRANT SELECT, INSERT, UPDATE ON ledger_marks TO ledger_marks_writer")
        conn.execute("ALTER TABLE ledger_marks ENABLE ROW LEVEL SECURITY")
        conn.execute("CREATE POLICY every_row ON ledger_marks USING (true) WITH CHECK (true)")
        conn.execute("SET LOCAL ROLE ledger_marks_writer")
        for batch in (("a", "b"), ("c",)):
            write(conn, "ledger_marks", "id", [RowChange(k, insert={"id": k, "label": k}) for k in batch])
        found = conn.execute("SELECT id FROM ledger_marks ORDER BY id").fetchall()
    assert found == [("a",), ("b",), ("c",)]
