"""The ``audit_trail`` projection: every domain event as an audit log entry (issue 14, "Audit log").

One row per event of every ``ledger.*`` topic (``engine.publishing.AGGREGATE_TOPICS``): who (the
engine's audit store, ``event_actors``, written with the event: engine/attribution.py), what (event
type, entity type and id), and the old and new values of the fields the event changed.

Old values come from the entity's last known state as this projection saw it: each row keeps
``state_after``, the entity's fields after the event, and an event's previous state is that of the
same entity's row at the highest earlier offset of the same partition (an aggregate's events share
a partition: the key is its id), else its latest row from elsewhere (a rebuild from the event
store). So a replayed, duplicated or rebuilt event finds the same previous state and writes the same
row; the insert is idempotent on the event id.

Manual entries (``POST /v1/audit-logs``) are not here: they are the engine's own store
(engine/audit_log.py); ``search`` reads both.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, NamedTuple
from uuid import UUID

import orjson
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from engine.attribution import ACTORS_TABLE
from engine.audit_log import INDEX_TABLE
from engine.publishing import AGGREGATE_TOPICS
from projections.batch import copies_straight_in, copy_straight_in
from projections.events import ProjectedEvent, last_header, prepare, prepared

NAME = "audit_trail"
TOPICS = sorted(set(AGGREGATE_TOPICS.values()))
# Fields every event carries that describe the message, not the entity.
ENVELOPE = frozenset({"event_id", "tenant_id", "occurred_at"})

# An entity's first event keeps an empty state_after: its state is its changes' new values (below).
_PREVIOUS = """
SELECT k.i, t.state_after, t.changes
FROM unnest(%b::text[], %b::text[], %b::integer[], %b::bigint[]) WITH ORDINALITY
     AS k(entity_id, topic, part, before, i)
CROSS JOIN LATERAL (
    SELECT a.state_after, CASE WHEN a.state_after = ''::bytea THEN a.changes END AS changes
    FROM {t} AS a
    WHERE a.entity_id = k.entity_id AND a.topic = k.topic
      AND (a.kafka_partition <> k.part OR a.kafka_offset < k.before)
    -- Rows of another partition: written by a rebuild from the event store (partition -1, offsets
    -- are notification ids) or before the topic was repartitioned; their latest is the state then.
    ORDER BY a.kafka_partition = k.part DESC, a.kafka_offset DESC LIMIT 1
) AS t
"""
# Rows per statement: each row's two documents are ~4 KB each on a 5-line invoice, and psycopg and
# libpq hold copies of a statement's arrays while it is sent, so a whole 5,000-event batch in one
# statement took a projector process from ~280 to ~340 MB (full bench of 2026-12-03).
ROWS_PER_STATEMENT = 500
# One statement per ROWS_PER_STATEMENT rows: parallel arrays (unnest), who did it joined in set-wise.
# Before (issue 15) it was one INSERT ... VALUES per event through executemany; on the bench's
# 5-line invoices the set form costs PostgreSQL a fraction of the per-statement executor work.
# Binary parameters (%b): psycopg escapes text-format array elements with a regular expression per
# quote, which cost more than everything else here on JSON documents.
# ``changes`` is stored as the text written here (projections/audit_trail.sql) and parsed as jsonb
# only when read. A document with a ``\u`` escape is parsed now, as every one was before: jsonb
# refuses ``\u0000`` and lone surrogates (PostgreSQL docs, "JSON Types", 8.14), and such a row must
# fail here as it did, not later in GET /v1/audit-logs. orjson writes ``\u`` only for control
# characters (it refuses lone surrogates; the standard library's fallback escapes all non-ASCII),
# so the documents of the bench's invoices have none.
_INSERT = """
INSERT INTO {t} (event_id, tenant_id, occurred_at, topic, kafka_partition, kafka_offset, event_type,
                 action, entity_type, entity_id, changes, state_after, actor, role, user_id,
                 client_ip, user_agent, request_id)
SELECT r.event_id, r.tenant_id, r.occurred_at, r.topic, r.kafka_partition, r.kafka_offset,
       r.event_type, r.action, r.entity_type, r.entity_id,
       CASE WHEN r.escaped THEN r.changes::jsonb::text ELSE r.changes END, r.state_after,
       a.actor, a.role, a.user_id, a.client_ip, a.user_agent, a.request_id
FROM unnest(%b::uuid[], %b::uuid[], %b::timestamptz[], %b::text[], %b::integer[], %b::bigint[],
            %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::bytea[], %b::boolean[])
     AS r(event_id, tenant_id, occurred_at, topic, kafka_partition, kafka_offset, event_type, action,
          entity_type, entity_id, changes, state_after, escaped)
