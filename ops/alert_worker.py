"""``python -m ops.alert_worker``: run the alert worker (streams/alerts.py) until interrupted."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from connectors import registry as connector_registry
from engine.config import load_settings
from ops import schema as outer_schema
from streams.alerts import AlertWorker


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    connector_registry.register()
    outer_schema.register()
    worker = AlertWorker(load_settings())
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(worker.run(asyncio.Event()))


if __name__ == "__main__":
    main()
