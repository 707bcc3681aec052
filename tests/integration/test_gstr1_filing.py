"""GSTR-1 generated, submitted and filed end to end: real PostgreSQL, Kafka, connector workers and the
GST returns sandbox over HTTP.

Invoices are issued through the service; ``POST /v1/gst/gstr1/generate`` freezes a version from the
outward-supplies projection, ``submit`` queues a ``gstn-returns`` job that a connector worker (a real
``ledgerflow connectors run`` process) runs against the sandbox through its faults, and ``file`` files
with the OTP. The return is built by engine/tax/gstr1.py from the ``gst_outward_supplies`` projection,
which the relay and the projector (real processes) keep.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from fastapi.testclient import TestClient

from connectors.catalogue import endpoint_policy
from connectors.gstn_returns.sandbox import UNKNOWN_CTIN, SandboxAccount, create_app
from engine import db, integrations
from engine.application import LedgerService
from engine.commands import IssueInvoice
from engine.config import Settings
from engine.security.secrets import load_key_ring
from engine.tax import gstr1
from projections.gst_outward_supplies import supplies_for
from streams.connectors.ops import render_status, status
from tests.connectors.contract import LiveServer, Operator
from tests.integration.helpers import client_for, invoice_body
from tests.integration.processes import LedgerflowProcess, Processes

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ACCOUNT = SandboxAccount()
SELLER = ACCOUNT.gstin  # Karnataka (29)
PERIOD = "012026"
BASE = "/v1/gst/gstr1"


@pytest.fixture
def gstn() -> Iterator[tuple[str, Operator]]:
    with LiveServer(create_app(account=ACCOUNT, processing_s=1.0)) as server:
        yield server.url, Operator(server.url)


@pytest.fixture
def fast(settings: Settings) -> Settings:
    return replace(settings, retry_delays=(0, 1, 1, 2, 2, 3, 3, 5, 5, 8, 8, 13), breaker_open_seconds=2)


@pytest.fixture
def processes(fast: Settings, tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(fast, tmp_path)
    yield procs
    procs.close()


def start_engine(processes: Processes) -> list[LedgerflowProcess]:
    return [
        processes.start("connectors", "run", name="connectors"),
        processes.start("relay"),
        processes.start("projector"),
    ]


def tenant(
    service: LedgerService, settings: Settings, base_url: str, *, gstin: str = SELLER
) -> tuple[UUID, str]:
    registered = service.register_tenant(
        name="Demo", legal_name="Demo Electricals Private Limited", country="IN", gstin=gstin, state=gstin[:2]
    )
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        integrations.save(
            conn,
            load_key_ring(settings.var_dir),
            registered.tenant_id,
            "gstn-returns",
            enabled=True,
            environment="sandbox",
            base_url=base_url,
            credentials={**ACCOUNT.credentials(), "gstin": gstin},
            endpoints=endpoint_policy("gstn-returns"),
            mode=settings.mode,
        )
    return registered.tenant_id, registered.api_key


def issue(service: LedgerService, tenant_id: UUID, numbers: list[str], **changes: Any) -> dict[str, str]:
    issued = {}
    for number in numbers:
        body = invoice_body(number, **changes)
        invoice = service.issue_invoice(tenant_id, IssueInvoice.model_validate(body)).invoice
        issued[number] = str(invoice.id)
    return issued


def cancelled_in(service: LedgerService, tenant_id: UUID, period: str) -> int:
    with db.transaction(service.pool) as conn:
        return sum(d.cancelled for d in supplies_for(conn, tenant_id, SELLER, period))


def supplies(service: LedgerService, tenant_id: UUID, period: str = PERIOD) -> int:
    with db.transaction(service.pool) as conn:
        return len(supplies_for(conn, tenant_id, SELLER, period))


def call(api: TestClient, key: str, method: str, path: str, **kwargs: Any) -> Any:
    return api.request(method, path, headers={"Authorization": f"Bearer {key}"}, **kwargs)


def wait_status(
    processes: Processes,
    engine: list[LedgerflowProcess],
    fast: Settings,
    api: TestClient,
    key: str,
    rid: str,
    want: str,
) -> dict[str, Any]:
    return processes.wait_for(
        lambda: (body := call(api, key, "GET", f"{BASE}/{rid}").json()).get("status") == want and body,
        what=f"return {rid} reaching {want}",
        watch=engine,
        timeout=120,
        explain=lambda: render_status(status(fast)),
    )


def test_a_return_is_generated_regenerated_after_a_late_invoice_submitted_through_faults_and_filed(
    service: LedgerService,
    fast: Settings,
    topics: list[str],
    gstn: tuple[str, Operator],
    processes: Processes,
) -> None:
    url, operator = gstn
    tenant_id, key = tenant(service, fast, url)
    other_id, other_key = tenant(service, fast, url, gstin="27AAACR5055K1Z7")
    api = client_for(fast)
    engine = start_engine(processes)
    issued = issue(service, tenant_id, [f"A-{n}" for n in range(5)])
    issued |= issue(
        service, tenant_id, ["C-1", "C-2"], buyer={"name": "Walk-in", "state": "29"}, place_of_supply="29"
    )
    processes.wait_for(
        lambda: supplies(service, tenant_id) == 7,
        what="7 documents in the projection",
        watch=engine,
        timeout=90,  # the shared projector joining its group under CI load took over 30 s
    )

    first = call(api, key, "POST", f"{BASE}/generate", json={"gstin": SELLER, "period": PERIOD})
    assert first.status_code == 201, first.text
    v1 = first.json()
    assert (v1["version"], v1["status"], v1["diff"], v1["previous_id"]) == (1, "generated", None, None)
    part = call(api, key, "GET", f"{BASE}/{v1['id']}/json", params={"part": 1})
    assert part.status_code == 200 and part.json()["gstin"] == SELLER and part.json()["fp"] == PERIOD
    assert call(api, key, "GET", f"{BASE}/{v1['id']}/json", params={"part": 99}).status_code == 404

    # A late invoice: the next generation is version 2 and says what changed; unchanged, it stays 2.
    issue(service, tenant_id, ["A-LATE"])
    processes.wait_for(
        lambda: supplies(service, tenant_id) == 8, what="the late invoice projected", watch=engine
    )
    second = call(api, key, "POST", f"{BASE}/generate", json={"gstin": SELLER, "period": PERIOD})
    assert second.status_code == 201, second.text
    v2 = second.json()
    assert (v2["version"], v2["previous_id"]) == (2, v1["id"]) and v2["diff"], v2
    assert v2["content_hash"] != v1["content_hash"]
    same = call(api, key, "POST", f"{BASE}/generate", json={"gstin": SELLER, "period": PERIOD})
    assert (same.status_code, same.json()["id"], same.json()["created"]) == (200, v2["id"], False)
    superseded = call(api, key, "POST", f"{BASE}/{v1['id']}/submit")
    assert (superseded.status_code, superseded.json()["error"]["code"]) == (409, "return_superseded")

    # Another tenant sees none of it, and cannot generate for this GSTIN.
    for method, path in (
        ("GET", f"{BASE}/{v2['id']}"),
        ("GET", f"{BASE}/{v2['id']}/json"),
        ("POST", f"{BASE}/{v2['id']}/submit"),
    ):
        assert call(api, other_key, method, path).status_code == 404, path
    assert (
        call(api, other_key, "POST", f"{BASE}/{v2['id']}/file", json={"otp": ACCOUNT.otp}).status_code == 404
    )
    foreign = call(api, other_key, "POST", f"{BASE}/generate", json={"gstin": SELLER, "period": PERIOD})
    assert (foreign.status_code, foreign.json()["error"]["code"]) == (422, "gstin_not_yours")
    assert other_id != tenant_id

    # Submission through transient faults and lost answers completes via retries, one save per part.
    operator.faults(error_rate=0.3, rate_limit_rate=0.1, after_effect_failure_rate=0.2, seed=11, max_faults=8)
    submitted = call(api, key, "POST", f"{BASE}/{v2['id']}/submit")
    assert submitted.status_code == 202, submitted.text
    again = call(api, key, "POST", f"{BASE}/{v2['id']}/submit")  # the same job, queued again: harmless
    assert again.status_code == 202 and again.json()["submission"] == submitted.json()["submission"]
    ready = wait_status(processes, engine, fast, api, key, v2["id"], "ready_to_file")
    stats = operator.stats()
    assert sum(stats["faults_injected"].values()) > 0, stats
    assert stats["effects"]["return_saved"] == len(v2["parts"]), stats
    assert sorted(ready["reference_ids"]) == [str(n) for n in range(1, len(v2["parts"]) + 1)]
    assert ready["status_text"] == "saved and validated, ready to file" and ready["errors"] == []

    # Filing needs the right OTP; it records the ARN, and the filed period takes no new version.
    operator.faults()
    wrong = call(api, key, "POST", f"{BASE}/{v2['id']}/file", json={"otp": "000000"})
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (422, "invalid_otp")
    assert "000000" not in wrong.text
    filed = call(api, key, "POST", f"{BASE}/{v2['id']}/file", json={"otp": ACCOUNT.otp})
    assert filed.status_code == 200, filed.text
    assert filed.json()["status"] == "filed" and filed.json()["arn"].startswith("AA29")
    refiled = call(api, key, "POST", f"{BASE}/{v2['id']}/file", json={"otp": ACCOUNT.otp})
    assert refiled.json()["arn"] == filed.json()["arn"]
    assert operator.stats()["effects"]["return_filed"] == 1
    closed = call(api, key, "POST", f"{BASE}/generate", json={"gstin": SELLER, "period": PERIOD})
    assert (closed.status_code, closed.json()["error"]["code"]) == (409, "period_filed")

    # After filing, January's changes go to February's amendment sections; the filed version stays.
    frozen = call(api, key, "GET", f"{BASE}/{v2['id']}/json", params={"part": 1}).content
    for number in ("A-1", "C-1"):  # a B2B and a B2C sale of January cancelled after filing
        cancelled = call(api, key, "POST", f"/v1/invoices/{issued[number]}/cancel", json={"reason": "other"})
        assert cancelled.status_code == 200, cancelled.text
    issue(service, tenant_id, ["A-JAN-LATE"], date="2026-01-30")  # missed in January's return
    note = {
        "number": "CN-1",
        "date": "2026-01-31",
        "reason": "sales_return",
        "lines": [{"line_no": 1, "quantity": "2"}],
    }
    late_note = call(api, key, "POST", f"/v1/invoices/{issued['A-2']}/credit-notes", json=note)
    assert late_note.status_code == 201, late_note.text
    issue(service, tenant_id, ["F-1"], date="2026-02-03")
    processes.wait_for(
        lambda: (
            cancelled_in(service, tenant_id, PERIOD) == 2
            and supplies(service, tenant_id, PERIOD) == 10
            and supplies(service, tenant_id, "022026") == 1
        ),
        what="the cancellations and February's invoice projected",
        watch=engine,
    )
    february = call(api, key, "POST", f"{BASE}/generate", json={"gstin": SELLER, "period": "022026"})
    assert february.status_code == 201, february.text
    feb = json.loads(
        call(api, key, "GET", f"{BASE}/{february.json()['id']}/json").content, parse_float=Decimal
    )
    jan = json.loads(frozen, parse_float=Decimal)
    # b2ba: A-1 amended to zero against its filed number and date, under its buyer.
    [buyer] = feb["b2ba"]
    [amended] = buyer["inv"]
    assert (buyer["ctin"], amended["oinum"], amended["oidt"], amended["inum"]) == (
        "27AAACR5055K1Z7",
        "A-1",
        "19-01-2026",
        "A-1",
    )
    assert amended["val"] == 0 and all(i["itm_det"]["txval"] == 0 for i in amended["itms"])
    # b2csa: January's filed b2cs row (C-1 and C-2, 1,000.00 each) revised without the cancelled C-1.
    [filed_row] = jan["b2cs"]
    [revised] = feb["b2csa"]
    assert (revised["omon"], revised["pos"], revised["sply_ty"]) == (PERIOD, "29", "INTRA")
    assert filed_row["txval"] == Decimal("2000.00")
    assert [(i["txval"], i["camt"], i["samt"]) for i in revised["itms"]] == [
        (Decimal("1000.00"), Decimal("90.00"), Decimal("90.00"))
    ]
    # The late January invoice is reported in February's b2b with its own date, beside February's own.
    reported = sorted((i["inum"], i["idt"]) for g in feb["b2b"] for i in g["inv"])
    assert reported == [("A-JAN-LATE", "30-01-2026"), ("F-1", "03-02-2026")]
    # So is a credit note dated in January but issued after filing: February's cdnr, January's date.
    [(ctin, [credit])] = [(g["ctin"], g["nt"]) for g in feb["cdnr"]]
    assert (ctin, credit["ntty"], credit["nt_num"], credit["nt_dt"]) == (
        "27AAACR5055K1Z7",
        "C",
        "CN-1",
        "31-01-2026",
    )
    assert [i["itm_det"]["txval"] for i in credit["itms"]] == [Decimal("200.00")]
    summary = february.json()["summary"]["sections"]
    assert (summary["b2ba"]["count"], summary["b2csa"]["count"]) == (1, 1)
    # The filed version is untouched: the same bytes, its hashes as documented.
    after = call(api, key, "GET", f"{BASE}/{v2['id']}/json", params={"part": 1})
    assert after.content == frozen and call(api, key, "GET", f"{BASE}/{v2['id']}").json()["status"] == "filed"
    assert jan["hash"] == gstr1.part_hash(jan)
    assert hashlib.sha256(frozen).hexdigest() == filed.json()["content_hash"]  # one part: the return's hash
    again = call(api, key, "POST", f"{BASE}/generate", json={"gstin": SELLER, "period": "022026"})
    assert (again.status_code, again.json()["id"]) == (200, february.json()["id"])

    # Once February (with its amendments) is filed, March reports none of them again.
    assert call(api, key, "POST", f"{BASE}/{february.json()['id']}/submit").status_code == 202
    wait_status(processes, engine, fast, api, key, february.json()["id"], "ready_to_file")
    feb_filed = call(api, key, "POST", f"{BASE}/{february.json()['id']}/file", json={"otp": ACCOUNT.otp})
    assert feb_filed.status_code == 200, feb_filed.text
    # C-2 cancelled now: March revises January's row again, from February's filed revision.
    cancelled = call(api, key, "POST", f"/v1/invoices/{issued['C-2']}/cancel", json={"reason": "other"})
    assert cancelled.status_code == 200, cancelled.text
    processes.wait_for(
        lambda: cancelled_in(service, tenant_id, PERIOD) == 3, what="C-2 cancelled", watch=engine
    )
    march = call(api, key, "POST", f"{BASE}/generate", json={"gstin": SELLER, "period": "032026"})
    assert march.status_code == 201, march.text
    march_json = json.loads(
        call(api, key, "GET", f"{BASE}/{march.json()['id']}/json").content, parse_float=Decimal
    )
    assert not {"b2b", "b2ba", "cdnr"} & set(march_json), march_json
    [again_revised] = march_json["b2csa"]
    assert again_revised["omon"] == PERIOD
    assert [(i["txval"], i["camt"]) for i in again_revised["itms"]] == [(Decimal("0.00"), Decimal("0.00"))]
    processes.assert_alive(*engine)


def test_a_document_the_network_refuses_is_reported_on_the_return_with_its_error(
    service: LedgerService,
    fast: Settings,
    topics: list[str],
    gstn: tuple[str, Operator],
    processes: Processes,
) -> None:
    url, operator = gstn
    tenant_id, key = tenant(service, fast, url)
    api = client_for(fast)
    engine = start_engine(processes)
    issue(service, tenant_id, ["GOOD-1"])
    unknown = {
        "name": "Ghost Traders",
        "gstin": UNKNOWN_CTIN,
        "state": "27",
        "address": {"line1": "1 Road", "city": "Pune", "pincode": "411001"},
    }
    issue(service, tenant_id, ["BAD-1"], buyer=unknown)
    processes.wait_for(
        lambda: supplies(service, tenant_id) == 2,
        what="2 documents in the projection",
        watch=engine,
        timeout=90,  # the shared projector joining its group under CI load took over 30 s
    )

    v1 = call(api, key, "POST", f"{BASE}/generate", json={"gstin": SELLER, "period": PERIOD}).json()
    assert call(api, key, "POST", f"{BASE}/{v1['id']}/submit").status_code == 202
    rejected = wait_status(processes, engine, fast, api, key, v1["id"], "rejected_records")

    assert [(e["section"], e["ctin"], e["inum"], e["error_cd"]) for e in rejected["errors"]] == [
        ("b2b", UNKNOWN_CTIN, "BAD-1", "RET_CTIN_INVALID")
    ]
    assert rejected["errors"][0]["error_msg"]
    blocked = call(api, key, "POST", f"{BASE}/{v1['id']}/file", json={"otp": ACCOUNT.otp})
    assert (blocked.status_code, blocked.json()["error"]["code"]) == (409, "return_not_ready")
    again = call(api, key, "POST", f"{BASE}/{v1['id']}/submit")
    assert (again.status_code, again.json()["error"]["code"]) == (409, "return_state_conflict")
    assert operator.stats()["effects"]["return_filed"] == 0
    processes.assert_alive(*engine)


def test_generate_refuses_hostile_and_foreign_input_with_a_clear_4xx(
    service: LedgerService, fast: Settings, gstn: tuple[str, Operator]
) -> None:
    url, _ = gstn
    _, key = tenant(service, fast, url)
    api = client_for(fast)
    cases = [
        ({"gstin": SELLER, "period": "132025"}, 422, "invalid_period"),
        ({"gstin": SELLER, "period": "012099"}, 422, "invalid_period"),
        ({"gstin": SELLER, "period": "01202\u0000"}, 422, "invalid_period"),
        ({"gstin": "29AAGCB7383J1Z5", "period": PERIOD}, 422, "invalid_gstin"),  # wrong check character
        ({"gstin": "27AAACR5055K1Z7", "period": PERIOD}, 422, "gstin_not_yours"),
        ({"gstin": SELLER, "period": PERIOD, "extra": 1}, 422, "validation_failed"),
        ({"gstin": SELLER}, 422, "validation_failed"),
    ]
    for body, code, error in cases:
        answer = call(api, key, "POST", f"{BASE}/generate", json=body)
        assert (answer.status_code, answer.json()["error"]["code"]) == (code, error), body
    missing = call(api, key, "GET", f"{BASE}/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404
    assert call(api, key, "GET", f"{BASE}/not-a-uuid").status_code == 422
    assert (
        call(
            api, key, "POST", f"{BASE}/00000000-0000-0000-0000-000000000000/file", json={"otp": "12a456"}
        ).status_code
        == 422
    )


def test_concurrent_generations_of_one_period_make_one_version_per_distinct_content(
    service: LedgerService, fast: Settings, gstn: tuple[str, Operator]
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from engine.tax_returns import TaxReturns

    url, _ = gstn
    tenant_id, _ = tenant(service, fast, url)
    returns = TaxReturns(service)

    def generate(content: int) -> tuple[int, bool]:
        made = returns.generate(
            tenant_id,
            SELLER,
            PERIOD,
            parts=[{"gstin": SELLER, "fp": PERIOD, "b2b": [{"ctin": "27AAACR5055K1Z7", "n": content}]}],
            summary={"sections": {"b2b": {"count": content}}},
            diff=lambda old, new: {"before": old, "after": new},
            generated_by="test",
        )
        return made.tax_return.version, made.created

    with ThreadPoolExecutor(max_workers=6) as pool:
        same = list(pool.map(generate, [1] * 6))
    assert same.count((1, True)) == 1 and set(same) == {(1, True), (1, False)}, same

    with ThreadPoolExecutor(max_workers=4) as pool:
        distinct = list(pool.map(generate, [2, 3, 4, 5]))
    assert sorted(v for v, _ in distinct) == [2, 3, 4, 5] and all(created for _, created in distinct), (
        distinct
    )
    latest = returns.latest(tenant_id, SELLER, PERIOD)
    assert latest is not None and latest.version == 5 and latest.diff is not None

    # Submitting the same version from several requests at once records one submission, one job id.
    with ThreadPoolExecutor(max_workers=4) as pool:
        jobs = set(pool.map(lambda _: _submit_or_conflict(returns, tenant_id, latest.id), range(4)))
    assert len(jobs - {"conflict"}) == 1, jobs
    assert returns.get(tenant_id, latest.id).submissions == 1


def _submit_or_conflict(returns: Any, tenant_id: UUID, return_id: UUID) -> str:
    from engine.tax_returns import ReturnChangedConcurrently

    try:
        return returns.submit(tenant_id, return_id, "test")[1]
    except ReturnChangedConcurrently:
        return "conflict"
