"""eTIMS devices, code lists, items, onboarding and alerts against the real stack and the eTIMS sandbox.

The eTIMS sandbox (connectors/etims/sandbox.py) runs under uvicorn on a loopback port; PostgreSQL and
Kafka are the shared stack's, in the test's own schema and topic prefix. Jobs are run the way the
etims worker runs them (``run_device_job`` with a real ``HandlerContext``); where a job is asked for
by an event or by the API, the test takes it from Kafka (the relayed ``integration_settings_changed``
through ``device_routes``, or the job the API put on ``connector.etims.jobs.v1``), so the whole path
but the faust agent is the real one.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from confluent_kafka import Consumer
from fastapi.testclient import TestClient

from connectors.errors import NeedsAttentionError, RetryableError
from connectors.etims import devices, sandbox
from connectors.etims.codes import sync_code_lists
from connectors.etims.devices import CompanySuspended, active_device, run_device_job
from engine.application import LedgerService
from engine.config import Settings
from engine.relay import Relay
from engine.security.secrets import load_key_ring
from schemas import registry
from streams.connectors.context import HandlerContext
from streams.connectors.jobs import Job, jobs_topic
from tests.conftest import BackgroundLoop, wait_for
from tests.connectors.contract import LiveServer, Operator
from tests.integration.helpers import client_for
from tests.integration.processes import Processes

pytestmark = pytest.mark.integration

PIN = "P051234567X"
OPERATOR_TOKEN = "operator-" + "x" * 32
ONBOARD: dict[str, str] = {
    "legal_name": "Mama Mboga Traders Limited",
    "kra_pin": PIN,
    "environment": "sandbox",
    "bhf_id": "03",
    "device_type": "vscu",
    "device_serial": "VSCU-0003",
}


class Reader:
    """A topic read from the beginning with confluent-kafka; messages accumulate across waits."""

    def __init__(self, settings: Settings, logical_topic: str) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "group.id": f"test-reader-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        self.consumer.subscribe([settings.topic(logical_topic)])
        self.messages: list[Any] = []
        self.topic = logical_topic

    def wait(self, matches: Callable[[Any], bool], what: str, timeout: float = 90) -> Any:
        def poll() -> Any:
            msg = self.consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                self.messages.append(msg)
            return next((m for m in self.messages if matches(m)), None)

        return wait_for(poll, timeout=timeout, interval=0, what=f"{what} on {self.topic}")

    def close(self) -> None:
        self.consumer.close()


def header(message: Any, name: str) -> str:
    return dict(message.headers() or [])[name].decode()


@dataclass
class Etims:
    settings: Settings
    service: LedgerService
    context: HandlerContext
    sandbox_url: str
    operator: Operator
    api: TestClient

    def run(self, job: Job) -> Any:
        return asyncio.run(self._run(job))

    async def _run(self, job: Job) -> Any:
        try:
            return await run_device_job(self.context, job, 1)
        finally:
            await self.context.close()

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(
            self.settings.database_url, options=f"-c search_path={self.settings.db_schema}"
        ) as conn:
            return conn.execute(query, params).fetchall()

    def kenyan_tenant(self) -> tuple[UUID, dict[str, str]]:
        registered = self.service.register_tenant(
            name="Duka", legal_name="Duka Supplies Limited", country="KE", gstin=None, state=None, kra_pin=PIN
        )
        return registered.tenant_id, {"Authorization": f"Bearer {registered.api_key}"}

    def configure(self, auth: dict[str, str], *, bhf_id: str = "01", serial: str, device_type: str) -> None:
        answer = self.api.put(
            "/v1/integrations/etims",
            json={
                "enabled": True,
                "environment": "sandbox",
                "base_url": self.sandbox_url,
                "credentials": {
                    "tin": PIN,
                    "bhf_id": bhf_id,
                    "device_serial": serial,
                    "device_type": device_type,
                },
            },
            headers=auth,
        )
        assert answer.status_code == 200, answer.text

    def init_job_from_the_saved_integration(self, tenant_id: UUID) -> Job:
        return self.init_job_from_the_saved_integration_in(tenant_id, "sandbox")

    def init_job_from_the_saved_integration_in(self, tenant_id: UUID, environment: str) -> Job:
        """The job the router makes of the relayed integration_settings_changed (``device_routes``)."""

        def saved(message: Any) -> bool:
            if header(message, "ce_type") != devices.SETTINGS_CHANGED:
                return False
            record = registry.decode_event(message.value(), devices.SETTINGS_CHANGED)
            return bool(record["tenant_id"] == str(tenant_id) and record["environment"] == environment)

        reader = Reader(self.settings, "ledger.tenant.v1")
        try:
            message = reader.wait(saved, f"the etims integration_settings_changed ({environment})")
        finally:
            reader.close()
        record = registry.decode_event(message.value(), devices.SETTINGS_CHANGED)
        (job,) = devices.device_routes(devices.SETTINGS_CHANGED, header(message, "ce_id"), record)
        return job

    def queued_job(self, kind: str, **payload: str) -> Job:
        def wanted(message: Any) -> bool:
            job = Job.decode(message.value())
            return job.kind == kind and all(job.payload.get(k) == v for k, v in payload.items())

        reader = Reader(self.settings, jobs_topic("etims"))
        try:
            message = reader.wait(wanted, f"a {kind} job {payload}")
        finally:
            reader.close()
        return Job.decode(message.value())

    def device(self, auth: dict[str, str], bhf_id: str = "01") -> dict[str, Any]:
        listed = self.api.get("/v1/etims/devices", headers=auth)
        assert listed.status_code == 200, listed.text
        return next(d for d in listed.json()["items"] if d["bhf_id"] == bhf_id)


@pytest.fixture
def preinstalled() -> list[sandbox.PreinstalledDevice]:
    return []


@pytest.fixture
def etims(
    settings: Settings,
    service: LedgerService,
    topics: list[str],
    background: BackgroundLoop,
    preinstalled: list[sandbox.PreinstalledDevice],
) -> Iterator[Etims]:
    settings = replace(settings, operator_token=OPERATOR_TOKEN)
    background.start(Relay(settings).run)
    context = HandlerContext(
        settings, service, load_key_ring(settings.var_dir), connector="etims", request_rate_per_s=None
    )
    with LiveServer(sandbox.create_app(preinstalled=preinstalled)) as server:
        yield Etims(settings, service, context, server.url, Operator(server.url), client_for(settings))


def test_saving_the_integration_initialises_an_oscu_device_and_syncs_the_code_lists(etims: Etims) -> None:
    tenant_id, auth = etims.kenyan_tenant()
    etims.configure(auth, serial="OSCU-0001", device_type="oscu")

    result = etims.run(etims.init_job_from_the_saved_integration(tenant_id))

    assert result.data["devices"] == {"01": "initialized"}
    device = etims.device(auth)
    assert (device["status"], device["environment"], device["device_type"]) == (
        "initialized",
        "sandbox",
        "oscu",
    )
    assert device["sdc_id"] and device["last_success_at"]
    assert etims.operator.stats()["effects"]["devices_initialized"] == 1
    # The CMC key is kept sealed under its scope, and no device answer shows it.
    key = asyncio.run(etims.context.secret(tenant_id, "cmc:sandbox:01"))
    assert key
    for body in (
        etims.api.get("/v1/etims/devices", headers=auth).text,
        etims.api.get(f"/v1/etims/devices/{device['id']}", headers=auth).text,
    ):
        assert key.decode() not in body
        assert "cmc" not in body.lower()
    # Class 04 of the synced code lists became the environment's tax rates.
    rates = dict(etims.sql("SELECT tax_type, rate::text FROM etims_tax_rates WHERE environment = 'sandbox'"))
    assert rates == {"A": "0.00", "B": "16.00", "C": "0.00", "D": "0.00", "E": "8.00"}
    assert etims.sql("SELECT count(*) FROM etims_item_classes WHERE environment = 'sandbox'")[0][0] > 0
    # Running the job again (a redelivery) changes nothing at KRA.
    assert etims.run(etims.init_job_from_the_saved_integration(tenant_id)).data["devices"] == {
        "01": "initialized"
    }
    assert etims.operator.stats()["effects"]["devices_initialized"] == 1


def test_a_vscu_device_added_over_the_api_is_initialised_by_the_job_the_api_queued(etims: Etims) -> None:
    tenant_id, auth = etims.kenyan_tenant()
    etims.configure(auth, serial="OSCU-0001", device_type="oscu")

    added = etims.api.post(
        "/v1/etims/devices",
        json={"bhf_id": "02", "device_serial": "VSCU-0002", "device_type": "vscu"},
        headers=auth,
    )
    assert added.status_code == 202, added.text
    assert (added.json()["status"], added.json()["bhf_id"]) == ("pending", "02")

    job = etims.queued_job(devices.KIND_INIT)
    assert (job.tenant_id, job.payload["bhf_id"]) == (str(tenant_id), "02")
    assert etims.run(job).data["devices"] == {"02": "initialized"}
    assert etims.device(auth, "02")["status"] == "initialized"
    assert etims.device(auth, "02")["device_type"] == "vscu"
    assert asyncio.run(etims.context.secret(tenant_id, "cmc:sandbox:02"))


@pytest.mark.parametrize(
    "preinstalled", [[sandbox.PreinstalledDevice(PIN, "01", "OSCU-LOST", "oscu", "k" * 32)]]
)
def test_902_without_a_stored_key_fails_the_device_with_an_operator_message_and_an_alert(
    etims: Etims,
) -> None:
    tenant_id, auth = etims.kenyan_tenant()
    etims.configure(auth, serial="OSCU-LOST", device_type="oscu")

    assert etims.run(etims.init_job_from_the_saved_integration(tenant_id)).data["devices"] == {"01": "failed"}

    device = etims.device(auth)
    assert device["status"] == "failed"
    assert "reset the device" in device["last_failure"]["message"]
    assert device["last_failure"]["code"] == "902"
    with pytest.raises(NeedsAttentionError) as refused:
        asyncio.run(active_device(etims.context, tenant_id, "01"))
    assert refused.value.code == "device_failed"

    alerts = Reader(etims.settings, "ledger.alert.v1")
    try:
        message = alerts.wait(lambda m: header(m, "ce_type") == "ledgerflow.alert.raised", "the init alert")
    finally:
        alerts.close()
    assert message.key().decode() == str(tenant_id)
    alert = registry.decode_event(message.value(), "ledgerflow.alert.raised")
    assert (alert["severity"], alert["cause"]) == ("critical", "etims.device_init_failed")
    assert alert["details"]["bhf_id"] == "01" and alert["details"]["result_code"] == "902"


def test_an_item_gets_its_code_is_registered_with_kra_and_a_wrong_unit_is_refused(etims: Etims) -> None:
    tenant_id, auth = etims.kenyan_tenant()
    etims.configure(auth, serial="OSCU-0001", device_type="oscu")
    etims.run(etims.init_job_from_the_saved_integration(tenant_id))
    item_class = etims.sql("SELECT item_cls_cd FROM etims_item_classes ORDER BY item_cls_cd LIMIT 1")[0][0]
    body = {
        "name": "Maize flour 2kg",
        "item_class_code": item_class,
        "item_type": "2",
        "origin": "KE",
        "pkg_unit": "NT",
        "qty_unit": "U",
        "tax_type": "B",
        "default_price": "180.00",
    }

    created = etims.api.post("/v1/etims/items", json=body, headers=auth)
    assert created.status_code == 201, created.text
    item = created.json()
    assert (item["item_code"], item["status"], item["bhf_id"]) == ("KE2NTXU0000001", "pending", "01")
    second = etims.api.post("/v1/etims/items", json={**body, "name": "Maize flour 5kg"}, headers=auth).json()
    assert second["item_code"] == "KE2NTXU0000002"

    job = etims.queued_job(devices.KIND_ITEM)
    etims.run(job)
    statuses = {
        i["item_code"]: i["status"] for i in etims.api.get("/v1/etims/items", headers=auth).json()["items"]
    }
    assert statuses[item["item_code"]] == "registered" or statuses[second["item_code"]] == "registered"
    assert etims.operator.stats()["effects"]["items_saved"] == 1

    wrong = etims.api.post("/v1/etims/items", json={**body, "qty_unit": "ZZZ"}, headers=auth)
    assert wrong.status_code == 422, wrong.text
    assert wrong.json()["error"]["details"]["fields"][0]["path"] == "qty_unit"


def test_an_operator_onboards_a_company_over_http_and_can_suspend_and_resume_it(etims: Etims) -> None:
    operator = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    company = {**ONBOARD, "base_url": etims.sandbox_url}
    onboarded = etims.api.post("/v1/etims/onboard", json=company, headers=operator)
    assert onboarded.status_code == 201, onboarded.text
    tenant_id = UUID(onboarded.json()["tenant_id"])
    # Bad input is refused before anything is stored: no half-onboarded company is left behind.
    before = len(etims.api.get("/v1/tenants", headers=operator).json()["items"])
    for change, field in (
        ({"kra_pin": "P05123456XX"}, "kra_pin"),
        ({"environment": "production", "base_url": "https://evil.example"}, "base_url"),
    ):
        refused_input = etims.api.post("/v1/etims/onboard", json={**company, **change}, headers=operator)
        assert refused_input.status_code == 422, refused_input.text
        assert field in refused_input.text
    assert len(etims.api.get("/v1/tenants", headers=operator).json()["items"]) == before
    auth = {"Authorization": f"Bearer {onboarded.json()['api_key']}"}
    assert onboarded.json()["device"]["status"] == "pending"
    assert etims.api.get("/v1/tenant", headers=auth).json()["country"] == "KE"

    # The saved integration's event asks for the device's initialisation.
    etims.run(etims.init_job_from_the_saved_integration(tenant_id))
    assert etims.device(auth, "03")["status"] == "initialized"

    suspended = etims.api.post(
        f"/v1/etims/companies/{tenant_id}/suspend", json={"reason": "unpaid"}, headers=operator
    )
    assert suspended.status_code == 200, suspended.text
    refused = etims.api.get("/v1/etims/devices", headers=auth)
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "company_suspended")
    # Nothing is sent for a suspended company: its sales wait (retryable) on the device look-up.
    with pytest.raises(CompanySuspended):
        asyncio.run(active_device(etims.context, tenant_id, "03"))
    # A tenant key cannot suspend anyone.
    assert etims.api.post(f"/v1/etims/companies/{tenant_id}/resume", headers=auth).status_code in (401, 403)

    resumed = etims.api.post(f"/v1/etims/companies/{tenant_id}/resume", headers=operator)
    assert resumed.status_code == 200 and resumed.json()["suspended"] is False
    # The API's suspension cache lasts a few seconds.
    wait_for(
        lambda: etims.api.get("/v1/etims/devices", headers=auth).status_code == 200,
        timeout=30,
        interval=0.5,
        what="the resumed company's key working again",
    )
    assert asyncio.run(active_device(etims.context, tenant_id, "03")).bhf_id == "03"


def test_a_silent_device_goes_offline_with_an_alert_and_comes_back_on_success(etims: Etims) -> None:
    tenant_id, auth = etims.kenyan_tenant()
    etims.configure(auth, serial="OSCU-0001", device_type="oscu")
    etims.run(etims.init_job_from_the_saved_integration(tenant_id))
    etims.sql("UPDATE etims_devices SET last_success_at = now() - interval '2 hours' RETURNING id")

    changed = devices.check_offline(etims.settings, etims.service)

    assert [str(d["tenant_id"]) for d in changed] == [str(tenant_id)]
    assert etims.device(auth)["status"] == "offline"
    assert devices.check_offline(etims.settings, etims.service) == []  # one alert per outage
    alerts = Reader(etims.settings, "ledger.alert.v1")
    try:
        message = alerts.wait(lambda m: True, "the offline alert")
    finally:
        alerts.close()
    alert = registry.decode_event(message.value(), "ledgerflow.alert.raised")
    assert (alert["cause"], alert["severity"], alert["tenant_id"]) == (
        "etims.device_offline",
        "warning",
        str(tenant_id),
    )
    assert message.key().decode() == str(tenant_id)

    # A successful call (here a code list sync through the device) brings it back.
    asyncio.run(sync_code_lists(etims.context, tenant_id))
    assert etims.device(auth)["status"] == "initialized"


def test_switching_the_environment_registers_the_devices_again_in_the_new_one(etims: Etims) -> None:
    tenant_id, auth = etims.kenyan_tenant()
    etims.configure(auth, serial="OSCU-0001", device_type="oscu")
    etims.run(etims.init_job_from_the_saved_integration(tenant_id))
    added = etims.api.post(
        "/v1/etims/devices",
        json={"bhf_id": "02", "device_serial": "VSCU-0002", "device_type": "vscu"},
        headers=auth,
    )
    assert added.status_code == 202, added.text
    etims.run(etims.queued_job(devices.KIND_INIT, bhf_id="02"))

    # Production, on a VSCU signing service on the tenant's machine (the endpoint policy's local origin).
    switched = etims.api.put(
        "/v1/integrations/etims",
        json={
            "enabled": True,
            "environment": "production",
            "base_url": "http://127.0.0.1:8088",
            "credentials": {
                "tin": PIN,
                "bhf_id": "01",
                "device_serial": "VSCU-PROD-1",
                "device_type": "vscu",
            },
        },
        headers=auth,
    )
    assert switched.status_code == 200, switched.text
    job = etims.init_job_from_the_saved_integration_in(tenant_id, "production")
    # Nothing answers on the production origin here: the job waits in retry, as it should.
    with contextlib.suppress(RetryableError):
        etims.run(job)

    listed = etims.api.get("/v1/etims/devices", headers=auth).json()["items"]
    by_place = {(d["environment"], d["bhf_id"]): d for d in listed}
    assert set(by_place) == {("sandbox", "01"), ("sandbox", "02"), ("production", "01"), ("production", "02")}
    # The integration's device in production is the one given with the switch; branch 02 follows.
    assert by_place[("production", "01")]["device_serial"] == "VSCU-PROD-1"
    assert by_place[("production", "02")]["device_serial"] == "VSCU-0002"
    assert {by_place[("sandbox", b)]["status"] for b in ("01", "02")} == {"initialized"}
    # No sandbox key is ever used for production: the production scopes are empty until KRA answers.
    if by_place[("production", "01")]["status"] != "initialized":
        assert asyncio.run(etims.context.secret(tenant_id, "cmc:production:01")) is None


def test_through_the_real_processes_onboarding_initialises_the_device_and_silence_raises_the_offline_alert(
    settings: Settings,
    service: LedgerService,
    topics: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``ledgerflow relay``, ``worker`` (the router, reading ledger.tenant.v1) and ``connectors run``
    (the etims handler and its device watch) as separate processes: nothing is called by hand."""
    settings = replace(settings, operator_token=OPERATOR_TOKEN)
    monkeypatch.setenv(devices.OFFLINE_AFTER_ENV, "4s")
    monkeypatch.setenv(devices.WATCH_INTERVAL_ENV, "1")
    processes = Processes(settings, tmp_path)
    alerts = Reader(settings, "ledger.alert.v1")
    with LiveServer(sandbox.create_app()) as server:
        try:
            engine = [
                processes.start("relay"),
                processes.start("worker"),
                processes.start("connectors", "run"),
            ]
            api = client_for(settings)
            onboarded = api.post(
                "/v1/etims/onboard",
                json={
                    "legal_name": "Kibanda Hardware Limited",
                    "kra_pin": PIN,
                    "base_url": server.url,
                    "bhf_id": "01",
                    "device_type": "oscu",
                    "device_serial": "OSCU-E2E-1",
                },
                headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
            )
            assert onboarded.status_code == 201, onboarded.text
            tenant_id = onboarded.json()["tenant_id"]
            auth = {"Authorization": f"Bearer {onboarded.json()['api_key']}"}

            def status() -> str:
                return str(api.get("/v1/etims/devices", headers=auth).json()["items"][0]["status"])

            processes.wait_for(
                lambda: status() in ("initialized", "offline"),
                what="the onboarded device initialised by the etims worker",
                watch=engine,
                timeout=120,
                interval=0.5,
            )
            processes.wait_for(
                lambda: status() == "offline",
                what="the silent device offline",
                watch=engine,
                timeout=60,
                interval=0.5,
            )
            message = alerts.wait(
                lambda m: header(m, "ce_source") == f"/tenants/{tenant_id}", "the offline alert"
            )
            alert = registry.decode_event(message.value(), "ledgerflow.alert.raised")
            assert (alert["cause"], alert["details"]["bhf_id"]) == ("etims.device_offline", "01")
            assert Operator(server.url).stats()["effects"]["devices_initialized"] == 1
        finally:
            alerts.close()
            processes.close()


