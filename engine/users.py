"""Users of a tenant, their roles, their API keys, and the operator's cross-tenant read grants.

The seed "College Accounts" (file 002) names the roles; ``consolidator`` is the consolidating
("super") accountant of issue 14, who reads several colleges through grants the operator gives.
What each role may do is engine/api/permissions.py.

Like API keys, users are rows (``tenant_users``, engine/users.sql) because authentication reads them
on the hot path; every change is also an event on the Tenant aggregate naming who made it
(``UserAdded``, ``UserChanged``, ``ReadGrantGiven``, ``ReadGrantWithdrawn``), stored in the same
transaction as the row, so the tenant's history is the audit trail of who may do what.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import psycopg
from psycopg.rows import dict_row

from engine import db
from engine.application import IssuedApiKey, LedgerService, ServiceError
from engine.errors import Conflict, NotFound
from engine.security import api_keys

ACCOUNTANT = "accountant"
PRINCIPAL = "principal"
AUDITOR = "auditor"
ADMIN = "admin"
CONSOLIDATOR = "consolidator"
# The seed's four, then the consolidating accountant's cross-tenant reading role.
ROLES = (ACCOUNTANT, PRINCIPAL, AUDITOR, ADMIN, CONSOLIDATOR)

_USER_COLUMNS = "user_id, name, email, role, disabled, created_at, updated_at"


class UserNotFound(ServiceError, NotFound):
    # Another tenant's user answers exactly like a missing one: user ids must not leak.
    code = "not_found"


class DuplicateEmail(ServiceError, Conflict):
    code = "duplicate_email"


class UserDisabled(ServiceError, Conflict):
    code = "user_disabled"


class NotAConsolidator(ServiceError, Conflict):
    code = "not_a_consolidator"


class GrantNotFound(ServiceError, NotFound):
    code = "not_found"


@dataclass(frozen=True, slots=True)
class Grant:
    user_id: UUID
    home_tenant_id: UUID
    tenant_id: UUID
    granted_by: str
    granted_at: datetime


def _view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **row,
        "user_id": UUID(str(row["user_id"])),
        "status": "disabled" if row["disabled"] else "active",
    }


def _find(conn: psycopg.Connection, tenant_id: UUID, user_id: UUID, *, lock: bool = False) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"SELECT {_USER_COLUMNS} FROM tenant_users WHERE tenant_id = %s AND user_id = %s"
            + (" FOR UPDATE" if lock else ""),
            (tenant_id, user_id),
        ).fetchone()
    if row is None:
        raise UserNotFound(f"no user {user_id}")
    return row


class UserDirectory:
    """Commands and queries on users and grants, over the service's pool and event store."""

    def __init__(self, service: LedgerService) -> None:
        self.service = service

    # -- users ------------------------------------------------------------------------------------

    def add(self, tenant_id: UUID, *, name: str, email: str, role: str, changed_by: str) -> dict[str, Any]:
        tenant = self.service.get_tenant(tenant_id)
        user_id = uuid4()
        tenant.add_user(user_id=str(user_id), role=role, changed_by=changed_by)
        with db.transaction(self.service.pool) as conn:
            taken = conn.execute(
                "SELECT 1 FROM tenant_users WHERE tenant_id = %s AND lower(email) = lower(%s)",
                (tenant_id, email),
            ).fetchone()
            if taken is not None:
                raise DuplicateEmail(f"a user with email {email} already exists", {"email": email})
            try:
                conn.execute(
                    "INSERT INTO tenant_users (user_id, tenant_id, name, email, role)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    (user_id, tenant_id, name, email, role),
                )
            except psycopg.errors.UniqueViolation as exc:
                # Two requests with the same email at once: the unique index decides.
                raise DuplicateEmail(f"a user with email {email} already exists", {"email": email}) from exc
            # Inside the row's transaction: a user whose event could not be stored is not kept either.
            self.service._save_tenant(tenant)
        return self.get(tenant_id, user_id)

    def list_users(self, tenant_id: UUID) -> list[dict[str, Any]]:
        with db.transaction(self.service.pool) as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                f"SELECT {_USER_COLUMNS} FROM tenant_users WHERE tenant_id = %s ORDER BY created_at, user_id",
                (tenant_id,),
            ).fetchall()
        return [_view(r) for r in rows]

    def get(self, tenant_id: UUID, user_id: UUID) -> dict[str, Any]:
        with db.transaction(self.service.pool) as conn:
            return _view(_find(conn, tenant_id, user_id))

    def change(
        self,
        tenant_id: UUID,
        user_id: UUID,
        *,
        role: str | None,
        disabled: bool | None,
        changed_by: str,
    ) -> dict[str, Any]:
        """Change a user's role or disable (or enable) it; recorded with the old and new values.
        Its keys act with the new role once the authentication caches forget them."""
        tenant = self.service.get_tenant(tenant_id)
        with db.transaction(self.service.pool) as conn:
            row = _find(conn, tenant_id, user_id, lock=True)
            wanted = {"role": role, "disabled": disabled}
            changes = {
                field: {"old": row[field], "new": value}
                for field, value in wanted.items()
                if value is not None and value != row[field]
            }
            if changes:
                conn.execute(
                    "UPDATE tenant_users SET role = %s, disabled = %s, updated_at = now() WHERE user_id = %s",
                    (
                        changes.get("role", {}).get("new", row["role"]),
                        changes.get("disabled", {}).get("new", row["disabled"]),
                        user_id,
                    ),
                )
                tenant.change_user(user_id=str(user_id), changes=changes, changed_by=changed_by)
                self.service._save_tenant(tenant)
            changed = _view(_find(conn, tenant_id, user_id))
        # After the commit (a request in between would cache the old role again): this process
        # forgets at once, the others within Settings.auth_cache_seconds.
        self.service._auth_cache.clear()
        return changed

    def issue_key(self, tenant_id: UUID, user_id: UUID, *, name: str, changed_by: str) -> IssuedApiKey:
        """A new API key bound to the user: it acts with the user's role, read at authentication."""
        tenant = self.service.get_tenant(tenant_id)
        issued, secret_hash = api_keys.new_key()
        tenant.add_api_key(key_id=issued.key_id, name=name, changed_by=changed_by)
        with db.transaction(self.service.pool) as conn:
            row = _find(conn, tenant_id, user_id, lock=True)
            if row["disabled"]:
                raise UserDisabled(f"user {user_id} is disabled: enable it before issuing a key")
            api_keys.store(conn, tenant_id, issued.key_id, secret_hash, name, user_id)
            self.service._save_tenant(tenant)
        return IssuedApiKey(issued.key_id, name, issued.api_key, datetime.now(UTC))

    # -- cross-tenant read grants (operator only) ------------------------------------------------

    def grant(self, *, user_id: UUID, tenant_id: UUID, changed_by: str) -> Grant:
        """Let a consolidator user read ``tenant_id``; granting again keeps the first grant."""
        with db.transaction(self.service.pool) as conn:
            with conn.cursor(row_factory=dict_row) as cur:
                user = cur.execute(
                    "SELECT tenant_id, role, disabled FROM tenant_users WHERE user_id = %s FOR UPDATE",
                    (user_id,),
                ).fetchone()
            if user is None:
                raise UserNotFound(f"no user {user_id}")
            home = UUID(str(user["tenant_id"]))
            if user["role"] != CONSOLIDATOR:
                raise NotAConsolidator(
                    f"user {user_id} has role {user['role']}:"
                    " only a consolidator may be granted other tenants",
                    {"role": user["role"]},
                )
            if user["disabled"]:
                raise UserDisabled(f"user {user_id} is disabled")
            existing = self._grant_row(conn, user_id, tenant_id)
            if existing is not None:
                return existing
            target = self.service.get_tenant(tenant_id)  # TenantNotFound (404) for an unknown tenant
            conn.execute(
                "INSERT INTO consolidator_grants (user_id, home_tenant_id, tenant_id, granted_by)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (user_id, home, tenant_id, changed_by),
            )
            target.give_read_grant(user_id=str(user_id), home_tenant_id=str(home), changed_by=changed_by)
            self.service._save_tenant(target)
            found = self._grant_row(conn, user_id, tenant_id)
        assert found is not None
        return found

    def grants(self, user_id: UUID | None = None) -> list[Grant]:
        with db.transaction(self.service.pool) as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                "SELECT user_id, home_tenant_id, tenant_id, granted_by, granted_at FROM consolidator_grants"
                " WHERE %s::uuid IS NULL OR user_id = %s ORDER BY granted_at, user_id, tenant_id",
                (user_id, user_id),
            ).fetchall()
        return [Grant(**r) for r in rows]

    def withdraw(self, *, user_id: UUID, tenant_id: UUID, changed_by: str) -> None:
        with db.transaction(self.service.pool) as conn:
            found = self._grant_row(conn, user_id, tenant_id, lock=True)
            if found is None:
                raise GrantNotFound(f"user {user_id} has no grant on tenant {tenant_id}")
            target = self.service.get_tenant(tenant_id)
            conn.execute(
                "DELETE FROM consolidator_grants WHERE user_id = %s AND tenant_id = %s", (user_id, tenant_id)
            )
            target.withdraw_read_grant(
                user_id=str(user_id), home_tenant_id=str(found.home_tenant_id), changed_by=changed_by
            )
            self.service._save_tenant(target)

    def may_read(self, *, user_id: UUID, home_tenant_id: UUID, tenant_id: UUID) -> bool:
        """Whether the operator granted this consolidator user of ``home_tenant_id`` reading
        ``tenant_id``. Read on every such request (no cache): a withdrawn grant stops at once."""
        with db.transaction(self.service.pool) as conn:
            row = conn.execute(
                "SELECT 1 FROM consolidator_grants"
                " WHERE user_id = %s AND home_tenant_id = %s AND tenant_id = %s",
                (user_id, home_tenant_id, tenant_id),
            ).fetchone()
        return row is not None

    @staticmethod
    def _grant_row(
        conn: psycopg.Connection, user_id: UUID, tenant_id: UUID, *, lock: bool = False
    ) -> Grant | None:
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                "SELECT user_id, home_tenant_id, tenant_id, granted_by, granted_at FROM consolidator_grants"
                " WHERE user_id = %s AND tenant_id = %s" + (" FOR UPDATE" if lock else ""),
                (user_id, tenant_id),
            ).fetchone()
        return Grant(**row) if row is not None else None
