"""Where each connector may connect, and how to test a tenant's connection: derived from the registry.

A new connector declares its URL policy and connection test in its ``CONNECTOR`` (connectors/kit.py);
nothing is added here.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from connectors.egress import CheckedTransport
from connectors.errors import ConnectorError, ErrorClass
from connectors.kit import ConnectionTest
from connectors.registry import CONNECTORS
from engine.integrations import IntegrationSettings
from engine.security.egress import DeploymentMode, EndpointPolicy

ENDPOINT_POLICIES: dict[str, EndpointPolicy] = {c.name: c.endpoints for c in CONNECTORS}


def endpoint_policy(provider: str) -> EndpointPolicy:
    """The production URLs ``provider``'s connector accepts (engine/security/egress.py)."""
    return ENDPOINT_POLICIES[provider]


def checked_transport(settings: IntegrationSettings, mode: DeploymentMode) -> CheckedTransport:
    """The transport every call to ``settings.provider`` goes through (connectors/egress.py)."""
    return CheckedTransport(endpoint_policy(settings.provider), mode, settings.environment)


CONNECTION_TESTS: dict[str, ConnectionTest] = {c.name: c.connection_test for c in CONNECTORS}

# What a connection test may say about a failure: our own code and a fixed sentence, never the
# remote answer's text. A server the tenant pointed us at controls that text, and it could carry back
# whatever we sent it (the credentials), so echoing it would turn "test connection" into a way to read
# the stored secrets.
TEST_OUTCOMES: dict[str, str] = {
    "credentials_refused": "the provider refused the credentials",
    "credentials_incomplete": "the stored credentials are incomplete; save them again",
    "connect_error": "could not connect",
    "tls_error": "TLS failed",
    "timeout": "timed out",
    "http_5xx": "unexpected HTTP status 5xx",
    "http_4xx": "unexpected HTTP status 4xx",
    "rate_limited": "the provider asked us to slow down (HTTP 429)",
    "redirect_not_followed": "the provider answered with a redirect; redirects are never followed",
    "url_not_allowed": "this URL is not allowed for this provider",
    "environment_not_allowed": "sandbox integrations are not allowed in a production deployment",
    "address_not_allowed": "the host resolves to an address this deployment never connects to",
    "invalid_response": "the provider's answer was not understood",
    "provider_error": "the provider reported an error",
}

_OWN_CODES = {
    "timeout": "timeout",
    "connect_error": "connect_error",
    "transport_error": "connect_error",
    "tls_error": "tls_error",
    "http_401": "credentials_refused",
    "http_403": "credentials_refused",
    "http_429": "rate_limited",
    "token_rejected_after_reauth": "credentials_refused",
    "redirect_not_followed": "redirect_not_followed",
    "url_not_allowed": "url_not_allowed",
    "invalid_base_url": "url_not_allowed",
    "environment_not_allowed": "environment_not_allowed",
    "address_not_allowed": "address_not_allowed",
    "invalid_auth_response": "invalid_response",
    "invalid_response": "invalid_response",
}


def outcome_of(error: ConnectorError) -> str:
    """Our code for a failed connection test (a key of :data:`TEST_OUTCOMES`)."""
    if error.code in _OWN_CODES:
        return _OWN_CODES[error.code]
    if error.code.startswith("http_5"):
        return "http_5xx"
    if error.code.startswith("http_4"):
        return "http_4xx"
    if error.code.startswith("http_"):
        return "invalid_response"
    # A provider's own code on the authentication call: a person must fix the credentials or the
    # account (IRP 1008 invalid login, 1010 invalid client id, ...), else the provider failed.
    if error.error_class == ErrorClass.NEEDS_ATTENTION:
        return "credentials_refused"
    return "provider_error"


async def test_connection(settings: IntegrationSettings, mode: DeploymentMode) -> dict[str, Any]:
    """The seeds' "test connection": a real call to the provider, and what failed, in our words."""
    started = time.monotonic()
    check = CONNECTION_TESTS[settings.provider]
    answer: dict[str, Any] = {"ok": True, "provider": settings.provider, "base_url": settings.base_url}
    try:
        await check(settings, checked_transport(settings, mode))
    except ConnectorError as exc:
        answer["ok"] = False
        code = outcome_of(exc)
        answer["error"] = {"class": str(exc.error_class), "code": code, "message": TEST_OUTCOMES[code]}
    except httpx.HTTPError:  # one the client did not map (a body that would not decode)
        answer["ok"] = False
        code = "invalid_response"
        answer["error"] = {"class": "needs_attention", "code": code, "message": TEST_OUTCOMES[code]}
    except TypeError:  # the stored credentials lack a field (saved before a field was added)
        answer["ok"] = False
        code = "credentials_incomplete"
        answer["error"] = {"class": "needs_attention", "code": code, "message": TEST_OUTCOMES[code]}
    answer["elapsed_ms"] = round((time.monotonic() - started) * 1000)
    return answer
