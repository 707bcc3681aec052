"""GSTIN verification (issue 11, docs/gst.md "GSTIN verification"):

* ``POST /v1/gst/validate {gstin}``: the local check first (engine/tax/gstin.py: structure, state
  code, PAN, check character, kind), then the GST network's taxpayer search through the tenant's
  ``gstin-lookup`` integration, answered in the seed's shape (College Accounts: ``gstin,
  legal_name, trade_name, status, registration_date, address, business_type``). An invalid or
  unregistered GSTIN is the seed's 400 ``invalid_gstin``. Answers are cached per tenant
  (connectors/gstin_lookup/store.py). When the network cannot be reached the answer is a 503 that
  still carries the local result, so a caller knows the number is well formed.
* ``GET /v1/gst/parties/{gstin}``: what the last search said, and the tenant's invoices checked
  against it by the ``verify_buyer`` jobs.
* ``GET /v1/gst/invoices/{id}/buyer``: the buyer verification of one invoice (what an invoice view
  shows next to the buyer's GSTIN).

The search is async (httpx); the database work runs in the thread pool.
"""

# No ``from __future__ import annotations``: FastAPI must evaluate the route signatures, whose
# dependencies are local to build_router.
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import httpx
from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from connectors.catalogue import checked_transport
from connectors.errors import ConnectorError, PermanentError, RetryableError
from connectors.gstin_lookup import store
from connectors.gstin_lookup.client import PROVIDER, LookupClient, LookupCredentials
from engine import db, integrations
from engine.api.errors import ApiError
from engine.application import InvoiceNotFound, LedgerService
from engine.config import Settings
from engine.security.secrets import KeyRing
from engine.tax.errors import TaxRuleError
from engine.tax.gstin import GstinInfo, classify_gstin

# Longer than any GSTIN with spaces or hyphens: the answer names the length instead of echoing it.
_ECHO_LIMIT = 40
NETWORK_RETRY_AFTER_S = 30
# A person or a form waits on this answer: shorter than the connectors' 30 s read timeout, which is
# for jobs nobody waits on. Past it the answer is the 503 with the local result.
SEARCH_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


class ValidateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    gstin: str = Field(description="The GSTIN to check; spaces, hyphens and case are ignored")


# Documentation of the answers (the handlers build plain dicts; test_api_fuzz checks they match).
class LocalCheck(BaseModel):
    gstin: str = Field(description="Normalised: upper case, no spaces or hyphens")
    kind: Literal["regular", "tds", "tcs", "uin", "nri", "oidar"]
    state_code: str = Field(description="The two-digit GST state code the GSTIN starts with")
    pan: str | None = Field(
        description="The PAN in a regular or TCS GSTIN; null for TDS (a TAN), foreign ids"
    )


class TaxpayerAnswer(LocalCheck):
    """The seed's fields (gstin, legal_name, trade_name, status, registration_date, address,
    business_type) and what the GST network and the local check add."""

    registered: bool = Field(description="Always true here: an unregistered GSTIN is a 400 invalid_gstin")
    legal_name: str | None
    trade_name: str | None
    status: str | None = Field(description="active, cancelled, suspended, inactive ... (lower case)")
    registration_date: str | None = Field(description="YYYY-MM-DD")
    cancellation_date: str | None = Field(description="YYYY-MM-DD, for a cancelled registration")
    address: str | None = Field(description="The principal place of business, on one line")
    business_type: str | None = Field(description="Constitution of business, e.g. Private Limited Company")
    taxpayer_type: str | None = Field(description="Regular, Composition, SEZ Unit ... as the portal says")
    checked_at: str = Field(description="When the GST network answered, ISO 8601")
    expires_at: str = Field(description="When the cached answer expires (LEDGERFLOW_GSTIN_LOOKUP_TTL_S)")
    cached: bool = Field(description="Answered from your cache, without a new search")


class InvoiceCheck(BaseModel):
    invoice_id: str
    number: str
    gstin: str
    outcome: Literal["active", "not_active", "not_registered", "unverified"]
    status: str | None
    alerted: bool = Field(description="An alert was raised on ledger.alert.v1 for this invoice")
    checked_at: str
    failure: dict[str, Any] | None = Field(description="{code, error_class, attempts} when unverified")


