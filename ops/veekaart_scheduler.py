"""``python -m ops.veekaart_scheduler``: run due VeeKaart auto-syncs (connectors/veekaart/sync.py)
until interrupted. The schedule lives in PostgreSQL (``veekaart_sync_schedule``), so a restart loses
nothing, and due rows are claimed with SKIP LOCKED, so two schedulers never run one tenant twice."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from connectors import registry as connector_registry
from connectors.catalogue import checked_transport
from connectors.veekaart.sync import run_due
from engine.bootstrap import build_service
from engine.config import load_settings
from engine.security.secrets import load_key_ring
from ops import schema as outer_schema

# How often the schedule table is looked at; the shortest interval a tenant may set is 5 minutes.
POLL_SECONDS = 30.0

log = logging.getLogger(__name__)


async def loop() -> None:
    settings = load_settings()
    service = build_service(settings)
    ring = load_key_ring(settings.var_dir)
    try:
        while True:
            runs = await run_due(
                service, ring, datetime.now(UTC), transport_for=lambda s: checked_transport(s, settings.mode)
            )
            for run in runs:
                log.info("veekaart auto-sync %s: %s %s", run["id"], run["status"], run["counts"])
            await asyncio.sleep(POLL_SECONDS)
    finally:
        service.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    connector_registry.register()
    outer_schema.register()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(loop())


if __name__ == "__main__":
    main()
