"""The audit log on the real stack: the hash chain kept by PostgreSQL on every event store table and
``ledgerflow audit verify`` catching an altered, deleted or out-of-chain event; who stored each event
(actor, IP, user agent, request id) recorded with it; ``/v1/audit-logs`` (actor from the key, never the
body; hostile input; tenant scope; pages); and the audit_trail projection over the relay's messages,
which carry no IP or user agent."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg
import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer
from fastapi.testclient import TestClient

from engine import attribution, event_chain
from engine.application import LedgerService
from engine.audit_log import open_audit_log
from engine.cli import main
from engine.commands import IssueInvoice
from engine.config import Settings
from engine.payments import open_inbox
from engine.relay import Relay
from engine.webhooks import open_store as open_webhook_store
from projections.audit_trail import AuditTrail
from projections.events import ProjectedEvent
from projections.rebuild import rebuild
from projections.runner import ProjectionRunner
from tests.conftest import BackgroundLoop, wait_for
from tests.integration.helpers import client_for, invoice_body, register_tenant
from tests.integration.processes import settings_env

pytestmark = pytest.mark.integration

AGENT = "Mozilla/5.0 (X11; Linux x86_64) AuditTest/1.0 \u0928\u092e\u0938\u094d\u0924\u0947"


def connect(settings: Settings, *, autocommit: bool = True) -> psycopg.Connection:
    return psycopg.connect(
        settings.database_url, autocommit=autocommit, options=f"-c search_path={settings.db_schema}"
    )


def entity_event(tenant: UUID, entity: str, offset: int, ce_type: str, **fields: Any) -> ProjectedEvent:
    """An event of invoice ``entity`` at ``offset`` of the invoice topic, as the audit trail reads
    it (the entity from the record's key and ``ce_subject``), with ``fields`` after the envelope."""
    return ProjectedEvent(
        "ledger.invoice.v1",
        0,
        offset,
        ce_type,
        str(uuid.uuid4()),
        {"tenant_id": tenant, "occurred_at": datetime.now(UTC), **fields},
        key=entity.encode(),
        headers=(("ce_subject", entity.encode()),),
    )


def verify(settings: Settings, *args: str) -> Any:
    return CliRunner().invoke(main, ["audit", "verify", *args], env=settings_env(settings))


def test_verify_passes_untouched_and_names_the_event_altered_inserted_or_deleted(
    settings: Settings, service: LedgerService
) -> None:
    tenant, _ = register_tenant(service)
    for n in range(4):
        service.issue_invoice(UUID(tenant), IssueInvoice.model_validate(invoice_body(f"INV-{n}")))
    intact = verify(settings)
    assert intact.exit_code == 0, intact.output
    assert "ledger_events: 5 events, chain intact" in intact.output
    head = next(w for w in intact.output.split() if w.startswith("ledger_events:") and w.count(":") == 2)

    with connect(settings) as conn:
        rows = conn.execute(
            "SELECT notification_id, originator_id, originator_version, state FROM ledger_events"
            " ORDER BY notification_id"
        ).fetchall()
        nid, aggregate, version, state = rows[2]

        # Altered: one byte of an event's state, as the schema's owner would with plain SQL.
        conn.execute(
            "UPDATE ledger_events SET state = state || '\\x20'::bytea WHERE notification_id = %s", (nid,)
        )
        altered = verify(settings)
        assert altered.exit_code == 1
        assert f"event {nid} (aggregate {aggregate}, version {version})" in altered.output
        conn.execute("UPDATE ledger_events SET state = %s WHERE notification_id = %s", (state, nid))
        assert verify(settings).exit_code == 0

        # Inserted out of chain: with the trigger off, a row with a made-up hash.
        forged = uuid.uuid4()
        conn.execute("ALTER TABLE ledger_events DISABLE TRIGGER USER")
        conn.execute(
            "INSERT INTO ledger_events (originator_id, originator_version, topic, state, chain_hash)"
            " VALUES (%s, 1, 'engine.domain.invoice:Invoice.Issued', '\\x7b7d', %s)",
            (forged, bytes(32)),
        )
        conn.execute("ALTER TABLE ledger_events ENABLE TRIGGER USER")
        inserted = verify(settings)
        assert inserted.exit_code == 1
        assert f"(aggregate {forged}, version 1)" in inserted.output
        conn.execute("DELETE FROM ledger_events WHERE originator_id = %s", (forged,))
        assert verify(settings).exit_code == 0

        # Deleted from the middle: the next event no longer follows; from the end: the head says so.
        conn.execute("DELETE FROM ledger_events WHERE notification_id = %s", (rows[1][0],))
        middle = verify(settings)
        assert middle.exit_code == 1
        assert f"event {rows[2][0]} (aggregate {rows[2][1]}, version {rows[2][2]})" in middle.output
        conn.execute("DELETE FROM ledger_events WHERE notification_id = %s", (rows[-1][0],))
        conn.execute("DELETE FROM ledger_events WHERE notification_id > %s", (rows[0][0],))
        end = verify(settings, "--table", "ledger_events")
        assert end.exit_code == 1
        assert f"the chain head records event {rows[-1][0]}" in end.output

        # An owner who rewrites every hash and the head passes the plain check, not an anchor kept
        # outside the database from before the rewrite.
        rewrite_chain(conn, settings.db_schema, "ledger_events")
        assert verify(settings, "--table", "ledger_events").exit_code == 0
    anchored = verify(settings, "--anchor", head)
    assert anchored.exit_code == 1
    assert "anchored event" in anchored.output


def test_concurrent_writers_keep_one_chain_and_an_id_below_the_last_is_refused(
    settings: Settings, service: LedgerService
) -> None:
    tenant, _ = register_tenant(service)

    def issue(n: int) -> None:
        service.issue_invoice(UUID(tenant), IssueInvoice.model_validate(invoice_body(f"C-{n}")))

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(issue, range(30)))
    intact = verify(settings, "--table", "ledger_events")
    assert intact.exit_code == 0, intact.output
    assert "ledger_events: 31 events, chain intact" in intact.output
    with connect(settings) as conn:
        # Stored outside any request: the process is the actor, one row per event.
        actors = conn.execute(
            "SELECT actor, client_ip FROM event_actors WHERE events_table = 'ledger_events'"
        )
        assert {row for row in actors} == {(attribution.process_attribution().actor, None)}
    with connect(settings) as conn, pytest.raises(psycopg.errors.RaiseException, match="out of order"):
        conn.execute(
            "INSERT INTO ledger_events (originator_id, originator_version, topic, state, notification_id)"
            " VALUES (gen_random_uuid(), 1, 't', '\\x', 2)"
        )


