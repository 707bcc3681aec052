"""Traces and metrics of connector attempts (OpenTelemetry; exported when the process ran
``engine.telemetry.configure`` with an exporter).

One span per attempt, continuing the trace of whatever queued the job (its ``traceparent`` header,
W3C trace context), and two instruments: attempts by outcome and attempt latency.
"""

from __future__ import annotations

from opentelemetry import metrics, trace

from engine import telemetry as engine_telemetry

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

# Kept here under their old names: the worker and ``publish_job`` import them from this module.
parent_context = engine_telemetry.parent_context
current_traceparent = engine_telemetry.current_traceparent
