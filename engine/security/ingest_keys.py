"""Per-tenant ingest signing keys: who may publish commands for a tenant on ``ingest.invoice.v1``.

Anyone who can write to the ingest topic could otherwise name any tenant in ``ce_source``. A
producer signs each message with a key of its tenant: header ``ledgerflow-key-id`` names the key,
``ledgerflow-signature`` carries ``v1=<hex HMAC-SHA256>`` over ``ce_id`` bytes, ``"."`` and the
message value bytes (docs/topics.md). The key names its tenant, so a key of tenant A cannot sign
for ``ce_source`` tenant B, and the signature covers the body, so a captured message cannot be
altered; replaying it unchanged is stopped by the ``ce_id`` dedupe.

The ingest agent must compute the HMAC, so the secret cannot be stored only as a hash (unlike API
keys): it is sealed with the key ring (AES-GCM, ``engine/security/secrets.py``), bound to its
tenant and key id, and never stored, published or logged in the clear. It is shown once, when
created. A tenant holds at most two active keys: one in use and its successor during a rotation.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from engine.errors import Conflict
from engine.security.secrets import KeyRing

KEY_ID_HEADER = "ledgerflow-key-id"
SIGNATURE_HEADER = "ledgerflow-signature"
SIGNATURE_SCHEME = "v1"
MAX_ACTIVE_KEYS = 2
MAX_KEY_ID_LENGTH = 64  # ours are 19 characters; longer ids are not looked up
SECRET_PREFIX = "lfis_"
# A revocation reaches a running agent within this many seconds (the agent's cache of unsealed keys).
DEFAULT_CACHE_SECONDS = 30.0
# last_used_at is written at most this often per key: one UPDATE per message would double the
# agent's database writes for a figure operators read in minutes.
USE_RECORD_SECONDS = 60.0


# -- signatures (pure) --------------------------------------------------------------------------


def signature(secret: str, ce_id: str, value: bytes) -> str:
    """The ``ledgerflow-signature`` header value for a message: ``v1=`` and the lower-case hex
    HMAC-SHA256, keyed with the secret's ASCII bytes exactly as shown, over ``ce_id`` + "." + value."""
    mac = hmac.new(secret.encode(), ce_id.encode() + b"." + value, hashlib.sha256)
    return f"{SIGNATURE_SCHEME}={mac.hexdigest()}"


def signature_matches(secret: str, ce_id: str, value: bytes, presented: str) -> bool:
    """Whether a presented header value is the message's signature (constant-time comparison)."""
    expected = signature(secret, ce_id, value)
    return hmac.compare_digest(expected.encode(), presented.strip().lower().encode())


# -- keys and their storage ---------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedIngestKey:
    key_id: str
    secret: str  # shown to the tenant exactly once
    created_at: datetime


@dataclass(frozen=True)
class StoredIngestKey:
    """A key as the ingest agent needs it: its tenant, whether it is revoked, its sealed secret."""

    key_id: str
    tenant_id: UUID
    secret_sealed: str
    revoked_at: datetime | None


@dataclass(frozen=True)
class SigningKey:
    """An active key with its secret opened: what a signature is checked against."""

    key_id: str
    tenant_id: UUID
    secret: str


class TooManyActiveKeys(Conflict):
    def __init__(self, tenant_id: UUID, active: list[str]) -> None:
        super().__init__(
            f"tenant {tenant_id} already has {len(active)} active ingest keys ({', '.join(active)}); "
            f"at most {MAX_ACTIVE_KEYS} may be active at once: revoke one before creating another"
        )
        self.active = active


def associated_data(tenant_id: UUID, key_id: str) -> bytes:
    """What an ingest secret is sealed to (also used by re-encryption, engine/security/rotation.py)."""
    # Binds the sealed secret to its row: copied to another tenant's or key's row it does not open.
    return f"ingest-key/{tenant_id}/{key_id}".encode()


def new_key_id() -> str:
    return f"ik_{secrets.token_hex(8)}"


def new_secret() -> str:
    return f"{SECRET_PREFIX}{secrets.token_hex(32)}"


