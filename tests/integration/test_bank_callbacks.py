"""The bank's payment-status callbacks through the generic receiver ``POST /v1/hooks/bank/{tenant}``:
verified on the raw body, stored, applied by the hook processor to the Payout; the status poll and
the callback together record the completion once; forged, malformed and cross-tenant deliveries
change nothing."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest

from connectors.bank import sandbox
from connectors.bank.webhook import sign
from connectors.errors import NotYet
from engine.application import LedgerService
from engine.config import Settings
from engine.payments import PaymentBook, open_inbox
from streams.hooks import HookProcessor
from tests.connectors.contract import LiveServer
from tests.integration.helpers import client_for
from tests.integration.test_bank_payouts import ACCOUNT, Bank, payout_body

pytestmark = pytest.mark.integration


@pytest.fixture
def bank(settings: Settings, service: LedgerService) -> Iterator[Bank]:
    with LiveServer(sandbox.create_app(account=ACCOUNT)) as server, httpx.Client(base_url=server.url) as op:
        yield Bank(settings, service, server.url, client_for(settings), op)


@pytest.fixture
def processor(settings: Settings, service: LedgerService) -> Iterator[HookProcessor]:
    book = PaymentBook(service, open_inbox(settings))
    yield HookProcessor(service, book)
    book.close()


def completions(bank: Bank) -> int:
    return int(bank.sql("SELECT count(*) FROM ledger_events WHERE topic LIKE %s", "%Payout.Completed%")[0][0])


def test_a_callback_through_the_receiver_completes_the_payout_once_with_the_poll(
    bank: Bank, processor: HookProcessor
) -> None:
    tenant_id, auth = bank.tenant()
    stranger, stranger_auth = bank.tenant(configure=False)
    bank.operator.post("/_bank/settings", json={"completes_after_s": 60})
    created = bank.post(auth, payout_body())
    assert isinstance(bank.attempt(tenant_id, created["id"]), NotYet)
    bank.operator.post("/_sandbox/clock", json={"advance_s": 61})
    [delivery] = bank.operator.get("/_bank/callbacks").json()
    body, signature = delivery["body"].encode(), delivery["signature"]
    url = f"/v1/hooks/bank/{tenant_id}"

    # Forged, re-serialised, unsigned, or sent to a tenant without a bank: 401, nothing stored.
    for headers, sent in (
        ({"X-Signature": sign("not-the-secret", body)}, body),
        ({"X-Signature": signature}, orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2)),
        ({}, body),
    ):
        refused = bank.api.post(url, content=sent, headers={**headers, "Content-Type": "application/json"})
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]["code"] == "invalid_signature"
    crossed = bank.api.post(f"/v1/hooks/bank/{stranger}", content=body, headers={"X-Signature": signature})
    assert crossed.status_code == 401
    # Signed but not a callback (a status we do not know, control characters in the id): 400.
    for payload in (
        {"payment_id": "PAY_1", "status": "refunded"},
        {"payment_id": "PAY\x00\u202e", "status": "failed"},
    ):
        raw = orjson.dumps(payload)
        malformed = bank.api.post(
            url, content=raw, headers={"X-Signature": sign(ACCOUNT.webhook_secret, raw)}
        )
        assert malformed.status_code == 400, malformed.text
    assert processor.run_once().handled == 0

    accepted = bank.api.post(url, content=body, headers={"X-Signature": signature})
    assert accepted.status_code == 200, accepted.text
    again = bank.api.post(url, content=body, headers={"X-Signature": signature})
    assert again.status_code == 200 and again.json().get("duplicate") is True
    assert processor.run_once().handled == 1
    assert processor.run_once().handled == 0

    paid = bank.get(auth, created["id"])
    assert paid["status"] == "completed" and paid["utr"]
    polled = bank.attempt(tenant_id, created["id"])
    assert polled.data["status"] == "completed"
    assert completions(bank) == 1
    assert bank.paid() == 1
    # The other tenant sees no payout at all.
    assert bank.api.get("/v1/payouts", headers=stranger_auth).json()["items"] == []
