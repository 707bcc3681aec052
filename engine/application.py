"""The write side: the event-sourced application and the commands it handles.

Each method loads an aggregate, calls one method on it, saves and returns. The HTTP API and the
ingest stream agent both call these, so an invoice sent over Kafka is treated exactly as one
sent over HTTP.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse
from uuid import UUID

import psycopg
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import (
    IntegrityError,
    JSONTranscoder,
    OperationalError,
    PersistenceError,
    Transcoding,
)
from psycopg import sql
from psycopg_pool import ConnectionPool

from engine import attribution, db, drafts, integrations, telemetry
from engine import india_documents as india
from engine import kenya_invoicing as kenya
from engine.commands import (
    CancelInvoice,
    DraftInvoice,
    IssueCreditNote,
    IssueGstNote,
    IssueInvoice,
    IssueKenyanInvoice,
)
from engine.config import Settings
from engine.domain.alert import Alert, alert_id_for, check_alert
from engine.domain.invoice import (
    DocumentType,
    EtimsAlreadySigned,
    EtimsStatus,
    Invoice,
    InvoiceStatus,
    NotAKenyanSale,
    invoice_id_for,
)
from engine.domain.invoice_draft import InvoiceDraft
from engine.domain.tenant import (
    EINVOICING_PROVIDER,
    LastApiKey,
    LegalIdentityImmutable,
    Tenant,
    UnknownApiKey,
)
from engine.errors import Conflict, InvalidInput, NotFound, RequestRefused
from engine.fields import forbidden_character
from engine.publishing import seller_address
from engine.security import api_keys
from engine.security.egress import DeploymentMode, EndpointPolicy
from engine.security.secrets import KeyRing, load_key_ring
from engine.tax.errors import TaxRuleError, Violation
from engine.tax.gstin import gstin_state, validate_gstin
from engine.tax.india_gst import (
    InvoiceTax,
    LineInput,
    SupplyType,
    check_invoice_date,
    compute_invoice_tax,
    financial_year,
    today_in_india,
)
from engine.tax.kra_pin import validate_kra_pin
from engine.tax.states import normalise_state

log = logging.getLogger(__name__)

AUTH_CACHE_SECONDS = 5.0
TENANT_CACHE_SECONDS = 30.0
# How long a request waits for a concurrent request holding the same Idempotency-Key.
CLAIM_WAIT_SECONDS = 20


class DateAsISO(Transcoding):
    """Invoice dates are calendar dates; the library only ships a datetime transcoding."""

    type = date
    name = "date_iso"

    def encode(self, obj: date) -> str:
        return obj.isoformat()

    def decode(self, data: str) -> date:
        return date.fromisoformat(data)


class Ledger(Application[UUID]):
    """The event store of every aggregate (table ``ledger_events`` in the configured schema)."""

    name = "Ledger"

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(DateAsISO())


def event_store_env(settings: Settings) -> dict[str, str]:
    """eventsourcing's PostgreSQL settings derived from our one database URL."""
    url = urlparse(settings.database_url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": url.path.lstrip("/"),
        "POSTGRES_HOST": url.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(url.port or 5432),
        "POSTGRES_USER": unquote(url.username or ""),
        "POSTGRES_PASSWORD": unquote(url.password or ""),
        "POSTGRES_SCHEMA": settings.db_schema,
        "POSTGRES_CONNECT_TIMEOUT": "5",
        "POSTGRES_POOL_SIZE": "4",
        "POSTGRES_MAX_OVERFLOW": "6",
        # No pre-ping: it costs a round trip per use; a connection broken by a restart fails once
        # (the API answers 503, background processes retry) and the pool replaces it.
        "POSTGRES_PRE_PING": "n",
        "CREATE_TABLE": "y",
        # Chains every stored event and records who stored it (engine/attribution.py, docs/audit-log.md).
        "APPLICATION_RECORDER_TOPIC": attribution.RECORDER_TOPIC,
    }


StoreT = TypeVar("StoreT", bound="Application[UUID]")


def open_event_store(settings: Settings, store: type[StoreT], **env: str) -> StoreT:
    """The eventsourcing application ``store`` on this deployment's database: ``event_store_env`` with
    ``env`` on top. eventsourcing creates its tables, types and functions when the application is
    built; two processes starting together raced there ("tuple concurrently updated" from CREATE OR
    REPLACE FUNCTION, seen when two stream workers started at once). One at a time, as ensure_schema
    does (``db.event_store_tables_lock``). Every event store of the engine is opened here."""
    try:
        with db.event_store_tables_lock(settings) as lock:
            store_env = event_store_env(settings) | env
            if not db.may_change_schema(lock, settings.db_schema):
                # The runtime role of a two-role deployment: `ledgerflow db migrate` created the
                # tables as the owner, and CREATE ... IF NOT EXISTS would be refused anyway.
                store_env["CREATE_TABLE"] = "n"
            return store(env=store_env)
    except (PersistenceError, OSError) as exc:
        raise db.DatabaseUnavailable(str(exc)) from exc


def open_ledger(settings: Settings) -> Ledger:
    return open_event_store(settings, Ledger)


def in_memory_ledger() -> Ledger:
    """The same event store with its events in process memory (eventsourcing's POPO recorder).

    For unit tests of the write side: aggregates save and load, optimistic concurrency and the
    notification log behave as on PostgreSQL, and nothing needs a database. Production processes
    always use :func:`open_ledger`."""
    return Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


# ---------------------------------------------------------------------------------------------
# Results and errors of the service layer


@dataclass(frozen=True)
class RegisteredTenant:
    tenant_id: UUID
    api_key: str


@dataclass(frozen=True)
class IssuedApiKey:
    key_id: str
    name: str
    api_key: str  # shown once
    created_at: datetime
    replaces: str | None = None
    replaced_key_valid_until: datetime | None = None


@dataclass(frozen=True)
class IssuedInvoice:
    invoice: Invoice
    created: bool  # False when an idempotent retry returned the invoice created earlier


@dataclass(frozen=True)
class InvoiceRequest:
    """One issue command of a batch (``LedgerService.issue_invoices``), with its idempotency key."""

    tenant_id: UUID
    command: IssueCommand
    idempotency_key: str
    source: str
    traceparent: str | None = None


class ServiceError(RequestRefused):
    """Base of the errors the service layer reports to its callers (HTTP, ingest agent, CLI)."""

    code = "error"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class TenantNotFound(ServiceError, NotFound):
    code = "tenant_not_found"


class InvoiceNotFound(ServiceError, NotFound):
    code = "not_found"


class ApiKeyNotFound(ServiceError, NotFound):
    code = "not_found"


class ApiKeyConflict(ServiceError, Conflict):
    code = "last_api_key"


class IntegrationNotConfigured(ServiceError, Conflict):
    code = "integration_not_configured"


class TenantChangedConcurrently(ServiceError, Conflict):
    """Another request changed the tenant between this one's read and its write (the event store's
    optimistic concurrency: one event per aggregate version). Nothing of this request was stored."""

    code = "concurrent_update"


class DuplicateInvoiceNumber(ServiceError, Conflict):
    code = "duplicate_invoice_number"


class IdempotencyKeyReused(ServiceError, InvalidInput):
    code = "idempotency_key_reused"


class IdempotencyKeyInProgress(ServiceError, Conflict):
    """Another request with the same Idempotency-Key held its claim for longer than we wait."""

    code = "idempotency_key_in_progress"


class InvoiceStateConflict(ServiceError, Conflict):
    code = "invalid_state"


class EtimsNotConfigured(ServiceError, Conflict):
    """A Kenyan sale needs the tenant's etims integration: it gives the environment and branch."""

    code = "etims_not_configured"


class ValidationFailed(ServiceError, InvalidInput):
    """Tax or business rule violations, each with the field path it is about."""

    code = "validation_failed"

    def __init__(self, violations: tuple[Violation, ...]) -> None:
        super().__init__(
            "; ".join(v.message for v in violations),
            {
                "fields": [
                    {"path": v.path, "code": v.code, "message": v.message, **v.details} for v in violations
                ]
            },
        )
        self.violations = violations


class CreditNoteExceedsOriginal(ValidationFailed):
    """A credit note line asks for more quantity or amount than earlier credit notes left."""

    code = "credit_note_exceeds_original"


IssueCommand = IssueInvoice | IssueKenyanInvoice


