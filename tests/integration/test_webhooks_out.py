"""Outbound webhooks on the real stack: the API, the relay, Kafka, the delivery worker, PostgreSQL and
the webhook receiver sandbox (connectors/webhook_receiver.py) on a loopback port. Every delivery is
verified with the official ``standardwebhooks`` library, as a receiver would."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import orjson
import psycopg
import pytest
from aiokafka import AIOKafkaProducer
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from connectors.egress import EgressRefusedError
from connectors.webhook_receiver import create_app as receiver_app
from engine.application import LedgerService
from engine.config import Settings
from engine.relay import Relay
from streams.connectors.breaker import BreakerSettings
from streams.connectors.retry import RetryPolicy
from streams.webhooks import DeliverySettings, DeliveryWorker, ReceiverTransport
from tests.conftest import BackgroundLoop, wait_for
from tests.connectors.contract import LiveServer
from tests.integration.helpers import client_for, invoice_body, register_tenant

pytestmark = pytest.mark.integration


@pytest.fixture
def receiver() -> Any:
    with LiveServer(receiver_app()) as server:
        yield server


class Receiver:
    def __init__(self, base: str, name: str) -> None:
        self.url = f"{base}/hooks/{name}"
        self.name = name
        self.ops = httpx.Client(base_url=f"{base}/_sandbox/receivers", timeout=5.0)

    def behave(self, **behaviour: Any) -> None:
        self.ops.put(f"/{self.name}", json=behaviour).raise_for_status()

    def received(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.ops.get(f"/{self.name}/received").json()["items"]
        for item in items:
            item["raw"] = base64.b64decode(item["body_b64"])
            item["json"] = orjson.loads(item["raw"])
        return items

    def delivered(self) -> list[dict[str, Any]]:
        return [r for r in self.received() if r["answered"] == 200]


def start(background: BackgroundLoop, settings: Settings, **options: Any) -> None:
    background.start(Relay(settings).run)
    background.start(DeliveryWorker(settings, DeliverySettings(**options)).run)


def create_endpoint(client: Any, auth: dict[str, str], url: str, **body: Any) -> dict[str, Any]:
    answer = client.post(
        "/v1/webhooks/endpoints", json={"url": url, "event_types": ["*"], **body}, headers=auth
    )
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def issue(client: Any, auth: dict[str, str], number: str) -> str:
    answer = client.post("/v1/invoices", json=invoice_body(number), headers=auth)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def alerts(settings: Settings) -> list[dict[str, Any]]:
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        rows = conn.execute(
            "SELECT state FROM ledger_events WHERE topic LIKE %s", ("%Alert.Raised",)
        ).fetchall()
    return [orjson.loads(bytes(r[0])) for r in rows]


def assert_error(answer: httpx.Response, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code and error["message"] and error["timestamp"].endswith("Z")


def test_endpoints_are_managed_per_tenant_and_the_secret_is_shown_once(
    service: LedgerService, settings: Settings
) -> None:
    _, key = register_tenant(service)
    _, other_key = register_tenant(service, gstin="27AAACR5055K1Z7")
    client = client_for(settings)
    auth, other = {"Authorization": f"Bearer {key}"}, {"Authorization": f"Bearer {other_key}"}

    created = create_endpoint(
        client, auth, "https://erp.example.com/hooks", event_types=["invoice.issued"], description="ERP"
    )
    assert created["secret"].startswith("whsec_") and len(base64.b64decode(created["secret"][6:])) == 32
    assert created["event_types"] == ["ledgerflow.invoice.issued"] and created["format"] == "cloudevents"
    path = f"/v1/webhooks/endpoints/{created['id']}"
    listed = client.get("/v1/webhooks/endpoints", headers=auth).json()["items"]
    assert [e["id"] for e in listed] == [created["id"]]
    assert created["secret"] not in client.get(path, headers=auth).text
    assert "secret" not in listed[0]

    changed = client.patch(
        path, json={"format": "legacy", "event_types": ["ledgerflow.invoice.*"]}, headers=auth
    )
    assert changed.status_code == 200 and changed.json()["format"] == "legacy"
    assert changed.json()["url"] == "https://erp.example.com/hooks"
    assert client.post(f"{path}/pause", headers=auth).json()["status"] == "paused"
    assert client.post(f"{path}/resume", headers=auth).json()["status"] == "active"
    rotated = client.post(f"{path}/rotate-secret", headers=auth).json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != created["secret"]

    # Another tenant: as if the endpoint did not exist.
    for method, suffix in [
        ("GET", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("GET", "/deliveries"),
        ("POST", "/pause"),
    ]:
        answer = client.request(
            method, f"{path}{suffix}", headers=other, json={} if method == "PATCH" else None
        )
        assert_error(answer, 404, "webhook_endpoint_not_found")
    assert client.get("/v1/webhooks/endpoints", headers=other).json()["items"] == []

    # Hostile input: a clear 4xx in the error shape, never a 500.
    for body in [
        {"url": "http://ok.example/\x00", "event_types": ["*"]},
        {"url": "ftp://files.example/", "event_types": ["*"]},
        {"url": "https://\u2028x.example.com/", "event_types": ["*"]},
        {"url": "https://erp.example/", "event_types": ["\u0130nvoice.issued"]},
        {"url": "https://erp.example/", "event_types": "*"},
        {"url": "https://user:pw@erp.example/", "event_types": ["*"]},
        {"url": "https://erp.example/", "event_types": ["ledgerflow.invoice.exploded"]},
        {"url": "https://erp.example/", "event_types": ["not a type"]},
        {"url": "https://erp.example/", "event_types": []},
        {"url": "https://erp.example/", "event_types": ["*"] * 51},
        {"url": "https://erp.example/", "event_types": ["*"], "description": "bell\x07"},
        {"url": "https://erp.example/", "event_types": ["*"], "format": "xml"},
        {"url": "https://erp.example/" + "a" * 5000, "event_types": ["*"]},
    ]:
        answer = client.post("/v1/webhooks/endpoints", json=body, headers=auth)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["error"]["code"] in ("invalid_webhook_endpoint", "validation_failed")
    assert_error(client.get("/v1/webhooks/endpoints/not-a-uuid", headers=auth), 422, "validation_failed")

    assert client.delete(path, headers=auth).status_code == 204
    assert_error(client.get(path, headers=auth), 404, "webhook_endpoint_not_found")
    assert_error(client.post(f"{path}/resume", headers=auth), 404, "webhook_endpoint_not_found")


def test_production_mode_refuses_private_and_plain_http_receivers(
    service: LedgerService, settings: Settings
) -> None:
    production = replace(settings, mode="production")
    _, key = register_tenant(service)
    client = client_for(production)
    auth = {"Authorization": f"Bearer {key}"}
    for url in [
        "http://erp.example.com/hooks",
        "https://127.0.0.1/hooks",
        "https://10.1.2.3/hooks",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hooks",
        "https://localhost/hooks",
    ]:
        answer = client.post("/v1/webhooks/endpoints", json={"url": url, "event_types": ["*"]}, headers=auth)
        assert_error(answer, 422, "invalid_webhook_endpoint")


async def test_a_receiver_name_resolving_to_an_internal_address_is_refused_at_connect_time(
    receiver: Any,
) -> None:
    async def rebinding_dns(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        # A public-looking name whose DNS answer points inside (DNS rebinding, cloud metadata).
        return [ipaddress.ip_address("169.254.169.254")]

    async with httpx.AsyncClient(transport=ReceiverTransport("production", resolver=rebinding_dns)) as client:
        with pytest.raises(EgressRefusedError) as refused:
            await client.post("https://hooks.example.com/in", content=b"{}")
    assert refused.value.code == "address_not_allowed"

    # Development mode delivers to loopback, but never follows a redirect.
    Receiver(receiver.url, "moved").behave(status=307)
    async with httpx.AsyncClient(transport=ReceiverTransport("development")) as client:
        with pytest.raises(EgressRefusedError) as redirected:
            await client.post(f"{receiver.url}/hooks/moved", content=b"{}")
    assert redirected.value.code == "redirect_not_followed"


def test_every_delivery_verifies_with_standardwebhooks_also_during_a_rotation_and_in_legacy_format(
    service: LedgerService, settings: Settings, topics: list[str], background: BackgroundLoop, receiver: Any
) -> None:
    tenant_id, key = register_tenant(service)
    _, stranger_key = register_tenant(service, gstin="27AAACR5055K1Z7")
    client = client_for(settings)
    auth = {"Authorization": f"Bearer {key}"}
    ce_hook, legacy_hook = Receiver(receiver.url, "ce"), Receiver(receiver.url, "legacy")
    ce = create_endpoint(client, auth, ce_hook.url)
    legacy = create_endpoint(client, auth, legacy_hook.url, event_types=["invoice.issued"], format="legacy")
    start(background, settings)

    invoice_id = issue(client, auth, "WH-1")
    issue(client, {"Authorization": f"Bearer {stranger_key}"}, "STRANGER-1")
    wait_for(lambda: ce_hook.delivered() and legacy_hook.delivered(), what="both receivers getting WH-1")

    (got,) = ce_hook.delivered()
    payload = Webhook(ce["secret"]).verify(got["raw"], got["headers"])
    assert got["headers"]["content-type"] == "application/cloudevents+json"
    assert payload["specversion"] == "1.0" and payload["type"] == "ledgerflow.invoice.issued"
    assert payload["source"] == f"/tenants/{tenant_id}" and payload["subject"] == invoice_id
    assert got["headers"]["webhook-id"] == payload["id"]
    assert payload["data"]["number"] == "WH-1" and payload["data"]["totals"]["total"] == "1180.00"
    assert (
        got["headers"]["x-signature"]
        == hmac.new(ce["secret"].encode(), got["raw"], hashlib.sha256).hexdigest()
    )
    with pytest.raises(WebhookVerificationError):
        Webhook(legacy["secret"]).verify(got["raw"], got["headers"])
    with pytest.raises(WebhookVerificationError):  # one flipped byte of the body
        Webhook(ce["secret"]).verify(got["raw"].replace(b"WH-1", b"WH-2"), got["headers"])

    (old,) = legacy_hook.delivered()
    body = Webhook(legacy["secret"]).verify(old["raw"], old["headers"])
    assert set(body) == {"event", "timestamp", "data"} and body["event"] == "invoice.issued"
    # The seed's own verify_signature (section 3.3), as a receiver of the seed would run it.
    expected = hmac.new(legacy["secret"].encode(), old["raw"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(old["headers"]["x-signature"], expected)

    # Rotation: the next delivery carries two signatures; the old and the new secret both verify it.
    rotated = client.post(f"/v1/webhooks/endpoints/{ce['id']}/rotate-secret", headers=auth).json()
    issue(client, auth, "WH-2")
    wait_for(lambda: len(ce_hook.delivered()) == 2, what="WH-2 delivered after the rotation")
    latest = ce_hook.delivered()[1]
    assert len(latest["headers"]["webhook-signature"].split(" ")) == 2
    for secret in (ce["secret"], rotated["secret"]):
        assert Webhook(secret).verify(latest["raw"], latest["headers"])["data"]["number"] == "WH-2"
    assert latest["headers"]["x-signature"] == hex_of(rotated["secret"], latest["raw"])

    # The stranger's invoice reached neither endpoint; the attempts are listed with their outcome.
    numbers = [r["json"].get("data", {}).get("number") for r in ce_hook.received() + legacy_hook.received()]
    assert "STRANGER-1" not in numbers

    # The receiver has its 200 before the dispatcher records it (pending -> delivered | dead): wait
    # for both outcomes to be recorded.
    def settled() -> list[dict[str, Any]] | None:
        url = f"/v1/webhooks/endpoints/{ce['id']}/deliveries"
        items: list[dict[str, Any]] = client.get(url, headers=auth).json()["items"]
        return items if len(items) == 2 and all(d["status"] != "pending" for d in items) else None

    deliveries = wait_for(settled, what="both deliveries recorded with their outcome")
    assert [d["status"] for d in deliveries] == ["delivered", "delivered"]
    assert (
        deliveries[0]["attempts"][0]["status_code"] == 200 and deliveries[0]["attempts"][0]["latency_ms"] >= 0
    )


def hex_of(secret: str, raw: bytes) -> str:
    return hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def test_failures_follow_the_schedule_then_die_with_an_alert_and_a_resend_delivers(
    service: LedgerService, settings: Settings, topics: list[str], background: BackgroundLoop, receiver: Any
) -> None:
    _, key = register_tenant(service)
    client = client_for(settings)
    auth = {"Authorization": f"Bearer {key}"}
    hook = Receiver(receiver.url, "down")
    hook.behave(status=503)
    endpoint = create_endpoint(client, auth, hook.url, event_types=["ledgerflow.invoice.issued"])
    # The seed's shape (immediately, then growing waits), shortened for the test.
    schedule = (0.0, 0.3, 0.6)
    start(background, settings, retry_policy=RetryPolicy(schedule))
    issue(client, auth, "DOWN-1")
    path = f"/v1/webhooks/endpoints/{endpoint['id']}/deliveries"

    def dead() -> dict[str, Any] | None:
        items = client.get(path, headers=auth).json()["items"]
        return items[0] if items and items[0]["status"] == "dead" else None

    delivery = wait_for(dead, what="the delivery dead after its schedule")
    assert delivery is not None
    attempts = delivery["attempts"]
    assert [a["status_code"] for a in attempts] == [503] * 4 and attempts[-1]["error"] == "HTTP 503"
    assert len(hook.received()) == 4
    # Each retry waited at least its scheduled delay (a guarantee, not a speed).
    times = [datetime.fromisoformat(a["attempted_at"]) for a in attempts]
    for before, after, delay in zip(times[:-1], times[1:], schedule, strict=True):
        assert (after - before).total_seconds() >= delay - 0.01
    wait_for(lambda: any(a["cause"] == "webhooks.delivery_failed" for a in alerts(settings)), what="an alert")

    hook.behave(status=200)
    resent = client.post(f"{path}/{delivery['id']}/resend", headers=auth)
    assert resent.status_code == 202 and resent.json()["status"] == "pending"
    wait_for(
        lambda: client.get(path, headers=auth).json()["items"][0]["status"] == "delivered", what="resent"
    )
    assert len(client.get(path, headers=auth).json()["items"][0]["attempts"]) == 5
    assert_error(client.post(f"{path}/{UUID(int=1)}/resend", headers=auth), 404, "webhook_delivery_not_found")


def test_410_gone_disables_the_endpoint_with_an_alert_and_resume_delivers_what_was_queued(
    service: LedgerService, settings: Settings, topics: list[str], background: BackgroundLoop, receiver: Any
) -> None:
    _, key = register_tenant(service)
    client = client_for(settings)
    auth = {"Authorization": f"Bearer {key}"}
    hook = Receiver(receiver.url, "gone")
    hook.behave(status=410, times=1)
    endpoint = create_endpoint(client, auth, hook.url, event_types=["ledgerflow.invoice.*"])
    path = f"/v1/webhooks/endpoints/{endpoint['id']}"
    start(background, settings)
    issue(client, auth, "GONE-1")
    wait_for(
        lambda: client.get(path, headers=auth).json()["status"] == "disabled", what="the endpoint disabled"
    )
    assert client.get(path, headers=auth).json()["disabled_reason"] == "gone"
    wait_for(
        lambda: any(a["cause"] == "webhooks.endpoint_disabled" for a in alerts(settings)), what="an alert"
    )
    assert len(hook.received()) == 1
    # The delivery the 410 answered stays queued, without using up its schedule, for a resume.
    assert client.post(f"{path}/resume", headers=auth).json()["status"] == "active"
    wait_for(lambda: hook.delivered(), what="GONE-1 delivered after the resume")
    # The receiver's 200 arrives before the dispatcher records it: wait for the record, not the POST.
    wait_for(
        lambda: client.get(f"{path}/deliveries", headers=auth).json()["items"][0]["status"] == "delivered",
        what="the delivery recorded as delivered",
    )
    (delivery,) = client.get(f"{path}/deliveries", headers=auth).json()["items"]
    assert [a["status_code"] for a in delivery["attempts"]] == [410, 200]


def test_a_slow_receiver_does_not_delay_a_fast_one(
    service: LedgerService, settings: Settings, topics: list[str], background: BackgroundLoop, receiver: Any
) -> None:
    _, key = register_tenant(service)
    client = client_for(settings)
    auth = {"Authorization": f"Bearer {key}"}
    slow, fast = Receiver(receiver.url, "slow"), Receiver(receiver.url, "fast")
    slow.behave(delay_s=3.0)
    create_endpoint(client, auth, slow.url)
    create_endpoint(client, auth, fast.url)
    start(background, settings, concurrency=2)
    for n in range(12):
        issue(client, auth, f"SPEED-{n}")
    wait_for(lambda: len(fast.delivered()) == 12, what="the fast receiver getting all 12")
    # The slow one takes 3 s per request, two at a time: it cannot have answered all 12 by now.
    assert len(slow.received()) < 12


def test_a_later_event_of_an_invoice_waits_for_an_earlier_one_still_retrying_and_others_go_on(
    service: LedgerService, settings: Settings, topics: list[str], background: BackgroundLoop, receiver: Any
) -> None:
    _, key = register_tenant(service)
    client = client_for(settings)
    auth = {"Authorization": f"Bearer {key}"}
    hook = Receiver(receiver.url, "ordered")
    hook.behave(status=500, times=1)
    endpoint = create_endpoint(client, auth, hook.url, event_types=["ledgerflow.invoice.*"])
    path = f"/v1/webhooks/endpoints/{endpoint['id']}/deliveries"
    # A long wait before the retry: the held-back event is plainly held, not merely slower.
    start(background, settings, retry_policy=RetryPolicy((600.0,)))
    first = issue(client, auth, "ORDER-A")
    wait_for(lambda: hook.received(), what="the first attempt of ORDER-A (answered 500)")
    assert (
        client.post(f"/v1/invoices/{first}/cancel", json={"reason": "duplicate"}, headers=auth).status_code
        == 200
    )
    issue(client, auth, "ORDER-B")
    wait_for(lambda: len(hook.delivered()) == 1, what="ORDER-B delivered while ORDER-A retries")
    assert hook.delivered()[0]["json"]["data"]["number"] == "ORDER-B"

    def pending() -> list[dict[str, Any]]:
        return [d for d in client.get(path, headers=auth).json()["items"] if d["status"] == "pending"]

    wait_for(lambda: len(pending()) == 2, what="ORDER-A's cancellation queued behind its issue")
    held = {d["event_type"]: d for d in pending()}
    assert set(held) == {"ledgerflow.invoice.issued", "ledgerflow.invoice.cancelled"}
    assert held["ledgerflow.invoice.cancelled"]["attempts"] == []  # never attempted before its issue

    client.post(f"{path}/{held['ledgerflow.invoice.issued']['id']}/resend", headers=auth).raise_for_status()
    wait_for(lambda: len(hook.delivered()) == 3, what="ORDER-A's issue and cancellation delivered")
    assert [(r["json"]["type"], r["json"]["subject"]) for r in hook.delivered()[1:]] == [
        ("ledgerflow.invoice.issued", first),
        ("ledgerflow.invoice.cancelled", first),
    ]


async def _send_garbage(settings: Settings, tenant_id: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        topic = settings.topic("ledger.invoice.v1")
        source = f"/tenants/{tenant_id}".encode()
        for value, headers in [
            (
                b"\x00not avro",
                [("ce_id", b"x1"), ("ce_type", b"ledgerflow.invoice.issued"), ("ce_source", source)],
            ),
            (b"{}", [("ce_source", b"/tenants/not-a-uuid"), ("ce_id", b"x2"), ("ce_type", b"x")]),
            (b"", []),
            (
                b"\xc3\x01" + b"\xff" * 8,
                [("ce_id", b"x3"), ("ce_type", b"ledgerflow.invoice.issued"), ("ce_source", source)],
            ),
        ]:
            await producer.send_and_wait(topic, value, key=b"poison", headers=headers)
    finally:
        await producer.stop()


def test_undecodable_messages_on_a_ledger_topic_are_skipped_and_deliveries_go_on(
    service: LedgerService, settings: Settings, topics: list[str], background: BackgroundLoop, receiver: Any
) -> None:
    tenant_id, key = register_tenant(service)
    client = client_for(settings)
    auth = {"Authorization": f"Bearer {key}"}
    hook = Receiver(receiver.url, "after-poison")
    create_endpoint(client, auth, hook.url)
    asyncio.run(_send_garbage(settings, tenant_id))
    start(background, settings)
    issue(client, auth, "AFTER-POISON")
    wait_for(lambda: hook.delivered(), what="the invoice after the poison delivered")
    assert [r["json"]["data"]["number"] for r in hook.delivered()] == ["AFTER-POISON"]
    background.check()  # the worker is still running


def test_an_endpoint_without_a_success_for_five_days_is_disabled_at_its_next_failure(
    service: LedgerService, settings: Settings, topics: list[str], background: BackgroundLoop, receiver: Any
) -> None:
    _, key = register_tenant(service)
    client = client_for(settings)
    auth = {"Authorization": f"Bearer {key}"}
    hook = Receiver(receiver.url, "failing")
    hook.behave(status=500)
    endpoint = create_endpoint(client, auth, hook.url, event_types=["ledgerflow.invoice.*"])
    # Five days of failures, as the worker would have recorded them (no test waits five days).
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        conn.execute(
            "UPDATE webhook_endpoints SET failing_since = now() - interval '5 days' WHERE endpoint_id = %s",
            (endpoint["id"],),
        )
    start(background, settings, retry_policy=RetryPolicy((600.0,)))
    issue(client, auth, "FAILING-1")
    path = f"/v1/webhooks/endpoints/{endpoint['id']}"
    wait_for(
        lambda: client.get(path, headers=auth).json()["status"] == "disabled", what="the endpoint disabled"
    )
    assert client.get(path, headers=auth).json()["disabled_reason"] == "failing_for_5_days"
    wait_for(
        lambda: any(a["cause"] == "webhooks.endpoint_disabled" for a in alerts(settings)),
        what="a critical alert",
    )
    assert len(hook.received()) == 1


def test_an_open_circuit_puts_the_rest_back_without_using_their_attempts(
    service: LedgerService, settings: Settings, topics: list[str], background: BackgroundLoop, receiver: Any
) -> None:
    _, key = register_tenant(service)
    client = client_for(settings)
    auth = {"Authorization": f"Bearer {key}"}
    hook = Receiver(receiver.url, "broken")
    hook.behave(status=502)
    endpoint = create_endpoint(client, auth, hook.url, event_types=["ledgerflow.invoice.issued"])
    path = f"/v1/webhooks/endpoints/{endpoint['id']}/deliveries"
    start(
        background,
        settings,
        concurrency=1,
        retry_policy=RetryPolicy((600.0,)),
        breaker=BreakerSettings(failure_threshold=2, open_for=600.0),
    )
    for n in range(4):
        issue(client, auth, f"BROKEN-{n}")

    def settled() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = client.get(path, headers=auth).json()["items"]
        waiting = [d for d in items if not d["attempts"]]
        due_later = all(
            datetime.fromisoformat(d["next_attempt_at"]) > datetime.now(UTC) + timedelta(seconds=300)
            for d in items
        )
        return items if len(items) == 4 and len(waiting) == 2 and due_later else None

    items = wait_for(settled, what="two failures opening the circuit and the other two put back")
    assert items is not None
    assert sorted(len(d["attempts"]) for d in items) == [0, 0, 1, 1]
    assert len(hook.received()) == 2