-- One index probe per event, whatever the planner knows of the store: a plain join, planned before
-- the store had statistics (a backlog, a fresh deployment), hashed the whole store per statement or
-- ANDed in the primary key's events_table prefix per event (tests/integration/test_actor_lookup.py).
LEFT JOIN LATERAL (
    SELECT x.actor, x.role, x.user_id, x.client_ip, x.user_agent, x.request_id
    FROM {actors} AS x WHERE x.event_id = r.event_id AND x.events_table = 'ledger_events' LIMIT 1
) AS a ON true
ON CONFLICT (event_id) DO NOTHING
"""

# Who did each event of a statement, in the statement's order: for the straight COPY below. The
# user id comes back as text, which the COPY encoder reads as it is (no uuid.UUID built per row).
_ACTORS = """
SELECT x.actor, x.role, x.user_id, x.client_ip, x.user_agent, x.request_id
FROM unnest(%b::uuid[]) WITH ORDINALITY AS k(event_id, i)
LEFT JOIN LATERAL (
    SELECT a.actor, a.role, a.user_id::text, a.client_ip, a.user_agent, a.request_id
    FROM {actors} AS a WHERE a.event_id = k.event_id AND a.events_table = 'ledger_events' LIMIT 1
) AS x ON true
ORDER BY k.i
"""


def _beyond_json(value: Any) -> str:
    """What orjson leaves to us: exact decimals as strings, bytes as base64."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(value).decode()
    raise TypeError(f"{type(value).__name__} has no JSON form")


