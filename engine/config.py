"""Runtime settings, read once from the environment.

Every process (API, relay, stream worker, projector, CLI) takes the same settings so that a
single set of environment variables describes one deployment. Defaults are those of the local
stack started by `ledgerflow stack up`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import cast
from urllib.parse import unquote, urlsplit

from engine.security.egress import DEPLOYMENT_MODES, DeploymentMode

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _floats(value: str | None) -> tuple[float, ...] | None:
    if not value:
        return None
    return tuple(float(part) for part in value.split(",") if part.strip())


def _optional_int(value: str | None) -> int | None:
    return int(value) if value and value.strip() else None


def _rate(value: str) -> float | None:
    return None if value.strip().lower() in ("none", "0", "") else float(value)


_RATE_VARIABLE = re.compile(r"^LEDGERFLOW_([A-Z0-9_]+)_RATE$")


def rate_key(connector: str) -> str:
    """How a connector's name appears in its rate variable: ``gst-irp`` -> ``GST_IRP``."""
    return connector.upper().replace("-", "_")


def rate_variable(connector: str) -> str:
    return f"LEDGERFLOW_{rate_key(connector)}_RATE"


def _rates_from_env(environ: Mapping[str, str]) -> dict[str, float | None]:
    return {
        match.group(1): _rate(value)
        for name, value in environ.items()
        if (match := _RATE_VARIABLE.match(name)) and value.strip()
    }


