"""``python -m ops.oauth_refresher``: refresh OAuth access tokens before they expire, until interrupted.

The schedule is the ``refresh_due_at`` column of ``oauth_connections`` (connectors/oauth.py), so it
survives restarts: a refresher started after an outage refreshes everything that fell due meanwhile.
Several may run at once; each claims due connections with ``FOR UPDATE SKIP LOCKED`` and a lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from connectors import registry as connector_registry
from connectors.catalogue import checked_transport
from connectors.oauth import OAuthSpec, TokenKeeper
from engine.application import LedgerService
from engine.bootstrap import build_service
from engine.config import Settings, load_settings
from engine.security.secrets import load_key_ring
from ops import schema as outer_schema

INTERVAL_SECONDS = 30.0
log = logging.getLogger("ledgerflow.oauth_refresher")


def keeper_for(settings: Settings, service: LedgerService) -> TokenKeeper:
    specs: dict[str, OAuthSpec] = {c.name: c.oauth for c in connector_registry.CONNECTORS if c.oauth}
    return TokenKeeper(
        settings,
        load_key_ring(settings.var_dir),
        service,
        specs,
        lambda loaded: checked_transport(loaded, settings.mode),
    )


async def run(keeper: TokenKeeper, stop: asyncio.Event, interval: float = INTERVAL_SECONDS) -> None:
    while not stop.is_set():
        try:
            outcome = await keeper.refresh_due()
            if any(outcome.values()):
                log.info("oauth refresh pass: %s", outcome)
        except Exception:  # one bad pass (database restarting) must not end the schedule
            log.exception("oauth refresh pass failed; trying again in %.0f s", interval)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    connector_registry.register()
    outer_schema.register()
    settings = load_settings()
    service = build_service(settings)
    try:
        asyncio.run(run(keeper_for(settings, service), asyncio.Event()))
    except KeyboardInterrupt:
        pass
    finally:
        service.close()


if __name__ == "__main__":
    main()
