"""The one way a connector reaches a provider: an httpx transport that enforces the URL policy.

``engine/security/egress.py`` says what is allowed; this module applies it on every request, so that
settings saved under an older policy, a DNS answer that changed since (DNS rebinding) or a provider
answering with a redirect cannot send a tenant's credentials anywhere else:

1. The request's URL is checked against the connector's :class:`EndpointPolicy`, the integration's
   environment and the deployment mode (sandbox integrations are refused in production here too).
2. The host is resolved once, by us; in a production deployment every address it resolves to must be
   public (or the connector's declared local address), else nothing is connected.
3. The connection goes to the checked IP address itself, never to the name again, while TLS still
   verifies the certificate for the name (httpcore passes the URL's host as SNI and ``Host`` is taken
   from the URL), so the check and the connection cannot disagree.
4. A redirect is never followed: a 3xx answer is an error (``redirect_not_followed``).

Refusals leave as :class:`EgressRefusedError` (a :class:`NeedsAttentionError`: retrying cannot help,
a person must fix the settings).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio
import httpcore
import httpx

from connectors.errors import NeedsAttentionError
from engine.security.egress import (
    DeploymentMode,
    EgressRefused,
    EndpointPolicy,
    IPAddress,
    check_address,
    check_endpoint,
)

Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)


class EgressRefusedError(NeedsAttentionError):
    """The policy refused a request before anything was sent (``code`` says which rule)."""


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to for a TCP connection (an IP literal resolves to itself)."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in found:
            found.append(ip)
    return found


class CheckedNetworkBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks every address, then connects to a checked address (never the name)."""

    def __init__(
        self,
        policy: EndpointPolicy,
        mode: DeploymentMode,
        *,
        resolver: Resolver = resolve,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.policy = policy
        self.mode = mode
        self.resolver = resolver
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                addresses = await self.resolver(host, port)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
        except OSError as exc:  # socket.gaierror: no such name, resolver down
            raise httpcore.ConnectError(f"could not resolve {host}") from exc
        if not addresses:
            raise httpcore.ConnectError(f"{host} has no address")
        for ip in addresses:
            # Every answer, not only the first: a name that also resolves to an internal address
            # is refused as a whole rather than trusted on the luck of the order.
            try:
                check_address(host, port, ip, policy=self.policy, mode=self.mode)
            except EgressRefused as exc:
                raise EgressRefusedError(exc.code, exc.message) from exc
        failure: httpcore.ConnectError | None = None
        for ip in addresses:
            try:
                return await self.inner.connect_tcp(
                    str(ip),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise EgressRefusedError("url_not_allowed", "connectors never connect to a unix socket")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class CheckedTransport(httpx.AsyncHTTPTransport):
    """``httpx.AsyncClient(transport=CheckedTransport(policy, mode, environment))``.

    Built on httpx's own transport (TLS verification, pooling, error mapping unchanged); only its
    connection pool gets :class:`CheckedNetworkBackend`. No proxy is used: environment proxies would
    resolve the name themselves, after our check.
    """

    def __init__(
        self,
        policy: EndpointPolicy,
        mode: DeploymentMode,
        environment: str,
        *,
        verify: ssl.SSLContext | bool = True,
        limits: httpx.Limits = DEFAULT_LIMITS,
        resolver: Resolver = resolve,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        # Not super().__init__: that builds a pool without a way to pass a network backend.
        self.policy = policy
        self.mode = mode
        self.environment = environment
        self.backend = CheckedNetworkBackend(policy, mode, resolver=resolver, inner=inner)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=self.backend,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            check_endpoint(str(request.url), self.environment, self.policy, self.mode)
        except EgressRefused as exc:
            raise EgressRefusedError(exc.code, exc.message) from exc
        response = await super().handle_async_request(request)
        if response.is_redirect or 300 <= response.status_code < 400:
            await response.aclose()
            # Following it would resend the credentials headers to wherever Location points.
            raise EgressRefusedError(
                "redirect_not_followed",
                f"{request.method} {request.url.path}: HTTP {response.status_code} redirect, not followed",
            )
        return response
