"""OAuth 2.0 authorisation-code flow with PKCE, for connectors that declare ``Connector.oauth``.

The flow (RFC 6749 section 4.1, PKCE per RFC 7636 with the S256 method)::

    GET /v1/integrations/{provider}/oauth/authorize   (tenant's API key)
        -> a state bound to the tenant, single use, expiring after STATE_TTL; a PKCE verifier kept
           sealed server-side; the provider's authorisation URL carrying the state and S256 challenge
    the user consents at the provider, which redirects the browser to the *configured* redirect URI
    GET /v1/integrations/{provider}/oauth/callback?code=&state=   (no API key: the state is the proof)
        -> the state is consumed (deleted) whatever happens next, the code exchanged with the verifier,
           tokens sealed in connector_secrets, the connection ``connected``
    ops/oauth_refresher.py refreshes each access token REFRESH_MARGIN before it expires; a refresh the
    provider refuses (``invalid_grant``) marks the connection ``needs_reauth`` and raises an alert.

Tokens go to one place only: the token endpoint the connector declares for the tenant's configured
destination. The redirect URI is deployment configuration (``LEDGERFLOW_OAUTH_REDIRECT_BASE``), never
read from a request, so nobody can make a code (or a token) travel to a URL of their choosing.

Hierarchy of failures is the connector one (connectors/errors.py): ``invalid_grant`` and
``invalid_client`` need a person, transport failures and 5xx/429 are retryable.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlencode
from uuid import UUID

import httpx
import psycopg
from psycopg.rows import dict_row

from connectors.errors import (
    ConnectorError,
    NeedsAttentionError,
    RetryableError,
    retry_after_seconds,
    without_secrets,
)
from engine import db, integrations
from engine.config import Settings
from engine.integrations import IntegrationSettings
from engine.security import connector_secrets
from engine.security.secrets import KeyRing, SecretError

STATE_TTL = timedelta(minutes=10)
"""How long a user has to consent; RFC 6749 section 10.12 asks that the state be unguessable and
bound to the user agent's session, and a short life limits a leaked one."""
REFRESH_MARGIN = timedelta(minutes=10)
"""Access tokens are refreshed this long before they expire (Intuit's last one hour)."""
CLAIM_LEASE = timedelta(minutes=2)
"""A refresher that claimed a connection and died leaves it due again after this long."""

ACCESS_SCOPE = "oauth:access"
REFRESH_SCOPE = "oauth:refresh"

CONNECTED = "connected"
NEEDS_REAUTH = "needs_reauth"
DISCONNECTED = "disconnected"

# RFC 7636 section 4.1: the verifier is 43-128 characters of [A-Z a-z 0-9 - . _ ~].
_VERIFIER_BYTES = 64
_STATE = re.compile(r"^[A-Za-z0-9_-]{20,200}$")
# RFC 6749 appendix A.11: a code is VSCHAR (printable ASCII); we also cap its length.
_CODE = re.compile(r"^[\x21-\x7e]{1,2048}$")
_ACCOUNT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


# -- pure -------------------------------------------------------------------------------------


def new_verifier() -> str:
    """A PKCE code verifier: 86 characters from the URL-safe alphabet (RFC 7636 section 4.1)."""
    return secrets.token_urlsafe(_VERIFIER_BYTES)


def s256_challenge(verifier: str) -> str:
    """BASE64URL(SHA256(ASCII(verifier))) without padding (RFC 7636 section 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def new_state() -> str:
    return secrets.token_urlsafe(32)


def state_hash(state: str) -> str:
    return hashlib.sha256(state.encode("ascii")).hexdigest()


def well_formed_state(state: str) -> bool:
    return bool(_STATE.match(state))


def well_formed_code(code: str) -> bool:
    return bool(_CODE.match(code))


def well_formed_account(account: str) -> bool:
    return bool(_ACCOUNT.match(account))


def redirect_uri(provider: str, base: str | None = None) -> str:
    """The callback URL registered with the provider: deployment configuration, never a request's."""
    # Unset: the local API (`ledgerflow run`, LEDGERFLOW_API_PORT), which is what a developer's
    # Intuit app registers for its sandbox companies.
    local = f"http://127.0.0.1:{os.environ.get('LEDGERFLOW_API_PORT', '8080')}"
    root = (base or os.environ.get("LEDGERFLOW_OAUTH_REDIRECT_BASE") or local).rstrip("/")
    return f"{root}/v1/integrations/{provider}/oauth/callback"