class PartyAnswer(LocalCheck):
    registered: bool = Field(description="False: the GST network has no such registration")
    legal_name: str | None
    trade_name: str | None
    status: str | None
    registration_date: str | None
    cancellation_date: str | None
    address: str | None
    business_type: str | None
    taxpayer_type: str | None
    checked_at: str
    expires_at: str
    expired: bool = Field(description="Older than the cache keeps answers: validate again for a fresh one")
    invoices: list[InvoiceCheck] = Field(description="Your invoices to this GSTIN checked, newest first")


class InvoiceBuyerAnswer(BaseModel):
    invoice_id: str
    number: str
    buyer_gstin: str | None
    verification: InvoiceCheck | None = Field(description="null until the verify_buyer job has run")


_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
_VALIDATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": TaxpayerAnswer},
    400: {"description": "invalid_gstin: malformed, or not registered at the GST network", "content": _ERROR},
    409: {"description": "gstin_lookup_not_configured (details.local: the local result)", "content": _ERROR},
    502: {"description": "gst_network_error: the search failed; retrying will not fix it", "content": _ERROR},
    503: {"description": "gst_network_unavailable (details.local: the local result)", "content": _ERROR},
}


def local_view(info: GstinInfo) -> dict[str, Any]:
    return {"gstin": info.gstin, "kind": info.kind, "state_code": info.state_code, "pan": info.pan}


def check_locally(value: str) -> GstinInfo:
    """The local check, as the seed's 400 ``invalid_gstin`` in our error shape."""
    if len(value) > _ECHO_LIMIT:
        raise ApiError(
            400,
            "invalid_gstin",
            f"gstin: a GSTIN is 15 characters long, not {len(value)}.",
            {"path": "gstin", "length": len(value)},
        )
    try:
        return classify_gstin(value)
    except TaxRuleError as exc:
        violation = exc.violations[0]
        details = {k: v for k, v in violation.details.items() if k != "value"}
        raise ApiError(400, "invalid_gstin", violation.message, {"path": "gstin", **details}) from exc


def _not_registered(info: GstinInfo, found: store.Registration, cached: bool) -> ApiError:
    return ApiError(
        400,
        "invalid_gstin",
        f"gstin: {info.gstin} is well formed but the GST network has no such registration.",
        {"path": "gstin", "registered": False, "cached": cached, "local": local_view(info)},
    )


