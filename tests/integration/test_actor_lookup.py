"""The audit trail's lookup of who stored each event reads that event's actor row and no other.

The projection joins every batch's events to the engine's audit store (``event_actors``) by event
id. A table just filled (a backlog, a fresh deployment's first burst) has no planner statistics
yet; with an index on ``event_id`` alone PostgreSQL then ANDed it with the primary key's
``events_table`` prefix, which reads every row of the store for each event looked up: 1.8 ms a
row at 50,000 rows, most of the projector's database time in the bench of 2026-12-03.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql

from engine import db
from engine.attribution import ACTORS_TABLE
from engine.config import Settings
from projections.audit_trail import _ACTORS, _INSERT

pytestmark = pytest.mark.integration

STORED = 20_000  # actor rows already in the store
BATCH = 200  # events of the batch being projected


def index_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every index scan of the plan tree."""
    found = [plan] if "Index Name" in plan else []
    for child in plan.get("Plans", []):
        found += index_nodes(child)
    return found


@pytest.mark.parametrize("statement", ["insert", "actors"])
def test_each_event_reads_only_its_own_actor_row_before_any_statistics(
    settings: Settings, statement: str
) -> None:
    """Both ways the projection reads who did it: joined in its INSERT, or looked up before its
    rows are COPYed straight in."""
    db.ensure_schema(settings)
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        # No ANALYZE, and none behind the test's back: the planner sees a table without statistics.
        conn.execute("ALTER TABLE event_actors SET (autovacuum_enabled = false)")
        conn.execute(
            "INSERT INTO event_actors (events_table, originator_id, originator_version, event_id, actor)"
            " SELECT 'ledger_events', gen_random_uuid(), 1, gen_random_uuid(), 'api-key:test'"
            " FROM generate_series(1, %s)",
            (STORED,),
        )
        ids = [row[0] for row in conn.execute("SELECT event_id FROM event_actors LIMIT %s", (BATCH,))]
        now = datetime.now(UTC)
        columns = (
            ids,
            [uuid.uuid4()] * BATCH,
            [now] * BATCH,
            ["t.ledger.invoice.v1"] * BATCH,
            [0] * BATCH,
            list(range(BATCH)),
            ["ledger.invoice.issued"] * BATCH,
            ["issued"] * BATCH,
            ["invoice"] * BATCH,
            [str(uuid.uuid4()) for _ in range(BATCH)],
            ['{"number": {"old": null, "new": "INV-1"}}'] * BATCH,
            [b""] * BATCH,
            [False] * BATCH,  # escaped: the document has no \u escape (projections/audit_trail.py)
        )
        query = _INSERT if statement == "insert" else _ACTORS
        explain = sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) ") + sql.SQL(query).format(
            t=sql.Identifier("audit_trail"), actors=sql.Identifier(ACTORS_TABLE)
        )
        ((plans,),) = conn.execute(explain, columns if statement == "insert" else (ids,)).fetchall()
        conn.rollback()
        written = conn.execute("SELECT count(*) FROM audit_trail").fetchone()
    on_actors = [n for n in index_nodes(plans[0]["Plan"]) if n["Index Name"].startswith("event_actors")]
    assert on_actors, "the actor rows were not looked up through an index"
    for node in on_actors:
        # At most the event's own row per lookup (loops: one per event of the batch).
        assert node["Actual Rows"] <= 1, (node["Index Name"], node["Actual Rows"], node["Actual Loops"])
    assert written == (0,)