# ---------------------------------------------------------------------------------------------


class LedgerService:
    """Command handling for tenants and invoices."""

    def __init__(self, settings: Settings, ledger: Ledger, pool: ConnectionPool) -> None:
        self.settings = settings
        self.ledger = ledger
        self.pool = pool
        self._auth_cache: dict[str, tuple[api_keys.KeyIdentity, float]] = {}
        self._tenant_cache: dict[UUID, tuple[Tenant, float]] = {}
        self._ring: KeyRing | None = None

    def close(self) -> None:
        """Release database connections (the pool's and the event store's)."""
        self.pool.close()
        self.ledger.close()

    # -- tenants ----------------------------------------------------------------------------

    def register_tenant(
        self,
        *,
        name: str,
        legal_name: str,
        country: str,
        gstin: str | None,
        state: str | None,
        einvoicing_enabled: bool = False,
        address: dict[str, Any] | None = None,
        profile: dict[str, Any] | None = None,
        changed_by: str = "operator",
        kra_pin: str | None = None,
    ) -> RegisteredTenant:
        """Register a tenant and issue its first API key.

        ``einvoicing_enabled`` is what the Registered event records for compatibility; from then on
        the flag follows the gst-irp integration's ``enabled`` (``save_integration``). ``profile``
        (branches, contacts) is recorded in the same save as a ProfileUpdated by ``changed_by``."""
        violations: list[Violation] = [
            *_text_violations("name", name),
            *_text_violations("legal_name", legal_name),
            *_text_violations("country", country),
            *(
                found
                for key, value in (address or {}).items()
                if isinstance(value, str)
                for found in _text_violations(f"address.{key}", value)
            ),
        ]
        norm_state = norm_gstin = None
        try:
            norm_state = normalise_state(state, "state") if state else None
        except TaxRuleError as exc:
            violations.extend(exc.violations)
        try:
            norm_gstin = validate_gstin(gstin, "gstin") if gstin else None
        except TaxRuleError as exc:
            violations.extend(exc.violations)
        if norm_gstin and norm_state and gstin_state(norm_gstin) != norm_state:
            violations.append(_state_mismatch("gstin", norm_gstin, norm_state))
        if country.upper() == "IN" and not norm_state and not violations:
            violations.append(Violation("state", "missing_state", "an Indian tenant needs its state"))
        norm_kra_pin = None
        violations.extend(_kenya_identity_violations(country, kra_pin, gstin, state))
        if kra_pin and not violations:
            norm_kra_pin = validate_kra_pin(kra_pin, "kra_pin")
        if violations:
            raise ValidationFailed(tuple(violations))
        issued, secret_hash = api_keys.new_key()
        tenant = Tenant(
            name=name,
            legal_name=legal_name,
            country=country.upper(),
            gstin=norm_gstin,
            state=norm_state,
            einvoicing_enabled=einvoicing_enabled,
            api_key_id=issued.key_id,
            address=address,
            kra_pin=norm_kra_pin,
        )
        if profile:
            tenant.update_profile(changed_by=changed_by, **profile)
        # The key row first: a tenant without a usable key would be unreachable, a key without
        # its tenant is harmless (authentication then finds no tenant and answers 401).
        with db.transaction(self.pool) as conn:
            api_keys.store(conn, tenant.id, issued.key_id, secret_hash)
        self._save(tenant)
        return RegisteredTenant(tenant.id, issued.api_key)

    def rotate_api_key(
        self,
        tenant_id: UUID,
        grace: timedelta = api_keys.DEFAULT_ROTATION_GRACE,
        changed_by: str | None = None,
    ) -> RegisteredTenant:
        """Replace every key of the tenant by one new key (``ledgerflow tenants rotate-key``); the
        others keep working for ``grace``."""
        tenant = self.get_tenant(tenant_id)
        issued, secret_hash = api_keys.new_key()
        valid_until = datetime.now(UTC) + grace
        with db.transaction(self.pool) as conn:
            api_keys.store(conn, tenant_id, issued.key_id, secret_hash)
            api_keys.expire_others(conn, tenant_id, issued.key_id, valid_until)
        self._auth_cache.clear()  # other processes forget within AUTH_CACHE_SECONDS
        tenant.rotate_api_key(
            key_id=issued.key_id,
            previous_key_id=tenant.api_key_id,
            previous_key_valid_until=valid_until,
            changed_by=changed_by,
        )
        self._save(tenant)
        return RegisteredTenant(tenant_id, issued.api_key)

    # -- the tenant's own profile and named keys (engine/api/tenant.py) -------------------------

    def update_profile(self, tenant_id: UUID, changed_by: str, fields: dict[str, Any]) -> Tenant:
        """Change the profile; the legal identity is refused (422), an unchanged value is no event."""
        tenant = self.get_tenant(tenant_id)
        # "KA" and "29" are one state, and a GSTIN may come in lower case: compare normal forms.
        for name, normalise in (
            ("state", normalise_state),
            ("gstin", validate_gstin),
            ("kra_pin", validate_kra_pin),
        ):
            if fields.get(name):
                # An invalid value differs from the registered (valid) one: refused as a change below.
                with suppress(TaxRuleError):
                    fields[name] = normalise(fields[name], name)
        if "country" in fields:
            fields["country"] = str(fields["country"]).upper()
        try:
            changed = tenant.update_profile(changed_by=changed_by, **fields)
        except LegalIdentityImmutable as exc:
            raise ValidationFailed(
                tuple(
                    Violation(
                        field,
                        "legal_identity_immutable",
                        f"{field} cannot change: it is part of the tenant's legal identity; "
                        "a new GST registration is a new tenant",
                    )
                    for field in exc.fields
                )
            ) from exc
        if changed:
            self._save_tenant(tenant)
            self._tenant_cache.pop(tenant_id, None)
        return tenant

    def add_api_key(self, tenant_id: UUID, name: str, changed_by: str) -> IssuedApiKey:
        tenant = self.get_tenant(tenant_id)
        issued, secret_hash = api_keys.new_key()
        tenant.add_api_key(key_id=issued.key_id, name=name, changed_by=changed_by)
        with db.transaction(self.pool) as conn:
            api_keys.store(conn, tenant_id, issued.key_id, secret_hash, name)
            # Inside the key transaction: a key whose event could not be stored is not kept either.
            self._save_tenant(tenant)
        return IssuedApiKey(issued.key_id, name, issued.api_key, datetime.now(UTC))

    def list_api_keys(self, tenant_id: UUID) -> list[dict[str, Any]]:
        with db.transaction(self.pool) as conn:
            return api_keys.views(conn, tenant_id, datetime.now(UTC))

    def rotate_named_api_key(
        self,
        tenant_id: UUID,
        key_id: str,
        changed_by: str,
        grace: timedelta = api_keys.DEFAULT_ROTATION_GRACE,
    ) -> IssuedApiKey:
        """Replace one key by a new one of the same name; the old one works for ``grace`` more,
        the tenant's other keys are untouched."""
        tenant = self.get_tenant(tenant_id)
        issued, secret_hash = api_keys.new_key()
        now = datetime.now(UTC)
        valid_until = now + grace
        with db.transaction(self.pool) as conn:
            found = api_keys.find(conn, tenant_id, key_id, now)
            if found is None:
                # Another tenant's key answers exactly like a missing one: key ids must not leak.
                raise ApiKeyNotFound(f"no API key {key_id}")
            name = str(found["name"])
            # A user's key is replaced by a key of the same user: never by one acting as admin.
            api_keys.store(conn, tenant_id, issued.key_id, secret_hash, name, found.get("user_id"))
            api_keys.expire(conn, key_id, valid_until)
            tenant.rotate_api_key(
                key_id=issued.key_id,
                previous_key_id=key_id,
                previous_key_valid_until=valid_until,
                name=name,
                changed_by=changed_by,
            )
            # Inside the key transaction: if the event cannot be stored, the new key is not either.
            self._save_tenant(tenant)
        self._auth_cache.clear()
        return IssuedApiKey(issued.key_id, name, issued.api_key, now, key_id, valid_until)

    def revoke_api_key(self, tenant_id: UUID, key_id: str, changed_by: str) -> None:
        tenant = self.get_tenant(tenant_id)
        now = datetime.now(UTC)
        with db.transaction(self.pool) as conn:
            found = api_keys.find(conn, tenant_id, key_id, now)
            if found is None:
                raise ApiKeyNotFound(f"no API key {key_id}")
            # The table decides too: after `tenants rotate-key` the others only run out their grace
            # period, and revoking the one lasting key would lock the tenant out when it ends.
            if found["expires_at"] is None and api_keys.lasting_others(conn, tenant_id, key_id) == 0:
                raise ApiKeyConflict(
                    f"key {key_id} is the tenant's only lasting key: add another before revoking it",
                    {"key_id": key_id},
                )
            try:
                tenant.revoke_api_key(key_id=key_id, changed_by=changed_by)
            except LastApiKey as exc:
                raise ApiKeyConflict(str(exc), {"key_id": key_id}) from exc
            except UnknownApiKey:
                pass  # a key in its rotation grace period: it was retired on the aggregate already
            api_keys.revoke(conn, key_id, now)
            if tenant.pending_events:
                self._save_tenant(tenant)
        self._auth_cache.clear()  # other processes forget within AUTH_CACHE_SECONDS

    # -- provider settings ------------------------------------------------------------------

    def save_integration(
        self,
        ring: KeyRing,
        tenant_id: UUID,
        provider: str,
        *,
        changed_by: str,
        enabled: bool,
        environment: str | None,
        base_url: str | None,
        credentials: dict[str, str] | None,
        endpoints: EndpointPolicy,
        mode: DeploymentMode,
    ) -> dict[str, Any]:
        """Store a provider's settings and record the change (never a credential value) on the
        Tenant aggregate, in one go: the row commits only once the event is stored."""
        tenant = self.get_tenant(tenant_id)
        with db.transaction(self.pool) as conn:
            saved = integrations.save(
                conn,
                ring,
                tenant_id,
                provider,
                enabled=enabled,
                environment=environment,
                base_url=base_url,
                credentials=credentials,
                endpoints=endpoints,
                mode=mode,
            )
            tenant.change_integration_settings(
                provider=provider,
                enabled=enabled,
                environment=saved.environment,
                base_url=saved.base_url,
                credentials_changed=list(saved.credentials_changed),
                changed_by=changed_by,
            )
            self._save_tenant(tenant)
            found = integrations.get_view(conn, tenant_id, provider)
        assert found is not None
        return found

    def remove_integration(self, ring: KeyRing, tenant_id: UUID, provider: str, *, changed_by: str) -> bool:
        """Disable a provider and forget its credentials and run-time secrets (DELETE
        /v1/integrations/{provider}), recorded as IntegrationSettingsChanged naming every credential
        field as changed; False when the tenant never configured it. The destination row stays, so
        the audit trail and health keep their subject; using it again needs every credential."""
        tenant = self.get_tenant(tenant_id)
        with db.transaction(self.pool) as conn:
            forgotten = integrations.forget(conn, ring, tenant_id, provider)
            if forgotten is None:
                return False
            tenant.change_integration_settings(
                provider=provider,
                enabled=False,
                environment=forgotten["environment"],
                base_url=forgotten["base_url"],
                credentials_changed=list(forgotten["fields"]),
                changed_by=changed_by,
            )
            self._save_tenant(tenant)
        return True

    def set_einvoicing(self, tenant_id: UUID, enabled: bool, changed_by: str) -> None:
        """Turn the gst-irp integration on or off, keeping its destination and credentials."""
        tenant = self.get_tenant(tenant_id)
        with db.transaction(self.pool) as conn:
            row = integrations.set_enabled(conn, tenant_id, EINVOICING_PROVIDER, enabled)
            if row is None:
                raise IntegrationNotConfigured(
                    f"{EINVOICING_PROVIDER} is not configured for tenant {tenant_id}: set its base_url "
                    f"and credentials first (PUT /v1/integrations/{EINVOICING_PROVIDER})"
                )
            tenant.change_integration_settings(
                provider=EINVOICING_PROVIDER,
                enabled=enabled,
                environment=row["environment"],
                base_url=row["base_url"],
                credentials_changed=[],
                changed_by=changed_by,
            )
            self._save_tenant(tenant)

    def cached_authentication(self, api_key: str) -> UUID | None:
        """The key's tenant if a successful look-up of it is still remembered; never blocks."""
        found = self.cached_identity(api_key)
        return found.tenant_id if found is not None else None

    def authenticate(self, api_key: str) -> UUID | None:
        """The key's tenant (see ``identify``)."""
        found = self.identify(api_key)
        return found.tenant_id if found is not None else None

    def cached_identity(self, api_key: str) -> api_keys.KeyIdentity | None:
        """Who the key acts as if a successful look-up of it is still remembered; never blocks."""
        cached = self._auth_cache.get(api_key)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        return None

    def identify(self, api_key: str) -> api_keys.KeyIdentity | None:
        """Who the key acts as: its tenant, user and role. Successful look-ups are remembered for
        ``Settings.auth_cache_seconds``, so a revoked or expired key, a user's role change or a
        disabled user takes effect at most that long after it was made."""
        now = time.monotonic()
        cached = self._auth_cache.get(api_key)
        if cached is not None and cached[1] > now:
            return cached[0]
        with db.transaction(self.pool) as conn:
            found = api_keys.identify(conn, api_key, datetime.now(UTC))
        if found is not None:
            if len(self._auth_cache) > 10_000:
                self._auth_cache.clear()
            self._auth_cache[api_key] = (found, now + self.settings.auth_cache_seconds)
        else:
            self._auth_cache.pop(api_key, None)
        return found

    def _tenant_for_invoicing(self, tenant_id: UUID) -> Tenant:
        """The tenant as invoices need it (seller GSTIN, state, legal name), cached briefly: loading
        the aggregate on every invoice was a measurable share of an API request."""
        now = time.monotonic()
        cached = self._tenant_cache.get(tenant_id)
        if cached is not None and cached[1] > now:
            return cached[0]
        tenant = self.get_tenant(tenant_id)
        self._tenant_cache[tenant_id] = (tenant, now + TENANT_CACHE_SECONDS)
        return tenant

    def get_tenant(self, tenant_id: UUID) -> Tenant:
        try:
            tenant: object = self.ledger.repository.get(tenant_id)
        except AggregateNotFoundError as exc:
            raise TenantNotFound(f"no tenant {tenant_id}") from exc
        except OperationalError as exc:
            raise db.DatabaseUnavailable(str(exc)) from exc
        if not isinstance(tenant, Tenant):
            raise TenantNotFound(f"no tenant {tenant_id}")
        return tenant

    def list_tenants(self) -> Iterator[Tenant]:
        for notification in self.ledger.recorder.select_notifications(
            start=None, limit=10_000, topics=[_topic_of(Tenant.Registered)]
        ):
            yield self.get_tenant(UUID(str(notification.originator_id)))

    # -- invoices ---------------------------------------------------------------------------

    def parse_issue_command(self, tenant_id: UUID, body: Any) -> IssueCommand:
        """The ``POST /v1/invoices`` body (or ingest command) as the tenant's country reads it: a
        Kenyan tenant's as IssueKenyanInvoice, everyone else's as before. One validation for both
        channels; raises pydantic's ValidationError, TenantNotFound."""
        tenant = self._tenant_for_invoicing(tenant_id)
        if tenant.country == "KE":
            return IssueKenyanInvoice.model_validate(body)
        return IssueInvoice.model_validate(body)

    def issue_invoice(
        self,
        tenant_id: UUID,
        command: IssueCommand,
        *,
        idempotency_key: str | None = None,
        source: str = "api",
        traceparent: str | None = None,
    ) -> IssuedInvoice:
        tenant = self._tenant_for_invoicing(tenant_id)
        request_hash = command.fingerprint()
        build: Callable[[str | None], Invoice]
        if isinstance(command, IssueKenyanInvoice):
            build = self._kenyan_builder(tenant, command, request_hash, source, traceparent)
        else:
            if tenant.country == "KE":
                raise ValidationFailed(
                    (Violation("body", "wrong_country", "a Kenyan tenant's invoices are Kenyan sales"),)
                )
            gst_command = command

            def build(key: str | None) -> Invoice:
                return build_invoice(
                    tenant,
                    gst_command,
                    key,
                    request_hash,
                    source,
                    traceparent,
                    today=today_in_india(datetime.now(UTC)),
                    max_future_days=self.settings.max_future_days,
                )

        if not idempotency_key:
            saved = self._save_new_invoice(tenant_id, build(None), None, request_hash)
            return IssuedInvoice(saved, created=True)
        with self._claim_key(tenant_id, idempotency_key, request_hash, command) as earlier:
            if earlier is not None:
                return IssuedInvoice(earlier, created=False)
            invoice = build(idempotency_key)
            saved = self._save_new_invoice(tenant_id, invoice, idempotency_key, request_hash)
            return IssuedInvoice(saved, created=saved is invoice)

    def issue_invoices(self, requests: Sequence[InvoiceRequest]) -> list[IssuedInvoice | ServiceError]:
        """Issue a batch of invoices with one event-store transaction (the ingest agent's path).

        Each request gets the outcome ``issue_invoice`` would give it if the requests were issued
        one after another in order: an invoice, the one issued earlier under its key, or its own
        ServiceError (a bad request never fails its neighbours). The common case (new keys, new
        numbers, valid commands) is claimed with one multi-row insert and stored with one
        ``ledger.save``; whatever could interact with another request or with what is already
        stored goes through ``issue_invoice`` one at a time after the batch: a key or invoice
        number that repeats an earlier request of the batch (so per-aggregate order is the
        batch's order), a command the rules refuse, a key claimed before, and every request of a
        batch whose save hit an invoice number already stored. ``db.DatabaseUnavailable`` is
        raised for the whole batch: nothing of it is stored unless its claims committed too, and a
        retry of the batch answers the stored ones as replays.
        """
        outcomes: list[IssuedInvoice | ServiceError | None] = [None] * len(requests)
        today = today_in_india(datetime.now(UTC))
        batch: dict[int, tuple[Invoice, str]] = {}  # request index -> (unsaved invoice, request hash)
        one_by_one: list[int] = []
        seen_keys: set[tuple[UUID, str]] = set()
        seen_invoices: set[UUID] = set()

        def prepare(request: InvoiceRequest) -> tuple[Invoice, str]:
            command = request.command
            assert isinstance(command, IssueInvoice), "Kenyan sales are issued one at a time"
            request_hash = command.fingerprint()
            invoice = build_invoice(
                self._tenant_for_invoicing(request.tenant_id),
                command,
                request.idempotency_key,
                request_hash,
                request.source,
                request.traceparent,
                today=today,
                max_future_days=self.settings.max_future_days,
            )
            return invoice, request_hash

        for index, request in enumerate(requests):
            command = request.command
            if isinstance(command, IssueKenyanInvoice):
                # A Kenyan sale is built against the tenant's eTIMS integration (environment,
                # branch, synced rates): issue_invoice knows how; batches carry Indian invoices.
                one_by_one.append(index)
                continue
            invoice_id = invoice_id_for(request.tenant_id, financial_year(command.date), command.number)
            slot = (request.tenant_id, request.idempotency_key)
            repeated = slot in seen_keys or invoice_id in seen_invoices
            seen_keys.add(slot)
            seen_invoices.add(invoice_id)
            if repeated:
                one_by_one.append(index)
                continue
            try:
                batch[index] = prepare(request)
            except ServiceError:
                # Refused (unknown tenant, tax rules): issue_invoice gives the exact answer, which
                # for a key already used with another body is idempotency_key_reused.
                one_by_one.append(index)
        pending = dict(batch)
        for attempt in range(2):
            if not pending:
                break
            try:
                for index in self._claim_and_save(requests, pending):
                    outcomes[index] = IssuedInvoice(pending[index][0], created=True)
                break
            except IdempotencyKeyInProgress:
                break  # a key held by a concurrent request: one at a time, each its own answer
            except IntegrityError:
                # An invoice number stored before (a duplicate, or a redelivery whose claims were
                # lost). Those go one at a time; the rest of the batch is tried once more, built
                # afresh: the failed save has taken the pending events out of its aggregates.
                stored = self._stored_invoices([invoice.id for invoice, _ in pending.values()])
                if attempt or not stored:
                    break
                pending = {i: prepare(requests[i]) for i, (inv, _) in pending.items() if inv.id not in stored}
                batch.update(pending)
        one_by_one.extend(index for index in batch if outcomes[index] is None)
        for index in sorted(one_by_one):
            request = requests[index]
            try:
                outcomes[index] = self.issue_invoice(
                    request.tenant_id,
                    request.command,
                    idempotency_key=request.idempotency_key,
                    source=request.source,
                    traceparent=request.traceparent,
                )
            except ServiceError as exc:
                outcomes[index] = exc
        done = [outcome for outcome in outcomes if outcome is not None]
        assert len(done) == len(outcomes), "every request gets an outcome"
        return done

    def _claim_and_save(
        self, requests: Sequence[InvoiceRequest], batch: dict[int, tuple[Invoice, str]]
    ) -> list[int]:
        """Claim the batch's keys in one insert and save the invoices of the keys claimed, in one
        event-store transaction, while the claims are held (as ``_claim_key`` does for one).
        Returns the indexes saved; a key claimed before is left out, for ``issue_invoice``."""
        indexes = sorted(batch, key=lambda i: (str(requests[i].tenant_id), requests[i].idempotency_key))
        with db.transaction(self.pool) as conn:
            _claim_settings(conn)
            try:
                # Rows in a fixed order (tenant, key): two batches sharing keys lock them in the
                # same order and cannot deadlock.
                claimed = conn.execute(
                    "INSERT INTO idempotency_keys (tenant_id, key, request_hash, invoice_id)"
                    " SELECT * FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::uuid[])"
                    " ON CONFLICT (tenant_id, key) DO NOTHING RETURNING tenant_id, key",
                    (
                        [requests[i].tenant_id for i in indexes],
                        [requests[i].idempotency_key for i in indexes],
                        [batch[i][1] for i in indexes],
                        [batch[i][0].id for i in indexes],
                    ),
                ).fetchall()
            except psycopg.errors.LockNotAvailable as exc:
                raise IdempotencyKeyInProgress("a key of the batch is held by another request") from exc
            mine = {(UUID(str(row["tenant_id"])), str(row["key"])) for row in claimed}  # type: ignore[call-overload]
            saved = [i for i in indexes if (requests[i].tenant_id, requests[i].idempotency_key) in mine]
            if saved:
                self._save(*(batch[i][0] for i in saved))
        return saved

    def _stored_invoices(self, invoice_ids: list[UUID]) -> set[UUID]:
        """Which of these invoices the event store holds already (their first event)."""
        table = sql.Identifier(self.ledger.recorder.events_table_name)  # type: ignore[attr-defined]
        with db.transaction(self.pool) as conn:
            rows = conn.execute(
                sql.SQL(
                    "SELECT originator_id FROM {} WHERE originator_id = ANY(%s) AND originator_version = 1"
                ).format(table),
                (invoice_ids,),
            ).fetchall()
        return {UUID(str(row["originator_id"])) for row in rows}  # type: ignore[call-overload]

    def _kenyan_builder(
        self,
        tenant: Tenant,
        command: IssueKenyanInvoice,
        request_hash: str,
        source: str,
        traceparent: str | None,
    ) -> Callable[[str | None], Invoice]:
        place = self._etims_place(tenant.id)
        with db.transaction(self.pool) as conn:
            rates = kenya.synced_rates(conn, place.environment)

        def build(key: str | None) -> Invoice:
            try:
                return kenya.build_kenyan_invoice(
                    tenant,
                    command,
                    place=place,
                    rates=rates,
                    idempotency_key=key,
                    request_hash=request_hash,
                    source=source,
                    traceparent=traceparent,
                    today=kenya.today_in_kenya(),
                    max_future_days=self.settings.max_future_days,
                )
            except TaxRuleError as exc:
                raise ValidationFailed(exc.violations) from exc

        return build

    def _etims_place(self, tenant_id: UUID) -> kenya.EtimsPlace:
        with db.transaction(self.pool) as conn:
            place = kenya.etims_place(conn, self._key_ring(), tenant_id)
        if place is None:
            raise EtimsNotConfigured(
                "this Kenyan tenant has no etims integration: save it first (PUT /v1/integrations/etims "
                "with environment and credentials {tin, bhf_id, device_serial, device_type}); "
                "every sale is stamped with its environment and branch",
                {"provider": kenya.ETIMS_PROVIDER},
            )
        return place

    def _key_ring(self) -> KeyRing:
        if self._ring is None:
            self._ring = load_key_ring(self.settings.var_dir)
        return self._ring

    # -- credit notes (Kenya) ---------------------------------------------------------------

    def issue_credit_note(
        self,
        tenant_id: UUID,
        original_id: UUID,
        command: IssueCreditNote,
        *,
        traceparent: str | None = None,
    ) -> IssuedInvoice:
        """Issue a credit note against a Kenyan invoice. The note and the original's Credited
        event are saved in one transaction on the original's next version: of two concurrent
        credit notes one wins, the other is re-checked against what the winner left."""
        tenant = self._tenant_for_invoicing(tenant_id)
        request_hash = command.fingerprint()
        # The same credit note sent again (a retry) answers with the one stored, before the limits
        # are checked: the first one may have used up the original.
        note_day = command.date or kenya.today_in_kenya()
        earlier = self._find_invoice(
            tenant_id, invoice_id_for(tenant_id, kenya.kenya_financial_year(note_day), command.number)
        )
        if earlier is not None:
            return self._credit_note_replay(earlier, original_id, request_hash)
        for _ in range(CREDIT_NOTE_ATTEMPTS):
            original = self.get_invoice(tenant_id, original_id)
            if original.country != "KE" or original.document_type != DocumentType.INVOICE:
                raise InvoiceStateConflict(
                    f"{original.number} is not a Kenyan invoice: only those take credit notes here",
                    {"invoice_id": str(original_id)},
                )
            if original.status == InvoiceStatus.CANCELLED:
                raise InvoiceStateConflict(f"invoice {original.number} is cancelled")
            place = self._etims_place(tenant_id)
            try:
                built = kenya.build_credit_note(
                    tenant,
                    original,
                    command,
                    environment=place.environment,
                    request_hash=request_hash,
                    traceparent=traceparent,
                    today=kenya.today_in_kenya(),
                    max_future_days=self.settings.max_future_days,
                )
            except TaxRuleError as exc:
                if "credit_note_exceeds_original" in kenya.codes_of(exc.violations):
                    raise CreditNoteExceedsOriginal(exc.violations) from exc
                raise ValidationFailed(exc.violations) from exc
            note = built.note
            original.record_credit(
                credit_note_id=str(note.id), credit_note_number=note.number, lines=built.credited
            )
            try:
                self._save(note, original)
            except IntegrityError:
                existing = self._find_invoice(tenant_id, note.id)
                if existing is None:
                    continue  # another credit note took the original's version: check again
                return self._credit_note_replay(existing, original_id, request_hash)
            return IssuedInvoice(note, created=True)
        raise TenantChangedConcurrently(
            "the invoice was credited by other requests at the same time, repeatedly: retry",
            {"invoice_id": str(original_id)},
        )

    @staticmethod
    def _credit_note_replay(existing: Invoice, original_id: UUID, request_hash: str) -> IssuedInvoice:
        if existing.request_hash == request_hash and existing.original_invoice_id == str(original_id):
            return IssuedInvoice(existing, created=False)
        raise DuplicateInvoiceNumber(
            f"invoice number {existing.number} already exists in financial year {existing.financial_year}",
            {"number": existing.number, "invoice_id": str(existing.id)},
        )

    # -- credit and debit notes (India, issue 11) ---------------------------------------------

    def parse_credit_note_command(self, tenant_id: UUID, body: Any) -> IssueCreditNote | IssueGstNote:
        """The ``POST /v1/invoices/{id}/credit-notes`` body as the tenant's country reads it: a
        Kenyan tenant's as before (IssueCreditNote), everyone else's as IssueGstNote."""
        tenant = self._tenant_for_invoicing(tenant_id)
        if tenant.country == "KE":
            return IssueCreditNote.model_validate(body)
        return IssueGstNote.model_validate(body)

    def issue_gst_note(
        self,
        tenant_id: UUID,
        original_id: UUID,
        command: IssueGstNote,
        *,
        kind: str,
        idempotency_key: str | None = None,
        source: str = "api",
        traceparent: str | None = None,
    ) -> IssuedInvoice:
        """Issue an Indian credit or debit note against invoice ``original_id``.

        A credit note is saved with the original's Credited event in one transaction on the
        original's next version, as for Kenya: of two concurrent credit notes one wins and the other
        is checked again against what the winner left. The same note sent again (same number, same
        body, same original) answers with the one stored; an Idempotency-Key is honoured as for
        invoices."""
        if kind not in india.NOTE_KINDS:
            raise ValueError(kind)
        tenant = self._tenant_for_invoicing(tenant_id)
        if tenant.country == "KE":
            raise ValidationFailed(
                (Violation("body", "wrong_country", "a Kenyan tenant's credit notes are eTIMS credit notes"),)
            )
        day = command.date or today_in_india(datetime.now(UTC))
        resolved = command.model_copy(update={"date": day})
        request_hash = hashlib.sha256(f"{kind}/{original_id}/{command.fingerprint()}".encode()).hexdigest()
        note_id = invoice_id_for(tenant_id, financial_year(day), command.number)
        if not idempotency_key:
            return self._issue_gst_note(
                tenant, original_id, resolved, kind, note_id, None, request_hash, source, traceparent
            )
        with self._claim_key(tenant_id, idempotency_key, request_hash, resolved) as earlier:
            if earlier is not None:
                return IssuedInvoice(earlier, created=False)
            return self._issue_gst_note(
                tenant,
                original_id,
                resolved,
                kind,
                note_id,
                idempotency_key,
                request_hash,
                source,
                traceparent,
            )

    def _issue_gst_note(
        self,
        tenant: Tenant,
        original_id: UUID,
        command: IssueGstNote,
        kind: str,
        note_id: UUID,
        idempotency_key: str | None,
        request_hash: str,
        source: str,
        traceparent: str | None,
    ) -> IssuedInvoice:
        assert command.date is not None
        earlier = self._find_invoice(tenant.id, note_id)
        if earlier is not None:
            return self._credit_note_replay(earlier, original_id, request_hash)
        for _ in range(CREDIT_NOTE_ATTEMPTS):
            original = self.get_invoice(tenant.id, original_id)
            if original.country != "IN" or original.document_type != DocumentType.INVOICE:
                raise InvoiceStateConflict(
                    f"{original.number} is not an Indian invoice: notes are issued against invoices",
                    {"invoice_id": str(original_id), "document_type": original.document_type},
                )
            if original.status == InvoiceStatus.CANCELLED:
                raise InvoiceStateConflict(
                    f"invoice {original.number} is cancelled: it takes no notes",
                    {"invoice_id": str(original_id)},
                )
            try:
                built = india.build_gst_note(
                    tenant,
                    original,
                    command,
                    kind=kind,
                    day=command.date,
                    today=today_in_india(datetime.now(UTC)),
                    max_future_days=self.settings.max_future_days,
                    idempotency_key=idempotency_key,
                    request_hash=request_hash,
                    source=source,
                    traceparent=traceparent,
                )
            except TaxRuleError as exc:
                if "credit_note_exceeds_original" in india.codes_of(exc.violations):
                    raise CreditNoteExceedsOriginal(exc.violations) from exc
                raise ValidationFailed(exc.violations) from exc
            note = built.note
            if kind == DocumentType.CREDIT_NOTE:
                original.record_credit(
                    credit_note_id=str(note.id), credit_note_number=note.number, lines=built.credited
                )
                aggregates: tuple[Invoice, ...] = (note, original)
            else:
                aggregates = (note,)
            try:
                self._save(*aggregates)
            except IntegrityError:
                existing = self._find_invoice(tenant.id, note.id)
                if existing is None:
                    continue  # another credit note took the original's version: check again
                return self._credit_note_replay(existing, original_id, request_hash)
            return IssuedInvoice(note, created=True)
        raise TenantChangedConcurrently(
            "the invoice was credited by other requests at the same time, repeatedly: retry",
            {"invoice_id": str(original_id)},
        )

    def _cancel_credit_note(
        self, tenant_id: UUID, note: Invoice, command: CancelInvoice, traceparent: str | None
    ) -> Invoice:
        """Cancel an Indian credit note and give what it took back to its original, in one
        transaction (the original's next version): a concurrent credit note is then checked against
        the released amounts, never against a stale remainder."""
        assert note.original_invoice_id is not None
        for _ in range(CREDIT_NOTE_ATTEMPTS):
            original = self.get_invoice(tenant_id, UUID(note.original_invoice_id))
            note.cancel(
                reason=command.reason, remark=command.remark, at=datetime.now(UTC), traceparent=traceparent
            )
            released = original.release_credit(credit_note_id=str(note.id), credit_note_number=note.number)
            try:
                if released:
                    self._save(note, original)
                else:
                    self._save(note)
                return note
            except IntegrityError:
                # Another event took one of the versions: decide again on both, as stored now.
                note = self.get_invoice(tenant_id, note.id)
                if note.status == InvoiceStatus.CANCELLED:
                    raise InvoiceStateConflict(f"invoice {note.number} is already cancelled") from None
        raise TenantChangedConcurrently(
            "the credit note's invoice changed at the same time, repeatedly: retry",
            {"invoice_id": str(note.id)},
        )

    def _find_invoice(self, tenant_id: UUID, invoice_id: UUID) -> Invoice | None:
        try:
            return self.get_invoice(tenant_id, invoice_id)
        except InvoiceNotFound:
            return None

    def _save_new_invoice(
        self, tenant_id: UUID, invoice: Invoice, idempotency_key: str | None, request_hash: str
    ) -> Invoice:
        """Save a new invoice; the invoice stored before under the same key when a retry finds it."""
        try:
            self._save(invoice)
        except IntegrityError as exc:
            existing = self.get_invoice(tenant_id, invoice.id)
            # A retry whose first attempt stored the invoice but died before its key row committed.
            if idempotency_key and existing.idempotency_key == idempotency_key:
                if existing.request_hash != request_hash:
                    raise _key_reused(idempotency_key) from exc
                return existing
            raise DuplicateInvoiceNumber(
                f"invoice number {invoice.number} already exists in financial year {existing.financial_year}",
                {
                    "number": invoice.number,
                    "financial_year": existing.financial_year,
                    "invoice_id": str(existing.id),
                },
            ) from exc
        return invoice

    @contextmanager
    def _claim_key(
        self, tenant_id: UUID, key: str, request_hash: str, command: IssueCommand | IssueGstNote
    ) -> Iterator[Invoice | None]:
        """Claim an Idempotency-Key before issuing; yields the invoice of an earlier claim, if any.

        The claim is the key's row, inserted in a transaction held open while the invoice is
        issued: PostgreSQL makes a second insert of the same (tenant, key) wait for the first
        transaction (unique index), then find its committed row. So concurrent requests with one
        key issue exactly one invoice; the others answer with it (same body) or as a reuse (another
        body). A failure or crash rolls the claim back, and the next attempt may issue.
        """
        # An Indian note's date is resolved (default today) before its key is claimed.
        assert command.date is not None
        year = (
            kenya.kenya_financial_year(command.date)
            if isinstance(command, IssueKenyanInvoice)
            else financial_year(command.date)
        )
        invoice_id = invoice_id_for(tenant_id, year, command.number)
        with db.transaction(self.pool) as conn:
            _claim_settings(conn)
            try:
                claimed = conn.execute(
                    "INSERT INTO idempotency_keys (tenant_id, key, request_hash, invoice_id)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (tenant_id, key) DO NOTHING RETURNING 1",
                    (tenant_id, key, request_hash, invoice_id),
                ).fetchone()
            except psycopg.errors.LockNotAvailable as exc:
                raise IdempotencyKeyInProgress(
                    f"a request with Idempotency-Key {key!r} is still being processed; retry shortly",
                    {"idempotency_key": key},
                ) from exc
            if claimed is not None:
                yield None
                return
            row = conn.execute(
                "SELECT request_hash, invoice_id FROM idempotency_keys WHERE tenant_id = %s AND key = %s",
                (tenant_id, key),
            ).fetchone()
        assert row is not None  # the conflicting claim committed, or our insert would have won
        if row["request_hash"] != request_hash:  # type: ignore[call-overload]
            raise _key_reused(key)
        yield self.get_invoice(tenant_id, UUID(str(row["invoice_id"])))  # type: ignore[call-overload]

    def cancel_invoice(
        self,
        tenant_id: UUID,
        invoice_id: UUID,
        command: CancelInvoice,
        traceparent: str | None = None,
        now: datetime | None = None,
    ) -> Invoice:
        invoice = self.get_invoice(tenant_id, invoice_id)
        if invoice.status == "cancelled":
            raise InvoiceStateConflict(f"invoice {invoice.number} is already cancelled")
        if invoice.einvoice is not None:
            check_irn_cancellable(invoice.einvoice["ack_date"], now or datetime.now(UTC))
        if invoice.etims is not None and invoice.etims["status"] == EtimsStatus.SIGNED:
            # KRA has no cancellation of a signed sale: a credit note (rcptTyCd R) reverses it.
            raise InvoiceStateConflict(
                f"invoice {invoice.number} is signed by KRA eTIMS: issue a credit note instead "
                f"(POST /v1/invoices/{invoice.id}/credit-notes)"
            )
        if invoice.country == "IN" and invoice.credits_by_note:
            # Its credit notes would then credit a cancelled supply (GSTR-1 would report both).
            raise InvoiceStateConflict(
                f"invoice {invoice.number} has credit notes that are not cancelled: cancel them first",
                {"credit_note_ids": sorted(invoice.credits_by_note)},
            )
        if (
            invoice.country == "IN"
            and invoice.document_type == DocumentType.CREDIT_NOTE
            and invoice.original_invoice_id
        ):
            return self._cancel_credit_note(tenant_id, invoice, command, traceparent)
        invoice.cancel(
            reason=command.reason, remark=command.remark, at=datetime.now(UTC), traceparent=traceparent
        )
        self._save(invoice)
        return invoice

    # -- alerts (ledger.alert.v1) -----------------------------------------------------------------

    def raise_alert(
        self,
        tenant_id: UUID,
        *,
        severity: str,
        cause: str,
        subject: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        raised_at: datetime | None = None,
    ) -> None:
        """Record an alert; the relay publishes it on ``ledger.alert.v1`` keyed by the tenant id.

        The same alert (tenant, severity, cause, subject, message) raised again within
        ``engine.domain.alert.COLLAPSE_WINDOW`` is the same aggregate and is stored, hence published,
        once: a job retrying or two workers noticing the same condition do not flood the topic."""
        at = raised_at or datetime.now(UTC)
        clean = check_alert(severity, cause, dict(details or {}))
        alert_id = alert_id_for(
            tenant_id, severity=severity, cause=cause, subject=subject, message=message, raised_at=at
        )
        try:
            self.ledger.repository.get(alert_id)
            return  # raised already in this window
        except AggregateNotFoundError:
            pass
        except OperationalError as exc:
            raise db.DatabaseUnavailable(str(exc)) from exc
        alert = Alert(
            tenant_id=tenant_id,
            severity=severity,
            cause=cause,
            subject=subject,
            message=message,
            details=clean,
            raised_at=at,
        )
        # Raised concurrently by another process in the same window: that one is the alert.
        with suppress(IntegrityError):
            self._save(alert)

    # -- results of connector jobs (e-invoicing) ---------------------------------------------

    def still_wanted(self, tenant_id: UUID, invoice_id: UUID) -> bool:
        """Whether the invoice still wants an IRN: neither recorded yet nor cancelled meanwhile.
        One question for the IRN handler (connectors/gst_irp/handler.py), which holds the issued
        document but cannot know what happened after its job was queued."""
        invoice = self.get_invoice(tenant_id, invoice_id)
        return invoice.einvoice is None and invoice.status != InvoiceStatus.CANCELLED

    def record_irn(self, tenant_id: UUID, invoice_id: UUID, **result: Any) -> bool:
        """Record an IRN on its invoice; False when that IRN was already recorded (a redelivery),
        IrnAlreadyRecorded when a different one is."""
        invoice = self.get_invoice(tenant_id, invoice_id)
        changed = invoice.record_irn(**result)
        if changed:
            self._save(invoice)
        return changed

    def record_irn_failure(self, tenant_id: UUID, invoice_id: UUID, **failure: Any) -> bool:
        invoice = self.get_invoice(tenant_id, invoice_id)
        changed = invoice.record_irn_failure(**failure)
        if changed:
            self._save(invoice)
        return changed

    def record_irn_cancellation(self, tenant_id: UUID, invoice_id: UUID, **result: Any) -> bool:
        invoice = self.get_invoice(tenant_id, invoice_id)
        changed = invoice.record_irn_cancellation(**result)
        if changed:
            self._save(invoice)
        return changed

    # -- results of the eTIMS connector (Kenya): the EtimsResults port of docs/etims.md ---------
    # Each is idempotent: the same call again stores nothing, and a signed sale ignores a later
    # failure. A result that lost a race with another writer of the same invoice (its version
    # moved on) is retried against the fresh invoice, which then decides again.

    def record_etims_numbered(
        self,
        tenant_id: UUID,
        invoice_id: UUID,
        *,
        job_id: str,
        environment: str,
        branch_id: str,
        invc_no: int,
        device_type: str,
    ) -> None:
        self._record_etims(
            tenant_id,
            invoice_id,
            lambda invoice: invoice.record_etims_numbered(
                job_id=job_id,
                environment=environment,
                branch_id=branch_id,
                invc_no=invc_no,
                device_type=device_type,
                traceparent=telemetry.current_traceparent(),
            ),
        )

    def record_etims_signed(
        self,
        tenant_id: UUID,
        invoice_id: UUID,
        *,
        job_id: str,
        environment: str,
        branch_id: str,
        receipt: Mapping[str, Any],
    ) -> None:
        """``receipt``: invc_no, receipt_no, total_receipt_no, internal_data, receipt_signature,
        sdc_id, mrc_no, sdc_datetime, qr_url, device_type, adopted_existing."""
        self._record_etims(
            tenant_id,
            invoice_id,
            lambda invoice: invoice.record_etims_signed(
                job_id=job_id,
                environment=environment,
                branch_id=branch_id,
                receipt=receipt,
                traceparent=telemetry.current_traceparent(),
            ),
        )

    def record_etims_failed(
        self,
        tenant_id: UUID,
        invoice_id: UUID,
        *,
        job_id: str,
        environment: str,
        branch_id: str,
        invc_no: int,
        result_code: str,
        error_class: str,
        message: str,
    ) -> None:
        self._record_etims(
            tenant_id,
            invoice_id,
            lambda invoice: invoice.record_etims_failed(
                job_id=job_id,
                environment=environment,
                branch_id=branch_id,
                invc_no=invc_no,
                result_code=result_code,
                error_class=error_class,
                message=message,
                traceparent=telemetry.current_traceparent(),
            ),
        )

    def record_etims_voided(
        self,
        tenant_id: UUID,
        invoice_id: UUID,
        *,
        environment: str,
        branch_id: str,
        invc_no: int,
        reason: str,
        voided_by: str,
    ) -> None:
        """Raises InvoiceStateConflict (409) for a sale KRA already signed."""
        self._record_etims(
            tenant_id,
            invoice_id,
            lambda invoice: invoice.record_etims_voided(
                environment=environment,
                branch_id=branch_id,
                invc_no=invc_no,
                reason=reason,
                voided_by=voided_by,
                traceparent=telemetry.current_traceparent(),
            ),
        )

    def _record_etims(self, tenant_id: UUID, invoice_id: UUID, change: Callable[[Invoice], bool]) -> None:
        for attempt in range(ETIMS_RECORD_ATTEMPTS):
            invoice = self.get_invoice(tenant_id, invoice_id)
            try:
                if not change(invoice):
                    return
            except NotAKenyanSale as exc:
                raise InvoiceStateConflict(str(exc), {"invoice_id": str(invoice_id)}) from exc
            except EtimsAlreadySigned as exc:
                raise InvoiceStateConflict(str(exc), {"invoice_id": str(invoice_id)}) from exc
            try:
                self._save(invoice)
                return
            except IntegrityError:
                # Another event (a credit note, a cancellation, a concurrent result) took this
                # version: decide again on the fresh invoice.
                if attempt == ETIMS_RECORD_ATTEMPTS - 1:
                    raise

    def get_invoice(self, tenant_id: UUID, invoice_id: UUID) -> Invoice:
        try:
            invoice: object = self.ledger.repository.get(invoice_id)
        except AggregateNotFoundError as exc:
            raise InvoiceNotFound(f"no invoice {invoice_id}") from exc
        except OperationalError as exc:
            raise db.DatabaseUnavailable(str(exc)) from exc
        # Another tenant's invoice is reported exactly like a missing one: ids must not leak.
        if not isinstance(invoice, Invoice) or invoice.tenant_id != tenant_id:
            raise InvoiceNotFound(f"no invoice {invoice_id}")
        return invoice

    # -- drafts and the number series (issue 13): the logic is in engine/drafts.py ----------------

    def create_draft_invoice(
        self,
        tenant_id: UUID,
        command: DraftInvoice,
        *,
        source: str,
        external_ref: str | None,
        traceparent: str | None,
    ) -> InvoiceDraft:
        """A draft GST invoice (no number, taxes computed); the same (source, external_ref) gives the
        same draft back, also when created concurrently."""
        return self.create_draft(
            tenant_id, command, source=source, external_ref=external_ref, traceparent=traceparent
        ).draft

    def create_draft(
        self,
        tenant_id: UUID,
        command: DraftInvoice,
        *,
        source: str,
        external_ref: str | None,
        traceparent: str | None,
    ) -> drafts.DraftOutcome:
        return drafts.create_draft(
            self, tenant_id, command, source=source, external_ref=external_ref, traceparent=traceparent
        )

    def update_draft_invoice(
        self, tenant_id: UUID, draft_id: UUID, command: DraftInvoice, traceparent: str | None
    ) -> InvoiceDraft:
        return drafts.update_draft(self, tenant_id, draft_id, command, traceparent)

    def discard_draft_invoice(
        self, tenant_id: UUID, draft_id: UUID, reason: str | None, traceparent: str | None
    ) -> InvoiceDraft:
        return drafts.discard_draft(self, tenant_id, draft_id, reason, traceparent)

    def issue_draft_invoice(
        self, tenant_id: UUID, draft_id: UUID, traceparent: str | None
    ) -> drafts.IssuedDraft:
        """Give the draft the next number of the tenant's series and issue it (an ordinary invoice)."""
        return drafts.issue_draft(self, tenant_id, draft_id, traceparent)

    def get_draft_invoice(self, tenant_id: UUID, draft_id: UUID) -> InvoiceDraft:
        return drafts.get_draft(self, tenant_id, draft_id)

    # -- helpers ----------------------------------------------------------------------------

    def _save(self, *aggregates: Any) -> None:
        # The event-store write as its own span: a child of whatever command caused it (HTTP
        # request, connector attempt), so a trace shows how long the store took.
        with telemetry.tracer.start_as_current_span(
            "event store write",
            attributes={
                "db.system.name": "postgresql",
                "ledgerflow.aggregate_ids": [str(a.id) for a in aggregates],
                "ledgerflow.events": sum(len(a.pending_events) for a in aggregates),
            },
        ):
            self._write(*aggregates)

    def _save_tenant(self, tenant: Tenant) -> None:
        try:
            self._save(tenant)
        except IntegrityError as exc:
            raise TenantChangedConcurrently(
                "the tenant was changed by another request at the same time: retry",
                {"tenant_id": str(tenant.id)},
            ) from exc

    def _write(self, *aggregates: Any) -> None:
        try:
            self.ledger.save(*aggregates)
        except IntegrityError:
            raise
        except (OperationalError, PersistenceError) as exc:
            raise db.DatabaseUnavailable(str(exc)) from exc