def test_a_writer_waiting_for_the_events_table_holds_nothing_on_event_actors(
    settings: Settings, service: LedgerService
) -> None:
    """Table creation (each process's start-up) locks the events table, then event_actors. A writer
    that took event_actors first and then waited for the events table deadlocked with it (CI: a
    concurrent credit note answered 503). Here a transaction holds the events table as creation does;
    the blocked writer must hold no lock on event_actors meanwhile, and finish once it is released."""
    tenant, _ = register_tenant(service)
    with connect(settings) as creator, ThreadPoolExecutor(max_workers=1) as pool:
        creator.execute("BEGIN")
        creator.execute("LOCK TABLE ledger_events IN SHARE MODE")
        saving = pool.submit(
            service.issue_invoice, UUID(tenant), IssueInvoice.model_validate(invoice_body("LOCK-1"))
        )

        def writer_waits() -> bool:
            row = creator.execute(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'ledger_events'::regclass"
            ).fetchone()
            return bool(row and row[0])

        try:
            wait_for(writer_waits, timeout=30, what="the writer to wait for the events table")
            held = creator.execute(
                "SELECT mode FROM pg_locks WHERE granted AND pid <> pg_backend_pid()"
                " AND relation = 'event_actors'::regclass"
            ).fetchall()
        finally:
            # Released whatever happens, or the pool would wait for the writer forever.
            creator.execute("COMMIT")
        assert held == [], f"the writer waiting for the events table holds {held} on event_actors"
        assert saving.result(timeout=30).invoice.number == "LOCK-1"


def rewrite_chain(conn: psycopg.Connection, schema: str, table: str) -> None:
    previous, last = event_chain.GENESIS, 0
    rows = conn.execute(
        f"SELECT notification_id, originator_id, originator_version, topic, state FROM {table}"
        " ORDER BY notification_id"
    ).fetchall()
    for nid, oid, version, topic, state in rows:
        previous = event_chain.link(previous, nid, oid, version, topic, bytes(state))
        last = nid
        conn.execute(f"UPDATE {table} SET chain_hash = %s WHERE notification_id = %s", (previous, nid))
    conn.execute(
        "UPDATE event_chain_heads SET notification_id = %s, chain_hash = %s WHERE events_table = %s",
        (last, previous, table),
    )


