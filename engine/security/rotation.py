"""Key ring rotation: add a key, re-encrypt every sealed value under it, retire old keys.

Every column holding values sealed with the key ring is declared once in ``SEALED_COLUMNS``, with
the associated data its owner seals with; re-encryption, ``keys status`` and ``keys retire`` walk
that list. A module that adds a sealed column adds one line there.

Re-encryption works in batches of rows not yet sealed with the active key, each batch in its own
transaction, and writes a row only if its sealed value is still the one it read (a concurrent
save wins and is already sealed with the active key). Interrupted, it resumes where it stopped:
the rows left are exactly those still sealed with an older key.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from engine import integrations
from engine.config import Settings
from engine.db import connect
from engine.errors import Conflict
from engine.security import connector_secrets, ingest_keys
from engine.security.secrets import (
    RELOAD_INTERVAL_S,
    KeyRing,
    KeySet,
    SecretError,
    key_ring_file,
    keys_from_environment,
    load_key_ring,
    new_key_spec,
    write_key_ring_file,
)


@dataclass(frozen=True)
class SealedColumn:
    """A column of sealed values; ``associated_data`` rebuilds, from the row, what it was bound to."""

    table: str
    column: str
    row_key: tuple[str, ...]
    associated_data: Callable[[dict[str, Any]], bytes]

    @property
    def name(self) -> str:
        return f"{self.table}.{self.column}"


# Every value sealed with the key ring, wherever it is stored. Add yours here.
SEALED_COLUMNS: list[SealedColumn] = [
    SealedColumn(
        "integrations",
        "credentials_sealed",
        ("tenant_id", "provider"),
        lambda row: integrations.associated_data(row["tenant_id"], row["provider"]),
    ),
    SealedColumn(
        "ingest_keys",
        "secret_sealed",
        ("tenant_id", "key_id"),
        lambda row: ingest_keys.associated_data(row["tenant_id"], row["key_id"]),
    ),
    SealedColumn(
        "connector_secrets",
        "secret_sealed",
        ("tenant_id", "provider", "scope"),
        lambda row: connector_secrets.associated_data(row["tenant_id"], row["provider"], row["scope"]),
    ),
]

KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RotationError(Conflict):
    """A rotation step refused: the ring comes from the environment, a key is unknown or in use."""


@dataclass(frozen=True)
class KeyUse:
    key_id: str
    active: bool
    in_ring: bool
    sealed: dict[str, int]  # column name -> rows sealed with this key

    @property
    def total(self) -> int:
        return sum(self.sealed.values())


def _ring_path(settings: Settings) -> Path:
    if keys_from_environment():
        raise RotationError(
            "the key ring comes from LEDGERFLOW_SECRET_KEYS, which a command cannot change: put the new"
            " key first in it (ledgerflow keys new prints one), restart, then run"
            " `ledgerflow keys reencrypt` (docs/runbooks/keys.md)"
        )
    return key_ring_file(settings.var_dir)


@contextlib.contextmanager
def _ring_file_lock(path: Path) -> Iterator[None]:
    """One key ring change at a time on this machine (two rotations would lose a key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def add_key(settings: Settings, key_id: str | None = None) -> str:
    """Put a new key first in the ring file (it seals from now on); the old keys stay to open."""
    path = _ring_path(settings)
    load_key_ring(settings.var_dir)  # creates the local ring on first use
    kid = key_id or "k" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    if not KEY_ID.match(kid):
        raise RotationError(f"key id {kid!r} must be 1-64 letters, digits, '.', '_' or '-'")
    with _ring_file_lock(path):
        current = KeySet.parse(path.read_text())
        if kid in current.keys:
            raise RotationError(f"key id {kid!r} is already in the key ring")
        fresh = KeySet.parse(new_key_spec(kid))
        write_key_ring_file(path, KeySet({**fresh.keys, **current.keys}, kid))
    return kid


def reencrypt(
    settings: Settings,
    ring: KeyRing,
    *,
    batch_size: int = 200,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, int]:
    """Seal every value not sealed with the active key again with it; returns rows done per column."""
    done: dict[str, int] = {}
    with connect(settings, autocommit=True) as conn:
        for column in SEALED_COLUMNS:
            if not _exists(conn, column):
                continue
            remaining = _count_not_active(conn, column, ring.active)
            total, count = remaining, 0
            while True:
                moved = _reencrypt_batch(conn, column, ring, batch_size)
                if moved == 0:
                    break
                count += moved
                if progress:
                    progress(column.name, count, max(total, count))
            done[column.name] = count
    return done


def _reencrypt_batch(conn: psycopg.Connection, column: SealedColumn, ring: KeyRing, limit: int) -> int:
    active = ring.active
    keys = sql.SQL(", ").join(sql.Identifier(k) for k in column.row_key)
    with conn.transaction():
        rows = _rows(
            conn,
            sql.SQL(
                "SELECT {keys}, {col} AS sealed FROM {table} WHERE {col} IS NOT NULL"
                " AND split_part({col}, ':', 1) <> %s ORDER BY {keys} LIMIT %s FOR UPDATE SKIP LOCKED"
            ).format(keys=keys, col=sql.Identifier(column.column), table=sql.Identifier(column.table)),
            (active, limit),
        )
        for row in rows:
            aad = column.associated_data(row)
            try:
                plaintext = ring.open(row["sealed"], aad)
            except SecretError as exc:
                owner = ", ".join(f"{k}={row[k]}" for k in column.row_key)
                raise SecretError(f"{column.name} ({owner}): {exc}") from exc
            resealed = ring.seal(plaintext, aad)
            where = sql.SQL(" AND ").join(
                sql.SQL("{} = %s").format(sql.Identifier(k)) for k in column.row_key
            )
            conn.execute(
                sql.SQL("UPDATE {table} SET {col} = %s WHERE {where} AND {col} = %s").format(
                    table=sql.Identifier(column.table), col=sql.Identifier(column.column), where=where
                ),
                (resealed, *(row[k] for k in column.row_key), row["sealed"]),
            )
    return len(rows)


def _rows(
    conn: psycopg.Connection, query: sql.Composed | sql.SQL | str, params: tuple[Any, ...] = ()
) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


def _exists(conn: psycopg.Connection, column: SealedColumn) -> bool:
    return bool(_rows(conn, "SELECT to_regclass(%s) AS found", (column.table,))[0]["found"])


def _count_not_active(conn: psycopg.Connection, column: SealedColumn, active: str) -> int:
    rows = _rows(
        conn,
        sql.SQL(
            "SELECT count(*) AS n FROM {table} WHERE {col} IS NOT NULL AND split_part({col}, ':', 1) <> %s"
        ).format(table=sql.Identifier(column.table), col=sql.Identifier(column.column)),
        (active,),
    )
    return int(rows[0]["n"])


def key_use(settings: Settings, ring: KeyRing) -> list[KeyUse]:
    """Per key id (of the ring, and any still found in the data): which columns seal with it."""
    sealed: dict[str, dict[str, int]] = {kid: {} for kid in ring.keys}
    with connect(settings, autocommit=True) as conn:
        for column in SEALED_COLUMNS:
            if not _exists(conn, column):
                continue
            for row in _rows(
                conn,
                sql.SQL(
                    "SELECT split_part({col}, ':', 1) AS kid, count(*) AS n FROM {table}"
                    " WHERE {col} IS NOT NULL GROUP BY 1 ORDER BY 1"
                ).format(table=sql.Identifier(column.table), col=sql.Identifier(column.column)),
            ):
                sealed.setdefault(row["kid"], {})[column.name] = int(row["n"])
    return [KeyUse(kid, kid == ring.active, kid in ring.keys, counts) for kid, counts in sealed.items()]


def retire(settings: Settings, key_id: str) -> None:
    """Remove a key from the ring file; refused while it is active or anything is sealed with it."""
    path = _ring_path(settings)
    with _ring_file_lock(path):
        ring = KeyRing.from_file(path)
        if key_id not in ring.keys:
            raise RotationError(f"no key {key_id!r} in the key ring (keys: {', '.join(ring.keys)})")
        if key_id == ring.active:
            raise RotationError(f"key {key_id!r} is the active key; rotate first")
        used = next(u for u in key_use(settings, ring) if u.key_id == key_id)
        if used.total:
            where = ", ".join(f"{name}: {n}" for name, n in used.sealed.items())
            raise RotationError(
                f"key {key_id!r} still seals {used.total} value(s) ({where}); run `ledgerflow keys reencrypt`"
            )
        write_key_ring_file(path, KeySet({k: v for k, v in ring.keys.items() if k != key_id}, ring.active))


def rotate(
    settings: Settings,
    *,
    key_id: str | None = None,
    batch_size: int = 200,
    progress: Callable[[str, int, int], None] | None = None,
    settle_seconds: float = RELOAD_INTERVAL_S + 1.0,
) -> tuple[str, dict[str, int]]:
    """Add a key, wait until running processes seal with it, then re-encrypt everything under it."""
    kid = add_key(settings, key_id)
    # Running processes read the ring file again within RELOAD_INTERVAL_S: after that, nothing new
    # is sealed with an old key, so one pass leaves none behind (a second pass catches stragglers).
    time.sleep(settle_seconds)
    ring = KeyRing.from_file(key_ring_file(settings.var_dir))
    done = reencrypt(settings, ring, batch_size=batch_size, progress=progress)
    again = reencrypt(settings, ring, batch_size=batch_size, progress=progress)
    for name, n in again.items():
        done[name] = done.get(name, 0) + n
    return kid, done


__all__ = [
    "SEALED_COLUMNS",
    "KeyUse",
    "RotationError",
    "SealedColumn",
    "SecretError",
    "add_key",
    "key_use",
    "reencrypt",
    "retire",
    "rotate",
]