def _jsonable_slowly(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable_slowly(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable_slowly(v) for v in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (Decimal, UUID)):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


def jsonable(value: Any) -> Any:
    """An Avro-decoded value as JSON: exact decimals and dates as strings, bytes as base64.

    Through orjson and back (C, about a tenth of the recursive walk's cost on a 5-line invoice;
    orjson writes datetimes, dates and UUIDs as ``isoformat()`` and ``str()`` do). What orjson
    refuses (an int beyond 64 bits, a key that is not a string) takes the recursive walk."""
    try:
        return orjson.loads(orjson.dumps(value, default=_beyond_json))
    except orjson.JSONEncodeError:
        return _jsonable_slowly(value)


def _json_bytes(value: Any) -> bytes:
    """JSON of a jsonable value, UTF-8."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:  # an int beyond 64 bits: the standard library writes it
        return json.dumps(value).encode()


# ``state_after`` of an entity's first event: nothing. Every field it sets is in its changes as new,
# and a field it leaves null reads as null from either (``previous.get``), so the state is the
# changes' new values (``_state_of``). A 5-line invoice's state is ~3.8 KB of JSON, stored beside
# changes of the same size: writing it twice was a third of PostgreSQL's work on this table
# (docs/performance.md, "Audit trail: one document per issued invoice").
FIRST_STATE = b""


def _state_of(state_after: bytes, changes: str | None) -> dict[str, Any]:
    """An entity's state after a row, from the row's ``state_after`` or, for its first event, its changes."""
    if state_after == FIRST_STATE and changes is not None:
        return {k: change["new"] for k, change in orjson.loads(changes).items()}
    parsed: dict[str, Any] = orjson.loads(state_after)
    return parsed


def _first_changes(record: dict[str, Any]) -> str | None:
    """``changes`` of an entity's first event, from its Avro record in one orjson pass: what
    ``changes_of({}, jsonable(fields))`` gives for its fields (the record less ``ENVELOPE``; every
    field set is new), without the round trip through Python objects. None when orjson refuses a
    value."""
    try:
        return orjson.dumps(
            {k: {"old": None, "new": v} for k, v in record.items() if v is not None and k not in ENVELOPE},
            default=_beyond_json,
        ).decode()
    except orjson.JSONEncodeError:
        return None


def changes_of(previous: dict[str, Any], fields: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The fields whose value differs from the entity's previous state, with both values."""
    return {k: {"old": previous.get(k), "new": v} for k, v in fields.items() if previous.get(k) != v}


@dataclass(frozen=True, slots=True)
class Identity:
    tenant_id: UUID
    entity_type: str
    entity_id: str
    event_type: str
    action: str


def identify(event: ProjectedEvent) -> Identity | None:
    """Tenant, entity and action of an event from its record and CloudEvents headers (None: not ours)."""
    # Only the two headers wanted: header_map's dict of every header cost as much as the rest of
    # this function (cProfile, audit-cost branch).
    source = last_header(event.headers, "ce_source")
    subject_bytes = last_header(event.headers, "ce_subject")
    parts = event.ce_type.split(".")
    if len(parts) < 3:
        return None
    tenant = event.record.get("tenant_id") or source.decode().rpartition("/")[2]
    subject = subject_bytes.decode() or (event.key or b"").decode()
    if not tenant or not subject:
        return None
    # The decoder gives a UUID already (the Avro logical type): no round trip through its text.
    tenant_id = tenant if isinstance(tenant, UUID) else UUID(str(tenant))
    return Identity(tenant_id, parts[1], subject, event.ce_type, ".".join(parts[2:]))


class Entry(NamedTuple):
    """What ``AuditTrail.apply`` needs of one event, taken as its record is decoded (``at_decode``):
    a few objects where the record is about 190 on a 5-line invoice, which the runner then frees at
    once (``events.PreparesAtDecode``). A named tuple: built once per event, at a third of a frozen
    dataclass's cost."""

    who: Identity
    occurred_at: datetime | None
    """The record's ``occurred_at`` if it is a datetime (else the row gets the time it is written)."""
    first_changes: str | None
    """``_first_changes(record)``: the row's ``changes`` if the entity has no earlier row, and the
    fields' values for a later event (``jsonable_fields``). None when orjson refuses a value."""
    names: tuple[str, ...]
    """The record's field names, in its order: with ``first_changes`` they give ``jsonable`` of the
    fields (a field left null is not in ``first_changes``)."""
    record: dict[str, Any] | None
    """The record, kept only when ``first_changes`` is None (a value beyond orjson: an int beyond
    64 bits), for ``jsonable``'s slow path to take as before."""

    def state(self) -> dict[str, Any]:
        """The entity's state after this event when it is the entity's first (``first_changes`` is
        its row's changes): the fields set, jsonable, as a later batch reads it back (``_state_of``)."""
        # Before: {k: v for k, v in jsonable(record).items() if v is not None and k not in ENVELOPE},
        # the same values (both are orjson's writing read back; the envelope's are ids and a time).
        assert self.first_changes is not None
        return _state_of(FIRST_STATE, self.first_changes)

    def jsonable_fields(self) -> dict[str, Any]:
        """``jsonable`` of the record less ``ENVELOPE``: from ``first_changes``, which holds every
        field set as orjson writes it (``jsonable`` is that, read back), the others null."""
        if self.first_changes is None:
            assert self.record is not None
            return jsonable({k: v for k, v in self.record.items() if k not in ENVELOPE})
        written = orjson.loads(self.first_changes)
        return {
            k: (None if (change := written.get(k)) is None else change["new"])
            for k in self.names
            if k not in ENVELOPE
        }


def entry(event: ProjectedEvent) -> Entry | None:
    """What the audit trail writes of ``event`` (None: no row). Raises as ``identify`` does for an
    event it cannot read (set aside as a dead letter)."""
    if (who := identify(event)) is None or not event.ce_id:
        return None
    record = event.record
    occurred = record.get("occurred_at")
    first_changes = _first_changes(record)
    return Entry(
        who,
        occurred if isinstance(occurred, datetime) else None,
        first_changes,
        tuple(record),
        record if first_changes is None else None,
    )


class AuditTrail:
    """Projection writer, driven by ``projections.runner`` and ``projections.rebuild`` (``on_table``)."""

    name = NAME
    topics = TOPICS

    def __init__(self, table: str = NAME) -> None:
        self.table = table

    def on_table(self, table: str) -> AuditTrail:
        return AuditTrail(table)

    def at_decode(self, event: ProjectedEvent) -> ProjectedEvent:
        """``event`` with its ``Entry`` and without its record (``events.PreparesAtDecode``). With
        the record kept until the batch was written, the five projections of the invoice topic cost
        ~20 us an event more together than apart (docs/performance.md, "Projection catch-up")."""
        return prepare(event, self.name, entry)

    def apply(self, conn: psycopg.Connection, events: Sequence[ProjectedEvent]) -> None:
        # Full events (a replay, a redrive) take the same path as prepared ones: their Entry now.
        known = [(e, x) for e in events if (x := prepared(e, self.name, entry)) is not None]
        if not known:
            return
        table = sql.Identifier(self.table)
        # The state before each entity's first event of the batch; later ones follow in memory.
        first: dict[tuple[str, str, int], int] = {}
        for event, x in known:
            first.setdefault((x.who.entity_id, event.topic, event.partition), event.offset)
        keys = list(first)
        states: dict[tuple[str, str, int], dict[str, Any]] = {}
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL(_PREVIOUS).format(t=table),
                ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], list(first.values())),
            )
            for index, state_after, first_changes in cur.fetchall():
                states[keys[index - 1]] = _state_of(state_after, first_changes)
        columns: tuple[list[Any], ...] = tuple([] for _ in range(13))
        (ids, tenants, occurred_ats, topics, partitions, offsets, types, actions, entity_types,
         entity_ids, changes, states_after, escaped) = columns  # fmt: skip
        # An entity's first event: its documents straight from the Avro values; its state is made
        # jsonable only if a later event of the batch needs it (most entities have one event here).
        unconverted: dict[tuple[str, str, int], Entry] = {}
        for event, x in known:
            who = x.who
            key = (who.entity_id, event.topic, event.partition)
            if key in unconverted:
                # The state a later batch would read back from the changes (_state_of): the same
                # without the fields left null, so the next row is the same either way.
                states[key] = unconverted.pop(key).state()
            previous = states.get(key)
            # The fields (the record less ENVELOPE) are made only on this path: the first event's
            # changes skip the envelope as they are written (_first_changes).
            first_changes = x.first_changes if previous is None else None
            if first_changes is not None:
                unconverted[key] = x
                change_text, after_bytes = first_changes, FIRST_STATE
            else:
                previous = previous or {}
                fields = x.jsonable_fields()
                after = {**previous, **fields}
                states[key] = after
                change_text = _json_bytes(changes_of(previous, fields)).decode()
                after_bytes = _json_bytes(after)
            ids.append(event.ce_id)
            tenants.append(who.tenant_id)
            occurred_ats.append(x.occurred_at or datetime.now(UTC))
            topics.append(event.topic)
            partitions.append(event.partition)
            offsets.append(event.offset)
            types.append(who.event_type)
            actions.append(who.action)
            entity_types.append(who.entity_type)
            entity_ids.append(who.entity_id)
            changes.append(change_text)
            states_after.append(after_bytes)
            escaped.append("\\u" in change_text)
            if len(ids) >= ROWS_PER_STATEMENT:
                self._insert(conn, columns)
        if ids:
            self._insert(conn, columns)

    def _insert(self, conn: psycopg.Connection, columns: tuple[list[Any], ...]) -> None:
        """One statement for the rows gathered in ``columns``, which it empties."""
        if not any(columns[12]) and copies_straight_in(conn, self.table) and self._copy_in(conn, columns):
            for column in columns:
                column.clear()
            return
        with conn.cursor() as cur:
            query = sql.SQL(_INSERT).format(t=sql.Identifier(self.table), actors=sql.Identifier(ACTORS_TABLE))
            cur.execute(query, columns)
        for column in columns:
            column.clear()

    def _copy_in(self, conn: psycopg.Connection, columns: tuple[list[Any], ...]) -> bool:
        """The rows COPYed straight in, with who did each looked up first: False, with nothing
        written, when one is there already (a redelivery) and the INSERT's ON CONFLICT must skip it.
        Rows whose changes hold a ``\\u`` escape are not sent this way (the INSERT checks them as jsonb)."""
        with conn.cursor() as cur:
            cur.execute(sql.SQL(_ACTORS).format(actors=sql.Identifier(ACTORS_TABLE)), (columns[0],))
            actors = cur.fetchall()
        rows = [
            {
                "event_id": event_id,
                "tenant_id": tenant_id,
                "occurred_at": occurred_at,
                "topic": topic,
                "kafka_partition": partition,
                "kafka_offset": offset,
                "event_type": event_type,
                "action": action,
                "entity_type": entity_type,
                "entity_id": entity_id,
                "changes": changes,
                "state_after": state_after,
                "actor": actor,
                "role": role,
                "user_id": user_id,
                "client_ip": client_ip,
                "user_agent": user_agent,
                "request_id": request_id,
            }
            for (event_id, tenant_id, occurred_at, topic, partition, offset, event_type, action, entity_type,
                 entity_id, changes, state_after, _escaped), (actor, role, user_id, client_ip, user_agent,
                 request_id) in zip(zip(*columns, strict=True), actors, strict=True)
        ]  # fmt: skip
        return copy_straight_in(conn, self.table, rows)


