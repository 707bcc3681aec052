"""Logging set-up shared by every process.

aiokafka logs an ERROR per reconnect attempt and retries without pause while a broker is down
(thousands of lines a second, seen in the crash tests during a broker restart). The library's
retries are what we want; the flood is not. ``RepeatedMessageFilter`` lets each distinct message
template through once per interval and counts what it held back.
"""

from __future__ import annotations

import logging
import sys
import threading
import time


class RepeatedMessageFilter(logging.Filter):
    def __init__(self, interval: float = 10.0) -> None:
        super().__init__()
        self.interval = interval
        self._last: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._held[key] = self._held.get(key, 0) + 1
                return False
            self._last[key] = now
            held = self._held.pop(key, 0)
        if held:
            record.msg = f"{record.msg} (and {held} more like it in the last {self.interval:.0f}s)"
        return True


def configure(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    quiet_kafka_floods()


def quiet_kafka_floods() -> None:
    """Install the repeated-message filter on the Kafka client loggers (whoever set up handlers)."""
    kafka_filter = RepeatedMessageFilter()
    for name in (
        "aiokafka",
        "aiokafka.conn",
        "aiokafka.producer.sender",
        "aiokafka.consumer.fetcher",
        "aiokafka.cluster",
        "aiokafka.consumer.group_coordinator",
        "kafka",
    ):
        logger = logging.getLogger(name)
        logger.addFilter(kafka_filter)
        if name == "aiokafka":
            logger.setLevel(logging.WARNING)
