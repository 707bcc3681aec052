"""A local Razorpay: subscriptions create/fetch, and a webhook sender that signs deliveries like
Razorpay and sends them retried, duplicated and reordered on demand.

Run: ``python -m connectors.razorpay.sandbox --port 9105``. Endpoints (Razorpay's wire contract, basic
auth with the key id and secret): ``POST /v1/subscriptions``, ``GET /v1/subscriptions/{id}``,
``GET /v1/subscriptions``. Operator endpoints (besides the shared ``/_sandbox`` kit):

- ``POST /_sandbox/deliveries`` ``{"url", "secret", "events": [{"event", "event_id"?, "payload",
  "created_at"?}], "duplicate_rate", "shuffle", "seed", "max_attempts"}``: signs each event with
  ``X-Razorpay-Signature`` (hex HMAC-SHA256 of the body) and ``X-Razorpay-Event-Id``, sends them (a
  share again, byte for byte, as Razorpay's retries are) in a seeded random order, and re-sends a
  delivery that did not get a 2xx, as Razorpay does for 24 hours (here: up to ``max_attempts``,
  immediately). Answers what was sent and how each ended.
- ``POST /_sandbox/subscriptions/{id}/events`` ``{"event"}``: moves the subscription as that
  ``subscription.*`` event would and returns the event's payload (to send with the above).
"""

# No ``from __future__ import annotations``: FastAPI must evaluate the route signatures.

import argparse
import hashlib
import random
import secrets
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
import orjson
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel, ConfigDict, Field

from connectors.razorpay.signature import EVENT_ID_HEADER, SIGNATURE_HEADER, signature
from connectors.sandbox_kit import SandboxKit

# subscription.* event -> the status it leaves the subscription in (Razorpay's subscription docs:
# "activated", "charged" ... are events; the statuses are created, authenticated, active, pending,
# halted, cancelled, completed, expired, paused).
SUBSCRIPTION_EVENTS = {
    "subscription.authenticated": "authenticated",
    "subscription.activated": "active",
    "subscription.charged": "active",
    "subscription.pending": "pending",
    "subscription.halted": "halted",
    "subscription.cancelled": "cancelled",
    "subscription.completed": "completed",
    "subscription.paused": "paused",
    "subscription.resumed": "active",
    "subscription.updated": None,
}


@dataclass(frozen=True)
class SandboxAccount:
    key_id: str = "rzp_test_ledgerflow"
    key_secret: str = "sandbox-key-secret"
    webhook_secret: str = "sandbox-webhook-secret"

    def credentials(self) -> dict[str, str]:
        return {"key_id": self.key_id, "key_secret": self.key_secret, "webhook_secret": self.webhook_secret}


class OutgoingEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event: str
    event_id: str | None = None
    payload: dict[str, Any]
    created_at: int | None = None


class DeliveryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str
    secret: str
    events: list[OutgoingEvent]
    duplicate_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    shuffle: bool = False
    seed: int = 0
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 5
    concurrency: Annotated[int, Field(ge=1, le=64)] = 8


@dataclass(frozen=True)
class PlannedDelivery:
    event_id: str
    body: bytes


def event_body(event: OutgoingEvent, account_id: str = "acc_sandbox") -> tuple[str, bytes]:
    """A delivery's event id and body, shaped as Razorpay's (``entity: event``, ``contains``)."""
    event_id = (
        event.event_id
        or "evt_"
        + hashlib.sha256(orjson.dumps([event.event, event.payload], option=orjson.OPT_SORT_KEYS)).hexdigest()[
            :14
        ]
    )
    body = {
        "entity": "event",
        "account_id": account_id,
        "event": event.event,
        "contains": sorted(event.payload),
        "payload": event.payload,
        "created_at": event.created_at or 1780394400,
    }
    return event_id, orjson.dumps(body)


def plan_deliveries(
    events: list[OutgoingEvent], *, duplicate_rate: float, shuffle: bool, seed: int
) -> list[PlannedDelivery]:
    """Every event once, plus ``duplicate_rate`` of them again byte for byte, in a seeded order."""
    rng = random.Random(seed)
    planned = [PlannedDelivery(*event_body(e)) for e in events]
    duplicates = rng.sample(planned, round(len(planned) * duplicate_rate)) if planned else []
    planned = planned + duplicates
    if shuffle:
        rng.shuffle(planned)
    return planned


def signed_headers(secret: str, delivery: PlannedDelivery) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature(secret, delivery.body),
        EVENT_ID_HEADER: delivery.event_id,
    }


