"""The connector kit: what one connector declares, once, for the engine to derive everything else.

A connector is a package under ``connectors/`` whose ``__init__`` holds ``CONNECTOR = Connector(...)``,
plus one line in ``connectors/registry.py``. From the declaration the engine derives the provider names
``/v1/integrations`` accepts, the credential fields it stores, the URL policy, ``POST .../test``, the
job, retry and DLQ topics, which ledger events the generic router turns into this connector's jobs,
the handler the connector workers run, the rate limit (``LEDGERFLOW_<NAME>_RATE``) and the sandbox
``ledgerflow run`` starts. docs/connectors.md walks through writing one.

Nothing here imports a connector: the registry imports the connectors, never the other way round.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol

import httpx
import psycopg

from engine.config import Settings
from engine.integrations import IntegrationSettings
from engine.security.egress import EndpointPolicy

if TYPE_CHECKING:
    from connectors.errors import ConnectorError
    from connectors.hooks import InboundHooks
    from connectors.oauth import OAuthSpec
    from streams.connectors.context import HandlerContext
    from streams.connectors.jobs import Job, JobResult

_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


@dataclass(frozen=True)
class Credential:
    """One field of a tenant's credentials for the provider."""

    name: str
    secret: bool = True
    """A secret is sealed, never shown and never echoed (all fields are sealed; this says whether its
    value may appear in a description of the settings, such as a GSTIN or a client id)."""
    description: str = ""


@dataclass(frozen=True)
class SettingsSchema:
    """What a tenant configures for this provider, and where the provider lives."""

    title: str
    credentials: tuple[Credential, ...]
    sandbox_url: str | None = None
    """The provider's own public sandbox (a tenant's ``environment: sandbox`` URL may be any host)."""
    production_urls: tuple[str, ...] = ()
    """The production base URLs; the URL policy (``Connector.endpoints``) is what enforces them."""

    @property
    def credential_fields(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.credentials)

    @property
    def secret_fields(self) -> frozenset[str]:
        return frozenset(c.name for c in self.credentials if c.secret)

    def describe(self) -> dict[str, Any]:
        """The schema as documentation shows it: field names and kinds, never a value."""
        return {
            "title": self.title,
            "credentials": [
                {"name": c.name, "secret": c.secret, "description": c.description} for c in self.credentials
            ],
            "environments": {"sandbox": self.sandbox_url, "production": list(self.production_urls)},
        }


ConnectionTest = Callable[[IntegrationSettings, httpx.AsyncBaseTransport], Awaitable[None]]
"""A real call that proves reachability, TLS and the credentials; raises ``ConnectorError`` if not."""

Routes = Callable[[str, str, Mapping[str, Any]], "Sequence[Job]"]
"""Pure: ``(ce_type, ce_id, record)`` of a ledger event -> the jobs it asks of this connector, before
tenant policy (the router drops jobs of tenants whose integration is not enabled)."""


class ConnectorHandler(Protocol):
    """What the connector workers run: one attempt of a job, and the dead-letter notice."""

    async def __call__(self, job: Job, attempt: int) -> JobResult: ...

    def record_failure(self, job: Job, error: ConnectorError, attempts: int) -> None:
        """Called once the job is dead-lettered: record why it never completed."""

    async def close(self) -> None: ...


HandlerFactory = Callable[["HandlerContext"], ConnectorHandler]


@dataclass(frozen=True)
class SandboxLaunch:
    """How ``ledgerflow run`` starts the connector's sandbox: ``python -m <module> --port <port> ...``."""

    module: str
    port: int
    label: str
    extra_args: Callable[[str], list[str]] = field(default=lambda demo_gstin: [])
    """More arguments given the demo tenant's GSTIN (e.g. the account the sandbox knows)."""
    demo_credentials: Callable[[str], dict[str, str]] | None = None
    """Credentials the sandbox accepts, given the demo tenant's GSTIN: `ledgerflow run` configures
    the demo tenant's integration with them."""

    def argv(self, python: str, demo_gstin: str) -> list[str]:
        return [python, "-m", self.module, "--port", str(self.port), *self.extra_args(demo_gstin)]


@dataclass(frozen=True)
class IntegrationSync:
    """A sync the connector runs now and then (e.g. eTIMS code lists) and on demand through
    ``POST /v1/integrations/<name>/sync`` (engine/api/integration_health.py)."""

    start: Callable[[Settings, IntegrationSettings], Awaitable[str]]
    """Queue a sync for the tenant's integration; returns the job id (``ConnectorError`` if it cannot)."""
    last_synced: Callable[[psycopg.Connection, IntegrationSettings], datetime | None]
    """When the tenant's data was last synced (None: never)."""
    every: Callable[[], timedelta | None] = lambda: None
    """How often the scheduled sync runs (None: on demand only), for ``next_sync_at``."""


def no_routes(ce_type: str, ce_id: str, record: Mapping[str, Any]) -> Sequence[Job]:
    """For a connector called on demand only (e.g. a taxpayer search): no event makes a job."""
    return ()


@dataclass(frozen=True)
class Connector:
    """Everything the engine needs to know about one connector."""

    name: str
    settings: SettingsSchema
    endpoints: EndpointPolicy
    connection_test: ConnectionTest
    routes: Routes = no_routes
    route_event_types: frozenset[str] = frozenset()
    """The ``ce_type`` values ``routes`` may turn into jobs; the router skips others undecoded."""
    handler: HandlerFactory | None = None
    """None: the connector runs no jobs (no topics, no worker)."""
    rate_limit_per_s: float | None = None
    """The default; ``LEDGERFLOW_<NAME>_RATE`` overrides it ("none" lifts it)."""
    rate_limit_counts: Literal["job", "request"] = "job"
    """What the provider's limit counts. "request": every HTTP request through
    ``HandlerContext.transport`` takes a permit (a job may make several calls)."""
    retry_delays: tuple[float, ...] | None = None
    """Seconds before attempts 2, 3, ... if the provider needs its own schedule; else the engine's."""
    retry_forever: bool = False
    """Retryable failures never reach the DLQ: after the schedule its last delay repeats (a capped
    backoff without end, for providers whose work must not be given up while they are away)."""
    retry_per_code: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    """A schedule per provider error code that replaces ``retry_delays`` for that code (e.g. the
    bank's ``bank_offline``: every 30 minutes), streams/connectors/retry.py ``RetryPolicy.per_code``."""
    sandbox: SandboxLaunch | None = None
    migrations: tuple[tuple[str, str], ...] = ()
    """The connector's own tables: (package, file.sql) pairs, idempotent (CREATE ... IF NOT EXISTS),
    run by ``ledgerflow db migrate`` after the engine's. Name tables after the connector."""
    hooks: InboundHooks | None = None
    """Deliveries the provider sends to ``POST /v1/hooks/<name>/{tenant_id}`` (connectors/hooks.py)."""
    sync: IntegrationSync | None = None
    """A sync the tenant may start (``POST /v1/integrations/<name>/sync``); None: the connector has none."""
    oauth: OAuthSpec | None = None
    """The provider's OAuth 2.0 authorisation-code flow (connectors/oauth.py, engine/api/oauth.py)."""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"connector name {self.name!r}: use lower case letters, digits and -")
        if self.endpoints.provider != self.name:
            raise ValueError(f"connector {self.name}: its endpoint policy is for {self.endpoints.provider}")
        if self.handler is None and self.route_event_types:
            raise ValueError(f"connector {self.name} routes events but has no handler to run the jobs")

    @property
    def runs_jobs(self) -> bool:
        return self.handler is not None
