"""One runner for several projections (``ledgerflow projector``, issue 15): each record is fetched and
decoded once for all of them, each projection keeps its own positions, transaction, dead letters and
Kafka group offsets, a projection behind the others catches up without the others applying anything
twice, and a record of a type no projection acts on is passed without being decoded.

Records are produced onto the ledger topic exactly as the relay writes them (helpers of the poison
tests), against the real broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

from engine import db
from engine.application import LedgerService
from engine.config import Settings
from ops.lag import lag, projection_group
from projections.etims_compliance import EtimsCompliance
from projections.events import Projection
from projections.gst_outward_supplies import GstOutwardSupplies
from projections.invoice_register import InvoiceRegister
from projections.reconciliation import Reconciliation
from projections.runner import ProjectionRunner, shared_group
from tests.conftest import BackgroundLoop, wait_for
from tests.integration.helpers import register_tenant
from tests.integration.test_projection_poison import (
    INVOICE_TOPIC,
    end_offsets,
    issue,
    letters,
    poisoned_topic,
    produce,
    relay_record,
    row,
    stored_invoice_events,
)


def positions(settings: Settings, projection: str) -> dict[int, int]:
    with db.connect(settings) as conn:
        rows = conn.execute(
            'SELECT partition, "offset" FROM projection_tracking WHERE projection = %s AND topic = %s',
            (projection, settings.topic(INVOICE_TOPIC)),
        ).fetchall()
    return {int(p): int(o) for p, o in rows}


def passed_all(settings: Settings, projection: str) -> bool:
    ends = end_offsets(settings)
    return positions(settings, projection) == {p: end - 1 for p, end in ends.items() if end > 0}


async def run_until(runner: ProjectionRunner, done: Callable[[], bool], timeout: float = 120) -> None:
    """Run ``runner`` until ``done()`` (polled with a deadline), then stop it."""
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    deadline = time.monotonic() + timeout
    try:
        while not await asyncio.to_thread(done):
            assert not task.done(), task.exception()
            assert time.monotonic() < deadline, "the runner did not get there in time"
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await task


def gst_row(settings: Settings, invoice_id: UUID) -> Any:
    with db.connect(settings) as conn:
        return conn.execute(
            "SELECT number FROM gst_outward_supplies WHERE document_id = %s", (str(invoice_id),)
        ).fetchone()


def committed(settings: Settings, group: str) -> dict[int, int]:
    """The group's committed offsets on the invoice topic, as ``ledgerflow lag`` reads them."""
    (found,) = lag(settings, [group])
    topic = settings.topic(INVOICE_TOPIC)
    return {
        p.partition: p.committed for p in found.partitions if p.topic == topic and p.committed is not None
    }


def _equal(read: Callable[[Settings, str], Any], settings: Settings, group: str, expected: Any) -> bool:
    return bool(read(settings, group) == expected)


def test_one_runner_decodes_each_record_once_and_keeps_every_projection_apart(
    service: LedgerService, settings: Settings, topics: list[str], background: BackgroundLoop
) -> None:
    scene = poisoned_topic(service, settings)
    projections: list[Projection] = [
        InvoiceRegister(),
        EtimsCompliance(),
        GstOutwardSupplies(),
        Reconciliation(),
    ]
    runner = ProjectionRunner(settings, projections)
    assert runner.group_id == shared_group(settings)
    background.start(runner.run)

    for p in projections:
        wait_for(
            functools.partial(passed_all, settings, p.name),
            timeout=120,
            what=f"{p.name} passing every record",
        )
    background.check()

    # Every projection applied the good invoices; the register's poison is its own.
    for invoice_id in scene.good:
        assert row(settings, invoice_id) is not None
        assert gst_row(settings, invoice_id) is not None
    assert row(settings, scene.nul_buyer) is None
    assert {d.aggregate_id for d in letters(settings)} == {
        str(scene.nul_buyer),
        str(scene.overflow),
        str(scene.irn_nul),
    }
    # One decode per record for four projections (a rebalance may make it read a batch again).
    assert scene.records <= runner.stats.decoded < 2 * scene.records

    # Each projection's own group shows its progress for `ledgerflow lag` and the health check.
    ends = {p: end for p, end in end_offsets(settings).items() if end > 0}
    for p in projections:
        wait_for(
            functools.partial(_equal, committed, settings, projection_group(settings, p.name), ends),
            timeout=30,
            what=f"{p.name}'s group offsets",
        )


def test_a_projection_behind_the_others_catches_up_alone(
    service: LedgerService, settings: Settings, topics: list[str], background: BackgroundLoop
) -> None:
    tenant_id, _ = register_tenant(service)
    first = [issue(service, tenant_id, f"FIRST-{i}") for i in range(3)]
    produce(settings, [relay_record(o) for o in stored_invoice_events(settings)])
    asyncio.run(
        run_until(
            ProjectionRunner(settings, InvoiceRegister()), lambda: passed_all(settings, "invoice_register")
        )
    )
    register_before = positions(settings, "invoice_register")
    with db.connect(settings) as conn:
        before = conn.execute("SELECT max(updated_at) FROM projection_tracking").fetchone()
    assert before is not None

    # The GST projection starts from the beginning; the register has nothing left to apply.
    runner = ProjectionRunner(settings, [InvoiceRegister(), GstOutwardSupplies()])
    background.start(runner.run)
    wait_for(lambda: passed_all(settings, "gst_outward_supplies"), timeout=120, what="the GST projection")
    for invoice_id in first:
        assert gst_row(settings, invoice_id) is not None
    assert positions(settings, "invoice_register") == register_before
    with db.connect(settings) as conn:
        touched = conn.execute(
            "SELECT count(*) FROM projection_tracking WHERE projection = 'invoice_register'"
            " AND updated_at > %s",
            before,
        ).fetchone()
    assert touched == (0,)

    # New events go to both.
    later = issue(service, tenant_id, "LATER-1")
    produce(settings, [relay_record(o) for o in stored_invoice_events(settings) if o.key == str(later)])
    wait_for(
        lambda: gst_row(settings, later) is not None and row(settings, later) is not None,
        timeout=60,
        what="the later invoice in both",
    )


def test_a_record_of_a_type_no_projection_acts_on_is_passed_undecoded(
    service: LedgerService, settings: Settings, topics: list[str], background: BackgroundLoop
) -> None:
    tenant_id, _ = register_tenant(service)
    good = issue(service, tenant_id, "GOOD-1")
    # Not Avro at all: decoding it would make a dead letter. Neither projection below reads the type.
    unread = {
        "key": b"k",
        "value": b"not avro",
        "headers": [("ce_type", b"ledgerflow.invoice_draft.drafted")],
    }
    # The same bytes labelled with a type the register reads are still refused as undecodable.
    labelled = {**unread, "headers": [("ce_type", b"ledgerflow.invoice.cancelled")]}
    unlabelled = {**unread, "headers": []}
    produce(
        settings, [unread, labelled, unlabelled, *(relay_record(o) for o in stored_invoice_events(settings))]
    )
    runner = ProjectionRunner(settings, [InvoiceRegister(), GstOutwardSupplies()])
    background.start(runner.run)
    for name in ("invoice_register", "gst_outward_supplies"):
        wait_for(
            functools.partial(passed_all, settings, name), timeout=120, what=f"{name} passing every record"
        )

    assert row(settings, good) is not None and gst_row(settings, good) is not None
    assert runner.stats.not_decoded >= 1
    found = sorted((d.ce_type, d.error_code) for d in letters(settings))
    assert found == [("", "undecodable_event"), ("ledgerflow.invoice.cancelled", "undecodable_event")]
