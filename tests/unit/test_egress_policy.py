"""The URL policy (engine/security/egress.py) and the connect-time address check (connectors/egress.py)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

import httpcore
import pytest

from connectors.egress import CheckedNetworkBackend, EgressRefusedError, IPAddress
from connectors.gst_irp.endpoints import ENDPOINTS as GST_IRP
from engine.security.egress import (
    EgressRefused,
    EndpointPolicy,
    check_address,
    check_endpoint,
    public_address,
)

SIGNING_SERVICE = EndpointPolicy(
    provider="etims-like",
    provider_urls=("https://etims-api.example.go.ke/etims-api",),
    local_addresses=("http://127.0.0.1:8088",),
)


@pytest.mark.parametrize(
    ("url", "environment", "mode"),
    [
        ("http://127.0.0.1:9101", "sandbox", "development"),
        ("https://anything.example/path/", "sandbox", "development"),
        ("https://api.einvoice1.gst.gov.in", "production", "development"),
        ("https://api.einvoice2.gst.gov.in/", "production", "production"),
        ("https://API.EINVOICE1.GST.GOV.IN:443/x", "production", "production"),
        ("https://gsp.adaequare.com/enriched/ei/api", "production", "production"),
    ],
)
def test_the_gst_irp_policy_accepts_sandboxes_in_development_and_its_known_hosts_in_production(
    url: str, environment: str, mode: Any
) -> None:
    assert check_endpoint(url, environment, GST_IRP, mode) == url.rstrip("/")


@pytest.mark.parametrize(
    ("url", "environment", "mode", "code", "field"),
    [
        ("https://user:pw@gsp.example", "sandbox", "development", "url_not_allowed", "base_url"),
        ("https://user@api.einvoice1.gst.gov.in", "production", "production", "url_not_allowed", "base_url"),
        ("ftp://gsp.example", "sandbox", "development", "invalid_base_url", "base_url"),
        ("not a url", "sandbox", "development", "invalid_base_url", "base_url"),
        ("https://gsp.example:99999", "sandbox", "development", "invalid_base_url", "base_url"),
        ("https://evil.example", "production", "development", "url_not_allowed", "base_url"),
        (
            "https://api.einvoice1.gst.gov.in.evil.example",
            "production",
            "production",
            "url_not_allowed",
            "base_url",
        ),
        ("http://api.einvoice1.gst.gov.in", "production", "production", "url_not_allowed", "base_url"),
        ("https://api.einvoice1.gst.gov.in:8443", "production", "production", "url_not_allowed", "base_url"),
        ("https://127.0.0.1", "production", "production", "url_not_allowed", "base_url"),
        ("http://127.0.0.1:9101", "sandbox", "production", "environment_not_allowed", "environment"),
        ("https://einv-apisandbox.nic.in", "sandbox", "production", "environment_not_allowed", "environment"),
    ],
)
def test_the_policy_refuses_with_a_code_and_the_field_at_fault(
    url: str, environment: str, mode: Any, code: str, field: str
) -> None:
    with pytest.raises(EgressRefused) as refused:
        check_endpoint(url, environment, GST_IRP, mode)
    assert (refused.value.code, refused.value.field) == (code, field)


def test_a_fixed_provider_url_admits_only_paths_below_it() -> None:
    assert check_endpoint(
        "https://etims-api.example.go.ke/etims-api/saveTrnsSalesOsdc",
        "production",
        SIGNING_SERVICE,
        "production",
    )
    for outside in ("https://etims-api.example.go.ke/other", "https://etims-api.example.go.ke/etims-apix"):
        with pytest.raises(EgressRefused):
            check_endpoint(outside, "production", SIGNING_SERVICE, "production")


def test_a_declared_local_signing_service_is_the_only_private_origin_allowed_in_production() -> None:
    assert check_endpoint("http://127.0.0.1:8088/trnsSales", "production", SIGNING_SERVICE, "production")
    check_address(
        "127.0.0.1", 8088, ipaddress.ip_address("127.0.0.1"), policy=SIGNING_SERVICE, mode="production"
    )
    for url in ("http://127.0.0.1:8089", "http://localhost:8088", "http://10.0.0.5:8088"):
        with pytest.raises(EgressRefused):
            check_endpoint(url, "production", SIGNING_SERVICE, "production")
    with pytest.raises(EgressRefused):
        check_address("x", 5432, ipaddress.ip_address("127.0.0.1"), policy=SIGNING_SERVICE, mode="production")


def test_a_local_address_must_be_declared_as_an_ip_literal() -> None:
    with pytest.raises(ValueError, match="IP literal"):
        EndpointPolicy(provider="x", local_addresses=("http://vscu.local:8088",))


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # carrier-grade NAT (RFC 6598)
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.2.1",  # documentation
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
        "::ffff:10.0.0.1",
        "2002:7f00:1::",  # 6to4 wrapping 127.0.0.1
    ],
)
def test_non_public_addresses_are_refused_in_production(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert not public_address(ip)
    with pytest.raises(EgressRefused) as refused:
        check_address("provider.example", 443, ip, policy=GST_IRP, mode="production")
    assert refused.value.code == "address_not_allowed"
    check_address("provider.example", 443, ip, policy=GST_IRP, mode="development")  # the local stack


@pytest.mark.parametrize("address", ["164.100.1.1", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert public_address(ipaddress.ip_address(address))
    check_address("provider.example", 443, ipaddress.ip_address(address), policy=GST_IRP, mode="production")


class RecordingBackend(httpcore.AsyncNetworkBackend):
    """A network backend that records where it was asked to connect and connects nowhere."""

    def __init__(self) -> None:
        self.connected: list[tuple[str, int]] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connected.append((host, port))
        return httpcore.AsyncMockStream([])

    async def sleep(self, seconds: float) -> None:
        return None


def resolver(answers: dict[str, list[str]]) -> Any:
    calls: list[str] = []

    async def resolve(host: str, port: int) -> list[IPAddress]:
        calls.append(host)
        return [ipaddress.ip_address(a) for a in answers[host]]

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


async def test_the_connection_goes_to_the_checked_address_and_the_name_is_resolved_once() -> None:
    resolve = resolver({"api.einvoice1.gst.gov.in": ["164.100.1.1"]})
    inner = RecordingBackend()
    backend = CheckedNetworkBackend(GST_IRP, "production", resolver=resolve, inner=inner)

    await backend.connect_tcp("api.einvoice1.gst.gov.in", 443)

    assert inner.connected == [("164.100.1.1", 443)]
    assert resolve.calls == ["api.einvoice1.gst.gov.in"]


async def test_a_name_with_any_internal_answer_is_refused_before_connecting() -> None:
    resolve = resolver({"api.einvoice1.gst.gov.in": ["164.100.1.1", "127.0.0.1"]})
    inner = RecordingBackend()
    backend = CheckedNetworkBackend(GST_IRP, "production", resolver=resolve, inner=inner)

    with pytest.raises(EgressRefusedError) as refused:
        await backend.connect_tcp("api.einvoice1.gst.gov.in", 443)

    assert refused.value.code == "address_not_allowed"
    assert inner.connected == []
