"""OAuth 2.0 connections of providers whose connector declares ``oauth`` (connectors/oauth.py).

* ``GET /v1/integrations/{provider}/oauth/authorize`` (API key): the URL to send the user to, with a
  fresh state bound to the tenant and a PKCE S256 challenge.
* ``GET /v1/integrations/{provider}/oauth/callback?code=&state=`` (no API key: the provider redirects
  the user's browser here; the single-use state is what identifies the tenant): exchanges the code with
  the verifier, seals the tokens, and the connection is ``connected``.
* ``GET /v1/integrations/{provider}/oauth``: the connection's status (never a token).
* ``DELETE /v1/integrations/{provider}/oauth``: forget the tokens (status ``disconnected``).

Every refusal is a 4xx in the API's error shape: a state that is malformed, unknown, used, expired or
for another provider is one and the same ``invalid_state``, so the callback tells nobody whether a
state ever existed.
"""

from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from connectors import oauth
from connectors import registry as connector_registry
from connectors.catalogue import checked_transport
from connectors.errors import ConnectorError, NeedsAttentionError
from connectors.oauth import OAuthSpec
from engine import db, integrations
from engine.api.contract import ErrorBody
from engine.api.errors import ApiError
from engine.application import LedgerService
from engine.config import Settings
from engine.security import connector_secrets
from engine.security.secrets import KeyRing

INVALID_STATE = "the state is not one this service issued, or it was used or has expired: start again"


def spec_of(provider: str) -> OAuthSpec:
    connector = connector_registry.BY_NAME.get(provider)
    if connector is None or connector.oauth is None:
        raise ApiError(404, "not_found", f"no OAuth connection for provider {provider[:40]!r}")
    return connector.oauth


def build_router(
    settings: Settings,
    current_tenant: Callable[..., Awaitable[UUID]],
    service: Callable[[], Awaitable[LedgerService]],
    key_ring: Callable[[], KeyRing],
) -> APIRouter:
    router = APIRouter(prefix="/v1/integrations/{provider}/oauth", tags=["integrations"])
    Tenant = Annotated[UUID, Depends(current_tenant)]  # noqa: N806
    Service = Annotated[LedgerService, Depends(service)]  # noqa: N806

    def configured(svc: LedgerService, tenant_id: UUID, provider: str) -> integrations.IntegrationSettings:
        with db.transaction(svc.pool) as conn:
            loaded = integrations.load(conn, key_ring(), tenant_id, provider)
        if loaded is None:
            raise ApiError(
                409,
                "integration_not_configured",
                f"configure {provider} first: PUT /v1/integrations/{provider}",
            )
        if not loaded.enabled:
            raise ApiError(409, "integration_disabled", f"{provider} is disabled for this tenant")
        return loaded

    @router.get(
        "/authorize",
        summary="Start connecting: the provider's authorisation URL",
        responses={409: {"model": ErrorBody, "description": "The provider is not configured, or disabled"}},
    )
    async def authorize(provider: str, tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        spec = spec_of(provider)

        def begin() -> dict[str, Any]:
            loaded = configured(svc, tenant_id, provider)
            with db.transaction(svc.pool) as conn:
                state, verifier, expires = oauth.begin(conn, key_ring(), tenant_id, provider)
            redirect = oauth.redirect_uri(provider)
            url = spec.authorization_url(
                loaded, state=state, challenge=oauth.s256_challenge(verifier), redirect=redirect
            )
            return {
                "authorization_url": url,
                "redirect_uri": redirect,
                "state_expires_at": expires.isoformat(),
            }

        return await run_in_threadpool(begin)

    @router.get(
        "/callback",
        summary="Where the provider sends the user back (no API key)",
        responses={
            400: {"model": ErrorBody, "description": "State, code or account refused, or consent declined"},
            409: {"model": ErrorBody, "description": "The provider is no longer configured or is disabled"},
            503: {"model": ErrorBody, "description": "The provider's token endpoint did not answer"},
        },
    )
    async def callback(
        provider: str,
        svc: Service,
        state: Annotated[str, Query(max_length=512)] = "",
        code: Annotated[str, Query(max_length=4096)] = "",
        error: Annotated[str | None, Query(max_length=200)] = None,
        realm_id: Annotated[str | None, Query(alias="realmId", max_length=200)] = None,
    ) -> dict[str, Any]:
        spec = spec_of(provider)
        if not oauth.well_formed_state(state):
            raise ApiError(400, "invalid_state", INVALID_STATE)

        def take() -> oauth.PendingAuthorisation | None:
            with db.transaction(svc.pool) as conn:
                return oauth.consume(conn, key_ring(), provider, state)

        pending = await run_in_threadpool(take)  # consumed even if what follows fails: single use
        if pending is None:
            raise ApiError(400, "invalid_state", INVALID_STATE)
        if error is not None:
            raise ApiError(400, "authorization_denied", "the user or the provider declined the authorisation")
        if not oauth.well_formed_code(code):
            raise ApiError(400, "invalid_code", "code: 1-2048 printable ASCII characters expected")
        account = None
        if spec.account_param is not None:
            if realm_id is None or not oauth.well_formed_account(realm_id):
                raise ApiError(
                    400, "invalid_account", f"{spec.account_param}: the provider's account id is missing"
                )
            account = realm_id
        loaded = await run_in_threadpool(configured, svc, pending.tenant_id, provider)
        try:
            tokens = await oauth.request_tokens(
                spec.token_url(loaded),
                loaded.credentials[spec.client_id_field],
                loaded.credentials[spec.client_secret_field],
                {
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": oauth.redirect_uri(provider),
                    "code_verifier": pending.verifier,
                },
                checked_transport(loaded, settings.mode),
            )
        except NeedsAttentionError as exc:
            raise ApiError(
                400, "token_exchange_refused", f"{provider} refused the authorisation code ({exc.code})"
            ) from exc
        except ConnectorError as exc:
            raise ApiError(
                503, "provider_unavailable", f"{provider} did not answer the code exchange ({exc.code})"
            ) from exc

        def store() -> dict[str, Any]:
            with db.transaction(svc.pool) as conn:
                oauth.store_tokens(conn, key_ring(), pending.tenant_id, provider, tokens, account_id=account)
                row = oauth.connection(conn, pending.tenant_id, provider)
            assert row is not None
            return oauth.connection_view(row)

        return await run_in_threadpool(store)

    @router.get("", summary="The OAuth connection's status")
    async def status(provider: str, tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        spec_of(provider)

        def read() -> dict[str, Any] | None:
            with db.transaction(svc.pool) as conn:
                return oauth.connection(conn, tenant_id, provider)

        row = await run_in_threadpool(read)
        if row is None:
            raise ApiError(404, "not_found", f"{provider} has never been connected for this tenant")
        return oauth.connection_view(row)

    @router.delete("", summary="Disconnect: forget the tokens")
    async def disconnect(provider: str, tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        spec_of(provider)

        def forget() -> dict[str, Any] | None:
            with db.transaction(svc.pool) as conn:
                for scope in (oauth.ACCESS_SCOPE, oauth.REFRESH_SCOPE):
                    connector_secrets.delete(conn, tenant_id, provider, scope)
                oauth.mark(conn, tenant_id, provider, oauth.DISCONNECTED)
                return oauth.connection(conn, tenant_id, provider)

        row = await run_in_threadpool(forget)
        if row is None:
            raise ApiError(404, "not_found", f"{provider} has never been connected for this tenant")
        return oauth.connection_view(row)

    return router