@dataclass(frozen=True)
class Settings:
    """Connection and naming settings shared by every Ledgerflow process."""

    database_url: str = field(
        default_factory=lambda: _env(
            "LEDGERFLOW_DATABASE_URL", "postgresql://ledgerflow:ledgerflow@127.0.0.1:5432/ledgerflow"
        )
    )
    # The role that changes the schema (migrations, eventsourcing's tables, rebuild swaps, tenant
    # reporting roles); empty: the runtime URL's role does everything, as a single-role deployment.
    # Runtime processes need not be given it (docs/runbooks/local-stack.md, "Database roles").
    owner_database_url: str = field(default_factory=lambda: _env("LEDGERFLOW_OWNER_DATABASE_URL", ""))
    # Set by as_owner(): the runtime URL, whose role the owner grants what the engine uses.
    runtime_database_url: str = ""
    # PostgreSQL schema holding the event store, projections and bookkeeping tables. Tests use a
    # fresh schema each so that they cannot see each other's data.
    db_schema: str = field(default_factory=lambda: _env("LEDGERFLOW_DB_SCHEMA", "public"))
    kafka_bootstrap: str = field(default_factory=lambda: _env("LEDGERFLOW_KAFKA", "127.0.0.1:9092"))
    # How engine clients authenticate to Kafka (docs/runbooks/kafka-acls.md): PLAINTEXT (no
    # authentication, the local stack), SASL_PLAINTEXT or SASL_SSL with a SASL mechanism, username and
    # password. The broker's ACLs decide what the principal may do; the password is never logged.
    kafka_security_protocol: str = field(
        default_factory=lambda: _env("LEDGERFLOW_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper()
    )
    kafka_sasl_mechanism: str = field(
        default_factory=lambda: _env("LEDGERFLOW_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512").upper()
    )
    kafka_username: str = field(default_factory=lambda: _env("LEDGERFLOW_KAFKA_USERNAME", ""))
    kafka_password: str = field(default_factory=lambda: _env("LEDGERFLOW_KAFKA_PASSWORD", ""), repr=False)
    # SASL_SSL only: a PEM bundle of the CAs that signed the brokers' certificates; empty: the
    # system's trust store.
    kafka_ssl_cafile: str = field(default_factory=lambda: _env("LEDGERFLOW_KAFKA_SSL_CAFILE", ""))
    # Prepended to every topic name; empty in production. Tests set a unique prefix per test.
    topic_prefix: str = field(default_factory=lambda: _env("LEDGERFLOW_TOPIC_PREFIX", ""))
    partitions: int = field(default_factory=lambda: int(_env("LEDGERFLOW_PARTITIONS", "6")))
    # Replicas of each new topic. Unset: decided from the cluster (one per broker, up to three;
    # min.insync.replicas two on three brokers), see engine.kafka_admin.replication_for.
    replication_factor: int | None = field(
        default_factory=lambda: _optional_int(os.environ.get("LEDGERFLOW_REPLICATION_FACTOR"))
    )
    var_dir: Path = field(default_factory=lambda: Path(_env("LEDGERFLOW_VAR", str(PROJECT_ROOT / "var"))))
    api_host: str = field(default_factory=lambda: _env("LEDGERFLOW_API_HOST", "127.0.0.1"))
    api_port: int = field(default_factory=lambda: int(_env("LEDGERFLOW_API_PORT", "8080")))
    # "production" refuses sandbox integrations, speaks only https to providers and never connects
    # to a private or loopback address (docs/integrations.md); the local stack and tests run in
    # "development".
    mode: DeploymentMode = field(
        default_factory=lambda: cast(DeploymentMode, _env("LEDGERFLOW_MODE", "development"))
    )

    # Connector runtime knobs. Retry delays are seconds before attempts 2, 3, ... (default: the
    # seed schedule 0, 1m, 5m, 15m, 1h); tests and demos shorten them.
    retry_delays: tuple[float, ...] | None = field(
        default_factory=lambda: _floats(os.environ.get("LEDGERFLOW_RETRY_DELAYS"))
    )
    breaker_open_seconds: float = field(
        default_factory=lambda: float(_env("LEDGERFLOW_BREAKER_OPEN_S", "60"))
    )
    # Per-connector rate limits set in the environment: LEDGERFLOW_<NAME>_RATE, the connector's
    # name in upper case with "-" as "_" (LEDGERFLOW_GST_IRP_RATE for gst-irp), requests per
    # second across all workers; "none" for no limit (benchmarks). Keyed by rate_key(name). A
    # connector not named here runs at the default its declaration states (connectors/registry.py).
    rate_limits: Mapping[str, float | None] = field(default_factory=lambda: _rates_from_env(os.environ))

    # How long the ingest agent trusts its cached copy of an ingest signing key: a revoked key
    # stops working within this many seconds (docs/topics.md, "Signing"). 0 reads the key each time.
    ingest_key_cache_seconds: float = field(
        default_factory=lambda: float(_env("LEDGERFLOW_INGEST_KEY_CACHE_S", "30"))
    )

    # How long an API process trusts a key it accepted, with its user's role: a revoked key, a role
    # change or a disabled user takes effect within this many seconds (docs/users-and-roles.md).
    auth_cache_seconds: float = field(default_factory=lambda: float(_env("LEDGERFLOW_AUTH_CACHE_S", "5")))

    # Observability (docs/observability.md). Where traces and OpenTelemetry metrics go: "none"
    # (the default, also in tests), "console" (one JSON line per span on stdout) or "otlp" (OTLP/HTTP
    # to OTEL_EXPORTER_OTLP_ENDPOINT, default http://localhost:4318).
    otel_exporter: str = field(default_factory=lambda: _env("LEDGERFLOW_OTEL_EXPORTER", "none"))
    # GET /metrics reads Kafka and PostgreSQL; a scrape within this many seconds of the last one
    # is answered from that one's figures.
    metrics_cache_seconds: float = field(
        default_factory=lambda: float(_env("LEDGERFLOW_METRICS_CACHE_S", "5"))
    )

    # Invoices may be dated at most this many days after today in India (docs/validation.md). One
    # day absorbs an upstream clock running a little ahead around midnight IST; the e-invoice
    # portal refuses future-dated documents, so a larger value only delays the refusal to the IRN.
    max_future_days: int = field(default_factory=lambda: int(_env("LEDGERFLOW_MAX_FUTURE_DAYS", "1")))

    # HTTP API limits (docs/api.md). A request body above this many bytes
    # is refused with 413 while it streams in, so no request can make the API buffer more.
    max_body_bytes: int = field(
        default_factory=lambda: int(_env("LEDGERFLOW_MAX_BODY_BYTES", str(1024 * 1024)))
    )
    # When set, GET /metrics and GET /healthz/consumers need "Authorization: Bearer <token>";
    # unset, they are open (as on a private network behind the scraper). Never logged.
    ops_token: str | None = field(
        default_factory=lambda: os.environ.get("LEDGERFLOW_OPS_TOKEN") or None, repr=False
    )
    # The platform operator's credential for onboarding over HTTP (POST/GET /v1/tenants). Unset,
    # that API is off (403 onboarding_disabled). Deliberately not the ops token: reading metrics
    # must not be enough to create tenants. Never logged.
    operator_token: str | None = field(
        default_factory=lambda: os.environ.get("LEDGERFLOW_OPERATOR_TOKEN") or None, repr=False
    )

    def __post_init__(self) -> None:
        if self.mode not in DEPLOYMENT_MODES:
            raise ValueError(
                f"LEDGERFLOW_MODE must be one of {', '.join(DEPLOYMENT_MODES)}, not {self.mode!r}"
            )
        check_kafka_security(
            self.kafka_security_protocol, self.kafka_sasl_mechanism, self.kafka_username, self.kafka_password
        )

    @property
    def owner_url(self) -> str:
        return self.owner_database_url or self.database_url

    @property
    def runtime_role(self) -> str:
        """The role the API, relay, projector and workers log in as."""
        return unquote(urlsplit(self.runtime_database_url or self.database_url).username or "")

    def as_owner(self) -> Settings:
        """These settings for a command that changes the schema: every connection as the owner."""
        return replace(
            self,
            database_url=self.owner_url,
            owner_database_url=self.owner_url,
            runtime_database_url=self.runtime_database_url or self.database_url,
        )

    def rate_limit(self, connector: str, default: float | None) -> float | None:
        """Requests per second ``connector`` may make across all workers (None: unlimited)."""
        wanted = {rate_key(k): v for k, v in self.rate_limits.items()}
        return wanted.get(rate_key(connector), default)

    def topic(self, name: str) -> str:
        """The full name of a logical topic such as ``ledger.invoice.v1``."""
        return f"{self.topic_prefix}{name}"

    @property
    def reporting_schema(self) -> str:
        """The schema of the analysts' reporting views (``docs/reporting.md``): ``reporting`` beside
        ``public``, else ``<db_schema>_reporting`` so that every test schema has its own."""
        return "reporting" if self.db_schema == "public" else f"{self.db_schema}_reporting"


KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def check_kafka_security(protocol: str, mechanism: str, username: str, password: str) -> None:
    """Refuse a Kafka security setting that no client could connect with, naming the variable."""
    if protocol not in KAFKA_SECURITY_PROTOCOLS:
        raise ValueError(
            f"LEDGERFLOW_KAFKA_SECURITY_PROTOCOL must be one of {', '.join(KAFKA_SECURITY_PROTOCOLS)}, "
            f"not {protocol!r}"
        )
    if protocol == "PLAINTEXT":
        return
    if mechanism not in KAFKA_SASL_MECHANISMS:
        raise ValueError(
            f"LEDGERFLOW_KAFKA_SASL_MECHANISM must be one of {', '.join(KAFKA_SASL_MECHANISMS)}, "
            f"not {mechanism!r}"
        )
    if not username or not password:
        raise ValueError(
            f"LEDGERFLOW_KAFKA_SECURITY_PROTOCOL={protocol} needs LEDGERFLOW_KAFKA_USERNAME and "
            "LEDGERFLOW_KAFKA_PASSWORD"
        )


def load_settings() -> Settings:
    return Settings()