def create(conn: psycopg.Connection, ring: KeyRing, tenant_id: UUID) -> IssuedIngestKey:
    """A new active key for the tenant; TooManyActiveKeys when two are active already. Call inside
    a transaction: the tenant's keys are locked so that two concurrent requests cannot both pass."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"ingest-keys/{tenant_id}",))
    active = [
        _field(r, "key_id", 0)
        for r in conn.execute(
            "SELECT key_id FROM ingest_keys WHERE tenant_id = %s AND revoked_at IS NULL ORDER BY created_at",
            (tenant_id,),
        ).fetchall()
    ]
    if len(active) >= MAX_ACTIVE_KEYS:
        raise TooManyActiveKeys(tenant_id, active)
    key_id, secret = new_key_id(), new_secret()
    row = conn.execute(
        "INSERT INTO ingest_keys (key_id, tenant_id, secret_sealed) VALUES (%s, %s, %s) RETURNING created_at",
        (key_id, tenant_id, seal_secret(ring, tenant_id, key_id, secret)),
    ).fetchone()
    assert row is not None
    return IssuedIngestKey(key_id, secret, _field(row, "created_at", 0))


def views(conn: psycopg.Connection, tenant_id: UUID) -> list[dict[str, Any]]:
    """The tenant's keys as the API shows them, oldest first: never the secret."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT key_id, created_at, revoked_at, last_used_at FROM ingest_keys"
            " WHERE tenant_id = %s ORDER BY created_at, key_id",
            (tenant_id,),
        ).fetchall()
    return [view(r) for r in rows]


def view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "key_id": row["key_id"],
        "active": row["revoked_at"] is None,
        "created_at": row["created_at"],
        "revoked_at": row["revoked_at"],
        "last_used_at": row["last_used_at"],
    }


def revoke(conn: psycopg.Connection, tenant_id: UUID, key_id: str) -> dict[str, Any] | None:
    """Revoke one of the tenant's keys (again is harmless); None when the tenant has no such key."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "UPDATE ingest_keys SET revoked_at = coalesce(revoked_at, now())"
            " WHERE tenant_id = %s AND key_id = %s RETURNING key_id, created_at, revoked_at, last_used_at",
            (tenant_id, key_id),
        ).fetchone()
    return view(row) if row is not None else None


def find(conn: psycopg.Connection, key_id: str) -> StoredIngestKey | None:
    row = conn.execute(
        "SELECT tenant_id, secret_sealed, revoked_at FROM ingest_keys WHERE key_id = %s", (key_id,)
    ).fetchone()
    if row is None:
        return None
    return StoredIngestKey(
        key_id,
        UUID(str(_field(row, "tenant_id", 0))),
        _field(row, "secret_sealed", 1),
        _field(row, "revoked_at", 2),
    )


def record_use(conn: psycopg.Connection, key_id: str) -> None:
    conn.execute("UPDATE ingest_keys SET last_used_at = now() WHERE key_id = %s", (key_id,))


def seal_secret(ring: KeyRing, tenant_id: UUID, key_id: str, secret: str) -> str:
    return ring.seal(secret.encode(), associated_data(tenant_id, key_id))


def open_secret(ring: KeyRing, stored: StoredIngestKey) -> str:
    return ring.open(stored.secret_sealed, associated_data(stored.tenant_id, stored.key_id)).decode()


def _field(row: Any, name: str, index: int) -> Any:
    return row[name] if isinstance(row, dict) else row[index]


# -- the agent's view of the keys ---------------------------------------------------------------


class SigningKeys:
    """Active keys by key id for the ingest agent, each unsealed once and kept ``ttl`` seconds.

    Verifying a message must stay cheap: without the cache every message would cost a database
    read and an AES-GCM open. The price is that a revocation (or a new key) reaches the agent
    within ``ttl`` seconds (docs/topics.md). Unknown key ids are remembered too, so a flood of
    made-up ids cannot turn into a flood of queries.
    """

    MAX_ENTRIES = 10_000

    def __init__(
        self,
        find_key: Callable[[str], StoredIngestKey | None],
        record_use: Callable[[str], None],
        ring: KeyRing,
        *,
        ttl: float = DEFAULT_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._find = find_key
        self._record_use = record_use
        self._ring = ring
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[str, tuple[SigningKey | None, float]] = {}
        self._use_recorded: dict[str, float] = {}
        self._lock = threading.Lock()  # the agent applies messages in worker threads

    def active(self, key_id: str) -> SigningKey | None:
        """The active key with this id, or None for an unknown or revoked one."""
        now = self._clock()
        with self._lock:
            cached = self._entries.get(key_id)
        if cached is not None and cached[1] > now:
            return cached[0]
        stored = self._find(key_id)
        key = None
        if stored is not None and stored.revoked_at is None:
            key = SigningKey(stored.key_id, stored.tenant_id, open_secret(self._ring, stored))
        with self._lock:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            self._entries[key_id] = (key, now + self._ttl)
        return key

    def used(self, key_id: str) -> None:
        """Note that a message signed with this key was accepted (written at most once a minute)."""
        now = self._clock()
        with self._lock:
            last = self._use_recorded.get(key_id)
            if last is not None and now - last < USE_RECORD_SECONDS:
                return
            if len(self._use_recorded) >= self.MAX_ENTRIES:
                self._use_recorded.clear()
            self._use_recorded[key_id] = now
        self._record_use(key_id)
