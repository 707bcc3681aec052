"""Who stored an event: recorded for every stored event in the audit store (table ``event_actors``),
in the transaction that stores the event, keyed by (events table, aggregate id, version).

The HTTP API binds each request's attribution (engine/api/audit_logs.py: the principal's actor, role
and user, the client's IP and user agent, the request id) with ``attributed``; whatever stores events
without one (the ingest agent, connector workers, timers) is recorded as its process.

Why a side insert in the recorder rather than a trigger reading ``set_config``: eventsourcing stores
events on its own pooled connection, inside its own transaction, so a setting made by the caller on
another connection would never reach it; the recorder's ``_insert_events`` hook runs on that very
connection and transaction (``PostgresApplicationRecorder.insert_events``, eventsourcing 9.5), before
the events' INSERT, pipelined with it. If the events are refused (a version conflict), the actor rows
roll back with them.

IP and user agent stay here and in the audit log's API: they are never part of an event's state, so
they never reach a public topic.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from importlib import resources
from typing import Any, cast
from uuid import UUID

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import retry
from psycopg import Connection, Cursor, sql
from psycopg.pq import TransactionStatus

from engine import event_chain
from engine.publishing import event_id

ACTORS_TABLE = "event_actors"
# A user agent is the client's free text: kept, but bounded.
MAX_USER_AGENT = 512


@dataclass(frozen=True, slots=True)
class Attribution:
    actor: str
    role: str | None = None
    user_id: UUID | None = None
    client_ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    route: str | None = None


_source: ContextVar[Callable[[], Attribution] | None] = ContextVar("ledgerflow_attribution", default=None)
_process_name: str | None = None


def set_process_name(name: str | None) -> None:
    """Name this process's actor (``process:<name>``) for the events it stores outside any request
    (None: derived from the command line)."""
    global _process_name
    _process_name = name


def process_attribution() -> Attribution:
    name = _process_name
    if name is None:
        args = [
            os.path.basename(sys.argv[0] or "python"),
            *[a for a in sys.argv[1:2] if not a.startswith("-")],
        ]
        name = " ".join(args)
    return Attribution(actor=f"process:{name}", route=f"pid {os.getpid()}")


def current() -> Attribution:
    """The attribution bound to this context (a request), else the process's."""
    source = _source.get()
    found = source() if source is not None else None
    return found if found is not None else process_attribution()


@contextmanager
def attributed(source: Callable[[], Attribution]) -> Iterator[None]:
    """Bind ``source`` (called when events are stored, so it sees what the request learnt meanwhile,
    such as its principal) for this context and the threads that copy it."""
    token = _source.set(source)
    try:
        yield
    finally:
        _source.reset(token)


def clean(value: str | None, limit: int) -> str | None:
    """Text a client sent, as stored: NUL (which PostgreSQL text refuses) dropped, at most ``limit``."""
    if value is None:
        return None
    return value.replace("\x00", "")[:limit]