# How often a credit note is re-checked after another took its original's next version.
CREDIT_NOTE_ATTEMPTS = 20
# How often an eTIMS result is re-decided after losing a race for the invoice's next version.
ETIMS_RECORD_ATTEMPTS = 5

# The IRP accepts cancellation only within 24 hours of the acknowledgement (error 2270 after);
# AckDt is Indian Standard Time. Source: india-gst reference notes, section 1.
IRN_CANCELLATION_WINDOW = timedelta(hours=24)
IST = timezone(timedelta(hours=5, minutes=30), "IST")
CANCELLATION_REASON_CODES = {"duplicate": 1, "data_entry_mistake": 2, "order_cancelled": 3, "other": 4}


def check_irn_cancellable(ack_date: str, now: datetime) -> None:
    acknowledged = datetime.strptime(ack_date, "%Y-%m-%d %H:%M:%S").replace(tzinfo=IST)
    deadline = acknowledged + IRN_CANCELLATION_WINDOW
    if now >= deadline:
        raise ValidationFailed(
            (
                Violation(
                    "invoice",
                    "irn_cancellation_window_passed",
                    f"the IRN was acknowledged at {ack_date} IST; the e-invoice portal accepts "
                    f"cancellation only within 24 hours (until {deadline:%Y-%m-%d %H:%M:%S} IST). "
                    "Issue a credit note instead.",
                    {"ack_date": ack_date, "deadline": deadline.isoformat()},
                ),
            )
        )