# -- the API's query over this projection and the manual entries ---------------------------------

# ``changes`` is stored as text and made jsonb here, outside the page's ORDER BY and LIMIT: in the
# same SELECT the cast was computed for every row the sort saw (a tenant's whole trail when no
# index gives the order), as EXPLAIN VERBOSE shows; only the page's rows are parsed this way.
_COLUMNS = (
    "id, source, occurred_at, action, event_type, entity_type, entity_id, changes::jsonb AS changes,"
    " details, actor, role, user_id, client_ip, user_agent, request_id, seq"
)
_SEARCH = """
SELECT {columns} FROM (
    SELECT * FROM (
        SELECT event_id::text AS id, 'event' AS source, occurred_at, action, event_type, entity_type,
               entity_id, changes, NULL::jsonb AS details, actor, role, user_id, client_ip,
               user_agent, request_id, kafka_offset AS seq
        FROM {trail} WHERE {trail_filter}
        UNION ALL
        SELECT entry_id::text, 'entry', occurred_at, action, NULL, entity_type, entity_id, NULL::text,
               details, actor, role, user_id, client_ip, user_agent, request_id, 0::bigint
        FROM {entries} WHERE {entries_filter}
    ) AS entries
    -- Events saved together share their timestamp (an auto-approval is stored with its submission);
    -- one entity's events sit in one partition, so the offset keeps them in the order they happened.
    ORDER BY occurred_at, seq, id
    LIMIT %(limit)s
) AS page
ORDER BY occurred_at, seq, id
"""


