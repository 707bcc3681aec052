"""The event store's insert (engine/attribution.py, ``AttributedRecorder._insert_stored_events``)
sends the batch of stored events to PostgreSQL as one binary parameter: every byte of every state
and topic must be stored exactly as given, whatever it holds (the characters text-format escaping
had to double: backslashes, quotes, braces, commas; NUL; non-ASCII UTF-8), and the chain and the
actor rows must still be written with the events."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent

from engine.application import LedgerService
from engine.config import Settings

pytestmark = pytest.mark.integration

STATES = [
    b"",
    b'{"a":"back\\\\slash \\"quoted\\" {braces} (parens), commas"}',
    b"\x00\x01\xff binary \\x41 not hex",
    '{"name":"नमस्ते — Grüße 😀"}'.encode(),
    b"x" * 100_000,
]
TOPICS = ["engine.domain.invoice:Invoice.Issued", 'odd "topic", with {braces} and \\ backslash']


def test_a_batch_of_stored_events_round_trips_byte_for_byte(
    settings: Settings, service: LedgerService
) -> None:
    recorder = service.ledger.recorder
    originator = uuid.uuid4()
    events = [
        StoredEvent(originator, version, TOPICS[version % len(TOPICS)], state)
        for version, state in enumerate(STATES, start=1)
    ]
    ids = recorder.insert_events(events)
    assert ids is not None and len(ids) == len(events)

    # As eventsourcing reads them back (the relay and replay read through the recorder) ...
    read = recorder.select_events(originator)
    assert [(e.originator_version, e.topic, bytes(e.state)) for e in read] == [
        (e.originator_version, e.topic, e.state) for e in events
    ]
    # ... and as the table holds them, with the chain and who stored each event.
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        rows = conn.execute(
            "SELECT originator_version, topic, state, length(state) FROM ledger_events"
            " WHERE originator_id = %s ORDER BY originator_version",
            (originator,),
        ).fetchall()
        actors = conn.execute(
            "SELECT count(*) FROM event_actors WHERE originator_id = %s", (originator,)
        ).fetchone()
    assert [(v, t, bytes(s), n) for v, t, s, n in rows] == [
        (e.originator_version, e.topic, e.state, len(e.state)) for e in events
    ]
    assert actors == (len(events),)