def refresh_due_at(access_expires_at: datetime, margin: timedelta = REFRESH_MARGIN) -> datetime:
    return access_expires_at - margin


@dataclass(frozen=True)
class OAuthSpec:
    """What a connector declares to take part in the flow."""

    authorize_url: Callable[[IntegrationSettings], str]
    token_url: Callable[[IntegrationSettings], str]
    scopes: tuple[str, ...]
    account_param: str | None = None
    """The callback parameter naming the provider account the user chose (Intuit's ``realmId``)."""
    client_id_field: str = "client_id"
    client_secret_field: str = "client_secret"

    def authorization_url(
        self, settings: IntegrationSettings, *, state: str, challenge: str, redirect: str
    ) -> str:
        query = {
            "client_id": settings.credentials[self.client_id_field],
            "response_type": "code",
            "scope": " ".join(self.scopes),
            "redirect_uri": redirect,
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        return f"{self.authorize_url(settings)}?{urlencode(query)}"


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    refresh_token: str
    access_expires_at: datetime
    refresh_expires_at: datetime | None

    def __repr__(self) -> str:  # tokens never reach a log through a repr
        return f"TokenSet(access_expires_at={self.access_expires_at.isoformat()})"


def token_set(answer: Mapping[str, Any], now: datetime) -> TokenSet:
    """A token endpoint's JSON answer (RFC 6749 section 5.1) -> tokens; ``x_refresh_token_expires_in``
    is Intuit's extension giving the refresh token's remaining life."""
    try:
        access = str(answer["access_token"])
        refresh = str(answer["refresh_token"])
        expires_in = int(answer.get("expires_in", 3600))
    except (KeyError, TypeError, ValueError) as exc:
        raise NeedsAttentionError("invalid_token_response", "the token answer lacks tokens") from exc
    if not access or not refresh or not 0 < expires_in <= 86_400 * 366:
        raise NeedsAttentionError("invalid_token_response", "the token answer's tokens are unusable")
    refresh_in = answer.get("x_refresh_token_expires_in")
    refresh_at = None
    if isinstance(refresh_in, int) and 0 < refresh_in <= 86_400 * 3660:
        refresh_at = now + timedelta(seconds=refresh_in)
    return TokenSet(access, refresh, now + timedelta(seconds=expires_in), refresh_at)


# -- the token endpoint -----------------------------------------------------------------------


async def request_tokens(
    url: str,
    client_id: str,
    client_secret: str,
    form: Mapping[str, str],
    transport: httpx.AsyncBaseTransport | None,
    *,
    now: datetime | None = None,
    timeout: httpx.Timeout | None = None,
) -> TokenSet:
    """POST the grant to the token endpoint with HTTP Basic client authentication (RFC 6749 2.3.1)."""
    sent = [client_secret, *(v for k, v in form.items() if k in ("code", "refresh_token", "code_verifier"))]
    try:
        async with httpx.AsyncClient(
            transport=transport, timeout=timeout or httpx.Timeout(30.0, connect=10.0), follow_redirects=False
        ) as http:
            try:
                response = await http.post(
                    url,
                    data=dict(form),
                    auth=(client_id, client_secret),
                    headers={"Accept": "application/json"},
                )
            except httpx.TimeoutException as exc:
                raise RetryableError("timeout", f"token endpoint: {type(exc).__name__}") from exc
            except httpx.ConnectError as exc:
                raise RetryableError("connect_error", "token endpoint: could not connect") from exc
            except httpx.TransportError as exc:
                raise RetryableError("transport_error", f"token endpoint: {type(exc).__name__}") from exc
        return _token_answer(response, now or datetime.now(UTC))
    except ConnectorError as exc:
        raise without_secrets(exc, sent) from None


def _token_answer(response: httpx.Response, now: datetime) -> TokenSet:
    status = response.status_code
    if 300 <= status < 400:
        raise NeedsAttentionError("redirect_not_followed", f"token endpoint: HTTP {status} redirect")
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_success and isinstance(body, dict):
        return token_set(body, now)
    code = str(body.get("error"))[:60] if isinstance(body, dict) and body.get("error") else f"http_{status}"
    if status == 429 or status >= 500:
        raise RetryableError(
            f"http_{status}",
            "token endpoint unavailable",
            retry_after=retry_after_seconds(response.headers.get("retry-after")),
        )
    # invalid_grant: the code or refresh token is expired, used or revoked; invalid_client: the app's
    # credentials are wrong. Neither gets better by retrying (RFC 6749 section 5.2).
    raise NeedsAttentionError(
        code, f"the token endpoint refused the grant ({code})", details={"status": status}
    )


# -- pending authorisations -------------------------------------------------------------------


def _state_aad(hashed: str) -> bytes:
    return f"oauth-state/{hashed}".encode()


def begin(
    conn: psycopg.Connection, ring: KeyRing, tenant_id: UUID, provider: str, *, now: datetime | None = None
) -> tuple[str, str, datetime]:
    """Record a pending authorisation; returns (state, verifier, expires_at)."""
    at = now or datetime.now(UTC)
    state, verifier = new_state(), new_verifier()
    hashed = state_hash(state)
    expires = at + STATE_TTL
    conn.execute("DELETE FROM oauth_states WHERE expires_at < %s", (at,))
    conn.execute(
        "INSERT INTO oauth_states (state_hash, tenant_id, provider, verifier_sealed, expires_at)"
        " VALUES (%s, %s, %s, %s, %s)",
        (hashed, tenant_id, provider, ring.seal(verifier.encode(), _state_aad(hashed)), expires),
    )
    return state, verifier, expires


@dataclass(frozen=True)
class PendingAuthorisation:
    tenant_id: UUID
    provider: str
    verifier: str


def consume(
    conn: psycopg.Connection, ring: KeyRing, provider: str, state: str, *, now: datetime | None = None
) -> PendingAuthorisation | None:
    """Take the pending authorisation for ``state`` (deleted: a state works once), or None when it is
    unknown, used, expired or for another provider."""
    hashed = state_hash(state)
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "DELETE FROM oauth_states WHERE state_hash = %s RETURNING tenant_id, provider, verifier_sealed,"
            " expires_at",
            (hashed,),
        ).fetchone()
    if row is None or row["provider"] != provider or row["expires_at"] <= (now or datetime.now(UTC)):
        return None
    try:
        verifier = ring.open(row["verifier_sealed"], _state_aad(hashed)).decode()
    except SecretError:
        # Sealed with a key retired since (states live 10 minutes and are not re-encrypted by
        # `ledgerflow keys rotate`): the flow starts again, like for an expired state.
        return None
    return PendingAuthorisation(row["tenant_id"], provider, verifier)