def _text_violations(path: str, value: str | None) -> list[Violation]:
    """A tenant's text fields obey the same rule as every command's (engine/fields.py)."""
    found = forbidden_character(value) if value else None
    if found is None:
        return []
    index, what = found
    return [
        Violation(
            path,
            "control_character",
            f"{path}: text may not contain {what} (found at position {index})",
            {"position": index},
        )
    ]


def _claim_settings(conn: psycopg.Connection[Any]) -> None:
    """The settings of a transaction holding Idempotency-Key claims, in one round trip.

    A claim held by a request that hangs must not hold the others forever (lock_timeout). And a
    claim is not worth a WAL flush: if a crash loses its row, a retry with the same key hits the
    invoice's number, finds the key inside its Issued event and answers as a replay."""
    conn.execute(
        "SELECT set_config('lock_timeout', %s, true), set_config('synchronous_commit', 'off', true)",
        (f"{CLAIM_WAIT_SECONDS}s",),
    )


def _kenya_identity_violations(
    country: str, kra_pin: str | None, gstin: str | None, state: str | None
) -> list[Violation]:
    """A Kenyan tenant is identified by its KRA PIN (eTIMS' TIN) and has no GST registration; a
    KRA PIN means nothing for another country's tenant."""
    found: list[Violation] = []
    if country.upper() == "KE":
        if not kra_pin:
            found.append(
                Violation(
                    "kra_pin", "missing_kra_pin", "a Kenyan tenant needs its KRA PIN (e.g. P051234567X)"
                )
            )
        else:
            try:
                validate_kra_pin(kra_pin, "kra_pin")
            except TaxRuleError as exc:
                found.extend(exc.violations)
        for path, value in (("gstin", gstin), ("state", state)):
            if value:
                found.append(
                    Violation(
                        path, "not_applicable", f"{path} is an Indian GST field: a Kenyan tenant has none"
                    )
                )
    elif kra_pin:
        found.append(
            Violation("kra_pin", "not_applicable", "a KRA PIN is for Kenyan tenants (country KE) only")
        )
    return found


