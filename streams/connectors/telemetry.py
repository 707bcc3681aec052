"""Traces and metrics of connector attempts (OpenTelemetry; no exporter unless the process configures one).

One span per attempt, continuing the trace of whatever queued the job (its ``traceparent`` header,
W3C trace context), and two instruments: attempts by outcome and attempt latency.
"""

from __future__ import annotations

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

tracer = trace.get_tracer("ledgerflow.connectors")
_meter = metrics.get_meter("ledgerflow.connectors")
attempts = _meter.create_counter(
    "ledgerflow.connector.attempts", unit="{attempt}", description="Connector attempts by outcome"
)
latency = _meter.create_histogram(
    "ledgerflow.connector.attempt.duration", unit="s", description="Time a provider took to answer"
)
deferred = _meter.create_counter(
    "ledgerflow.connector.deferred",
    unit="{job}",
    description="Jobs sent back to wait because their circuit was open (no attempt used)",
)
dead_lettered = _meter.create_counter(
    "ledgerflow.connector.dead_lettered", unit="{job}", description="Jobs given up, by error class"
)

_propagator = TraceContextTextMapPropagator()


def parent_context(traceparent: str | None) -> Context | None:
    """The context to continue from a job's ``traceparent`` header (None: a new trace)."""
    if not traceparent:
        return None
    return _propagator.extract({"traceparent": traceparent})


def current_traceparent() -> str | None:
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")
