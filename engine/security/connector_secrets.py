"""Secrets a connector obtains at run time, sealed per (tenant, provider, scope).

A connector's credentials are what a tenant types in (``engine/integrations.py``); some providers
hand out more secrets once connected: a device's communication key, an OAuth access or refresh
token. Those are kept here, not in a table each connector invents: sealed with the key ring
(AES-GCM, ``engine/security/secrets.py``) and bound to the tenant, the provider and the scope
(e.g. ``device:branch-01``, ``oauth:refresh``), so a sealed value copied to another row does not
open. ``ledgerflow keys rotate`` re-encrypts the column (``engine/security/rotation.py``).

A value past its ``expires_at`` reads as absent: the connector fetches a new one.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from uuid import UUID

import psycopg

from engine.security.secrets import KeyRing

_SCOPE = re.compile(r"^[A-Za-z0-9._:/-]{1,200}$")


def associated_data(tenant_id: UUID | str, provider: str, scope: str) -> bytes:
    """What a runtime secret is bound to when sealed (also used by re-encryption)."""
    return f"connector-secret/{tenant_id}/{provider}/{scope}".encode()


def _check_scope(scope: str) -> None:
    if not _SCOPE.match(scope):
        raise ValueError(f"scope {scope!r}: 1-200 characters from A-Z a-z 0-9 . _ : / -")


def put(
    conn: psycopg.Connection,
    ring: KeyRing,
    tenant_id: UUID,
    provider: str,
    scope: str,
    value: bytes,
    *,
    expires_at: datetime | None = None,
) -> None:
    """Store (or replace) the secret; commits with the caller's transaction."""
    _check_scope(scope)
    sealed = ring.seal(value, associated_data(tenant_id, provider, scope))
    conn.execute(
        """INSERT INTO connector_secrets (tenant_id, provider, scope, secret_sealed, expires_at)
           VALUES (%s, %s, %s, %s, %s)
           ON CONFLICT (tenant_id, provider, scope) DO UPDATE
              SET secret_sealed = EXCLUDED.secret_sealed, expires_at = EXCLUDED.expires_at,
                  updated_at = now()""",
        (tenant_id, provider, scope, sealed, expires_at),
    )


def get(
    conn: psycopg.Connection,
    ring: KeyRing,
    tenant_id: UUID,
    provider: str,
    scope: str,
    *,
    now: datetime | None = None,
) -> bytes | None:
    """The secret, opened; None when there is none or it has expired."""
    _check_scope(scope)
    row = conn.execute(
        "SELECT secret_sealed, expires_at FROM connector_secrets"
        " WHERE tenant_id = %s AND provider = %s AND scope = %s",
        (tenant_id, provider, scope),
    ).fetchone()
    if row is None:
        return None
    sealed, expires_at = (row["secret_sealed"], row["expires_at"]) if isinstance(row, dict) else row
    if expires_at is not None and expires_at <= (now or datetime.now(UTC)):
        return None
    return ring.open(str(sealed), associated_data(tenant_id, provider, scope))


def delete(conn: psycopg.Connection, tenant_id: UUID, provider: str, scope: str) -> bool:
    """Forget the secret (e.g. the provider revoked it); True if there was one."""
    deleted = conn.execute(
        "DELETE FROM connector_secrets WHERE tenant_id = %s AND provider = %s AND scope = %s",
        (tenant_id, provider, scope),
    )
    return deleted.rowcount > 0
