-- What a connector keeps beyond its per-tenant settings row (connectors/kit.py, docs/connectors.md).
-- Idempotent: run at every start (engine/db.py MIGRATIONS).

-- Secrets a connector obtains at run time (a device's communication key, an OAuth refresh token),
-- one per (tenant, provider, scope), sealed with the key ring bound to those three
-- (engine/security/connector_secrets.py). `ledgerflow keys rotate` re-encrypts them
-- (engine/security/rotation.py SEALED_COLUMNS).
CREATE TABLE IF NOT EXISTS connector_secrets (
    tenant_id     uuid NOT NULL,
    provider      text NOT NULL,
    scope         text NOT NULL,
    secret_sealed text NOT NULL,
    expires_at    timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, provider, scope)
);
