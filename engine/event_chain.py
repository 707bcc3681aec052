"""A hash chain over every event store table, kept by PostgreSQL beside the events themselves.

Each stored event gets ``chain_hash`` = SHA-256 of the previous event's ``chain_hash`` and of the
event's own stored bytes (``link`` below gives the exact encoding). A ``BEFORE INSERT`` trigger on
the table computes it in the transaction that stores the event, so nothing in Python can forget it
and a projection rebuild (which never writes the event store) can never recompute it. The table's
last link is also kept in ``event_chain_heads`` (one row per table, written once per transaction at
commit), which lets ``verify`` notice events deleted from the end of the table.

"Previous" is the previous notification id. The eventsourcing PostgreSQL recorder takes ``LOCK TABLE
... IN EXCLUSIVE MODE`` before inserting (``PostgresApplicationRecorder._lock_table``, eventsourcing
9.5), so notification ids are handed out and committed in one order and the trigger sees them in
that order. Should a writer ever insert without that lock (eventsourcing's optional database
functions do), the trigger takes it, and refuses an id lower than one already stored rather than
fork the chain.

What the chain proves and what it does not: docs/audit-log.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from uuid import UUID

import psycopg
from psycopg import sql

GENESIS = bytes(32)
HEADS_TABLE = "event_chain_heads"
TRIGGER = "ledgerflow_event_chain"
HEAD_TRIGGER = "ledgerflow_event_chain_head"
# The columns every eventsourcing stored-events table has (PostgresApplicationRecorder).
EVENT_COLUMNS = ("originator_id", "originator_version", "topic", "state", "notification_id")


def link(
    previous: bytes,
    notification_id: int,
    originator_id: UUID,
    originator_version: int,
    topic: str | None,
    state: bytes | None,
) -> bytes:
    """The chain hash of one event: every field fixed-width or length-prefixed (-1 for NULL), so two
    different events can never encode to the same bytes. The trigger computes exactly this in SQL."""
    topic_bytes = topic.encode() if topic is not None else None
    parts = [
        previous,
        notification_id.to_bytes(8, "big", signed=True),
        originator_id.bytes,
        originator_version.to_bytes(8, "big", signed=True),
    ]
    for value in (topic_bytes, state):
        parts.append((len(value) if value is not None else -1).to_bytes(4, "big", signed=True))
        parts.append(value or b"")
    return hashlib.sha256(b"".join(parts)).digest()


# One function pair per table, with the table's name written in: static SQL whose plan PostgreSQL
# caches, where a shared function would need EXECUTE (planned again on every row).
_FUNCTION_SQL = """
CREATE OR REPLACE FUNCTION {schema}.{link_function}() RETURNS trigger LANGUAGE plpgsql
-- Every look-up below is one probe of the notification_id index. The plan is cached once, often
-- while the table is new and its statistics say it is empty, and a plan chosen then (a sequential
-- scan) made each insert read the whole table: measured 0.5-3.5 ms per event in a batch of 2,000.
SET enable_seqscan = off
AS $chain$
DECLARE
    previous bytea;
    topic_bytes bytea := convert_to(NEW.topic, 'UTF8');