def test_an_anchor_from_an_earlier_run_holds_while_new_events_are_chained(
    settings: Settings, service: LedgerService
) -> None:
    tenant, _ = register_tenant(service)
    first = verify(settings, "--table", "ledger_events")
    head = next(w for w in first.output.split() if w.startswith("ledger_events:") and w.count(":") == 2)
    for n in range(3):
        service.issue_invoice(UUID(tenant), IssueInvoice.model_validate(invoice_body(f"INV-{n}")))
    later = verify(settings, "--anchor", head)
    assert later.exit_code == 0, later.output
    assert "ledger_events: 4 events, chain intact" in later.output
    assert verify(settings, "--anchor", "ledger_events:1:zz").exit_code == 2  # usage error


def test_every_event_store_is_chained_and_rows_stored_before_the_chain_are_chained_once(
    settings: Settings, service: LedgerService
) -> None:
    register_tenant(service)
    open_inbox(settings).close()
    open_webhook_store(settings).close()
    open_audit_log(settings).close()
    stores = ["auditlog_events", "inbox_events", "ledger_events", "webhookendpoints_events"]
    with connect(settings) as conn:
        assert event_chain.event_tables(conn, settings.db_schema) == stores
        assert all(event_chain.is_installed(conn.cursor(), settings.db_schema, t) for t in stores)
        # A table from before the chain: drop the trigger and column, install again.
        conn.execute("DROP TRIGGER ledgerflow_event_chain ON ledger_events")
        conn.execute("DROP TRIGGER ledgerflow_event_chain_head ON ledger_events")
        conn.execute("ALTER TABLE ledger_events DROP COLUMN chain_hash")
        conn.execute("DELETE FROM event_chain_heads WHERE events_table = 'ledger_events'")
        unchained = verify(settings, "--table", "ledger_events")
        assert unchained.exit_code == 1 and "not chained" in unchained.output
        with conn.transaction(), conn.cursor() as cur:
            event_chain.install(cur, settings.db_schema, "ledger_events")
    assert verify(settings, "--table", "ledger_events").exit_code == 0


@pytest.fixture
def api(settings: Settings, service: LedgerService) -> tuple[TestClient, dict[str, str], dict[str, str]]:
    _, key = register_tenant(service)
    _, other = register_tenant(service, state="29", gstin="29AAGCB7383J1Z4")
    return (
        client_for(settings),
        {"Authorization": f"Bearer {key}", "User-Agent": AGENT.encode()},  # type: ignore[dict-item]
        {"Authorization": f"Bearer {other}"},
    )


def test_an_entry_is_recorded_with_the_keys_actor_ip_agent_and_request_id_and_chained(
    settings: Settings, api: tuple[TestClient, dict[str, str], dict[str, str]]
) -> None:
    client, auth, other = api
    body: dict[str, Any] = {
        "action": "approved",
        "entity_type": "expense",
        "entity_id": 12345,
        "details": {
            "comment": "ok \u0928\u092e\u0938\u094d\u0924\u0947 \U0001f44d\u200d",
            "amount": "50000.00",
        },
        "changes": {"status": {"old": "pending_approval", "new": "approved"}},
    }
    created = client.post("/v1/audit-logs", json=body, headers={**auth, "X-Request-ID": "req-audit-1"})
    assert created.status_code == 201, created.text
    entry = created.json()
    assert entry["actor"].startswith("api_key:") and entry["created_at"]

    listed = client.get(
        "/v1/audit-logs", params={"entity_type": "expense", "entity_id": "12345"}, headers=auth
    )
    assert listed.status_code == 200, listed.text
    (item,) = listed.json()["items"]
    assert item["id"] == entry["id"] and item["source"] == "entry"
    assert item["details"] == {**body["details"], "changes": body["changes"]}
    assert (item["actor"], item["ip_address"], item["user_agent"], item["request_id"]) == (
        entry["actor"],
        "testclient",
        AGENT,
        "req-audit-1",
    )
    assert client.get(f"/v1/audit-logs/{entry['id']}", headers=auth).json() == item

    # Keys that eventsourcing's transcoder uses as type tags are the client's data like any other.
    tags = {"_type_": "uuid_hex", "_data_": "zz", "n": {"_type_": "decimal_str", "_data_": "1"}}
    tagged = client.post(
        "/v1/audit-logs",
        json={"action": "a", "entity_type": "t", "entity_id": "1", "details": tags},
        headers=auth,
    )
    assert tagged.status_code == 201, tagged.text
    assert client.get(f"/v1/audit-logs/{tagged.json()['id']}", headers=auth).json()["details"] == tags
    store = open_audit_log(settings)
    try:  # and the stored event still loads (as a dict, those keys made it undecodable)
        assert json.loads(store.repository.get(UUID(tagged.json()["id"])).details) == tags
    finally:
        store.close()

    # Another tenant neither lists nor reads it.
    assert client.get("/v1/audit-logs", headers=other).json()["items"] == []
    missing = client.get(f"/v1/audit-logs/{entry['id']}", headers=other)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"

    # The entry is an event of the audit log's own store, chained and attributed like every event.
    with connect(settings) as conn:
        actor = conn.execute(
            "SELECT actor, client_ip, user_agent, request_id FROM event_actors"
            " WHERE events_table = 'auditlog_events' AND originator_id = %s",
            (UUID(entry["id"]),),
        ).fetchone()
    assert actor == (entry["actor"], "testclient", AGENT, "req-audit-1")
    assert verify(settings, "--table", "auditlog_events").exit_code == 0


