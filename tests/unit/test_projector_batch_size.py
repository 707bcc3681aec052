"""How many events the projector takes a batch: two batches are in memory at once, and a projection
with its own ``apply`` keeps every decoded record of a batch until it is written, where a row
projection's records are freed as they are decoded. The batch is smaller when records are kept, so
that the five projections of the invoice topic in one process stay under 300 MB (issue 15)."""

from __future__ import annotations

import pytest

from engine.config import load_settings
from projections.audit_trail import AuditTrail
from projections.catalogue import PROJECTIONS
from projections.gst_outward_supplies import GstOutwardSupplies
from projections.invoice_register import InvoiceRegister
from projections.runner import ProjectionRunner

ROWS_ONLY = ProjectionRunner.BATCH_ROWS_ONLY
KEPT = ProjectionRunner.BATCH_RECORDS_KEPT


@pytest.mark.parametrize(
    ("projections", "expected"),
    [
        ([InvoiceRegister()], ROWS_ONLY),
        ([InvoiceRegister(), GstOutwardSupplies()], ROWS_ONLY),
        ([AuditTrail()], KEPT),
        ([InvoiceRegister(), AuditTrail()], KEPT),
        (list(PROJECTIONS), KEPT),
    ],
)
def test_a_batch_is_smaller_when_a_projection_keeps_the_decoded_records(
    projections: list[object], expected: int
) -> None:
    runner = ProjectionRunner(load_settings(), projections)  # type: ignore[arg-type]
    assert runner.max_records == expected
    assert KEPT < ROWS_ONLY


def test_a_batch_size_given_is_kept() -> None:
    assert ProjectionRunner(load_settings(), AuditTrail(), max_records=50).max_records == 50