def build_router(
    settings: Settings,
    current_tenant: Callable[..., Awaitable[UUID]],
    service: Callable[[], Awaitable[LedgerService]],
    key_ring: Callable[[], KeyRing],
) -> APIRouter:
    router = APIRouter(prefix="/v1/gst", tags=["gst"])
    Tenant = Annotated[UUID, Depends(current_tenant)]  # noqa: N806 - a type alias
    Service = Annotated[LedgerService, Depends(service)]  # noqa: N806 - a type alias

    def cached_or_settings(
        svc: LedgerService, tenant_id: UUID, gstin: str
    ) -> tuple[store.Registration | None, integrations.IntegrationSettings | None]:
        with db.transaction(svc.pool) as conn:
            found = store.cached(conn, tenant_id, gstin, datetime.now(UTC))
            if found is not None:
                return found, None
            return None, integrations.load(conn, key_ring(), tenant_id, PROVIDER)

    def remember(svc: LedgerService, tenant_id: UUID, found: store.Registration) -> None:
        with db.transaction(svc.pool) as conn:
            store.remember(conn, tenant_id, found)

    async def search(info: GstinInfo, loaded: integrations.IntegrationSettings) -> store.Registration:
        local = local_view(info)
        try:
            credentials = LookupCredentials(**loaded.credentials)
        except TypeError as exc:
            raise ApiError(
                409,
                "gstin_lookup_not_configured",
                "the stored gstin-lookup credentials are incomplete: save them again "
                "(PUT /v1/integrations/gstin-lookup)",
                {"local": local},
            ) from exc
        transport = checked_transport(loaded, settings.mode)
        try:
            async with LookupClient(
                loaded.base_url, credentials, transport=transport, timeout=SEARCH_TIMEOUT
            ) as client:
                taxpayer = await client.search(info.gstin)
        except RetryableError as exc:
            retry = int(exc.retry_after) if exc.retry_after else NETWORK_RETRY_AFTER_S
            raise ApiError(
                503,
                "gst_network_unavailable",
                "the GST network could not be reached to verify the registration; the GSTIN is well "
                "formed (see details.local); retry later",
                {"local": local, "provider_code": exc.code},
                headers={"Retry-After": str(max(1, retry))},
            ) from exc
        except PermanentError as exc:
            # The network refused the search itself (HTTP 400/422): it does not take this GSTIN.
            raise ApiError(
                400,
                "invalid_gstin",
                f"gstin: the GST network refused to search {info.gstin}.",
                {"path": "gstin", "provider_code": exc.code, "local": local},
            ) from exc
        except ConnectorError as exc:
            # Credentials refused, an answer not understood, a URL the policy refuses: a person
            # fixes the integration. Only our own code is shown; the remote text could carry back
            # whatever was sent to it (connectors/catalogue.py TEST_OUTCOMES says why).
            raise ApiError(
                502,
                "gst_network_error",
                "the taxpayer search through your GSP failed in a way retrying will not fix; check the "
                "gstin-lookup integration (POST /v1/integrations/gstin-lookup/test)",
                {"local": local, "provider_code": exc.code},
            ) from exc
        return store.from_search(info.gstin, taxpayer, datetime.now(UTC), store.ttl_from_env())

    @router.post(
        "/validate",
        summary="Check a GSTIN locally, then at the GST network (cached); 400 invalid_gstin if it is not one",
        response_model=None,
        responses=_VALIDATE_RESPONSES,
    )
    async def validate(body: ValidateBody, tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        info = check_locally(body.gstin)
        found, loaded = await run_in_threadpool(cached_or_settings, svc, tenant_id, info.gstin)
        cached = found is not None
        if found is None:
            if loaded is None or not loaded.enabled:
                raise ApiError(
                    409,
                    "gstin_lookup_not_configured",
                    "the GSTIN is well formed (see details.local); to verify it at the GST network, "
                    "configure the taxpayer search: PUT /v1/integrations/gstin-lookup",
                    {"local": local_view(info)},
                )
            found = await search(info, loaded)
            await run_in_threadpool(remember, svc, tenant_id, found)
        if not found.found:
            raise _not_registered(info, found, cached)
        return {**found.view(), **local_view(info), "cached": cached}

    @router.get(
        "/parties/{gstin}",
        summary="What the GST network last said about a GSTIN, and your invoices checked against it",
        response_model=None,
        responses={200: {"model": PartyAnswer}},
    )
    def party(gstin: str, tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        try:
            info = check_locally(gstin)
        except ApiError as exc:
            # A resource looked up by a key that cannot exist: 404, as for a malformed invoice id.
            raise ApiError(404, "not_found", f"no GSTIN {gstin[:_ECHO_LIMIT]!r}: {exc.message}") from exc
        with db.transaction(svc.pool) as conn:
            found = store.latest(conn, tenant_id, info.gstin)
            invoices = store.invoices_of(conn, tenant_id, info.gstin)
        if found is None:
            raise ApiError(
                404,
                "not_found",
                f"{info.gstin} has not been verified for you yet: POST /v1/gst/validate",
                {"local": local_view(info)},
            )
        expired = found.expires_at <= datetime.now(UTC)
        return {**found.view(), **local_view(info), "expired": expired, "invoices": invoices}

    @router.get(
        "/invoices/{invoice_id}/buyer",
        summary="The buyer GSTIN verification of one invoice",
        response_model=None,
        responses={200: {"model": InvoiceBuyerAnswer}},
    )
    def invoice_buyer(invoice_id: str, tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        try:
            wanted = UUID(invoice_id)
        except ValueError as exc:
            raise InvoiceNotFound(f"no invoice {invoice_id}") from exc
        invoice = svc.get_invoice(tenant_id, wanted)
        with db.transaction(svc.pool) as conn:
            check = store.invoice_check(conn, tenant_id, wanted)
        return {
            "invoice_id": str(wanted),
            "number": invoice.number,
            "buyer_gstin": (invoice.buyer or {}).get("gstin"),
            "verification": check,
        }

    return router