@pytest.mark.parametrize(
    ("change", "path", "code"),
    [
        ({"actor": "principal@college.edu"}, "actor", "set_by_credentials"),
        ({"user_id": 101}, "user_id", "set_by_credentials"),
        ({"ip_address": "10.0.0.1"}, "ip_address", "set_by_credentials"),
        ({"action": "ap\nproved"}, "action", "control_character"),
        ({"entity_type": ""}, "entity_type", "too_short"),
        ({"details": {"note": "nul \u0000 byte"}}, "details", "invalid_character"),
        ({"details": {"n": 2**60}}, "details", "number_too_large"),
        ({"details": {"blob": "x" * 40_000}}, "details", "too_large"),
        ({"details": "not an object"}, "details", "object_expected"),
        ({"unknown": 1}, "unknown", "extra_forbidden"),
    ],
)
def test_a_refused_entry_names_the_field(
    api: tuple[TestClient, dict[str, str], dict[str, str]], change: dict[str, Any], path: str, code: str
) -> None:
    client, auth, _ = api
    body = {"action": "approved", "entity_type": "expense", "entity_id": "e-1", **change}
    refused = client.post("/v1/audit-logs", json=body, headers=auth)
    assert refused.status_code == 422, refused.text
    fields = [(f["path"], f["code"]) for f in refused.json()["error"]["details"]["fields"]]
    assert (path, code) in fields, fields


def test_deep_nesting_and_a_huge_body_are_refused_clearly(
    api: tuple[TestClient, dict[str, str], dict[str, str]],
) -> None:
    client, auth, _ = api
    nested: dict[str, Any] = {}
    inner = nested
    for _ in range(40):
        inner["a"] = {}
        inner = inner["a"]
    deep = client.post(
        "/v1/audit-logs",
        json={"action": "a", "entity_type": "e", "entity_id": "1", "details": nested},
        headers=auth,
    )
    assert deep.status_code == 422, deep.text
    huge = client.post(
        "/v1/audit-logs",
        content=b'{"action": "a", "entity_type": "e", "entity_id": "1", "details": {"x": "'
        + b"y" * 3_000_000
        + b'"}}',
        headers={**auth, "Content-Type": "application/json"},
    )
    assert huge.status_code == 413, huge.text


def test_pages_follow_the_cursor_and_filters_by_time(
    api: tuple[TestClient, dict[str, str], dict[str, str]],
) -> None:
    client, auth, _ = api
    ids = []
    for n in range(5):
        r = client.post(
            "/v1/audit-logs",
            json={"action": "viewed", "entity_type": "report", "entity_id": str(n)},
            headers=auth,
        )
        assert r.status_code == 201
        ids.append(r.json()["id"])
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, "entity_type": "report"}
        if cursor:
            params["cursor"] = cursor
        response = client.get("/v1/audit-logs", params=params, headers=auth)
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    assert client.get("/v1/audit-logs", params={"to": "2000-01-01"}, headers=auth).json()["items"] == []
    assert len(client.get("/v1/audit-logs", params={"from": "2000-01-01"}, headers=auth).json()["items"]) == 5
    bad = client.get("/v1/audit-logs", params={"cursor": "not-a-cursor"}, headers=auth)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_failed"
    assert client.get("/v1/audit-logs", params={"from": "yesterday"}, headers=auth).status_code == 422
    for hostile in ({"entity_id": "a\x01b"}, {"entity_type": "x" * 500}, {"limit": 100_000}):
        refused = client.get("/v1/audit-logs", params=hostile, headers=auth)
        assert refused.status_code == 422, (hostile, refused.text)
    odd = client.get(
        "/v1/audit-logs", params={"entity_type": "\u0928\u092e\u0938\u094d\u0924\u0947"}, headers=auth
    )
    assert odd.status_code == 200 and odd.json()["items"] == []