def _key_reused(key: str) -> IdempotencyKeyReused:
    return IdempotencyKeyReused(
        f"Idempotency-Key {key!r} was already used with a different request body",
        {"idempotency_key": key},
    )


def _topic_of(event_class: type) -> str:
    return f"{event_class.__module__}:{event_class.__qualname__}"


def _state_mismatch(path: str, gstin: str, state: str) -> Violation:
    return Violation(
        path,
        "gstin_state_mismatch",
        f"GSTIN {gstin} belongs to state {gstin_state(gstin)} but the state given is {state}",
        {"gstin_state": gstin_state(gstin), "state": state},
    )


def build_invoice(
    tenant: Tenant,
    command: IssueInvoice,
    idempotency_key: str | None,
    request_hash: str,
    source: str,
    traceparent: str | None,
    *,
    today: date | None = None,
    max_future_days: int = 1,
) -> Invoice:
    """Check the command against the tax rules and build the (unsaved) invoice aggregate.

    ``today`` is the date in India (default: now); the invoice may be dated at most
    ``max_future_days`` after it (``Settings.max_future_days``)."""
    violations: list[Violation] = check_invoice_date(
        command.date,
        today=today or today_in_india(datetime.now(UTC)),
        max_future_days=max_future_days,
    )
    buyer_state = place_of_supply = buyer_gstin = None
    try:
        buyer_state = normalise_state(command.buyer.state, "buyer.state")
    except TaxRuleError as exc:
        violations.extend(exc.violations)
    if command.buyer.gstin:
        try:
            buyer_gstin = validate_gstin(command.buyer.gstin, "buyer.gstin")
        except TaxRuleError as exc:
            violations.extend(exc.violations)
    if buyer_gstin and buyer_state and gstin_state(buyer_gstin) != buyer_state:
        violations.append(_state_mismatch("buyer.gstin", buyer_gstin, buyer_state))
    try:
        place_of_supply = (
            normalise_state(command.place_of_supply, "place_of_supply")
            if command.place_of_supply
            else buyer_state
        )
    except TaxRuleError as exc:
        violations.extend(exc.violations)
    supply_type = (
        SupplyType(command.supply_type)
        if command.supply_type
        else (SupplyType.B2B if buyer_gstin else SupplyType.B2C)
    )
    if supply_type == SupplyType.B2B and not command.buyer.gstin:
        violations.append(Violation("buyer.gstin", "missing_gstin", "a B2B invoice needs the buyer's GSTIN"))
    extras = india.invoice_extras(command, supply_type.value, violations)
    if tenant.state is None:
        violations.append(
            Violation("tenant", "tenant_without_state", "the tenant has no GST state registered")
        )
    tax: InvoiceTax | None = None
    if place_of_supply and tenant.state:
        try:
            tax = compute_invoice_tax(
                invoice_date=command.date,
                seller_state=tenant.state,
                place_of_supply=place_of_supply,
                lines=[
                    LineInput(
                        description=line.description,
                        hsn=line.hsn,
                        quantity=line.quantity,
                        unit=line.unit,
                        unit_price=line.unit_price,
                        discount=line.discount,
                        gst_rate=line.gst_rate,
                        gst_rate_reason=line.gst_rate_reason,
                        supply_category=line.supply_category,
                    )
                    for line in command.lines
                ],
                supply_type=supply_type,
            )
        except TaxRuleError as exc:
            violations.extend(exc.violations)
    if violations or tax is None:
        raise ValidationFailed(tuple(violations))
    assert buyer_state is not None
    address = command.buyer.address
    return Invoice(
        **extras,
        tenant_id=tenant.id,
        number=command.number,
        financial_year=financial_year(command.date),
        invoice_date=command.date,
        currency="INR",
        supply_type=str(supply_type.value),
        # The seller as it stood at issue time, address included: the issued record carries it
        # (issued v3), so an e-invoice prints the address the invoice was issued under.
        seller={
            "gstin": tenant.gstin,
            "legal_name": tenant.legal_name,
            "state": tenant.state,
            "trade_name": tenant.name,
            "address": seller_address(tenant.address),
        },
        buyer={
            "name": command.buyer.name,
            "gstin": buyer_gstin,
            "state": buyer_state,
            "address": address.model_dump() if address else None,
        },
        place_of_supply=tax.place_of_supply,
        intra_state=tax.intra_state,
        lines=[
            {
                "line_no": line.line_no,
                "description": line.description,
                "hsn": line.hsn,
                "quantity": line.quantity,
                "unit": line.unit,
                "unit_price": line.unit_price,
                "discount": line.discount,
                "taxable_value": line.taxable_value,
                "gst_rate": line.gst_rate,
                "rate_source": line.rate_source,
                "master_rate": line.master_rate,
                "override_reason": line.override_reason,
                "cgst": line.cgst,
                "sgst": line.sgst,
                "igst": line.igst,
                "cess_rate": line.cess_rate,
                "cess": line.cess,
                "total": line.total,
                "supply_category": line.supply_category,
            }
            for line in tax.lines
        ],
        totals={
            "taxable": tax.taxable,
            "cgst": tax.cgst,
            "sgst": tax.sgst,
            "igst": tax.igst,
            "cess": tax.cess,
            "total": tax.total,
        },
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        source=source,
        traceparent=traceparent,
    )


def money(value: Decimal | str | None) -> str | None:
    """Amounts as the API and topics show them: a decimal string with two places."""
    if value is None:
        return None
    return f"{Decimal(value):.2f}"


__all__ = ["Ledger", "LedgerService", "in_memory_ledger", "invoice_id_for", "open_ledger"]
