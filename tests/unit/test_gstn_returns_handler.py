"""The gstn-returns handler in memory: the real sandbox app in-process (ASGI transport), a fake result
port holding TaxReturn aggregates and a fake handler context. What the handler does per attempt:
save what has no reference id, poll, end retryable while processing, record the outcome once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

import httpx
import orjson
import pytest

from connectors.errors import NeedsAttentionError, RetryableError
from connectors.gstn_returns.handler import ReturnJobs
from connectors.gstn_returns.routes import submit_job
from connectors.gstn_returns.sandbox import UNKNOWN_CTIN, SandboxAccount, create_app
from engine.domain.tax_return import FORM_GSTR1, ReturnStatus, TaxReturn
from engine.integrations import IntegrationSettings
from engine.tax_returns import part_hash, part_text
from streams.connectors.jobs import Job, JobResult

T = TypeVar("T")
ACCOUNT = SandboxAccount()
TENANT = UUID("5b2e9d7a-3c41-4e8f-a6b0-1d2c3e4f5a6b")
PERIOD = "012026"
NOW = datetime(2026, 2, 3, tzinfo=UTC)


def part(*ctins: str) -> dict[str, Any]:
    det = {"txval": 100.0, "rt": 18.0, "iamt": 18.0, "camt": 0, "samt": 0, "csamt": 0}
    return {
        "gstin": ACCOUNT.gstin,
        "fp": PERIOD,
        "b2b": [
            {"ctin": c, "inv": [{"inum": f"INV-{i}", "pos": "27", "itms": [{"num": 1, "itm_det": det}]}]}
            for i, c in enumerate(ctins)
        ],
    }


class FakeReturns:
    """The result port over aggregates in a dict (engine.tax_returns.TaxReturns does it on PostgreSQL)."""

    def __init__(self) -> None:
        self.returns: dict[UUID, TaxReturn] = {}
        self.parts: dict[str, bytes] = {}

    def add(self, *parts: dict[str, Any]) -> TaxReturn:
        texts = [part_text(p) for p in parts]
        hashes = [part_hash(t) for t in texts]
        self.parts.update(zip(hashes, texts, strict=True))
        r = TaxReturn(
            tenant_id=TENANT,
            form=FORM_GSTR1,
            gstin=ACCOUNT.gstin,
            period=PERIOD,
            version=len(self.returns) + 1,
            content_hash=part_hash("\n".join(hashes).encode()),
            parts=hashes,
            summary={},
            diff=None,
            previous_id=None,
            generated_by="test",
            generated_at=NOW,
        )
        self.returns[r.id] = r
        return r

    def get(self, tenant_id: UUID, return_id: UUID) -> TaxReturn:
        return self.returns[return_id]

    def part_by_hash(self, tenant_id: UUID, content_hash: str) -> bytes:
        return self.parts[content_hash]

    def record_saved(self, tenant_id: UUID, return_id: UUID, **result: Any) -> bool:
        return self.returns[return_id].record_saved(**result)

    def record_processed(self, tenant_id: UUID, return_id: UUID, **result: Any) -> bool:
        return self.returns[return_id].record_processed(**result)

    def record_rejected_records(self, tenant_id: UUID, return_id: UUID, **result: Any) -> bool:
        return self.returns[return_id].record_rejected_records(**result)

    def record_failure(self, tenant_id: UUID, return_id: UUID, **failure: Any) -> bool:
        return self.returns[return_id].record_failure(**failure)


class FakeContext:
    """What HandlerContext gives a handler: the integration and a transport (here: the sandbox app)."""

    def __init__(self, app: Any, gstin: str = ACCOUNT.gstin) -> None:
        self.app = app
        self.gstin = gstin

    async def blocking(self, work: Callable[[], T]) -> T:
        return work()

    async def integration(self, tenant_id: UUID) -> IntegrationSettings:
        credentials = {**ACCOUNT.credentials(), "gstin": self.gstin}
        return IntegrationSettings(
            tenant_id, "gstn-returns", True, "sandbox", "http://gstn.test", credentials
        )

    async def transport(self, loaded: IntegrationSettings) -> httpx.AsyncBaseTransport:
        return httpx.ASGITransport(app=self.app)

    async def close(self) -> None:
        return None


def submitted(results: FakeReturns, *parts: dict[str, Any]) -> tuple[TaxReturn, Job]:
    r = results.add(*parts)
    job_id = f"{r.id}:submit_gstr1:1"
    r.submit(job_id=job_id, submitted_by="test", submitted_at=NOW)
    return r, submit_job(r, job_id)


def attempt(handler: ReturnJobs, job: Job, n: int = 1) -> JobResult | Exception:
    async def run() -> JobResult | Exception:
        try:
            return await handler(job, n)
        except Exception as exc:  # the outcome under test
            return exc

    return asyncio.run(run())


def test_every_part_is_saved_once_and_polled_until_processed_then_ready_to_file() -> None:
    app = create_app(account=ACCOUNT, processing_s=0.0)
    results = FakeReturns()
    r, job = submitted(results, part("27AAACR5055K1Z7"), part("29AABCT1332L1ZA"))
    outcome = attempt(ReturnJobs(FakeContext(app), results), job)  # type: ignore[arg-type]
    assert isinstance(outcome, JobResult), outcome
    assert r.status == ReturnStatus.READY_TO_FILE and sorted(r.reference_ids) == [1, 2]
    again = attempt(ReturnJobs(FakeContext(app), results), job, 2)  # type: ignore[arg-type]
    assert isinstance(again, JobResult) and "skipped" in again.data


def test_while_the_network_processes_the_attempt_is_retryable_and_the_next_one_only_polls() -> None:
    app = create_app(account=ACCOUNT, processing_s=3600.0)
    results = FakeReturns()
    r, job = submitted(results, part("27AAACR5055K1Z7"))
    handler = ReturnJobs(FakeContext(app), results)  # type: ignore[arg-type]
    first = attempt(handler, job)
    assert isinstance(first, RetryableError) and first.code == "return_in_progress"
    assert r.status == ReturnStatus.SAVED and list(r.reference_ids) == [1]
    saved = dict(r.reference_ids)
    second = attempt(handler, job, 2)
    assert isinstance(second, RetryableError)
    assert r.reference_ids == saved, "a saved part is polled, not saved again"


def test_refused_documents_are_recorded_with_their_part_and_error() -> None:
    app = create_app(account=ACCOUNT, processing_s=0.0)
    results = FakeReturns()
    r, job = submitted(results, part("27AAACR5055K1Z7"), part(UNKNOWN_CTIN))
    outcome = attempt(ReturnJobs(FakeContext(app), results), job)  # type: ignore[arg-type]
    assert isinstance(outcome, JobResult), outcome
    assert r.status == ReturnStatus.REJECTED_RECORDS
    assert [(e["part"], e["ctin"], e["error_cd"]) for e in r.errors] == [
        ("2", UNKNOWN_CTIN, "RET_CTIN_INVALID")
    ]


def test_an_integration_for_another_gstin_needs_attention_before_any_call() -> None:
    app = create_app(account=ACCOUNT, processing_s=0.0)
    results = FakeReturns()
    r, job = submitted(results, part("27AAACR5055K1Z7"))
    outcome = attempt(ReturnJobs(FakeContext(app, gstin="27AAACR5055K1Z7"), results), job)  # type: ignore[arg-type]
    assert isinstance(outcome, NeedsAttentionError) and outcome.code == "gstin_not_configured"
    assert r.status == ReturnStatus.SUBMITTED and r.reference_ids == {}


def test_a_job_of_an_earlier_submission_is_skipped() -> None:
    app = create_app(account=ACCOUNT, processing_s=0.0)
    results = FakeReturns()
    r, job = submitted(results, part("27AAACR5055K1Z7"))
    r.record_failure(job_id=job.job_id, error_class="retryable", code="timeout", message="m", attempts=6)
    r.submit(job_id=f"{r.id}:submit_gstr1:2", submitted_by="test", submitted_at=NOW)
    outcome = attempt(ReturnJobs(FakeContext(app), results), job)  # type: ignore[arg-type]
    assert isinstance(outcome, JobResult) and "superseded" in outcome.data["skipped"]
    assert r.reference_ids == {}


@pytest.mark.parametrize("kind", ["generate_irn", ""])
def test_an_unknown_job_kind_is_permanent(kind: str) -> None:
    results = FakeReturns()
    _, job = submitted(results, part("27AAACR5055K1Z7"))
    odd = Job(job.job_id, job.connector, kind, job.tenant_id, job.subject, job.payload)
    outcome = attempt(ReturnJobs(FakeContext(create_app()), results), odd)  # type: ignore[arg-type]
    assert getattr(outcome, "code", None) == "unknown_job_kind"
    assert orjson.loads(odd.encode())["kind"] == kind
