-- OAuth 2.0 authorisation-code connections of connectors that declare `oauth` (connectors/oauth.py).
-- Idempotent: run at every start (a connector's `migrations`, connectors/kit.py).

-- One pending authorisation: the state sent to the provider, bound to a tenant, single use, short-lived.
-- Only the state's SHA-256 is kept (a database reader cannot complete someone's flow), and the PKCE
-- verifier is sealed with the key ring bound to that hash.
CREATE TABLE IF NOT EXISTS oauth_states (
    state_hash      text PRIMARY KEY,
    tenant_id       uuid NOT NULL,
    provider        text NOT NULL,
    verifier_sealed text NOT NULL,
    expires_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- One connection per (tenant, provider). The tokens themselves are in connector_secrets (sealed);
-- this row says what state the connection is in and when its access token must be refreshed: the
-- refresh schedule lives here, so it survives restarts (ops/oauth_refresher.py).
CREATE TABLE IF NOT EXISTS oauth_connections (
    tenant_id          uuid NOT NULL,
    provider           text NOT NULL,
    status             text NOT NULL CHECK (status IN ('connected', 'needs_reauth', 'disconnected')),
    account_id         text,
    access_expires_at  timestamptz,
    refresh_expires_at timestamptz,
    refresh_due_at     timestamptz,
    last_refreshed_at  timestamptz,
    last_error         text,
    connected_at       timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, provider)
);
CREATE INDEX IF NOT EXISTS oauth_connections_due ON oauth_connections (refresh_due_at)
    WHERE status = 'connected';
