"""Which connector serves which provider, and how to test a tenant's connection to it.

A new connector is a new package under ``connectors/`` plus one entry here.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from connectors.errors import ConnectorError
from connectors.gst_irp.client import IrpClient, IrpCredentials
from engine.integrations import IntegrationSettings


async def _test_gst_irp(settings: IntegrationSettings) -> None:
    # Authenticating exercises reachability, TLS, the client id/secret and the API user at once.
    async with IrpClient(settings.base_url, IrpCredentials(**settings.credentials)) as client:
        await client.authenticate(force=True)


CONNECTION_TESTS: dict[str, Callable[[IntegrationSettings], Awaitable[None]]] = {
    "gst-irp": _test_gst_irp,
}


async def test_connection(settings: IntegrationSettings) -> dict[str, Any]:
    """The seeds' "test connection": a real call to the provider, and precisely what failed."""
    started = time.monotonic()
    check = CONNECTION_TESTS[settings.provider]
    try:
        await check(settings)
    except ConnectorError as exc:
        return {
            "ok": False,
            "provider": settings.provider,
            "base_url": settings.base_url,
            "error": {"class": str(exc.error_class), "code": exc.code, "message": exc.message},
            "elapsed_ms": round((time.monotonic() - started) * 1000),
        }
    except (httpx.HTTPError, TypeError) as exc:  # TypeError: stored credentials lack a field
        return {
            "ok": False,
            "provider": settings.provider,
            "base_url": settings.base_url,
            "error": {"class": "needs_attention", "code": type(exc).__name__, "message": str(exc)},
            "elapsed_ms": round((time.monotonic() - started) * 1000),
        }
    return {
        "ok": True,
        "provider": settings.provider,
        "base_url": settings.base_url,
        "elapsed_ms": round((time.monotonic() - started) * 1000),
    }