class AttributedRecorder(PostgresApplicationRecorder):
    """The eventsourcing PostgreSQL recorder of every Ledgerflow event store (``event_store_env``):
    creates the chain (engine/event_chain.py) with the table, and records who stored each event."""

    _binary_insert: str | None = None
    # The statements of a write as bytes, made once: composing them from sql.SQL objects on every
    # write was a visible share of an API request's CPU (docs/performance.md, "api-lean").
    _lock_statements: list[bytes] | None = None
    _notify_statement: bytes | None = None
    _actors_insert: bytes | None = None

    def _create_table(self, curs: Cursor[Any]) -> None:
        super()._create_table(curs)
        create_audit_tables(curs, self.datastore.schema)
        event_chain.install(curs, self.datastore.schema, self.events_table_name)

    def _statements(self, conn: Connection[Any]) -> None:
        # eventsourcing builds its lock statements with sql.SQL(...).format: Composed.
        self._lock_statements = [cast(sql.Composed, s).as_bytes(conn) for s in self.lock_table_statements]
        self._notify_statement = sql.SQL("NOTIFY {}").format(sql.Identifier(self.channel_name)).as_bytes(conn)
        self._actors_insert = (
            sql.SQL(
                "INSERT INTO {}.{} (events_table, originator_id, originator_version, event_id, actor, role,"
                " user_id, client_ip, user_agent, request_id, route)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING"
            )
            .format(sql.Identifier(self.datastore.schema), sql.Identifier(ACTORS_TABLE))
            .as_bytes(conn)
        )

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        """eventsourcing 9.5's ``PostgresApplicationRecorder.insert_events`` (same statements, same
        table lock, same errors), sent as one pipeline: BEGIN, the hooks' statements, the table
        lock, NOTIFY, the INSERT and COMMIT, then one Sync. eventsourcing's version, through
        psycopg's ``transaction()`` inside a pipeline, waited for the server four times per write
        (BEGIN, the INSERT, an inner pipeline's exit, COMMIT), three of them while holding the
        events table's lock, so every other writer's wait included this process's round trips
        and its threads' turns for the GIL (docs/performance.md, "api-lean"). A refused INSERT
        (a version conflict) aborts the rest of the pipeline, COMMIT included; the transaction is
        rolled back and the IntegrityError raised as before."""
        if self.datastore.enable_db_functions or not stored_events:
            return super().insert_events(stored_events, **kwargs)
        with self.datastore.get_connection() as conn:
            if self._lock_statements is None:
                self._statements(conn)
            failed: Exception | None = None
            notification_ids: Sequence[int] | None = None
            try:
                with conn.pipeline() as pipeline, conn.cursor() as curs, conn.cursor() as inserted:
                    curs.execute(b"BEGIN")
                    self._insert_events(curs, stored_events, **kwargs)
                    self._insert_stored_events(inserted, stored_events, **kwargs)
                    curs.execute(b"COMMIT")
                    try:
                        pipeline.sync()
                        notification_ids = self._fetch_ids_after_insert_events(
                            inserted, stored_events, **kwargs
                        )
                    except Exception as exc:
                        # Raised after the pipeline is left, as eventsourcing does (psycopg warns
                        # about an exception raised inside one).
                        failed = exc
            finally:
                # A refused statement leaves the transaction aborted, an exception before the
                # Sync leaves it open: either way, nothing of it may reach the pool.
                if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
                    conn.rollback()
            if failed is not None:
                raise failed
        return notification_ids

    def _lock_table(self, curs: Cursor[Any]) -> None:
        if self._lock_statements is None:
            self._statements(curs.connection)
        for statement in self._lock_statements or ():
            curs.execute(statement, prepare=True)

    def _notify_channel(self, curs: Cursor[Any]) -> None:
        if self._notify_statement is None:
            self._statements(curs.connection)
        curs.execute(self._notify_statement or b"")

    def _insert_stored_events(
        self, curs: Cursor[Any], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        # eventsourcing 9.5's PostgresApplicationRecorder._insert_stored_events (table lock, NOTIFY,
        # then the aggregate recorder's one INSERT ... FROM unnest(%s::stored_event[])), with the
        # array of stored events sent in PostgreSQL's binary format (%b: psycopg's placeholder for
        # a binary parameter). In text format psycopg writes each event's state as bytea hex and
        # then escapes it with a regular expression twice (as a composite field, then as an array
        # element): ~0.2 ms of CPU per event, the largest single cost of storing a batch of
        # ingested invoices (docs/performance.md, "ingest1000"). The rows stored are the same;
        # only the parameter's wire format changes. The table lock is not taken again here:
        # ``_insert_events`` took it just before, in the same transaction, and a second
        # ``LOCK TABLE`` only costs two more statements.
        self._notify_channel(curs)
        if self._binary_insert is None:
            text = self.insert_events_statement.as_string(curs)
            if text.count("%s") != 1:
                raise AssertionError(f"expected one parameter in eventsourcing's insert: {text}")
            self._binary_insert = text.replace("%s", "%b")
        rows = [
            self.construct_pg_stored_event(e.originator_id, e.originator_version, e.topic, e.state)
            for e in stored_events
        ]
        curs.execute(self._binary_insert, (rows,))

    def _insert_events(self, curs: Cursor[Any], stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
        super()._insert_events(curs, stored_events, **kwargs)
        if not stored_events:
            return
        # The events table's lock first, then the actor rows: the order in which table creation
        # (``_create_table``: events table, then the audit tables) takes them. Actors first made a
        # writer hold event_actors while it waited for the events table, and a process creating the
        # tables at start-up hold the events table while it waited for event_actors: a deadlock (CI,
        # eight concurrent credit notes from freshly started API processes).
        self._lock_table(curs)
        who = current()
        curs.executemany(
            self._actors_insert or b"",
            [
                (
                    self.events_table_name,
                    e.originator_id,
                    e.originator_version,
                    event_id(UUID(str(e.originator_id)), e.originator_version),
                    who.actor,
                    who.role,
                    who.user_id,
                    who.client_ip,
                    clean(who.user_agent, MAX_USER_AGENT),
                    who.request_id,
                    who.route,
                )
                for e in stored_events
            ],
        )


def create_audit_tables(curs: Cursor[Any], schema: str) -> None:
    """The audit store's tables (engine/audit.sql, also a migration) in ``schema``."""
    curs.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
    curs.execute(resources.files("engine").joinpath("audit.sql").read_text())


RECORDER_TOPIC = f"{__name__}:{AttributedRecorder.__name__}"
