"""``GET /metrics`` after real traffic: invoices through the API, the relay and the projector running,
a connector retrying, dead-lettering and recovering, all on the real Kafka and PostgreSQL.

The scrape cache is off (``metrics_cache_seconds=0``) so that each scrape reads the current state.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from connectors.errors import PermanentError, RetryableError
from engine.application import LedgerService
from engine.config import Settings
from engine.relay import Relay
from projections.catalogue import PROJECTIONS
from projections.runner import ProjectionRunner
from streams.connectors import ConnectorSpec, ConnectorWorker, Job, JobResult, RetryPolicy, dlq_discard
from tests.conftest import BackgroundLoop, wait_for
from tests.integration.helpers import client_for, invoice_body, register_tenant
from tests.integration.test_connector_runtime import job, publish

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(api: TestClient) -> Samples:
    response = api.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


class ScriptedProvider:
    """Fails the job ``flaky`` once (retryable), refuses ``refused`` (permanent), accepts the rest."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()

    async def __call__(self, j: Job, attempt: int) -> JobResult:
        with self.lock:
            self.calls[j.job_id] = self.calls.get(j.job_id, 0) + 1
        if j.job_id == "flaky" and attempt == 1:
            raise RetryableError("http_503", "busy")
        if j.job_id == "refused":
            raise PermanentError("2172", "invalid buyer GSTIN")
        return JobResult({"ok": True})


def test_metrics_follow_invoices_through_the_store_relay_projection_and_a_connector(
    settings: Settings, service: LedgerService, topics: list[str], background: BackgroundLoop
) -> None:
    api = client_for(replace(settings, metrics_cache_seconds=0))
    invoice_topic = settings.topic("ledger.invoice.v1")
    projector_group = f"{settings.topic_prefix}ledgerflow.projection.invoice_register"

    before = scrape(api)
    assert value(before, "ledgerflow_metrics_source_up", source="postgresql") == 1
    assert value(before, "ledgerflow_metrics_source_up", source="kafka") == 1
    assert value(before, "ledgerflow_events_stored_total") == 0
    assert value(before, "ledgerflow_dlq_depth", topic=settings.topic("ingest.invoice.dlq.v1")) == 0

    # Stored, not yet published: the relay's lag is the whole backlog.
    _, api_key = register_tenant(service)
    for i in range(5):
        response = api.post(
            "/v1/invoices", json=invoice_body(f"M-{i}"), headers={"Authorization": f"Bearer {api_key}"}
        )
        assert response.status_code == 201, response.text
    stored = scrape(api)
    assert value(stored, "ledgerflow_events_stored_total") == 6  # the tenant and five invoices

    background.start(Relay(settings, idle_wait=0.02).run)
    background.start(ProjectionRunner(settings, PROJECTIONS[0]).run)

    def caught_up() -> Samples | None:
        background.check()
        now = scrape(api)
        settled = (
            value(now, "ledgerflow_events_published_total", relay="ledger") == 6
            and value(now, "ledgerflow_relay_lag_events", relay="ledger") == 0
            and value(
                now, "ledgerflow_events_projected_total", projection="invoice_register", topic=invoice_topic
            )
            == 5
            and value(now, "ledgerflow_events_consumed_total", group=projector_group, topic=invoice_topic)
            == 5
        )
        return now if settled else None

    after = wait_for(caught_up, timeout=60, what="published, projected and consumed counts reaching 6/5/5")
    partitions = [
        v
        for (name, labels), v in after.items()
        if name == "ledgerflow_consumer_lag_records" and ("group", projector_group) in labels
    ]
    assert partitions and all(v == 0 for v in partitions), partitions

    # A connector: one job retried through its 1 s tier, one dead-lettered, one straight through.
    provider = ScriptedProvider()
    worker = ConnectorWorker(settings, [ConnectorSpec("fake", provider, RetryPolicy((1.0,)))])
    background.start(worker.run)
    wait_for(
        lambda: background.check() or worker.assigned().get("fake"), what="the fake connector's partitions"
    )
    fake_dlq = settings.topic("connector.fake.dlq.v1")
    publish(settings, job("flaky"), job("refused"), job("fine"))
    tenant = job("x").tenant_id

    def connector_settled() -> Samples | None:
        background.check()
        now = scrape(api)
        settled = (
            value(now, "ledgerflow_connector_retries_total", connector="fake", tier="1s") == 1
            and value(now, "ledgerflow_connector_retry_waiting", connector="fake", tier="1s") == 0
            and value(now, "ledgerflow_dlq_depth", topic=fake_dlq) == 1
            and value(now, "ledgerflow_connector_attempts_recent", connector="fake", outcome="success") == 2
            and value(now, "ledgerflow_connector_in_flight", connector="fake") is None
        )
        return now if settled else None

    connector = wait_for(connector_settled, timeout=60, what="the retry, the dead letter and two successes")
    assert (
        value(connector, "ledgerflow_connector_attempts_recent", connector="fake", outcome="retryable") == 1
    )
    assert (
        value(connector, "ledgerflow_connector_attempts_recent", connector="fake", outcome="permanent") == 1
    )
    assert (
        value(connector, "ledgerflow_circuit_state", connector="fake", tenant_id=tenant, state="closed") == 1
    )
    assert value(connector, "ledgerflow_circuit_state", connector="fake", tenant_id=tenant, state="open") == 0
    quantiles = [
        value(connector, "ledgerflow_connector_latency_seconds", connector="fake", quantile=q)
        for q in ("0.5", "0.95", "0.99")
    ]
    assert all(q is not None and q >= 0 for q in quantiles), quantiles
    assert quantiles == sorted(quantiles)  # type: ignore[type-var]

    # A person discards the dead letter: the depth says nothing is waiting for one any more.
    assert len(dlq_discard(settings, "fake", "all").done) == 1
    assert value(scrape(api), "ledgerflow_dlq_depth", topic=fake_dlq) == 0


def test_scrapes_within_the_cache_period_are_answered_from_the_previous_figures(
    settings: Settings, service: LedgerService, topics: list[str]
) -> None:
    api: Any = client_for(replace(settings, metrics_cache_seconds=3600))
    first = scrape(api)
    register_tenant(service)
    assert scrape(api) == first
    assert (
        value(
            scrape(client_for(replace(settings, metrics_cache_seconds=0))), "ledgerflow_events_stored_total"
        )
        == 1
    )
