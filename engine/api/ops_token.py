"""The operators' token: ``GET /metrics`` and ``GET /healthz/consumers`` behind a bearer token.

Unset (``LEDGERFLOW_OPS_TOKEN`` empty), both stay open, as on a private network where only the
scraper and the probes reach the API. Set, they need ``Authorization: Bearer <token>``; anything
else is a 401 in the error shape. The token is compared in constant time (``hmac.compare_digest``)
so its characters cannot be guessed one by one from response times.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import Request

from engine.api.errors import ApiError
from engine.config import Settings


def ops_token_check(settings: Settings) -> Callable[[Request], None]:
    """A FastAPI dependency enforcing ``settings.ops_token`` (a no-op while it is unset)."""
    expected = settings.ops_token.encode() if settings.ops_token else None

    def check(request: Request) -> None:
        if expected is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
            raise ApiError(
                401,
                "unauthorized",
                "this endpoint needs the operators' token: 'Authorization: Bearer <LEDGERFLOW_OPS_TOKEN>'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check