BEGIN
    -- Writers one at a time. The eventsourcing recorder already holds this lock (then taking it is
    -- a look-up in the transaction's own lock table); a writer that does not gets it here.
    LOCK TABLE {schema}.{table} IN EXCLUSIVE MODE;
    -- An id handed out before a later one was stored and committed: chaining it now would fork
    -- the chain; refused (the recorder's lock, taken before ids are handed out, rules this out).
    IF EXISTS (SELECT 1 FROM {schema}.{table} WHERE notification_id > NEW.notification_id) THEN
        RAISE EXCEPTION 'event % of %.% would be chained out of order', NEW.notification_id,
            TG_TABLE_SCHEMA, TG_TABLE_NAME;
    END IF;
    -- The previous event by the unique notification_id index (rows stored earlier in this
    -- transaction, even in the same statement, are visible here).
    SELECT chain_hash INTO previous FROM {schema}.{table}
        WHERE notification_id < NEW.notification_id ORDER BY notification_id DESC LIMIT 1;
    NEW.chain_hash := sha256(
        coalesce(previous, '\\x{genesis}'::bytea)
        || int8send(NEW.notification_id)
        || uuid_send(NEW.originator_id)
        || int8send(NEW.originator_version)
        || int4send(coalesce(octet_length(topic_bytes), -1)) || coalesce(topic_bytes, '\\x'::bytea)
        || int4send(coalesce(octet_length(NEW.state), -1)) || coalesce(NEW.state, '\\x'::bytea)
    );
    RETURN NEW;
END
$chain$;
CREATE OR REPLACE FUNCTION {schema}.{head_function}() RETURNS trigger LANGUAGE plpgsql
SET enable_seqscan = off
AS $head$
BEGIN
    -- Deferred to commit, and only the transaction's last event writes the head: one UPDATE per
    -- transaction, not per event (many updates of one row in one transaction grow a chain of row
    -- versions that every later read walks: measured at 0.3 ms per event in a 5,000-event batch).
    IF NEW.notification_id = (SELECT max(notification_id) FROM {schema}.{table}) THEN
        UPDATE {schema}.{heads} SET notification_id = NEW.notification_id, chain_hash = NEW.chain_hash
            WHERE events_table = {table_name};
    END IF;
    RETURN NULL;
END
$head$;
"""


def is_installed(cur: psycopg.Cursor, schema: str, table: str) -> bool:
    row = cur.execute(
        "SELECT 1 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND t.tgname = %s",
        (schema, table, TRIGGER),
    ).fetchone()
    return row is not None


def install(cur: psycopg.Cursor, schema: str, table: str) -> None:
    """Chain ``schema.table`` from now on, inside the caller's transaction (the owner's: it creates a
    trigger). Rows already stored are chained once, here, in notification order, under an EXCLUSIVE
    lock that holds writers off until the trigger is in place. Does nothing when already installed."""
    if is_installed(cur, schema, table):
        return
    names = {
        "schema": sql.Identifier(schema),
        "table": sql.Identifier(table),
        "table_name": sql.Literal(table),
        "heads": sql.Identifier(HEADS_TABLE),
        "link_function": sql.Identifier(f"ledgerflow_chain_{table}"),
        "head_function": sql.Identifier(f"ledgerflow_chain_head_{table}"),
        "trigger": sql.Identifier(TRIGGER),
        "head_trigger": sql.Identifier(HEAD_TRIGGER),
        "genesis": sql.SQL(GENESIS.hex()),
    }
    cur.execute(sql.SQL("LOCK TABLE {schema}.{table} IN EXCLUSIVE MODE").format(**names))
    cur.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {schema}.{heads} (events_table text PRIMARY KEY,"
            " notification_id bigint NOT NULL, chain_hash bytea NOT NULL,"
            " chained_since timestamptz NOT NULL DEFAULT now())"
        ).format(**names)
    )
    cur.execute(
        sql.SQL("ALTER TABLE {schema}.{table} ADD COLUMN IF NOT EXISTS chain_hash bytea").format(**names)
    )
    cur.execute(sql.SQL(_FUNCTION_SQL).format(**names))
    head_id, head_hash = _chain_existing(cur, schema, table)
    cur.execute(
        sql.SQL(
            "INSERT INTO {schema}.{heads} (events_table, notification_id, chain_hash) VALUES (%s, %s, %s)"
            " ON CONFLICT (events_table) DO UPDATE SET notification_id = EXCLUDED.notification_id,"
            " chain_hash = EXCLUDED.chain_hash"
        ).format(**names),
        (table, head_id, head_hash),
    )
    cur.execute(
        sql.SQL(
            "CREATE TRIGGER {trigger} BEFORE INSERT ON {schema}.{table}"
            " FOR EACH ROW EXECUTE FUNCTION {schema}.{link_function}()"
        ).format(**names)
    )
    cur.execute(
        sql.SQL(
            "CREATE CONSTRAINT TRIGGER {head_trigger} AFTER INSERT ON {schema}.{table}"
            " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {schema}.{head_function}()"
        ).format(**names)
    )


def _chain_existing(cur: psycopg.Cursor, schema: str, table: str) -> tuple[int, bytes]:
    """Hash the rows stored before the chain existed (a one-off at installation); returns the head."""
    previous, last_id = GENESIS, 0
    updates: list[tuple[bytes, int]] = []
    target = sql.SQL("UPDATE {}.{} SET chain_hash = %s WHERE notification_id = %s").format(
        sql.Identifier(schema), sql.Identifier(table)
    )
    for row in _rows(cur.connection, schema, table):
        previous = link(previous, row.notification_id, row.originator_id, row.version, row.topic, row.state)
        last_id = row.notification_id
        updates.append((previous, last_id))
        if len(updates) >= 1000:
            cur.executemany(target, updates)
            updates.clear()
    if updates:
        cur.executemany(target, updates)
    return last_id, previous


@dataclass(frozen=True, slots=True)
class StoredRow:
    notification_id: int
    originator_id: UUID
    version: int
    topic: str | None
    state: bytes | None
    chain_hash: bytes | None


def _rows(
    conn: psycopg.Connection, schema: str, table: str, *, with_hash: bool = False
) -> Iterator[StoredRow]:
    """Every row in notification order, streamed by a server-side cursor (a table may not fit in memory)."""
    columns = "notification_id, originator_id, originator_version, topic, state"
    columns += ", chain_hash" if with_hash else ", NULL"
    query = sql.SQL("SELECT " + columns + " FROM {}.{} ORDER BY notification_id").format(
        sql.Identifier(schema), sql.Identifier(table)
    )
    with conn.cursor(name=f"chain_{table}", row_factory=psycopg.rows.tuple_row) as rows:
        rows.itersize = 2000
        rows.execute(query)
        for nid, oid, version, topic, state, chain_hash in rows:
            yield StoredRow(
                nid,
                oid if isinstance(oid, UUID) else UUID(str(oid)),
                version,
                topic,
                bytes(state) if state is not None else None,
                bytes(chain_hash) if chain_hash is not None else None,
            )


def event_tables(conn: psycopg.Connection, schema: str) -> list[str]:
    """Every eventsourcing stored-events table in ``schema`` (chained or not), by name."""
    rows = conn.execute(
        "SELECT table_name FROM information_schema.columns WHERE table_schema = %s"
        " AND column_name = ANY(%s) GROUP BY table_name HAVING count(*) = %s ORDER BY table_name",
        (schema, list(EVENT_COLUMNS), len(EVENT_COLUMNS)),
    ).fetchall()
    return [r[0] for r in rows]


@dataclass(frozen=True, slots=True)
class Break:
    """The first event at which the chain does not hold, and why."""

    table: str
    notification_id: int | None
    originator_id: UUID | None
    version: int | None
    reason: str

    def describe(self) -> str:
        where = (
            f"event {self.notification_id} (aggregate {self.originator_id}, version {self.version})"
            if self.notification_id is not None
            else "the chain head"
        )
        return f"{self.table}: {where}: {self.reason}"


@dataclass(frozen=True, slots=True)
class TableVerdict:
    table: str
    events: int
    head_id: int
    head_hash: bytes
    broken: Break | None


def count_events(conn: psycopg.Connection, schema: str, table: str) -> int:
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
    ).fetchone()
    return int(row[0]) if row else 0


def verify_table(
    conn: psycopg.Connection,
    schema: str,
    table: str,
    *,
    on_progress: Callable[[int], None] | None = None,
    anchor: tuple[int, bytes] | None = None,
) -> TableVerdict:
    """Recompute ``table``'s chain from its stored bytes and compare every link, then the head.

    Runs in one REPEATABLE READ snapshot (the caller's transaction should be one) so that events
    stored meanwhile are neither half seen nor reported as breaks. ``anchor`` (notification id, hash)
    is a head printed earlier and kept outside the database: the recomputed chain must pass through it.
    """

    def broken(reason: str, row: StoredRow | None = None, events: int = 0) -> TableVerdict:
        at = (
            Break(table, row.notification_id, row.originator_id, row.version, reason)
            if row
            else Break(table, None, None, None, reason)
        )
        return TableVerdict(table, events, 0, b"", at)

    if not is_installed(conn.cursor(), schema, table):
        return broken("not chained: the chain trigger is missing (run `ledgerflow db migrate`)")
    head = conn.execute(
        sql.SQL("SELECT notification_id, chain_hash FROM {}.{} WHERE events_table = %s").format(
            sql.Identifier(schema), sql.Identifier(HEADS_TABLE)
        ),
        (table,),
    ).fetchone()
    if head is None:
        return broken("the chain head row is missing")
    previous, last_id, events = GENESIS, 0, 0
    anchor_seen = anchor is None
    for row in _rows(conn, schema, table, with_hash=True):
        expected = link(previous, row.notification_id, row.originator_id, row.version, row.topic, row.state)
        if row.chain_hash != expected:
            reason = (
                "no chain hash: inserted while the chain trigger was off"
                if row.chain_hash is None
                else "stored hash does not follow from the previous event: this event was altered,"
                " or one before it was altered, deleted or inserted out of chain"
            )
            return broken(reason, row, events)
        if anchor is not None and row.notification_id == anchor[0]:
            if expected != anchor[1]:
                return broken("differs from the anchored head hash: the chain was rewritten", row, events)
            anchor_seen = True
        previous, last_id = expected, row.notification_id
        events += 1
        if on_progress is not None:
            on_progress(1)
    if (int(head[0]), bytes(head[1])) != (last_id, previous):
        return broken(
            f"the chain head records event {head[0]} but the table's chain ends at event {last_id}:"
            " events were deleted from the end, or the head was rewritten",
            None,
            events,
        )
    if not anchor_seen and anchor is not None:
        return broken(f"anchored event {anchor[0]} is no longer in the table", None, events)
    return TableVerdict(table, events, last_id, previous, None)


def parse_anchor(text: str) -> tuple[str, int, bytes]:
    """``TABLE:NOTIFICATION_ID:HEX`` as printed by ``ledgerflow audit verify``; ValueError otherwise."""
    table, nid, digest = text.split(":")
    value = bytes.fromhex(digest)
    if len(value) != 32 or not table:
        raise ValueError("an anchor is TABLE:NOTIFICATION_ID:SHA256HEX")
    return table, int(nid), value


def verify_schema(
    conn: psycopg.Connection,
    schema: str,
    *,
    tables: list[str] | None = None,
    anchors: dict[str, tuple[int, bytes]] | None = None,
    on_table: Callable[[str, int], Callable[[int], None]] | None = None,
) -> list[TableVerdict]:
    """Verify every event store table of ``schema`` (or ``tables``) in one REPEATABLE READ snapshot.
    ``on_table(table, events)`` returns the progress callback for that table."""
    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
    found = event_tables(conn, schema)
    chosen = tables or found
    verdicts = []
    for table in chosen:
        if table not in found:
            verdicts.append(
                TableVerdict(table, 0, 0, b"", Break(table, None, None, None, "no such event store table"))
            )
            continue
        progress = on_table(table, count_events(conn, schema, table)) if on_table else None
        anchor = (anchors or {}).get(table)
        verdicts.append(verify_table(conn, schema, table, on_progress=progress, anchor=anchor))
    return verdicts
