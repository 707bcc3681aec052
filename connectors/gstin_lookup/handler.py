"""The ``gstin-lookup`` handler: verify an issued invoice's buyer GSTIN at the GST network.

One ``verify_buyer`` job per issued Indian document with a buyer GSTIN (routes.py). The answer is
taken from the tenant's cache when fresh (store.py), else searched through the tenant's GSP account
and cached. A buyer whose registration is not active (cancelled, suspended) or that the network does
not know raises an alert naming the invoice (engine/domain/alert.py, ``ledger.alert.v1``): input tax
credit on such an invoice is at risk for the buyer, and the seller's GSTR-1 B2B record for it is
refused by the portal for a GSTIN it does not know. The invoice itself stands: only the local check
refuses a GSTIN synchronously (issue 11).

The result is written to ``gstin_lookup_invoice_checks``, which ``GET /v1/gst/invoices/{id}/buyer``
shows. A redelivered job writes the same row again and raises no second alert (the row says the
invoice was alerted; two deliveries racing each other collapse in ``LedgerService.raise_alert``),
so at-least-once delivery is harmless here.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

import orjson

from connectors.errors import ConnectorError, NeedsAttentionError, PermanentError
from connectors.gstin_lookup import store
from connectors.gstin_lookup.client import PROVIDER, LookupClient, LookupCredentials
from connectors.gstin_lookup.routes import VERIFY_BUYER
from engine import db, integrations
from engine.tax.errors import TaxRuleError
from engine.tax.gstin import validate_gstin
from streams.connectors.context import HandlerContext
from streams.connectors.jobs import Job, JobResult

log = logging.getLogger("ledgerflow.gstin_lookup")

ALERT_SEVERITY = "warning"


class Alerts(Protocol):
    """The engine's side: ``LedgerService.raise_alert``."""

    def raise_alert(
        self,
        tenant_id: UUID,
        *,
        severity: str,
        cause: str,
        subject: str,
        message: str,
        details: dict[str, Any] | None = None,
    ) -> None: ...


def alert_for(number: str, found: store.Registration) -> tuple[str, str] | None:
    """(cause, message) of the alert an invoice to this buyer raises, or None for an active buyer."""
    if found.outcome == "active":
        return None
    if not found.found:
        return (
            "gst.buyer_gstin_not_registered",
            f"invoice {number}: the GST network has no registration {found.gstin} for the buyer; "
            "check the GSTIN with the buyer before filing GSTR-1",
        )
    status = found.status or "unknown"
    cause = status if status in ("cancelled", "suspended") else "not_active"
    since = f" since {found.cancellation_date.isoformat()}" if found.cancellation_date else ""
    return (
        f"gst.buyer_gstin_{cause}",
        f"invoice {number}: the buyer's GSTIN {found.gstin} is {status}{since} at the GST network; "
        "the buyer may not get input tax credit for it",
    )


class BuyerChecks:
    """Handler and failure sink of the ``gstin-lookup`` connector."""

    def __init__(
        self, context: HandlerContext, alerts: Alerts | None = None, ttl: timedelta | None = None
    ) -> None:
        self.context = context
        self.alerts: Alerts = alerts if alerts is not None else context.service
        self.ttl = ttl if ttl is not None else store.ttl_from_env()
        self._clients: dict[tuple[str, str, str], LookupClient] = {}

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
        await self.context.close()

    async def _client(self, loaded: integrations.IntegrationSettings) -> LookupClient:
        # One client per (tenant, URL, credentials): it caches the GSP account's access token.
        fingerprint = hashlib.sha256(
            orjson.dumps(loaded.credentials, option=orjson.OPT_SORT_KEYS)
        ).hexdigest()
        key = (str(loaded.tenant_id), f"{loaded.environment} {loaded.base_url}", fingerprint)
        if key not in self._clients:
            try:
                credentials = LookupCredentials(**loaded.credentials)
            except TypeError as exc:
                raise NeedsAttentionError(
                    "invalid_credentials", f"stored {PROVIDER} credentials: {exc}"
                ) from exc
            transport = await self.context.transport(loaded)
            self._clients[key] = LookupClient(loaded.base_url, credentials, transport=transport)
        return self._clients[key]

    def _in_db(self, work: Any) -> Any:
        with db.connect(self.context.settings) as conn, conn.transaction():
            return work(conn)

    async def __call__(self, job: Job, attempt: int) -> JobResult:
        if job.kind != VERIFY_BUYER:
            raise PermanentError("unknown_job_kind", f"{PROVIDER} has no job kind {job.kind!r}")
        tenant_id, invoice_id = UUID(job.tenant_id), UUID(job.subject)
        number = str(job.payload.get("number") or job.subject)
        try:
            gstin = validate_gstin(str(job.payload.get("gstin") or ""))
        except TaxRuleError as exc:
            # The invoice passed the same check when issued: a job not made by our router.
            raise PermanentError("invalid_gstin", exc.violations[0].message) from exc

        found = await self.context.blocking(
            lambda: self._in_db(lambda conn: store.cached(conn, tenant_id, gstin, datetime.now(UTC)))
        )
        reused = found is not None
        if found is None:
            loaded = await self.context.integration(tenant_id)
            taxpayer = await (await self._client(loaded)).search(gstin)
            searched = store.from_search(gstin, taxpayer, datetime.now(UTC), self.ttl)
            await self.context.blocking(
                lambda: self._in_db(lambda conn: store.remember(conn, tenant_id, searched))
            )
            found = searched
        registration = found

        alert = alert_for(number, registration)
        earlier = await self.context.blocking(
            lambda: self._in_db(lambda conn: store.invoice_check(conn, tenant_id, invoice_id))
        )
        already = earlier is not None and earlier["alerted"] and earlier["outcome"] == registration.outcome
        if alert is not None and not already:
            cause, message = alert
            await self.context.blocking(
                lambda: self.alerts.raise_alert(
                    tenant_id,
                    severity=ALERT_SEVERITY,
                    cause=cause,
                    subject=f"invoice {number}",
                    message=message,
                    details={
                        "invoice_id": str(invoice_id),
                        "number": number,
                        "gstin": gstin,
                        "status": registration.status or "not_registered",
                    },
                )
            )
        await self.context.blocking(
            lambda: self._in_db(
                lambda conn: store.record_invoice_check(
                    conn, tenant_id, invoice_id, number, registration, alerted=alert is not None
                )
            )
        )
        return JobResult(
            {"gstin": gstin, "outcome": registration.outcome, "status": registration.status, "cached": reused}
        )

    def record_failure(self, job: Job, error: ConnectorError, attempts: int) -> None:
        """The buyer could not be verified (dead-lettered): the invoice's check says ``unverified``
        and why; the DLQ keeps the job for a redrive (``ledgerflow connectors dlq``)."""
        log.warning(
            "buyer GSTIN of invoice %s not verified after %d attempts: %s", job.subject, attempts, error.code
        )
        self._in_db(
            lambda conn: store.record_invoice_failure(
                conn,
                UUID(job.tenant_id),
                UUID(job.subject),
                str(job.payload.get("number") or job.subject),
                str(job.payload.get("gstin") or ""),
                code=error.code,
                error_class=str(error.error_class),
                attempts=attempts,
                at=datetime.now(UTC),
            )
        )


def build(context: HandlerContext) -> BuyerChecks:
    """The handler factory the connector declaration names (connectors/gstin_lookup/__init__.py)."""
    return BuyerChecks(context)
