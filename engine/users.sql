-- Users of a tenant and their roles (engine/users.py, docs/users-and-roles.md). Rows, like api_keys:
-- authentication reads them on a cache miss with one join. Every change is also an event on the
-- Tenant aggregate (UserAdded, UserChanged) naming who made it: the audit trail.
CREATE TABLE IF NOT EXISTS tenant_users (
    user_id     uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL,
    name        text NOT NULL,
    email       text NOT NULL,
    role        text NOT NULL,
    disabled    boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS tenant_users_tenant ON tenant_users (tenant_id, created_at);
-- An email names one user of a tenant (case-insensitively); another tenant may have the same person.
CREATE UNIQUE INDEX IF NOT EXISTS tenant_users_email ON tenant_users (tenant_id, lower(email));

-- A key issued to a user (POST /v1/users/{id}/api-keys) acts with that user's role; a key without a
-- user (every key issued before users existed, onboarding keys) acts as the tenant's admin.
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS user_id uuid;

-- The operator's cross-tenant read grants: a consolidator user of home_tenant_id may read tenant_id
-- (the seed's college_id) on the consolidator routes (engine/api/permissions.py).
CREATE TABLE IF NOT EXISTS consolidator_grants (
    user_id         uuid NOT NULL,
    home_tenant_id  uuid NOT NULL,
    tenant_id       uuid NOT NULL,
    granted_by      text NOT NULL,
    granted_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, tenant_id)
);
