"""Projection position bookkeeping: the Kafka offset applied per partition, kept in PostgreSQL.

Written in the same transaction as the projection's rows, so a batch is either applied together
with its position or not at all; after a crash the consumer resumes right after the last applied
offset and a replayed message changes nothing.
"""

from __future__ import annotations

from typing import Any

import psycopg


def positions(conn: psycopg.Connection, projection: str, topic: str) -> dict[int, int]:
    """Last applied offset per partition."""
    rows = conn.execute(
        'SELECT partition, "offset" FROM projection_tracking WHERE projection = %s AND topic = %s',
        (projection, topic),
    ).fetchall()
    return {int(_col(row, 0, "partition")): int(_col(row, 1, "offset")) for row in rows}


def record(conn: psycopg.Connection, projection: str, topic: str, offsets: dict[int, int]) -> None:
    """Store the last applied offset of each partition of a batch (monotonic: never moves back), in
    one statement whatever the number of partitions."""
    if not offsets:
        return
    conn.execute(
        'INSERT INTO projection_tracking (projection, topic, partition, "offset")'
        " SELECT %s, %s, p, o FROM unnest(%s::integer[], %s::bigint[]) AS u (p, o)"
        " ON CONFLICT (projection, topic, partition) DO UPDATE SET"
        ' "offset" = GREATEST(projection_tracking."offset", EXCLUDED."offset"), updated_at = now()',
        (projection, topic, list(offsets), list(offsets.values())),
    )


def _col(row: Any, index: int, name: str) -> Any:
    return row[name] if isinstance(row, dict) else row[index]