# -- connections ------------------------------------------------------------------------------


def store_tokens(
    conn: psycopg.Connection,
    ring: KeyRing,
    tenant_id: UUID,
    provider: str,
    tokens: TokenSet,
    *,
    account_id: str | None = None,
    now: datetime | None = None,
) -> None:
    """Seal both tokens and mark the connection connected, due for refresh before the access token ends.
    The refresh token is replaced every time: providers rotate it (Intuit may return a new one on every
    refresh, and only the latest keeps working)."""
    at = now or datetime.now(UTC)
    connector_secrets.put(
        conn,
        ring,
        tenant_id,
        provider,
        ACCESS_SCOPE,
        tokens.access_token.encode(),
        expires_at=tokens.access_expires_at,
    )
    connector_secrets.put(
        conn,
        ring,
        tenant_id,
        provider,
        REFRESH_SCOPE,
        tokens.refresh_token.encode(),
        expires_at=tokens.refresh_expires_at,
    )
    conn.execute(
        """INSERT INTO oauth_connections (tenant_id, provider, status, account_id, access_expires_at,
               refresh_expires_at, refresh_due_at, last_refreshed_at, last_error, connected_at, updated_at)
           VALUES (%s, %s, 'connected', %s, %s, %s, %s, %s, NULL, %s, %s)
           ON CONFLICT (tenant_id, provider) DO UPDATE SET status = 'connected',
               account_id = COALESCE(EXCLUDED.account_id, oauth_connections.account_id),
               access_expires_at = EXCLUDED.access_expires_at,
               refresh_expires_at = EXCLUDED.refresh_expires_at, refresh_due_at = EXCLUDED.refresh_due_at,
               last_refreshed_at = EXCLUDED.last_refreshed_at, last_error = NULL,
               connected_at = CASE WHEN %s THEN EXCLUDED.connected_at ELSE oauth_connections.connected_at END,
               updated_at = EXCLUDED.updated_at""",
        (
            tenant_id,
            provider,
            account_id,
            tokens.access_expires_at,
            tokens.refresh_expires_at,
            refresh_due_at(tokens.access_expires_at),
            at,
            at,
            at,
            account_id is not None,
        ),
    )


