"""Every connector the engine runs, declared once: name, handler, retry policy, rate limit, breaker.

A new connector is a package under ``connectors/``, its routes and handler under ``streams/``, and
one entry in :func:`connector_specs`.
"""

from __future__ import annotations

from connectors.errors import PermanentError
from engine.application import LedgerService
from engine.config import Settings
from engine.security.secrets import KeyRing
from streams.connectors.breaker import BreakerSettings
from streams.connectors.jobs import Job, JobHandler, JobResult
from streams.connectors.retry import RetryPolicy
from streams.connectors.spec import ConnectorSpec
from streams.einvoicing import CONNECTOR as GST_IRP
from streams.einvoicing import IrnJobs


class _PlanningOnly:
    """Stands in for a handler where only a connector's shape matters (topic names, status)."""

    async def __call__(self, job: Job, attempt: int) -> JobResult:
        raise PermanentError("not_running", "this process only plans topics; it does not run jobs")


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(settings.retry_delays) if settings.retry_delays is not None else RetryPolicy()


def gst_irp_spec(settings: Settings, handler: JobHandler | None = None) -> ConnectorSpec:
    return ConnectorSpec(
        name=GST_IRP,
        handler=handler or _PlanningOnly(),
        retry_policy=retry_policy(settings),
        # settings.gst_irp_rate_limit (10/s by default, all workers together) is applied per HTTP
        # request inside the handler's client, since one job makes up to three requests.
        rate_limit_per_s=None,
        breaker=BreakerSettings(open_for=settings.breaker_open_seconds),
        on_failure=handler if isinstance(handler, IrnJobs) else None,
    )


def planned_specs(settings: Settings) -> list[ConnectorSpec]:
    """The connectors' shapes, for `topics ensure`, `connectors status` and the DLQ commands."""
    return [gst_irp_spec(settings)]


def connector_specs(
    settings: Settings, service: LedgerService, ring: KeyRing
) -> tuple[list[ConnectorSpec], IrnJobs]:
    """The running connectors with their real handlers."""
    irn_jobs = IrnJobs(settings, service, ring, rate_limit_per_s=settings.gst_irp_rate_limit)
    return [gst_irp_spec(settings, irn_jobs)], irn_jobs