def test_an_on_demand_sync_asks_only_for_changes_since_the_last_one(etims: Etims) -> None:
    tenant_id, auth = etims.kenyan_tenant()
    etims.configure(auth, serial="OSCU-0001", device_type="oscu")
    etims.run(etims.init_job_from_the_saved_integration(tenant_id))
    first = dict(etims.sql("SELECT kind, last_req_dt FROM etims_sync_state WHERE environment = 'sandbox'"))
    assert set(first) == {"code_list", "item_classes"}

    asked = etims.api.post("/v1/etims/codes/sync", headers=auth)
    assert asked.status_code == 202, asked.text
    result = etims.run(etims.queued_job(devices.KIND_CODES))

    # Nothing changed at KRA since the last lastReqDt: KRA answers 001 and nothing is rewritten.
    assert (result.data["codes"], result.data["item_classes"]) == (0, 0)
    again = dict(etims.sql("SELECT kind, last_req_dt FROM etims_sync_state WHERE environment = 'sandbox'"))
    assert again["code_list"] >= first["code_list"]
    assert etims.sql(
        "SELECT rate::text FROM etims_tax_rates WHERE environment = 'sandbox' AND tax_type = 'B'"
    ) == [("16.00",)]


def test_before_the_first_sync_the_shipped_codes_validate_items_and_the_save_waits_for_the_device(
    etims: Etims,
) -> None:
    _, auth = etims.kenyan_tenant()
    etims.configure(auth, serial="OSCU-0001", device_type="oscu")  # its init job is never run here
    body = {
        "name": "Delivery",
        "item_class_code": "8111160000",
        "item_type": "3",
        "origin": "KE",
        "pkg_unit": "NT",
        "qty_unit": "U",
        "tax_type": "E",
        "default_price": "500",
    }
    assert etims.api.post("/v1/etims/items", json={**body, "pkg_unit": "QQ"}, headers=auth).status_code == 422
    created = etims.api.post("/v1/etims/items", json=body, headers=auth)
    assert created.status_code == 201, created.text
    assert created.json()["item_code"] == "KE3NTXU0000001"

    # The branch's device is not initialised yet: the item waits (retryable), nothing reaches KRA.
    with pytest.raises(RetryableError) as waiting:
        etims.run(etims.queued_job(devices.KIND_ITEM, item_id=created.json()["id"]))
    assert waiting.value.code == "device_pending"
    assert etims.operator.stats()["effects"]["items_saved"] == 0
    # Another tenant cannot see the device.
    _, other = etims.kenyan_tenant()
    added = etims.api.post(
        "/v1/etims/devices", json={"bhf_id": "02", "device_serial": "S2", "device_type": "oscu"}, headers=auth
    ).json()
    assert etims.api.get(f"/v1/etims/devices/{added['id']}", headers=auth).status_code == 200
    assert etims.api.get(f"/v1/etims/devices/{added['id']}", headers=other).status_code == 404


def test_the_device_watch_syncs_an_environment_whose_code_lists_are_a_day_old(etims: Etims) -> None:
    tenant_id, auth = etims.kenyan_tenant()
    etims.configure(auth, serial="OSCU-0001", device_type="oscu")
    etims.run(etims.init_job_from_the_saved_integration(tenant_id))

    async def watch_round() -> None:
        try:
            await devices.sync_stale_code_lists(etims.context)
        finally:
            await etims.context.close()

    fresh = etims.sql("SELECT synced_at FROM etims_sync_state WHERE kind = 'code_list'")[0][0]
    asyncio.run(watch_round())  # synced just now: nothing is due
    assert etims.sql("SELECT synced_at FROM etims_sync_state WHERE kind = 'code_list'")[0][0] == fresh

    etims.sql("UPDATE etims_sync_state SET synced_at = now() - interval '25 hours' RETURNING kind")
    asyncio.run(watch_round())
    (synced,) = etims.sql("SELECT synced_at FROM etims_sync_state WHERE kind = 'code_list'")[0]
    assert synced > fresh