def connection(conn: psycopg.Connection, tenant_id: UUID, provider: str) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM oauth_connections WHERE tenant_id = %s AND provider = %s", (tenant_id, provider)
        ).fetchone()


def connection_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """What the API shows: never a token."""

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "provider": row["provider"],
        "status": row["status"],
        "account_id": row["account_id"],
        "access_expires_at": iso(row["access_expires_at"]),
        "refresh_due_at": iso(row["refresh_due_at"]) if row["status"] == CONNECTED else None,
        "last_refreshed_at": iso(row["last_refreshed_at"]),
        "last_error": row["last_error"],
        "connected_at": iso(row["connected_at"]),
    }


def mark(
    conn: psycopg.Connection, tenant_id: UUID, provider: str, status: str, error: str | None = None
) -> None:
    conn.execute(
        "UPDATE oauth_connections SET status = %s, last_error = %s, refresh_due_at = NULL, updated_at = now()"
        " WHERE tenant_id = %s AND provider = %s",
        (status, error, tenant_id, provider),
    )


def claim_due(
    conn: psycopg.Connection, *, now: datetime | None = None, limit: int = 50, lease: timedelta = CLAIM_LEASE
) -> list[tuple[UUID, str]]:
    """Connections whose refresh is due, claimed by pushing their due time out by ``lease`` (so two
    refreshers never spend the same refresh token, and a crashed one's claim lapses)."""
    at = now or datetime.now(UTC)
    rows = conn.execute(
        """UPDATE oauth_connections SET refresh_due_at = %s
           WHERE (tenant_id, provider) IN (
               SELECT tenant_id, provider FROM oauth_connections
               WHERE status = 'connected' AND refresh_due_at <= %s
               ORDER BY refresh_due_at LIMIT %s FOR UPDATE SKIP LOCKED)
           RETURNING tenant_id, provider""",
        (at + lease, at, limit),
    ).fetchall()
    return [(r["tenant_id"], r["provider"]) if isinstance(r, dict) else (r[0], r[1]) for r in rows]


# -- refreshing -------------------------------------------------------------------------------


class AlertSink(Protocol):
    def raise_alert(
        self,
        tenant_id: UUID,
        *,
        severity: str,
        cause: str,
        subject: str,
        message: str,
        details: Mapping[str, Any] | None = None,
    ) -> None: ...


TransportFor = Callable[[IntegrationSettings], httpx.AsyncBaseTransport]


