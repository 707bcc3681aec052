"""The relay's PostgreSQL side alone: the whole notification log read in the relay's pages, with the
relay's own reader (one kept connection, binary rows), and nothing else: no JSON, no Avro, no Kafka."""

from __future__ import annotations

import time

from engine.config import Settings
from engine.relay import NotificationLog, Relay


def read_rate(settings: Settings) -> tuple[int, float]:
    """(events read, events/s) over the notification log from its start."""
    page = Relay(settings).batch_size
    log = NotificationLog(settings)
    try:
        log.page(0, 1)  # connect and open the event store outside the timing
        started = time.perf_counter()
        position = events = 0
        while rows := log.page(position, page):
            events += len(rows)
            position = rows[-1][0]
        return events, events / (time.perf_counter() - started)
    finally:
        log.close()
