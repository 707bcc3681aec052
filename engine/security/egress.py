"""Where a tenant's provider credentials may be sent: the URL policy of every connector.

Why: a tenant's API key can change an integration's ``base_url``. Without a policy, the stored
credentials would follow the URL wherever it points (an attacker's server, or an address inside our
own network), so an API key would be enough to exfiltrate a provider password or to probe internal
services. The rules, checked when settings are saved AND again before every call:

* Only ``http``/``https`` URLs without userinfo (``user:pass@``), ever.
* Environment ``production``: only what the connector declares in its :class:`EndpointPolicy`
  (fixed provider URLs, known provider hosts over https, or an explicitly declared local address of
  a signing service on the tenant's side).
* Environment ``sandbox``: any http(s) URL, but only in a ``development`` deployment
  (``LEDGERFLOW_MODE``). A ``production`` deployment refuses sandbox integrations outright.
* A ``production`` deployment only speaks https (declared local addresses excepted) and never
  connects to a private, loopback, link-local, multicast, reserved or unspecified address; the
  address is checked after DNS resolution, at connect time (``connectors/egress.py``).

This module is pure (no I/O): ``connectors/egress.py`` applies it at connect time.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Literal, get_args
from urllib.parse import SplitResult, urlsplit

from engine.errors import InvalidInput

DeploymentMode = Literal["development", "production"]
DEPLOYMENT_MODES: tuple[str, ...] = get_args(DeploymentMode)
Environment = Literal["sandbox", "production"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class EndpointPolicy:
    """The production endpoints one connector accepts; each connector declares one.

    ``provider_urls``: fixed base URLs (a request must start with one of them).
    ``known_hosts``: host names (optionally ``host:port``, default 443) reached over https with any path.
    ``local_addresses``: origins such as ``http://127.0.0.1:8088`` of a signing service that runs on
    the tenant's side (eTIMS VSCU); an IP literal is required, so no DNS answer can redirect it, and
    only these exact origins may be private addresses.
    """

    provider: str
    provider_urls: tuple[str, ...] = ()
    known_hosts: tuple[str, ...] = ()
    local_addresses: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for origin in self.local_addresses:
            host = urlsplit(origin).hostname or ""
            try:
                ipaddress.ip_address(host)
            except ValueError as exc:
                raise ValueError(f"a local address must be an IP literal origin, not {origin!r}") from exc

    def allowed(self) -> list[str]:
        """What an operator may configure in production, for error details and docs."""
        return [
            *self.provider_urls,
            *(f"https://{host}" for host in self.known_hosts),
            *self.local_addresses,
        ]


class EgressRefused(InvalidInput):
    """A URL or address the policy does not allow. ``field`` is the setting at fault."""

    def __init__(self, code: str, message: str, *, field: str = "base_url", **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.details = details


def parse_url(url: str) -> SplitResult:
    """The URL split into parts, refusing what is never allowed whatever the mode."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError as exc:
        raise EgressRefused("invalid_base_url", f"base_url is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EgressRefused(
            "invalid_base_url", "base_url must be an absolute http(s) URL such as https://gsp.example.com"
        )
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        # Credentials in a URL end up in logs and in the Authorization header of whatever answers.
        raise EgressRefused("url_not_allowed", "base_url must not carry a user or password (user:pass@)")
    return parts


def _origin(parts: SplitResult) -> tuple[str, str, int]:
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, (parts.hostname or "").lower().rstrip("."), parts.port or default


def _host_entry(entry: str) -> tuple[str, int]:
    host, _, port = entry.lower().partition(":")
    return host.rstrip("."), int(port) if port else 443


def is_local_origin(url: str, policy: EndpointPolicy) -> bool:
    """True when ``url`` is on one of the connector's declared local addresses (exact origin)."""
    origin = _origin(parse_url(url))
    return any(_origin(urlsplit(declared)) == origin for declared in policy.local_addresses)


def check_endpoint(url: str, environment: str, policy: EndpointPolicy, mode: DeploymentMode) -> str:
    """The URL (without a trailing slash) if ``policy`` lets a ``mode`` deployment call it in
    ``environment``; else :class:`EgressRefused`. Called at save time and again before every request
    (with the request's full URL), so settings saved under an older policy cannot slip through."""
    parts = parse_url(url)
    if mode == "production" and environment != "production":
        raise EgressRefused(
            "environment_not_allowed",
            f"this deployment runs in production mode: {environment!r} integrations are not allowed",
            field="environment",
        )
    if environment != "production":
        if is_production_endpoint(parts, url, policy):
            # Issue 10: "sandbox traffic can never reach a production endpoint". A sandbox
            # integration's test documents (eTIMS: numbered, signed sales) must never be filed with
            # the tax authority's production system, whoever typed the URL.
            raise EgressRefused(
                "url_not_allowed",
                f"{parts.hostname} is {policy.provider}'s production endpoint: use environment production"
                " for it, or the provider's sandbox URL",
            )
        return url.rstrip("/")
    local = is_local_origin(url, policy)
    if parts.scheme != "https" and not local:
        raise EgressRefused("url_not_allowed", "a production base_url must use https")
    scheme, host, port = _origin(parts)
    on_known_host = scheme == "https" and (host, port) in {_host_entry(h) for h in policy.known_hosts}
    on_provider_url = any(_within(url, fixed) for fixed in policy.provider_urls)
    if not (local or on_known_host or on_provider_url):
        raise EgressRefused(
            "url_not_allowed",
            f"{policy.provider} does not accept {scheme}://{host}:{port} in production",
            allowed=policy.allowed(),
        )
    return url.rstrip("/")


def is_production_endpoint(parts: SplitResult, url: str, policy: EndpointPolicy) -> bool:
    """True for a URL on one of the policy's production hosts (any scheme or port) or fixed URLs;
    declared local addresses (a signing service on the tenant's side) serve both environments."""
    host = (parts.hostname or "").lower().rstrip(".")
    return host in {_host_entry(h)[0] for h in policy.known_hosts} or any(
        _within(url, fixed) for fixed in policy.provider_urls
    )


def _within(url: str, base: str) -> bool:
    """``url`` is ``base`` or below it (same origin, path under base's path)."""
    given, fixed = parse_url(url), urlsplit(base)
    if _origin(given) != _origin(fixed):
        return False
    prefix = fixed.path.rstrip("/")
    return given.path.rstrip("/") == prefix or given.path.startswith(prefix + "/")


def public_address(ip: IPAddress) -> bool:
    """True for an address on the public internet: never private (RFC 1918, ULA), loopback,
    link-local (cloud metadata at 169.254.169.254), multicast, reserved, unspecified or shared
    (RFC 6598). IPv4 addresses embedded in IPv6 (``::ffff:127.0.0.1``) are judged as IPv4."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is not None:
            return public_address(embedded)
        teredo = ip.teredo
        if teredo is not None:
            return public_address(teredo[1])
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def check_address(
    host: str, port: int, ip: IPAddress, *, policy: EndpointPolicy, mode: DeploymentMode
) -> None:
    """Refuse connecting to ``ip`` (what ``host`` resolved to) unless the deployment allows it."""
    if mode != "production" or public_address(ip):
        return
    declared = {_origin(urlsplit(origin))[1:] for origin in policy.local_addresses}
    if (str(ip), port) in declared:
        return
    raise EgressRefused(
        "address_not_allowed",
        f"{host} resolves to {ip}, an address a production deployment never connects to",
        host=host,
    )