def test_the_projection_shows_each_event_with_who_and_what_changed_and_topics_carry_no_ip_or_agent(
    settings: Settings,
    topics: list[str],
    background: BackgroundLoop,
    api: tuple[TestClient, dict[str, str], dict[str, str]],
) -> None:
    client, auth, other = api
    issued = client.post(
        "/v1/invoices", json=invoice_body("INV-A1"), headers={**auth, "Idempotency-Key": "k-1"}
    )
    assert issued.status_code == 201, issued.text
    invoice_id = issued.json()["id"]
    cancelled = client.post(
        f"/v1/invoices/{invoice_id}/cancel",
        json={"reason": "duplicate", "remark": "sent twice"},
        headers=auth,
    )
    assert cancelled.status_code in (200, 201), cancelled.text
    background.start(Relay(settings).run)
    background.start(ProjectionRunner(settings, AuditTrail(), max_records=50).run)

    def trail() -> list[dict[str, Any]]:
        background.check()
        r = client.get(
            "/v1/audit-logs", params={"entity_type": "invoice", "entity_id": invoice_id}, headers=auth
        )
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items

    # 90 s: a fresh consumer group joins and catches up slowly on a loaded CI machine (30 s ran out there).
    wait_for(lambda: len(trail()) == 2, timeout=90, what="the invoice's two events in the audit trail")
    first, second = trail()
    assert (first["action"], second["action"]) == ("issued", "cancelled")
    assert first["event_type"] == "ledgerflow.invoice.issued" and first["source"] == "event"
    assert first["actor"].startswith("api_key:") and first["ip_address"] == "testclient"
    assert first["user_agent"] == AGENT
    assert first["changes"]["number"] == {"old": None, "new": "INV-A1"}
    assert "reason" in second["changes"] and second["changes"]["reason"]["old"] is None
    assert "number" not in second["changes"]  # unchanged fields are not repeated
    assert client.get("/v1/audit-logs", params={"entity_id": invoice_id}, headers=other).json()["items"] == []

    # Rebuilt from the topics, and from the event store: the same rows, the same changes.
    before = trail()
    assert rebuild(settings, "audit_trail", workers=1).rows >= 2
    assert trail() == before
    assert rebuild(settings, "audit_trail", from_event_store=True).rows >= 2
    assert trail() == before

    # The relay's messages for these events: no IP, no user agent, anywhere in headers or value.
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"test-audit-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([f"{settings.topic_prefix}ledger.invoice.v1"])
    messages: list[Any] = []

    def poll() -> bool:
        msg = consumer.poll(0.2)
        if msg is not None and msg.error() is None and msg.key() == invoice_id.encode():
            messages.append(msg)
        return len(messages) >= 2

    try:
        wait_for(poll, interval=0, what="the invoice's two messages")
    finally:
        consumer.close()
    for msg in messages:
        raw = (msg.value() or b"") + b"".join(k.encode() + (v or b"") for k, v in msg.headers() or [])
        assert b"testclient" not in raw and b"AuditTest" not in raw and "नमस्ते".encode() not in raw


def test_a_trail_made_before_its_documents_became_text_is_converted_and_remembers_each_entity(
    settings: Settings,
) -> None:
    from engine import db

    db.ensure_schema(settings)
    tenant, entity = uuid.uuid4(), str(uuid.uuid4())
    with connect(settings) as conn:
        # The table as earlier versions made it (changes and state_after jsonb), with one row of an entity.
        conn.execute(
            "ALTER TABLE audit_trail ALTER COLUMN state_after TYPE jsonb USING '{}'::jsonb,"
            " ALTER COLUMN changes TYPE jsonb USING changes::jsonb"
        )
        conn.execute(
            "INSERT INTO audit_trail (event_id, tenant_id, occurred_at, topic, kafka_partition,"
            " kafka_offset, event_type, action, entity_type, entity_id, changes, state_after)"
            " VALUES (%s, %s, now(), 'ledger.invoice.v1', 0, 7, 'ledgerflow.invoice.issued', 'issued',"
            " 'invoice', %s, '{}', %s)",
            (uuid.uuid4(), tenant, entity, json.dumps({"status": "issued", "number": "INV-\u0928 1"})),
        )
        conn.execute("DELETE FROM schema_migrations")  # this code's migrations have not run here yet
    db.ensure_schema(settings)

    cancelled = entity_event(tenant, entity, 8, "ledgerflow.invoice.cancelled", status="cancelled")
    with connect(settings, autocommit=False) as conn:
        AuditTrail().apply(conn, [cancelled])
        conn.commit()
        changes, state = conn.execute(
            "SELECT changes, state_after FROM audit_trail WHERE event_id = %s", (cancelled.ce_id,)
        ).fetchone()  # type: ignore[misc]
    assert json.loads(changes) == {"status": {"old": "issued", "new": "cancelled"}}
    assert json.loads(bytes(state)) == {"status": "cancelled", "number": "INV-\u0928 1"}


