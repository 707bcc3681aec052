"""Per-tenant provider settings: on/off, environment, base URL and encrypted credentials.

Credentials are sealed with the key ring (``engine/security/secrets.py``) bound to (tenant,
provider) and are never returned: the API shows only which fields are set and when each was last
rotated. Which providers exist, and which credential fields each needs, each connector declares
(connectors/registry.py), and the process's entry point registers them here (``register_providers``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from engine.errors import ConfigurationError, InvalidInput
from engine.security.egress import DeploymentMode, EgressRefused, EndpointPolicy, check_endpoint
from engine.security.secrets import KeyRing
from engine.tax.errors import Violation


@dataclass(frozen=True)
class Provider:
    name: str
    title: str
    credential_fields: tuple[str, ...]
    sandbox_url: str | None = None  # the project's own sandbox, for `ledgerflow run`


class ProvidersNotRegistered(ConfigurationError, RuntimeError):
    """Providers were needed before the process's entry point registered the connectors."""


class _Providers(Mapping[str, Provider]):
    """The connectors' providers, handed over by the process's composition root
    (``connectors.registry.register``, which calls ``register_providers``): the connectors depend on
    the engine, not the other way round. Until then every lookup fails loudly, so that a forgotten
    registration cannot pass for "no such provider"."""

    def __init__(self) -> None:
        self._registered: dict[str, Provider] | None = None

    def register(self, providers: Iterable[Provider]) -> None:
        self._registered = {**(self._registered or {}), **{p.name: p for p in providers}}

    def _all(self) -> dict[str, Provider]:
        if self._registered is None:
            raise ProvidersNotRegistered(
                "no providers registered: the process's entry point must call"
                " connectors.registry.register() first"
            )
        return self._registered

    def __getitem__(self, name: str) -> Provider:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


_PROVIDERS = _Providers()
PROVIDERS: Mapping[str, Provider] = _PROVIDERS


def register_providers(providers: Iterable[Provider]) -> None:
    """Make ``providers`` known (by name; registering one again replaces it)."""
    _PROVIDERS.register(providers)


@dataclass(frozen=True)
class IntegrationSettings:
    """What a connector needs to call a provider for one tenant (credentials decrypted)."""

    tenant_id: UUID
    provider: str
    enabled: bool
    environment: str
    base_url: str
    credentials: dict[str, str]


@dataclass(frozen=True)
class SavedIntegration:
    """What a save stored, for the audit event: the destination and the credential fields whose
    value changed (names only)."""

    environment: str
    base_url: str
    credentials_changed: tuple[str, ...]


