"""The connectors the runtime runs, derived from their declarations (connectors/registry.py).

A connector with a handler gets a job topic, retry tiers, a DLQ and a place in `connectors run`; one
without (called on demand, e.g. a taxpayer search) gets none of these.
"""

from __future__ import annotations

from collections.abc import Sequence

from connectors.errors import PermanentError
from connectors.kit import Connector, ConnectorHandler
from connectors.registry import CONNECTORS
from engine.application import LedgerService
from engine.config import Settings
from engine.security.secrets import KeyRing
from streams.connectors.breaker import BreakerSettings
from streams.connectors.context import HandlerContext
from streams.connectors.jobs import AlertSink, Job, JobResult
from streams.connectors.retry import RetryPolicy
from streams.connectors.spec import ConnectorSpec


class _PlanningOnly:
    """Stands in for a handler where only a connector's shape matters (topic names, status)."""

    async def __call__(self, job: Job, attempt: int) -> JobResult:
        raise PermanentError("not_running", "this process only plans topics; it does not run jobs")


def retry_policy(settings: Settings, connector: Connector | None = None) -> RetryPolicy:
    delays = connector.retry_delays if connector is not None and connector.retry_delays else None
    # The deployment's schedule (LEDGERFLOW_RETRY_DELAYS) wins over a connector's own, so tests and
    # demos can shorten every connector's retries at once.
    delays = settings.retry_delays if settings.retry_delays is not None else delays
    forever = connector is not None and connector.retry_forever
    # Floats throughout: the tiers of the two schedules are compared and stored together (ops/lag.py
    # sends them to PostgreSQL as one float8[], which refuses a list mixing ints and floats).
    per_code = {
        code: tuple(float(d) for d in schedule)
        for code, schedule in (connector.retry_per_code.items() if connector is not None else ())
    }
    delays = tuple(float(d) for d in delays) if delays is not None else None
    if delays is not None:
        return RetryPolicy(delays, per_code, forever=forever)
    return RetryPolicy(per_code=per_code, forever=forever)


def rate_limit(settings: Settings, connector: Connector) -> float | None:
    """The connector's limit: ``LEDGERFLOW_<NAME>_RATE`` if set, else its declared default."""
    return settings.rate_limit(connector.name, connector.rate_limit_per_s)


def spec_for(
    settings: Settings,
    connector: Connector,
    handler: ConnectorHandler | None = None,
    alerts: AlertSink | None = None,
) -> ConnectorSpec:
    rate = rate_limit(settings, connector)
    return ConnectorSpec(
        name=connector.name,
        handler=handler or _PlanningOnly(),
        retry_policy=retry_policy(settings, connector),
        # A limit on requests is applied per HTTP request by the handler's transport
        # (HandlerContext.transport); a limit on jobs by the worker before each attempt.
        rate_limit_per_s=rate if connector.rate_limit_counts == "job" else None,
        breaker=BreakerSettings(open_for=settings.breaker_open_seconds),
        on_failure=handler,
        alerts=alerts,
    )


def running(connectors: Sequence[Connector] | None = None) -> list[Connector]:
    return [c for c in (CONNECTORS if connectors is None else connectors) if c.runs_jobs]


def planned_specs(settings: Settings) -> list[ConnectorSpec]:
    """The connectors' shapes, for `topics ensure`, `connectors status` and the DLQ commands."""
    return [spec_for(settings, c) for c in running()]


class Handlers:
    """The running handlers of one `connectors run` process, closed together."""

    def __init__(self, handlers: dict[str, ConnectorHandler]) -> None:
        self.by_name = handlers

    async def close(self) -> None:
        for handler in self.by_name.values():
            await handler.close()


def context_for(
    settings: Settings, service: LedgerService, ring: KeyRing, connector: Connector
) -> HandlerContext:
    rate = rate_limit(settings, connector)
    return HandlerContext(
        settings,
        service,
        ring,
        connector=connector.name,
        request_rate_per_s=rate if connector.rate_limit_counts == "request" else None,
    )


def connector_specs(
    settings: Settings,
    service: LedgerService,
    ring: KeyRing,
    connectors: Sequence[Connector] | None = None,
) -> tuple[list[ConnectorSpec], Handlers]:
    """The running connectors with their real handlers."""
    handlers: dict[str, ConnectorHandler] = {}
    specs: list[ConnectorSpec] = []
    for connector in running(connectors):
        assert connector.handler is not None
        handler = connector.handler(context_for(settings, service, ring, connector))
        handlers[connector.name] = handler
        specs.append(spec_for(settings, connector, handler, alerts=service.raise_alert))
    return specs, Handlers(handlers)