def test_a_trail_with_jsonb_changes_is_converted_and_answers_the_api_as_before(settings: Settings) -> None:
    """The table as the previous version made it: changes jsonb, an entity's first row with an
    empty state_after (its state in its changes). After the migration the API shows the same
    documents, key order included, and the entity's next event is compared with that state."""
    from engine import db
    from projections import audit_trail

    db.ensure_schema(settings)
    tenant, entity, first_id = uuid.uuid4(), str(uuid.uuid4()), uuid.uuid4()
    # Keys in an order jsonb does not keep (it sorts them, shorter first): the API's answer is jsonb's.
    first = {"number": {"old": None, "new": "INV-\u0928 2"}, "total": {"old": None, "new": "10.00"}}
    with connect(settings) as conn:
        conn.execute("ALTER TABLE audit_trail ALTER COLUMN changes TYPE jsonb USING changes::jsonb")
        conn.execute(
            "INSERT INTO audit_trail (event_id, tenant_id, occurred_at, topic, kafka_partition,"
            " kafka_offset, event_type, action, entity_type, entity_id, changes, state_after)"
            " VALUES (%s, %s, now(), 'ledger.invoice.v1', 0, 3, 'ledgerflow.invoice.issued', 'issued',"
            " 'invoice', %s, %s, ''::bytea)",
            (first_id, tenant, entity, json.dumps(first)),
        )
        # What the API answered then: the jsonb column as read (psycopg keeps jsonb's key order).
        before = conn.execute("SELECT changes FROM audit_trail WHERE event_id = %s", (first_id,)).fetchone()
        conn.execute("DELETE FROM schema_migrations")  # this code's migrations have not run here yet
    db.ensure_schema(settings)

    paid = entity_event(tenant, entity, 4, "ledgerflow.invoice.changed", total="12.50", number="INV-\u0928 2")
    with connect(settings, autocommit=False) as conn:
        kind = conn.execute(
            "SELECT atttypid::regtype::text FROM pg_attribute"
            " WHERE attrelid = 'audit_trail'::regclass AND attname = 'changes'"
        ).fetchone()
        assert kind == ("text",)
        AuditTrail().apply(conn, [paid])
        conn.commit()
        after = audit_trail.find(conn, tenant, first_id)
        rows, _ = audit_trail.search(conn, tenant, audit_trail.Filters(entity_id=entity), None, 10)
    assert before is not None and after is not None
    assert json.dumps(after["changes"]) == json.dumps(before[0])
    assert list(after["changes"]) == ["total", "number"]  # jsonb's order: shorter keys first
    assert [r["changes"] for r in rows] == [before[0], {"total": {"old": "10.00", "new": "12.50"}}]


def test_a_nul_in_an_event_is_refused_when_applied_as_before_not_when_the_api_reads_it(
    settings: Settings,
) -> None:
    """jsonb cannot hold \\u0000: the row is refused when written, as when changes was jsonb, and
    nothing of the batch is stored (the API could not show it)."""
    from engine import db

    db.ensure_schema(settings)
    tenant, entity = uuid.uuid4(), str(uuid.uuid4())
    event = entity_event(tenant, entity, 1, "ledgerflow.invoice.issued", number="INV\x001")
    with connect(settings, autocommit=False) as conn:
        with pytest.raises(psycopg.errors.UntranslatableCharacter):
            AuditTrail().apply(conn, [event])
        conn.rollback()
        stored = conn.execute("SELECT count(*) FROM audit_trail WHERE entity_id = %s", (entity,)).fetchone()
    assert stored == (0,)


