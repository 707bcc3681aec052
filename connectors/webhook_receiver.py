"""A webhook receiver sandbox: a real HTTP server that plays a downstream system receiving our webhooks.

Any number of receivers live under ``POST /hooks/{name}``. Each records every request it got (headers
and the raw body, exactly as sent) and answers as configured:

* ``PUT /_sandbox/receivers/{name}`` ``{"status": 500, "times": 2, "delay_s": 0.5, "retry_after": 1}``:
  answer ``status`` to the next ``times`` requests (``null``: every request), then 200; hold every
  answer ``delay_s`` seconds (a slow receiver; longer than the client's timeout is a timeout);
  ``status: 410`` plays a receiver that is gone;
* ``GET /_sandbox/receivers/{name}/received``: what it got, oldest first, with the answer it gave;
* ``DELETE /_sandbox/receivers/{name}``: forget its configuration and what it got.

The shared fault kit (``connectors/sandbox_kit.py``: outages, latency, timeouts, 429s) applies on top,
as on every sandbox. Run it with ``python -m connectors.webhook_receiver --port 9110``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from connectors.sandbox_kit import SANDBOX_PREFIX, SandboxKit


class Behaviour(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Annotated[int, Field(ge=100, le=599)] = 200
    times: Annotated[int | None, Field(ge=0)] = None
    delay_s: Annotated[float, Field(ge=0.0, le=120.0)] = 0.0
    retry_after: Annotated[int | None, Field(ge=0, le=3600)] = None


@dataclass
class Receiver:
    behaviour: Behaviour = field(default_factory=Behaviour)
    received: list[dict[str, Any]] = field(default_factory=list)


def create_app() -> FastAPI:
    app = FastAPI(title="Webhook receiver sandbox")
    kit = SandboxKit(effects=("received",))
    receivers: dict[str, Receiver] = {}
    kit.on_reset(receivers.clear)
    kit.install(app)

    @app.post("/hooks/{name}")
    async def receive(name: str, request: Request) -> Response:
        receiver = receivers.setdefault(name, Receiver())
        raw = await request.body()
        behaviour = receiver.behaviour
        failing = behaviour.status != 200 and (behaviour.times is None or behaviour.times > 0)
        status = behaviour.status if failing else 200
        if failing and behaviour.times is not None:
            behaviour.times -= 1
        receiver.received.append(
            {
                "received_at": datetime.now(UTC).isoformat(),
                "headers": dict(request.headers),
                # The exact bytes: a verifier must check these, never a re-serialised body.
                "body_b64": base64.b64encode(raw).decode(),
                "answered": status,
            }
        )
        kit.record_effect("received")
        if behaviour.delay_s:
            await asyncio.sleep(behaviour.delay_s)
        headers = {}
        if behaviour.retry_after is not None and failing:
            headers["Retry-After"] = str(behaviour.retry_after)
        return Response(status_code=status, headers=headers)

    operator = APIRouter(prefix=f"{SANDBOX_PREFIX}/receivers")

    @operator.put("/{name}")
    def configure(name: str, behaviour: Behaviour) -> Behaviour:
        receivers.setdefault(name, Receiver()).behaviour = behaviour
        return behaviour

    @operator.get("/{name}/received")
    def received(name: str) -> dict[str, Any]:
        return {"items": list(receivers.get(name, Receiver()).received)}

    @operator.delete("/{name}", status_code=204)
    def forget(name: str) -> Response:
        receivers.pop(name, None)
        return Response(status_code=204)

    app.include_router(operator)
    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Local webhook receiver sandbox")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9110)
    args = parser.parse_args(argv)
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