@dataclass(frozen=True)
class Filters:
    entity_type: str | None = None
    entity_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class BadCursor(ValueError):
    pass


def encode_cursor(occurred_at: datetime, entry_id: str, seq: int = 0) -> str:
    position = [occurred_at.isoformat(), seq, entry_id]
    return base64.urlsafe_b64encode(orjson.dumps(position)).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int, str]:
    try:
        at, seq, entry_id = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2**63:
            raise TypeError("seq")
        return datetime.fromisoformat(at), seq, str(entry_id)
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise BadCursor("cursor is not one this API returned") from exc


def search(
    conn: psycopg.Connection, tenant_id: UUID, filters: Filters, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the tenant's audit log, oldest first, and the cursor of the next page (or None)."""
    conditions = [sql.SQL("tenant_id = %(tenant)s")]
    params: dict[str, Any] = {"tenant": tenant_id, "limit": limit + 1}
    if filters.entity_type is not None:
        conditions.append(sql.SQL("entity_type = %(entity_type)s"))
        params["entity_type"] = filters.entity_type
    if filters.entity_id is not None:
        conditions.append(sql.SQL("entity_id = %(entity_id)s"))
        params["entity_id"] = filters.entity_id
    if filters.since is not None:
        conditions.append(sql.SQL("occurred_at >= %(since)s"))
        params["since"] = filters.since
    if filters.until is not None:
        conditions.append(sql.SQL("occurred_at < %(until)s"))
        params["until"] = filters.until
    trail_conditions = list(conditions)
    entries_conditions = list(conditions)
    if cursor is not None:
        params["after_at"], params["after_seq"], params["after_id"] = decode_cursor(cursor)
        after = "(%(after_at)s, %(after_seq)s, %(after_id)s)"
        trail_conditions.append(sql.SQL("(occurred_at, kafka_offset, event_id::text) > " + after))
        entries_conditions.append(sql.SQL("(occurred_at, 0::bigint, entry_id::text) > " + after))
    query = sql.SQL(_SEARCH).format(
        columns=sql.SQL(_COLUMNS),
        trail=sql.Identifier(NAME),
        entries=sql.Identifier(INDEX_TABLE),
        trail_filter=sql.SQL(" AND ").join(trail_conditions),
        entries_filter=sql.SQL(" AND ").join(entries_conditions),
    )
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query, params).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if more and rows else None
    next_cursor = encode_cursor(last["occurred_at"], last["id"], last["seq"]) if last else None
    return rows, next_cursor


def find(conn: psycopg.Connection, tenant_id: UUID, entry_id: UUID) -> dict[str, Any] | None:
    """One entry or event of the tenant's audit log (None also when it is another tenant's)."""
    query = sql.SQL(_SEARCH).format(
        columns=sql.SQL(_COLUMNS),
        trail=sql.Identifier(NAME),
        entries=sql.Identifier(INDEX_TABLE),
        trail_filter=sql.SQL("tenant_id = %(tenant)s AND event_id = %(id)s"),
        entries_filter=sql.SQL("tenant_id = %(tenant)s AND entry_id = %(id)s"),
    )
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, {"tenant": tenant_id, "id": entry_id, "limit": 1}).fetchone()