def test_a_page_parses_only_its_own_rows_changes(settings: Settings) -> None:
    """changes is text, made jsonb for the page: a row beyond the page is not parsed (a cast below
    the page's sort parsed the tenant's whole trail for every page: 329 against 24 ms of backend
    CPU a page of 100 at 50,000 rows). A document jsonb refuses, planted after the first page, shows
    it (the projection never writes one)."""
    from datetime import timedelta

    from engine import db
    from projections import audit_trail

    db.ensure_schema(settings)
    tenant, entity = uuid.uuid4(), str(uuid.uuid4())
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with connect(settings) as conn:
        issued = '{"status": {"old": null, "new": "issued"}}'
        # A page of one reads two rows (the second tells whether there is a next page).
        for offset, document in enumerate([issued, issued, "{not json"]):
            conn.execute(
                "INSERT INTO audit_trail (event_id, tenant_id, occurred_at, topic, kafka_partition,"
                " kafka_offset, event_type, action, entity_type, entity_id, changes, state_after)"
                " VALUES (%s, %s, %s, 'ledger.invoice.v1', 0, %s, 'ledgerflow.invoice.issued', 'issued',"
                " 'invoice', %s, %s, ''::bytea)",
                (uuid.uuid4(), tenant, start + timedelta(minutes=offset), offset, entity, document),
            )
        rows, cursor = audit_trail.search(conn, tenant, audit_trail.Filters(), None, 1)
        assert [r["changes"] for r in rows] == [{"status": {"old": None, "new": "issued"}}]
        assert cursor is not None
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):  # the planted row, on its page
            audit_trail.search(conn, tenant, audit_trail.Filters(), cursor, 1)


