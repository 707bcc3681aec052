"""The engine's one error hierarchy: every error the engine raises derives from ``LedgerflowError``.

Errors of the libraries underneath (psycopg, aiokafka, httpx) are mapped to these at the boundary
with ``raise ... from exc`` (docs/architecture.md, "Errors"); a caller catches a family, never a
library's class. The concrete classes live beside the code that raises them (their old import paths
keep working) and derive from one family here::

    LedgerflowError
    ├── RequestRefused            the caller asked for something we will not do as asked (HTTP 4xx)
    │   ├── InvalidInput          bad input: validation, GST rules, ingest messages  -> 422
    │   │     ValidationFailed, IdempotencyKeyReused, TaxRuleError, IngestRejected,
    │   │     IntegrationError, EgressRefused, PayloadTooLarge
    │   ├── NotFound              no such tenant, invoice or key                     -> 404
    │   │     TenantNotFound, InvoiceNotFound, ApiKeyNotFound
    │   ├── Conflict              the request clashes with the stored state          -> 409
    │   │     DuplicateInvoiceNumber, InvoiceStateConflict, TenantChangedConcurrently,
    │   │     IdempotencyKeyInProgress, ApiKeyConflict, IntegrationNotConfigured,
    │   │     TooManyActiveKeys, RotationError, InvoiceError (+ subclasses),
    │   │     TenantError (+ subclasses), DraftError (+ subclasses), SeriesExhausted
    │   └── ServiceError          the service layer's errors (carry ``code``/``details``);
    │                             each concrete one also sits in one of the three above
    ├── Unavailable               an outage of something we depend on; retry later  -> 503
    │     DatabaseUnavailable, SchemaNotMigrated, KafkaUnavailable (engine/kafka.py)
    ├── ConfigurationError        the deployment or the process's wiring is wrong; retrying won't help
    │     MigrationsNotRegistered, ProvidersNotRegistered, TelemetryConfigError, SecretError,
    │     TopicsNotCreated, KafkaAclError, KafkaRequestFailed, TopicNotFound (the broker refused:
    │     a replication factor, an authorizer, a topic nobody created)
    └── IntegrityFault            a stored fact we cannot handle; the process stops rather than skip it
          UnencodableEvent, UnpublishableEvent

``ApiError`` (engine/api/errors.py) is the HTTP layer's own, carrying its status: a ``RequestRefused``.

This module imports nothing from the engine, so the pure packages (engine.tax, engine.domain) may
derive their errors from it without breaking their import contract (pyproject.toml).
"""

from __future__ import annotations


class LedgerflowError(Exception):
    """Base of every error the engine raises."""


class RequestRefused(LedgerflowError):
    """The caller's request cannot be done as asked; retrying it unchanged gives the same answer."""


class InvalidInput(RequestRefused):
    """The input breaks a rule (schema, GST law, policy)."""


class NotFound(RequestRefused):
    """The thing the request names does not exist (for this tenant)."""


class Conflict(RequestRefused):
    """The request clashes with what is stored (a duplicate, a state that forbids it, a race)."""


class Unavailable(LedgerflowError):
    """Something the engine depends on (PostgreSQL, Kafka) is out of reach or not ready; retry later."""


class ConfigurationError(LedgerflowError):
    """The deployment's settings or the process's wiring (registrations, key ring) are wrong."""


class IntegrityFault(LedgerflowError):
    """A stored fact the code cannot handle: a programming or data error that must stop the process."""
