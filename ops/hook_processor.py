"""``python -m ops.hook_processor``: run the hook processor (streams/hooks.py) until interrupted."""

from __future__ import annotations

import logging
import threading

from connectors import registry as connector_registry
from engine.bootstrap import build_service
from engine.config import load_settings
from engine.payments import PaymentBook, open_inbox
from ops import schema as outer_schema
from streams.hooks import HookProcessor

IDLE_WAIT_SECONDS = 0.5


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    connector_registry.register()
    outer_schema.register()
    settings = load_settings()
    service = build_service(settings)
    book = PaymentBook(service, open_inbox(settings))
    processor = HookProcessor(service, book)
    idle = threading.Event()
    try:
        while True:
            done = processor.run_once()
            if not done.handled and not done.skipped:
                idle.wait(IDLE_WAIT_SECONDS)
    except KeyboardInterrupt:
        pass
    finally:
        book.close()
        service.close()


if __name__ == "__main__":
    main()