def test_a_batch_written_in_several_statements_keeps_each_entitys_changes_in_order(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine import db
    from projections import audit_trail

    monkeypatch.setattr(audit_trail, "ROWS_PER_STATEMENT", 2)
    db.ensure_schema(settings)
    tenant, entity = uuid.uuid4(), str(uuid.uuid4())
    statuses = ["issued", "sent", "paid", "paid", "refunded"]
    events = [
        entity_event(tenant, entity, offset, "ledgerflow.invoice.changed", status=status, n=offset)
        for offset, status in enumerate(statuses)
    ]
    with connect(settings, autocommit=False) as conn:
        AuditTrail().apply(conn, events)
        conn.commit()
        rows = conn.execute("SELECT changes::jsonb FROM audit_trail ORDER BY kafka_offset").fetchall()
    assert [r[0] for r in rows] == [
        {"status": {"old": None, "new": "issued"}, "n": {"old": None, "new": 0}},
        {"status": {"old": "issued", "new": "sent"}, "n": {"old": 0, "new": 1}},
        {"status": {"old": "sent", "new": "paid"}, "n": {"old": 1, "new": 2}},
        {"n": {"old": 2, "new": 3}},
        {"status": {"old": "paid", "new": "refunded"}, "n": {"old": 3, "new": 4}},
    ]


def test_an_entitys_first_event_is_stored_once_and_later_batches_see_its_state(settings: Settings) -> None:
    """The first event's state is kept only in its changes (half the table's bytes on an issued
    invoice); events applied in later batches, or in the same one, get the same rows either way."""
    from engine import db

    db.ensure_schema(settings)
    tenant = uuid.uuid4()

    def history(entity: str) -> list[ProjectedEvent]:
        fields: list[dict[str, Any]] = [
            {"status": "issued", "number": "INV-\u0928 1 \U0001f600", "note": None, "total": "10.00"},
            {"status": "paid", "note": "by UPI"},
            {"status": "paid", "note": None, "total": "12.50"},
        ]
        return [
            entity_event(tenant, entity, offset, "ledgerflow.invoice.changed", **values)
            for offset, values in enumerate(fields)
        ]

    apart, together = str(uuid.uuid4()), str(uuid.uuid4())
    with connect(settings, autocommit=False) as conn:
        for event in history(apart):
            AuditTrail().apply(conn, [event])
            conn.commit()
        AuditTrail().apply(conn, history(together))
        conn.commit()
        rows = {
            entity: conn.execute(
                "SELECT changes::jsonb, state_after FROM audit_trail WHERE entity_id = %s"
                " ORDER BY kafka_offset",
                (entity,),
            ).fetchall()
            for entity in (apart, together)
        }
    # The same documents (state_after's key order may differ: it is this projection's memory,
    # read back as a dict, never shown).
    assert [(c, json.loads(bytes(s) or b"null")) for c, s in rows[apart]] == [
        (c, json.loads(bytes(s) or b"null")) for c, s in rows[together]
    ]
    (first_changes, first_state), second, third = rows[apart]
    assert bytes(first_state) == b""
    assert first_changes == {
        "status": {"old": None, "new": "issued"},
        "number": {"old": None, "new": "INV-\u0928 1 \U0001f600"},
        "total": {"old": None, "new": "10.00"},
    }
    assert second[0] == {"status": {"old": "issued", "new": "paid"}, "note": {"old": None, "new": "by UPI"}}
    assert third[0] == {"note": {"old": "by UPI", "new": None}, "total": {"old": "10.00", "new": "12.50"}}
    assert json.loads(bytes(third[1]))["number"] == "INV-\u0928 1 \U0001f600"


def test_a_batch_applied_again_adds_nothing_and_each_row_keeps_who_did_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows go straight in with COPY when none is there yet; a redelivered batch (all or some of its
    events stored already) takes the INSERT's ON CONFLICT instead: every event once, with its actor
    from the audit store (or none) either way."""
    from engine import db
    from projections import audit_trail

    db.ensure_schema(settings)
    tenant = uuid.uuid4()
    events = [
        entity_event(
            tenant,
            str(uuid.uuid4()),
            offset,
            "ledgerflow.invoice.issued",
            number=f"INV-{offset}",
            total="1.50",
        )
        for offset in range(5)
    ]
    user = uuid.uuid4()
    with connect(settings) as conn:
        for index, event in enumerate(events[:3]):  # events 3 and 4 have no actor row
            conn.execute(
                "INSERT INTO event_actors (events_table, originator_id, originator_version, event_id, actor,"
                " role, user_id, client_ip, user_agent, request_id)"
                " VALUES ('ledger_events', %s, 1, %s, %s, 'accountant', %s, '203.0.113.7', %s, %s)",
                (uuid.uuid4(), event.ce_id, f"key:{index}", user, AGENT, f"req-{index}"),
            )
    straight: list[bool] = []  # what each COPY straight in answered
    original = audit_trail.copy_straight_in

    def copy_straight_in(*args: Any) -> bool:
        straight.append(original(*args))
        return straight[-1]

    monkeypatch.setattr(audit_trail, "copy_straight_in", copy_straight_in)

    def trail() -> list[tuple[Any, ...]]:
        with connect(settings) as conn:
            return conn.execute(
                "SELECT event_id::text, changes::jsonb, actor, role, user_id, client_ip, user_agent,"
                " request_id FROM audit_trail WHERE tenant_id = %s ORDER BY kafka_offset",
                (tenant,),
            ).fetchall()

    with connect(settings, autocommit=False) as conn:
        AuditTrail().apply(conn, [events[0], events[3]])  # new: straight in, one with no actor
        conn.commit()
        first = trail()
        AuditTrail().apply(conn, [events[0], events[3]])  # redelivered whole
        conn.commit()
        AuditTrail().apply(conn, events)  # two stored already, three new
        conn.commit()
    assert straight == [True, False, False]
    nobody = (None,) * 6
    assert [r[2:] for r in first] == [("key:0", "accountant", user, "203.0.113.7", AGENT, "req-0"), nobody]
    rows = trail()
    assert [r[0] for r in rows] == [e.ce_id for e in events]
    assert [r[2:] for r in rows] == [
        (f"key:{i}", "accountant", user, "203.0.113.7", AGENT, f"req-{i}") for i in range(3)
    ] + [nobody, nobody]
    assert rows[0] == first[0] and rows[3] == first[1]  # the redeliveries changed neither
    assert rows[1][1] == {"number": {"old": None, "new": "INV-1"}, "total": {"old": None, "new": "1.50"}}


def test_the_same_new_batch_applied_by_two_connections_at_once_is_stored_once(settings: Settings) -> None:
    """Two projector processes briefly owning the same partition (a rebalance) apply the same new
    events concurrently: the second COPY waits on the first's unique index entries, fails when it
    commits, and its batch takes the INSERT's ON CONFLICT: each event once, no error."""
    import threading

    from engine import db

    db.ensure_schema(settings)
    tenant = uuid.uuid4()
    events = [
        entity_event(
            tenant, str(uuid.uuid4()), offset, "ledgerflow.invoice.issued", number=f"INV-\u0928{offset}"
        )
        for offset in range(50)
    ]
    start = threading.Barrier(2)

    def apply() -> None:
        with connect(settings, autocommit=False) as conn:
            start.wait()
            AuditTrail().apply(conn, events)
            conn.commit()

    with ThreadPoolExecutor(max_workers=2) as pool:
        for done in [pool.submit(apply) for _ in range(2)]:
            done.result(timeout=60)
    with connect(settings) as conn:
        stored = conn.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM audit_trail WHERE tenant_id = %s", (tenant,)
        ).fetchone()
    assert stored == (50, 50)
