"""OpenTelemetry for every Ledgerflow process: where traces and metrics go, and how a trace crosses hops.

A trace follows an invoice through every process: the HTTP request, the event-store write, the
relay's publish, the e-invoicing router, the connector's call to the provider and the result event.
Between processes the trace travels as a W3C ``traceparent``: stored on each event, sent as a Kafka
header, copied into connector jobs. ``docs/observability.md`` lists the spans and their attributes.

``configure`` installs the OpenTelemetry SDK only when an exporter is chosen
(``LEDGERFLOW_OTEL_EXPORTER`` = ``console`` or ``otlp``). With ``none`` (the default, and the tests'
default) the API's no-op tracer stays in place: spans cost next to nothing, and a span started
from a ``traceparent`` simply hands that same context on, so the trace id still reaches every hop
and every log line. The standard ``OTEL_*`` variables keep their meaning: ``OTEL_EXPORTER_OTLP_ENDPOINT``
(and its per-signal forms), ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_BSP_*`` and ``OTEL_METRIC_EXPORT_INTERVAL``.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, SpanContext
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from engine.config import Settings
from engine.errors import ConfigurationError

log = logging.getLogger("ledgerflow.telemetry")

EXPORTERS = ("none", "console", "otlp")
# How long a stopping process waits for its last spans and metrics to be sent.
EXIT_FLUSH_S = 5.0

tracer = trace.get_tracer("ledgerflow")
meter = metrics.get_meter("ledgerflow")

_propagator = TraceContextTextMapPropagator()
_lock = threading.Lock()
_configured: str | None = None


class TelemetryConfigError(ConfigurationError, ValueError):
    """The telemetry settings name something that does not exist."""


def configure(service_name: str, settings: Settings) -> bool:
    """Install the trace and metric pipelines ``settings.otel_exporter`` asks for; True if it installed any.

    Call once at the start of a process, before it does work. A second call changes nothing
    (OpenTelemetry's global providers can be set only once per process).
    """
    global _configured
    exporter = settings.otel_exporter.strip().lower()
    if exporter not in EXPORTERS:
        raise TelemetryConfigError(
            f"LEDGERFLOW_OTEL_EXPORTER must be one of {', '.join(EXPORTERS)}; got {settings.otel_exporter!r}"
        )
    with _lock:
        if _configured is not None or exporter == "none":
            return False
        _configured = exporter
    # OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME are merged in by Resource.create.
    resource = Resource.create({SERVICE_NAME: service_name, "service.namespace": "ledgerflow"})
    # No sampler argument: the SDK reads OTEL_TRACES_SAMPLER (default: parent-based, always on).
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    span_exporter, metric_exporter = _exporters(exporter)
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(provider)
    reader = PeriodicExportingMetricReader(metric_exporter)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader], shutdown_on_exit=False)
    metrics.set_meter_provider(meter_provider)
    atexit.register(_flush_at_exit, provider, meter_provider)
    log.info("telemetry: %s exports traces and metrics to %s", service_name, _destination(exporter))
    return True


def _flush_at_exit(provider: TracerProvider, meter_provider: MeterProvider) -> None:
    """Send what is pending, but let the process end within ``EXIT_FLUSH_S``.

    The SDK's own exit hooks wait up to 30 s each while a collector is unreachable (measured:
    a relay stopped with a backlog of spans took more than 30 s to exit); a process being stopped
    must not, and the spans of its last moments are not worth that.
    """

    def flush() -> None:
        provider.shutdown()
        meter_provider.shutdown()

    worker = threading.Thread(target=flush, name="telemetry-exit-flush", daemon=True)
    worker.start()
    worker.join(EXIT_FLUSH_S)
    if worker.is_alive():
        log.warning(
            "telemetry: the exporter did not finish within %.0fs; unsent spans are dropped", EXIT_FLUSH_S
        )


def _exporters(exporter: str) -> tuple[SpanExporter, MetricExporter]:
    if exporter == "console":
        # One JSON object per line, so that the output stays greppable beside JSON log lines.
        return (
            ConsoleSpanExporter(formatter=lambda span: span.to_json(indent=None) + os.linesep),
            ConsoleMetricExporter(formatter=lambda data: data.to_json(indent=None) + os.linesep),
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # Both read OTEL_EXPORTER_OTLP_ENDPOINT (adding /v1/traces, /v1/metrics) and their headers.
    return OTLPSpanExporter(), OTLPMetricExporter()


def _destination(exporter: str) -> str:
    if exporter == "console":
        return "stdout"
    return os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "http://localhost:4318 (OTLP/HTTP default)"


def tracing_enabled() -> bool:
    """Whether spans are recorded in this process (an SDK tracer provider is installed).

    Hot paths ask once per batch and skip building spans that nothing would record.
    """
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

    return isinstance(trace.get_tracer_provider(), SdkTracerProvider)


# -- carrying a trace across hops (W3C trace context) ---------------------------------------------


def parent_context(traceparent: str | None) -> Context | None:
    """The context to continue from a ``traceparent`` (None, or one that does not parse: a new trace)."""
    if not traceparent:
        return None
    return _propagator.extract({"traceparent": traceparent})


def valid_traceparent(traceparent: str | None) -> str | None:
    """``traceparent`` if it is a well-formed W3C trace context, else None."""
    context = parent_context(traceparent)
    if context is None:
        return None
    return traceparent_of(trace.get_current_span(context).get_span_context())


def traceparent_of(context: SpanContext) -> str | None:
    """The ``traceparent`` header naming ``context`` (None for an invalid context)."""
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def current_traceparent() -> str | None:
    """The ``traceparent`` of the current span: what a message sent now should carry."""
    return traceparent_of(trace.get_current_span().get_span_context())


def span_traceparent(span: Span) -> str | None:
    return traceparent_of(span.get_span_context())


def is_sampled(traceparent: str) -> bool:
    """The sampled flag of a well-formed ``traceparent`` (``00-<trace>-<span>-<flags>``)."""
    try:
        return bool(int(traceparent[53:55], 16) & 1)
    except ValueError:
        return False


def ids_of(traceparent: str | None) -> tuple[str, str] | None:
    """(trace id, span id) of a well-formed ``traceparent``, for log lines."""
    if not traceparent or len(traceparent) < 55 or traceparent[2] != "-" or traceparent[35] != "-":
        return None
    return traceparent[3:35], traceparent[36:52]
