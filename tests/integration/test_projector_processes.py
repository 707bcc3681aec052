"""``ledgerflow projector --processes 2`` (issue 15): two processes share the partitions, every
event is applied exactly once, and a process killed with SIGKILL mid-stream loses nothing (its
uncommitted batch rolls back; the pool starts it again and it resumes from the positions stored in
PostgreSQL).

"Applied" is counted by PostgreSQL itself: a BEFORE INSERT row trigger on ``invoice_register`` fires
for every row the projector's INSERT ... ON CONFLICT DO NOTHING offers, even one that then conflicts,
and writes to a side table in the projector's own transaction, so a batch applied twice shows as
two rows while a rolled-back one shows as none.
"""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import psutil
import pytest

from engine import db
from engine.application import LedgerService
from engine.config import Settings
from tests.integration.helpers import register_tenant
from tests.integration.processes import Processes
from tests.integration.test_projection_poison import (
    caught_up,
    for_invoice,
    issue,
    produce,
    relay_record,
    stored_invoice_events,
)

pytestmark = [pytest.mark.integration]

COUNT_APPLICATIONS = """
CREATE TABLE register_offers (invoice_id uuid NOT NULL);
CREATE FUNCTION count_register_offer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO register_offers VALUES (NEW.invoice_id);
    RETURN NEW;
END $$;
CREATE TRIGGER count_register_offer BEFORE INSERT ON invoice_register
    FOR EACH ROW EXECUTE FUNCTION count_register_offer();
"""


def offers(settings: Settings) -> dict[str, int]:
    with db.connect(settings) as conn:
        rows = conn.execute("SELECT invoice_id, count(*) FROM register_offers GROUP BY 1").fetchall()
    return {str(i): int(n) for i, n in rows}


def projector_children(pool: psutil.Process) -> list[psutil.Process]:
    return [c for c in pool.children() if "projector" in " ".join(c.cmdline())]


def test_two_projector_processes_apply_a_backlog_exactly_once_and_survive_a_killed_one(
    service: LedgerService,
    settings: Settings,
    topics: list[str],
    tmp_path: Path,
) -> None:
    tenant_id, _ = register_tenant(service)
    issue(service, tenant_id, "PP-0")
    db.ensure_schema(settings)
    with db.connect(settings) as conn, conn.transaction():
        conn.execute(COUNT_APPLICATIONS)
    (template,) = stored_invoice_events(settings)

    def backlog(start: int, count: int) -> list[str]:
        events = [for_invoice(template, uuid.uuid4(), 1, number=f"PP-{start + i}") for i in range(count)]
        produce(settings, [relay_record(e) for e in events])
        return [e.key for e in events]

    first = backlog(1, 60)  # the template itself was never relayed to the topic
    processes = Processes(settings, tmp_path)
    try:
        pool = processes.start("projector", "--processes", "2")
        pool_ps = psutil.Process(pool.pid)
        processes.wait_for(
            lambda: len(projector_children(pool_ps)) == 2, what="two projector processes", watch=[pool]
        )
        processes.wait_for(
            lambda: set(offers(settings)) == set(first),
            timeout=90,
            what="the first backlog projected",
            watch=[pool],
        )
        log = pool.log_path.read_text()
        for i in (1, 2):
            assert any(f"projector-{i} |" in line and "assigned" in line for line in log.splitlines()), log

        victim = projector_children(pool_ps)[0]
        second = backlog(61, 60)
        os.kill(victim.pid, signal.SIGKILL)
        processes.wait_for(
            lambda: set(offers(settings)) == {*first, *second} and caught_up(settings),
            timeout=90,
            what="the second backlog projected after a process was killed",
            watch=[pool],
        )
        processes.assert_alive(pool)
        counted = offers(settings)
        assert {k: n for k, n in counted.items() if n != 1} == {}, "some events were applied twice"
        with db.connect(settings) as conn:
            rows = conn.execute("SELECT count(*) FROM invoice_register").fetchone()
        assert rows is not None and rows[0] == len(first) + len(second)
        log = pool.log_path.read_text()
        assert "restarted" in log, log[-2000:]
    finally:
        processes.close()