def create_app(account: SandboxAccount | None = None) -> FastAPI:
    account = account or SandboxAccount()
    kit = SandboxKit(effects=("subscription_created", "delivery_sent"))
    app = FastAPI(title="Razorpay sandbox")
    subscriptions: dict[str, dict[str, Any]] = {}
    kit.on_reset(subscriptions.clear)
    basic = HTTPBasic(auto_error=False)

    def authorised(credentials: Annotated[HTTPBasicCredentials | None, Depends(basic)]) -> None:
        if (
            credentials is None
            or not secrets.compare_digest(credentials.username, account.key_id)
            or not secrets.compare_digest(credentials.password, account.key_secret)
        ):
            # Razorpay's error envelope.
            raise HTTPException(
                401,
                {"error": {"code": "BAD_REQUEST_ERROR", "description": "Authentication failed"}},
            )

    Auth = Annotated[None, Depends(authorised)]  # noqa: N806

    @app.exception_handler(HTTPException)
    async def razorpay_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(exc.detail, exc.status_code)

    @app.post("/v1/subscriptions")
    async def create_subscription(request: Request, _: Auth) -> dict[str, Any]:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("plan_id"), str):
            raise HTTPException(
                400, {"error": {"code": "BAD_REQUEST_ERROR", "description": "The plan id field is required."}}
            )
        subscription_id = "sub_" + secrets.token_hex(7)
        at = int(kit.clock.now().timestamp())
        subscription = {
            "id": subscription_id,
            "entity": "subscription",
            "plan_id": body["plan_id"],
            "customer_id": body.get("customer_id"),
            "status": "created",
            "total_count": body.get("total_count", 12),
            "paid_count": 0,
            "notes": body.get("notes") or {},
            "short_url": f"https://rzp.io/i/{subscription_id[4:]}",
            "created_at": at,
        }
        subscriptions[subscription_id] = subscription
        kit.record_effect("subscription_created")
        return subscription

    @app.get("/v1/subscriptions/{subscription_id}")
    async def fetch_subscription(subscription_id: str, _: Auth) -> dict[str, Any]:
        found = subscriptions.get(subscription_id)
        if found is None:
            raise HTTPException(
                400, {"error": {"code": "BAD_REQUEST_ERROR", "description": "The id provided does not exist"}}
            )
        return found

    @app.get("/v1/subscriptions")
    async def list_subscriptions(_: Auth, count: int = 10) -> dict[str, Any]:
        items = list(subscriptions.values())[-count:]
        return {"entity": "collection", "count": len(items), "items": items}

    @app.post("/_sandbox/subscriptions/{subscription_id}/events")
    async def subscription_event(subscription_id: str, request: Request) -> dict[str, Any]:
        event = (orjson.loads(await request.body()) or {}).get("event")
        found = subscriptions.get(subscription_id)
        if found is None or event not in SUBSCRIPTION_EVENTS:
            raise HTTPException(404, {"error": "unknown subscription or event"})
        status = SUBSCRIPTION_EVENTS[event]
        if status is not None:
            found["status"] = status
        if event == "subscription.charged":
            found["paid_count"] += 1
        return {"event": event, "payload": {"subscription": {"entity": dict(found)}}}

    @app.post("/_sandbox/deliveries")
    async def deliver(request: DeliveryRequest) -> dict[str, Any]:
        planned = plan_deliveries(
            request.events, duplicate_rate=request.duplicate_rate, shuffle=request.shuffle, seed=request.seed
        )
        outcomes: list[dict[str, Any]] = []
        attempts = 0
        pending = list(enumerate(planned))
        async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=30.0)) as client:
            for _round in range(request.max_attempts):
                if not pending:
                    break
                failed: list[tuple[int, PlannedDelivery]] = []
                for start in range(0, len(pending), request.concurrency):
                    batch = pending[start : start + request.concurrency]
                    results = await _send_batch(client, request.url, request.secret, batch)
                    attempts += len(batch)
                    for (index, delivery), status in zip(batch, results, strict=True):
                        kit.record_effect("delivery_sent")
                        if status is not None and 200 <= status < 300:
                            outcomes.append({"index": index, "event_id": delivery.event_id, "status": status})
                        else:
                            failed.append((index, delivery))
                pending = failed
        for index, delivery in pending:
            outcomes.append({"index": index, "event_id": delivery.event_id, "status": None})
        outcomes.sort(key=lambda o: o["index"])
        return {
            "sent": len(planned),
            "attempts": attempts,
            "undelivered": len(pending),
            "outcomes": outcomes,
        }

    kit.install(app)
    return app


async def _send_batch(
    client: httpx.AsyncClient, url: str, secret: str, batch: list[tuple[int, PlannedDelivery]]
) -> list[int | None]:
    import asyncio

    async def one(delivery: PlannedDelivery) -> int | None:
        try:
            response = await client.post(url, content=delivery.body, headers=signed_headers(secret, delivery))
        except httpx.HTTPError:
            return None
        return response.status_code

    return list(await asyncio.gather(*(one(d) for _, d in batch)))


def main() -> None:  # pragma: no cover - the process entry point
    parser = argparse.ArgumentParser(description="Razorpay sandbox")
    parser.add_argument("--port", type=int, default=9105)
    args = parser.parse_args()
    uvicorn.run(create_app(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":  # pragma: no cover
    main()