class TokenKeeper:
    """Refreshes one tenant's tokens for one provider; used by the scheduled refresher and by a handler
    that finds its access token expired."""

    def __init__(
        self,
        settings: Settings,
        ring: KeyRing,
        alerts: AlertSink,
        specs: Mapping[str, OAuthSpec],
        transport_for: TransportFor,
    ) -> None:
        self.settings = settings
        self.ring = ring
        self.alerts = alerts
        self.specs = specs
        self.transport_for = transport_for

    async def _db(self, work: Callable[[psycopg.Connection], Any]) -> Any:
        def run() -> Any:
            with db.connect(self.settings) as conn, conn.transaction():
                return work(conn)

        try:
            return await asyncio.to_thread(run)
        except (db.DatabaseUnavailable, psycopg.OperationalError) as exc:
            raise RetryableError("database_unavailable", str(exc)) from exc

    async def access_token(self, tenant_id: UUID, provider: str) -> str:
        """A valid access token, refreshed first if the stored one has expired; needs-attention when
        the connection is not ``connected``."""

        def read(conn: psycopg.Connection) -> tuple[dict[str, Any] | None, bytes | None]:
            row = connection(conn, tenant_id, provider)
            token = connector_secrets.get(conn, self.ring, tenant_id, provider, ACCESS_SCOPE)
            return row, token

        row, token = await self._db(read)
        if row is None or row["status"] != CONNECTED:
            status = "not connected" if row is None else row["status"]
            raise NeedsAttentionError("not_connected", f"{provider} is {status}: connect it again (OAuth)")
        if token is not None:
            return token.decode()
        return await self.refresh(tenant_id, provider)

    async def refresh(self, tenant_id: UUID, provider: str) -> str:
        """Spend the refresh token for new tokens; returns the new access token. A refused grant marks
        the connection needs_reauth and raises a critical alert; a retryable failure leaves it due
        again (the claim's lease).

        One refresh per connection at a time, across processes (a PostgreSQL advisory lock held by its
        own connection, released if the process dies): a handler that met a 401 and the scheduled
        refresher must not both spend the same refresh token, since the provider rotates it and the
        second spend would be refused as ``invalid_grant``. Whoever waited finds the tokens the other
        just stored and uses them."""
        asked_at = datetime.now(UTC)
        key = f"oauth-refresh/{self.settings.db_schema}/{tenant_id}/{provider}"
        try:
            lock = await psycopg.AsyncConnection.connect(self.settings.database_url, autocommit=True)
        except psycopg.OperationalError as exc:
            raise RetryableError("database_unavailable", str(exc)) from exc
        async with lock:
            await lock.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (key,))
            try:
                return await self._refresh_locked(tenant_id, provider, asked_at)
            finally:
                await lock.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))

    async def _refresh_locked(self, tenant_id: UUID, provider: str, asked_at: datetime) -> str:
        spec = self.specs[provider]

        def read(
            conn: psycopg.Connection,
        ) -> tuple[IntegrationSettings | None, bytes | None, dict[str, Any] | None, bytes | None]:
            loaded = integrations.load(conn, self.ring, tenant_id, provider)
            token = connector_secrets.get(conn, self.ring, tenant_id, provider, REFRESH_SCOPE)
            access = connector_secrets.get(conn, self.ring, tenant_id, provider, ACCESS_SCOPE)
            return loaded, token, connection(conn, tenant_id, provider), access

        loaded, refresh_token, row, access = await self._db(read)
        if row is not None and row["status"] != CONNECTED:
            # Already refused (and alerted) or disconnected: nothing to spend.
            raise NeedsAttentionError("not_connected", f"{provider} is {row['status']}: connect it again")
        last = row["last_refreshed_at"] if row is not None else None
        if access is not None and last is not None and last >= asked_at:
            return access.decode()  # refreshed by whoever held the lock before us
        if loaded is None or refresh_token is None:
            error: ConnectorError = NeedsAttentionError("invalid_grant", "no usable refresh token is stored")
            await self._needs_reauth(tenant_id, provider, error)
            raise error
        try:
            tokens = await request_tokens(
                spec.token_url(loaded),
                loaded.credentials[spec.client_id_field],
                loaded.credentials[spec.client_secret_field],
                {"grant_type": "refresh_token", "refresh_token": refresh_token.decode()},
                self.transport_for(loaded),
            )
        except NeedsAttentionError as exc:
            await self._needs_reauth(tenant_id, provider, exc)
            raise
        except ConnectorError as exc:
            note = f"{exc.code}: refresh failed, retrying"
            await self._db(
                lambda conn: conn.execute(
                    "UPDATE oauth_connections SET last_error = %s, updated_at = now()"
                    " WHERE tenant_id = %s AND provider = %s",
                    (note, tenant_id, provider),
                )
            )
            raise
        await self._db(lambda conn: store_tokens(conn, self.ring, tenant_id, provider, tokens))
        return tokens.access_token

    async def _needs_reauth(self, tenant_id: UUID, provider: str, error: ConnectorError) -> None:
        reason = f"{error.code}: the provider refused the refresh; a person must connect {provider} again"
        await self._db(lambda conn: mark(conn, tenant_id, provider, NEEDS_REAUTH, reason))
        await asyncio.to_thread(
            self.alerts.raise_alert,
            tenant_id,
            severity="critical",
            cause="oauth_refresh_failed",
            subject=f"integration:{provider}",
            message=f"{provider} needs to be connected again: the token refresh was refused",
            details={"provider": provider, "code": error.code, "status": NEEDS_REAUTH},
        )

    async def refresh_due(self, *, now: datetime | None = None, limit: int = 50) -> dict[str, int]:
        """One pass of the scheduled job: refresh every connection that is due; counts by outcome."""
        due: list[tuple[UUID, str]] = await self._db(lambda conn: claim_due(conn, now=now, limit=limit))
        outcome = {"refreshed": 0, "needs_reauth": 0, "retrying": 0}
        for tenant_id, provider in due:
            if provider not in self.specs:
                continue
            try:
                await self.refresh(tenant_id, provider)
                outcome["refreshed"] += 1
            except NeedsAttentionError:
                outcome["needs_reauth"] += 1
            except ConnectorError:
                outcome["retrying"] += 1
        return outcome
