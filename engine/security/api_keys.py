"""Per-tenant API keys: shown once, stored hashed, rotatable with an overlap.

A key reads ``lf_<key id>_<secret>``. The key id is public and indexes the row; the secret is 32
random bytes, stored only as its SHA-256. A slow password hash is not needed at that entropy, and
lookup by key id keeps authentication to one primary-key read.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

KEY_PREFIX = "lf"


@dataclass(frozen=True)
class IssuedKey:
    key_id: str
    api_key: str  # the full key, to be shown to the user exactly once


def new_key() -> tuple[IssuedKey, bytes]:
    """A fresh key and the hash to store for it."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return IssuedKey(key_id, f"{KEY_PREFIX}_{key_id}_{secret}"), _hash(secret)


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def parse(api_key: str) -> tuple[str, str] | None:
    """Split a presented key into (key id, secret), or None when it is not shaped like one of ours."""
    parts = api_key.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def store(
    conn: psycopg.Connection,
    tenant_id: UUID,
    key_id: str,
    secret_hash: bytes,
    name: str = "default",
    user_id: UUID | None = None,
) -> None:
    conn.execute(
        "INSERT INTO api_keys (key_id, tenant_id, secret_hash, name, user_id) VALUES (%s, %s, %s, %s, %s)",
        (key_id, tenant_id, secret_hash, name, user_id),
    )


_VIEW_COLUMNS = "key_id, name, created_at, expires_at, revoked_at, last_used_at, user_id"


def views(conn: psycopg.Connection, tenant_id: UUID, now: datetime) -> list[dict[str, Any]]:
    """The tenant's keys that still work (including ones in a rotation grace period), oldest first:
    never a secret or its hash."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"SELECT {_VIEW_COLUMNS} FROM api_keys WHERE tenant_id = %s"
            " AND (expires_at IS NULL OR expires_at > %s) ORDER BY created_at, key_id",
            (tenant_id, now),
        ).fetchall()
    return rows


def find(conn: psycopg.Connection, tenant_id: UUID, key_id: str, now: datetime) -> dict[str, Any] | None:
    """One of the tenant's working keys; None for another tenant's, a revoked or an expired key."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT {_VIEW_COLUMNS} FROM api_keys WHERE tenant_id = %s AND key_id = %s"
            " AND (expires_at IS NULL OR expires_at > %s) FOR UPDATE",
            (tenant_id, key_id, now),
        ).fetchone()


def lasting_others(conn: psycopg.Connection, tenant_id: UUID, key_id: str) -> int:
    """How many of the tenant's other keys have no end (neither revoked nor in a grace period)."""
    row = conn.execute(
        "SELECT count(*) FROM api_keys WHERE tenant_id = %s AND key_id <> %s AND expires_at IS NULL",
        (tenant_id, key_id),
    ).fetchone()
    return int(row["count"] if isinstance(row, dict) else row[0]) if row else 0


def expire(conn: psycopg.Connection, key_id: str, at: datetime) -> None:
    """Let one key work until ``at`` (a rotation's grace period), unless it expires sooner."""
    conn.execute(
        "UPDATE api_keys SET expires_at = %s WHERE key_id = %s AND (expires_at IS NULL OR expires_at > %s)",
        (at, key_id, at),
    )


def revoke(conn: psycopg.Connection, key_id: str, at: datetime) -> None:
    """Stop a key at once (authentication caches may accept it for ``AUTH_CACHE_SECONDS`` more)."""
    conn.execute("UPDATE api_keys SET revoked_at = %s, expires_at = %s WHERE key_id = %s", (at, at, key_id))


def expire_others(conn: psycopg.Connection, tenant_id: UUID, keep_key_id: str, at: datetime) -> None:
    """Let every other live key of the tenant expire at ``at`` (the rotation grace period)."""
    conn.execute(
        "UPDATE api_keys SET expires_at = %s WHERE tenant_id = %s AND key_id <> %s"
        " AND (expires_at IS NULL OR expires_at > %s)",
        (at, tenant_id, keep_key_id, at),
    )


@dataclass(frozen=True, slots=True)
class KeyIdentity:
    """Who an accepted key acts as: its tenant, and its user and role when it was issued to a user.

    ``role`` is read from the user's row at authentication (engine/users.sql), so a role change or a
    disabled user takes effect when the authentication cache forgets the key."""

    tenant_id: UUID
    key_id: str
    user_id: UUID | None = None
    role: str | None = None  # None: a key without a user, which acts as the tenant's admin


def authenticate(conn: psycopg.Connection, api_key: str, now: datetime) -> UUID | None:
    """The tenant a key belongs to, or None for an unknown, wrong or expired key."""
    found = identify(conn, api_key, now)
    return found.tenant_id if found is not None else None


def identify(conn: psycopg.Connection, api_key: str, now: datetime) -> KeyIdentity | None:
    """Who a key acts as, or None for an unknown, wrong or expired key, or one whose user is
    disabled or gone. One primary-key read joined to the key's user."""
    parsed = parse(api_key)
    if parsed is None:
        return None
    key_id, secret = parsed
    row = conn.execute(
        "SELECT k.tenant_id, k.secret_hash, k.expires_at, k.last_used_at, k.user_id, u.role, u.disabled"
        " FROM api_keys k LEFT JOIN tenant_users u ON u.user_id = k.user_id AND u.tenant_id = k.tenant_id"
        " WHERE k.key_id = %s",
        (key_id,),
    ).fetchone()
    if row is None:
        return None
    values = tuple(row.values()) if isinstance(row, dict) else tuple(row)
    tenant_id, secret_hash, expires_at, last_used_at, user_id, role, disabled = values
    if not hmac.compare_digest(bytes(secret_hash), _hash(secret)):
        return None
    if expires_at is not None and expires_at <= now:
        return None
    if user_id is not None and (role is None or disabled):
        return None
    if last_used_at is None or last_used_at < now - USE_RECORD_INTERVAL:
        conn.execute("UPDATE api_keys SET last_used_at = %s WHERE key_id = %s", (now, key_id))
    return KeyIdentity(
        tenant_id=UUID(str(tenant_id)),
        key_id=key_id,
        user_id=UUID(str(user_id)) if user_id is not None else None,
        role=str(role) if role is not None else None,
    )


# last_used_at is written at most this often per key: a write per request would double the API's
# database writes for a figure people read in days.
USE_RECORD_INTERVAL = timedelta(minutes=1)


DEFAULT_ROTATION_GRACE = timedelta(hours=24)
