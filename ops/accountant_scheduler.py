"""``python -m ops.accountant_scheduler``: run the colleges' daily expense syncs to the consolidating
accountant (connectors/super_accountant/sync.py) until interrupted.

The schedule lives in PostgreSQL (``super_accountant_schedules``): a restart loses nothing, a run
is claimed with SKIP LOCKED and marked per local day, so two schedulers never plan one college twice
on a day. Each pass also queues again any batch or report that was stored but never reached Kafka.
The same process runs the colleges' daily Tally ledger sync (connectors/tally/sync.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from connectors import registry as connector_registry
from connectors.super_accountant.sync import run_due
from connectors.tally import sync as tally_sync
from engine.config import load_settings
from engine.security.secrets import load_key_ring
from ops import schema as outer_schema

# How often the schedule is looked at: a run starts at most this late after its time of day.
POLL_SECONDS = 30.0

log = logging.getLogger(__name__)


async def loop() -> None:
    settings = load_settings()
    ring = load_key_ring(settings.var_dir)
    while True:
        try:
            for run in await run_due(settings, ring, datetime.now(UTC)):
                document = run.document()
                log.info(
                    "accountant sync %s: %d batches, %d expenses, %d refused",
                    document["run_id"],
                    len(document["batches"]),
                    document["expenses"],
                    len(document["refused"]),
                )
        except Exception:
            # PostgreSQL or Kafka away: the due run stays due (or its batches unpublished) for the next pass.
            log.exception("accountant sync pass failed; trying again in %.0f s", POLL_SECONDS)
        try:
            # The colleges' daily Tally sync (ledgers, budgets) and vouchers never queued (docs/tally.md).
            for tenant_id, synced in (await tally_sync.run_due(settings, ring, datetime.now(UTC))).items():
                log.info("tally daily sync of %s: %s", tenant_id, synced)
        except Exception:
            log.exception("tally ledger sync pass failed; trying again in %.0f s", POLL_SECONDS)
        await asyncio.sleep(POLL_SECONDS)


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    connector_registry.register()
    outer_schema.register()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(loop())


if __name__ == "__main__":
    main()
