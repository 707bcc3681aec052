"""How many events the projector takes a batch: two batches are in memory at once, and a projection
that takes what it needs from each record as it is decoded (``at_decode``: the row projections, the
audit trail, reconciliation, eTIMS compliance) lets the record be freed then, where one without
keeps every decoded record of a batch until it is written. The batch is smaller when records are
kept, so that a projector process stays under 300 MB (issue 15)."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
import pytest

from engine.config import load_settings
from projections.audit_trail import AuditTrail
from projections.catalogue import PROJECTIONS
from projections.events import ProjectedEvent
from projections.gst_outward_supplies import GstOutwardSupplies
from projections.invoice_register import InvoiceRegister
from projections.reconciliation import Reconciliation
from projections.runner import ProjectionRunner


class KeepsRecords:
    """A projection with its own ``apply`` and no ``at_decode``: it reads the records it is given."""

    def __init__(self) -> None:
        self.name = "keeps_records"
        self.topics = ["ledger.invoice.v1"]
        self.table = "keeps_records"

    def apply(self, conn: psycopg.Connection, events: Sequence[ProjectedEvent]) -> None:
        """Reads each record, as a projection of this kind may."""
        for event in events:
            event.record["invoice_id"]

    def on_table(self, table: str) -> KeepsRecords:
        return self


class OwnApply(InvoiceRegister):
    """A row projection with its own ``apply``, which may read records."""

    def apply(self, conn: psycopg.Connection, events: Sequence[ProjectedEvent]) -> None:
        super().apply(conn, events)


ROWS_ONLY = ProjectionRunner.BATCH_ROWS_ONLY
KEPT = ProjectionRunner.BATCH_RECORDS_KEPT


@pytest.mark.parametrize(
    ("projections", "expected"),
    [
        ([InvoiceRegister()], ROWS_ONLY),
        ([InvoiceRegister(), GstOutwardSupplies()], ROWS_ONLY),
        ([AuditTrail()], ROWS_ONLY),
        ([InvoiceRegister(), AuditTrail(), Reconciliation()], ROWS_ONLY),
        (list(PROJECTIONS), ROWS_ONLY),
        ([KeepsRecords()], KEPT),
        ([InvoiceRegister(), AuditTrail(), KeepsRecords()], KEPT),
        ([OwnApply(), AuditTrail()], KEPT),
    ],
)
def test_a_batch_is_smaller_when_a_projection_keeps_the_decoded_records(
    projections: list[object], expected: int
) -> None:
    runner = ProjectionRunner(load_settings(), projections)  # type: ignore[arg-type]
    assert runner.max_records == expected
    assert KEPT < ROWS_ONLY


def test_a_batch_size_given_is_kept() -> None:
    assert ProjectionRunner(load_settings(), KeepsRecords(), max_records=50).max_records == 50
