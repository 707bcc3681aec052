import logging

from engine.logs import RepeatedMessageFilter


def record(msg: str) -> logging.LogRecord:
    return logging.LogRecord("aiokafka.conn", logging.ERROR, __file__, 1, msg, (), None)


def test_a_repeated_message_passes_once_per_interval_and_reports_what_was_held() -> None:
    gate = RepeatedMessageFilter(interval=3600)
    assert gate.filter(record("Unable connect to node %s"))
    assert not any(gate.filter(record("Unable connect to node %s")) for _ in range(500))
    assert gate.filter(record("a different message"))


def test_after_the_interval_the_message_passes_with_a_count() -> None:
    gate = RepeatedMessageFilter(interval=0)
    assert gate.filter(record("x"))
    later = record("x")
    assert gate.filter(later)