class IntegrationError(InvalidInput):
    def __init__(self, code: str, message: str, violations: tuple[Violation, ...] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.violations = violations


def check_provider(provider: str) -> Provider:
    found = PROVIDERS.get(provider)
    if found is None:
        raise IntegrationError(
            "unknown_provider",
            f"unknown provider {provider!r}; known providers: {', '.join(sorted(PROVIDERS))}",
            (
                Violation(
                    "provider",
                    "unknown_provider",
                    f"unknown provider {provider!r}",
                    {"known": sorted(PROVIDERS)},
                ),
            ),
        )
    return found


def check_base_url(url: str, environment: str, endpoints: EndpointPolicy, mode: DeploymentMode) -> str:
    """The URL as stored, if the connector's endpoint policy allows it (engine/security/egress.py)."""
    try:
        return check_endpoint(url, environment, endpoints, mode)
    except EgressRefused as exc:
        raise IntegrationError(
            exc.code, exc.message, (Violation(exc.field, exc.code, exc.message, dict(exc.details)),)
        ) from exc


def associated_data(tenant_id: UUID, provider: str) -> bytes:
    """What a tenant's credentials for a provider are bound to when sealed (also used by re-encryption)."""
    return f"{tenant_id}/{provider}".encode()


def save(
    conn: psycopg.Connection,
    ring: KeyRing,
    tenant_id: UUID,
    provider: str,
    *,
    enabled: bool,
    environment: str | None,
    base_url: str | None,
    credentials: dict[str, str] | None,
    endpoints: EndpointPolicy,
    mode: DeploymentMode,
) -> SavedIntegration:
    """Create or replace a tenant's settings for a provider.

    ``environment`` and ``base_url`` may be omitted on an update (the stored ones are kept). So may
    credentials, field by field, as long as the destination stays the same: changing ``base_url`` or
    ``environment`` requires every credential field again in the same request, so that stored
    secrets never follow a URL to a place they were not given for. ``endpoints`` is the connector's
    URL policy and ``mode`` the deployment's (``Settings.mode``)."""
    spec = check_provider(provider)
    # Locked: two concurrent updates are judged one after the other against what the first wrote.
    current = _row(conn, tenant_id, provider, lock=True)
    environment = environment or (current["environment"] if current else "sandbox")
    if base_url is None:
        if current is None:
            message = f"base_url is required to configure {provider}"
            raise IntegrationError(
                "invalid_base_url", message, (Violation("base_url", "missing_base_url", message),)
            )
        base_url = str(current["base_url"])
    base_url = check_base_url(base_url, environment, endpoints, mode)
    given = {k: v for k, v in (credentials or {}).items()}
    stored: dict[str, str] = {}
    rotated: dict[str, str] = {}
    if current is not None:
        destination_changed = base_url != current["base_url"] or environment != current["environment"]
        if destination_changed:
            check_credentials_given_again(spec, given, current, base_url, environment)
        else:
            stored = orjson.loads(
                ring.open(current["credentials_sealed"], associated_data(tenant_id, provider))
            )
            rotated = dict(current["credential_rotated_at"])
    unknown = sorted(set(given) - set(spec.credential_fields))
    merged = {**stored, **given}
    missing = [f for f in spec.credential_fields if not merged.get(f)]
    violations = [
        Violation(f"credentials.{f}", "unknown_field", f"{provider} has no credential field {f!r}")
        for f in unknown
    ] + [
        Violation(f"credentials.{f}", "missing_credential", f"{provider} needs credentials.{f}")
        for f in missing
    ]
    if violations:
        raise IntegrationError(
            "invalid_credentials", "; ".join(v.message for v in violations), tuple(violations)
        )
    now = datetime.now(UTC).isoformat()
    changed = tuple(f for f in spec.credential_fields if f in given and stored.get(f) != given[f])
    for field in changed:
        rotated[field] = now
    keep_previous_webhook_secret(merged, stored, changed, now)
    sealed = ring.seal(orjson.dumps(merged), associated_data(tenant_id, provider))
    conn.execute(
        "INSERT INTO integrations (tenant_id, provider, enabled, environment, base_url, credentials_sealed,"
        " credential_rotated_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (tenant_id, provider) DO UPDATE SET enabled = EXCLUDED.enabled,"
        " environment = EXCLUDED.environment, base_url = EXCLUDED.base_url,"
        " credentials_sealed = EXCLUDED.credentials_sealed,"
        " credential_rotated_at = EXCLUDED.credential_rotated_at, updated_at = now()",
        (tenant_id, provider, enabled, environment, base_url, sealed, Jsonb(rotated)),
    )
    return SavedIntegration(environment, base_url, changed)


# Webhook secrets rotate with overlap: providers keep signing retries of earlier events with the
# secret they were first sent with (Razorpay retries for 24 hours and signs them with the old secret,
# reference/platform.md "Webhooks"), so the replaced secret stays valid for a while, kept sealed
# beside the new one under these names (never shown: the view lists the declared fields only).
WEBHOOK_SECRET_FIELD = "webhook_secret"
PREVIOUS_SECRET_SUFFIX = "__previous"
PREVIOUS_SECRET_REPLACED_AT_SUFFIX = "__replaced_at"


def keep_previous_webhook_secret(
    merged: dict[str, str], stored: Mapping[str, str], changed: Iterable[str], now: str
) -> None:
    """Keep the replaced value of a changed webhook secret field, and when it was replaced."""
    for field in changed:
        if field.endswith(WEBHOOK_SECRET_FIELD) and stored.get(field):
            merged[field + PREVIOUS_SECRET_SUFFIX] = stored[field]
            merged[field + PREVIOUS_SECRET_REPLACED_AT_SUFFIX] = now


def set_enabled(
    conn: psycopg.Connection, tenant_id: UUID, provider: str, enabled: bool
) -> dict[str, Any] | None:
    """Switch a configured provider on or off (destination and credentials kept); None when the
    tenant has not configured it."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "UPDATE integrations SET enabled = %s, updated_at = now() WHERE tenant_id = %s AND provider = %s"
            " RETURNING environment, base_url",
            (enabled, tenant_id, provider),
        ).fetchone()


def forget(conn: psycopg.Connection, ring: KeyRing, tenant_id: UUID, provider: str) -> dict[str, Any] | None:
    """Switch a provider off and drop its credentials (sealed as an empty set) and the secrets the
    connector obtained at run time; None when the tenant has not configured it."""
    spec = check_provider(provider)
    current = _row(conn, tenant_id, provider, lock=True)
    if current is None:
        return None
    conn.execute(
        "UPDATE integrations SET enabled = false, credentials_sealed = %s, credential_rotated_at = '{}',"
        " updated_at = now() WHERE tenant_id = %s AND provider = %s",
        (ring.seal(orjson.dumps({}), associated_data(tenant_id, provider)), tenant_id, provider),
    )
    conn.execute(
        "DELETE FROM connector_secrets WHERE tenant_id = %s AND provider = %s", (tenant_id, provider)
    )
    return {
        "environment": current["environment"],
        "base_url": current["base_url"],
        "fields": [f for f in spec.credential_fields if f in (current["credential_rotated_at"] or {})],
    }


def check_credentials_given_again(
    spec: Provider, given: dict[str, str], current: dict[str, Any], base_url: str, environment: str
) -> None:
    """Refuse a new destination that would reuse stored credentials (the exfiltration the
    security probe found: a new base_url alone, then "test connection", sent the password there)."""
    absent = [f for f in spec.credential_fields if not given.get(f)]
    if not absent:
        return
    changed = [
        name
        for name, new, old in (
            ("base_url", base_url, current["base_url"]),
            ("environment", environment, current["environment"]),
        )
        if new != old
    ]
    message = (
        f"changing {' and '.join(changed)} requires every {spec.name} credential again in the same "
        f"request; missing: {', '.join(f'credentials.{f}' for f in absent)}"
    )
    raise IntegrationError(
        "credentials_required",
        message,
        tuple(
            Violation(
                f"credentials.{f}",
                "credentials_required",
                f"give credentials.{f} again: {' and '.join(changed)} changed",
                {"changed": changed},
            )
            for f in absent
        ),
    )


def _row(
    conn: psycopg.Connection, tenant_id: UUID, provider: str, *, lock: bool = False
) -> dict[str, Any] | None:
    query = "SELECT * FROM integrations WHERE tenant_id = %s AND provider = %s"
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query + (" FOR UPDATE" if lock else ""), (tenant_id, provider)).fetchone()


def view(row: dict[str, Any]) -> dict[str, Any]:
    """The settings as the API shows them: never a credential value."""
    spec = PROVIDERS.get(row["provider"])
    fields = spec.credential_fields if spec else tuple(row["credential_rotated_at"])
    rotated = row["credential_rotated_at"] or {}
    return {
        "provider": row["provider"],
        "enabled": row["enabled"],
        "environment": row["environment"],
        "base_url": row["base_url"],
        "credentials": {f: {"set": f in rotated, "rotated_at": rotated.get(f)} for f in fields},
        "updated_at": row["updated_at"].isoformat(),
    }


def get_view(conn: psycopg.Connection, tenant_id: UUID, provider: str) -> dict[str, Any] | None:
    check_provider(provider)
    row = _row(conn, tenant_id, provider)
    return view(row) if row else None


def list_views(conn: psycopg.Connection, tenant_id: UUID) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT * FROM integrations WHERE tenant_id = %s ORDER BY provider", (tenant_id,)
        ).fetchall()
    return [view(r) for r in rows]


def load(
    conn: psycopg.Connection, ring: KeyRing, tenant_id: UUID, provider: str
) -> IntegrationSettings | None:
    """Settings with decrypted credentials, for a connector about to call the provider."""
    row = _row(conn, tenant_id, provider)
    if row is None:
        return None
    credentials = orjson.loads(ring.open(row["credentials_sealed"], associated_data(tenant_id, provider)))
    return IntegrationSettings(
        tenant_id, provider, row["enabled"], row["environment"], row["base_url"], credentials
    )


def enabled_for(conn: psycopg.Connection, tenant_id: UUID, provider: str) -> bool:
    row = conn.execute(
        "SELECT enabled FROM integrations WHERE tenant_id = %s AND provider = %s", (tenant_id, provider)
    ).fetchone()
    return bool(row and (row["enabled"] if isinstance(row, dict) else row[0]))
