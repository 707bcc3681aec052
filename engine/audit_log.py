"""The audit log's own entries (``POST /v1/audit-logs``): an event store of AuditEntry aggregates
(eventsourcing application ``AuditLog``, table ``auditlog_events``), chained like every event store
(engine/event_chain.py), and their read index ``audit_entries``.

Why a store of its own rather than the ledger: the relay publishes the ledger's events on public
topics; an audit entry is the tenant's private record and is never published. Its index row is
written by the recorder in the transaction that stores the event, so the event and what
``GET /v1/audit-logs`` shows cannot disagree.

The events of every other aggregate reach the audit log through the ``audit_trail`` projection
(projections/audit_trail.py); the API shows both.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.application import Application
from eventsourcing.persistence import PersistenceError, StoredEvent
from psycopg import Cursor, sql
from psycopg.types.json import Jsonb

from engine import attribution, db
from engine.config import Settings
from engine.domain.audit_entry import AuditEntry

INDEX_TABLE = "audit_entries"
RECORDED_TOPIC = f"{AuditEntry.Recorded.__module__}:{AuditEntry.Recorded.__qualname__}"


class AuditLog(Application[UUID]):
    """The store of audit log entries (table ``auditlog_events``)."""

    name = "AuditLog"


_INDEX_INSERT = """
INSERT INTO {schema}.{index} (entry_id, tenant_id, action, entity_type, entity_id, details, actor, role,
                             user_id, client_ip, user_agent, request_id)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (entry_id) DO NOTHING
"""


def index_row(stored: StoredEvent, who: attribution.Attribution) -> tuple[Any, ...] | None:
    """The index row of a stored AuditEntry.Recorded (None for any other event). The state is the
    eventsourcing JSON transcoder's document; the entry's own fields are plain JSON values."""
    if stored.topic != RECORDED_TOPIC:
        return None
    state = orjson.loads(stored.state)
    return (
        stored.originator_id,
        UUID(state["tenant_id"]),
        state["action"],
        state["entity_type"],
        state["entity_id"],
        Jsonb(json.loads(state["details"])) if state.get("details") is not None else None,
        state["actor"],
        state.get("role"),
        state.get("user_id"),
        who.client_ip,
        attribution.clean(who.user_agent, attribution.MAX_USER_AGENT),
        who.request_id,
    )


class AuditLogRecorder(attribution.AttributedRecorder):
    """The AuditLog's recorder: also writes the read index (engine/audit.sql), in the same transaction
    as the events."""

    def _insert_events(self, curs: Cursor[Any], stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
        super()._insert_events(curs, stored_events, **kwargs)
        who = attribution.current()
        rows = [row for e in stored_events if (row := index_row(e, who)) is not None]
        if rows:
            names = {"schema": sql.Identifier(self.datastore.schema), "index": sql.Identifier(INDEX_TABLE)}
            curs.executemany(sql.SQL(_INDEX_INSERT).format(**names), rows)


def open_audit_log(settings: Settings) -> AuditLog:
    """The audit log store, created as the ledger's is (one process at a time creates its tables)."""
    from engine.application import open_event_store

    return open_event_store(
        settings,
        AuditLog,
        APPLICATION_RECORDER_TOPIC=f"{__name__}:{AuditLogRecorder.__name__}",
        POSTGRES_POOL_SIZE="2",
        POSTGRES_MAX_OVERFLOW="4",
    )


class AuditLogBook:
    """Records entries; one per process, opened on first use (the API's routes share it)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: AuditLog | None = None
        self._lock = threading.Lock()

    def store(self) -> AuditLog:
        with self._lock:
            if self._store is None:
                self._store = open_audit_log(self.settings)
            return self._store

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    def record(
        self,
        tenant_id: UUID,
        who: attribution.Attribution,
        *,
        action: str,
        entity_type: str,
        entity_id: str,
        details: dict[str, Any] | None,
    ) -> UUID:
        entry = AuditEntry(
            tenant_id=str(tenant_id),
            action=action,
            entity_type=entity_type,
            entity_id=entity_id,
            details=json.dumps(details, ensure_ascii=False) if details is not None else None,
            actor=who.actor,
            role=who.role,
            user_id=str(who.user_id) if who.user_id is not None else None,
        )
        try:
            self.store().save(entry)
        except PersistenceError as exc:
            raise db.DatabaseUnavailable(str(exc)) from exc
        return entry.id
