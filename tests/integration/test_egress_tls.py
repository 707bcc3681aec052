"""Connecting to the checked address keeps TLS honest: the certificate is verified for the host name.

A real TLS server on loopback with a certificate made for the test: the transport connects to the
IP it resolved ``localhost`` to, yet SNI, certificate verification and the ``Host`` header still use
the name, and a certificate for another name, or one nobody trusts, fails as ``tls_error``.
"""

from __future__ import annotations

import datetime
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from connectors.egress import CheckedTransport, IPAddress, resolve
from connectors.errors import ConnectorError
from connectors.gst_irp.client import IrpClient, IrpCredentials
from connectors.gst_irp.sandbox import SandboxAccount
from engine.application import LedgerService
from engine.config import Settings
from engine.security.egress import EndpointPolicy
from tests.connectors.contract import LiveServer
from tests.integration.helpers import client_for, register_tenant

pytestmark = pytest.mark.integration

ACCOUNT = SandboxAccount()


def certificate(tmp: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for ``name`` (PEM files: certificate, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / f"{name}.crt", tmp / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


class TlsServer(LiveServer):
    """LiveServer speaking https with the given certificate."""

    def __init__(self, app: Any, cert: Path, key: Path) -> None:
        super().__init__(app)
        self.port = int(self.url.rsplit(":", 1)[1])
        self.url = f"https://localhost:{self.port}"
        config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=2,
            ssl_certfile=str(cert),
            ssl_keyfile=str(key),
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)


class Answering:
    def __init__(self) -> None:
        self.hosts: list[str] = []

        async def auth(request: Request) -> JSONResponse:
            self.hosts.append(request.headers["host"])
            return JSONResponse(
                {"Status": 1, "Data": {"AuthToken": "t", "TokenExpiry": "2099-01-01 00:00:00"}}
            )

        self.app = Starlette(routes=[Route("/eivital/v1.04/auth", auth, methods=["POST"])])


@pytest.fixture
def localhost_tls(tmp_path: Path) -> Iterator[tuple[TlsServer, Answering, Path]]:
    cert, key = certificate(tmp_path, "localhost")
    answering = Answering()
    with TlsServer(answering.app, cert, key) as server:
        yield server, answering, cert


def credentials() -> IrpCredentials:
    return IrpCredentials(**ACCOUNT.credentials())


async def test_tls_is_verified_for_the_host_name_while_connecting_to_the_checked_address(
    localhost_tls: tuple[TlsServer, Answering, Path],
) -> None:
    server, answering, cert = localhost_tls
    policy = EndpointPolicy(provider="gst-irp", known_hosts=(f"localhost:{server.port}",))
    trusted = ssl.create_default_context(cafile=str(cert))
    resolved: list[tuple[str, list[IPAddress]]] = []

    async def recording(host: str, port: int) -> list[IPAddress]:
        answer = await resolve(host, port)
        resolved.append((host, answer))
        return answer

    transport = CheckedTransport(policy, "development", "production", verify=trusted, resolver=recording)
    async with IrpClient(server.url, credentials(), transport=transport) as client:
        await client.authenticate(force=True)

    # Resolved once by the transport (which then connects to that address, see the unit tests),
    # and still the certificate was checked for "localhost" and Host named it.
    assert [host for host, _ in resolved] == ["localhost"]
    assert any(ip.is_loopback for ip in resolved[0][1])
    assert answering.hosts == [f"localhost:{server.port}"]


async def test_a_certificate_for_another_name_fails_as_tls_error(tmp_path: Path) -> None:
    cert, key = certificate(tmp_path, "other.example")
    answering = Answering()
    with TlsServer(answering.app, cert, key) as server:
        policy = EndpointPolicy(provider="gst-irp", known_hosts=(f"localhost:{server.port}",))
        # Trusting that certificate is not enough: it names another host than the URL's.
        trusted = ssl.create_default_context(cafile=str(cert))
        transport = CheckedTransport(policy, "development", "production", verify=trusted)
        async with IrpClient(server.url, credentials(), transport=transport) as client:
            with pytest.raises(ConnectorError) as caught:
                await client.authenticate(force=True)

    assert caught.value.code == "tls_error"
    assert answering.hosts == []


def test_the_connection_test_names_an_untrusted_certificate_as_tls_failed(
    service: LedgerService, settings: Settings, localhost_tls: tuple[TlsServer, Answering, Path]
) -> None:
    server, answering, _ = localhost_tls
    _, key = register_tenant(service)
    client = client_for(settings)
    auth = {"Authorization": f"Bearer {key}"}
    saved = client.put(
        "/v1/integrations/gst-irp",
        json={"base_url": server.url, "credentials": ACCOUNT.credentials()},
        headers=auth,
    )
    assert saved.status_code == 200, saved.text

    tested = client.post("/v1/integrations/gst-irp/test", headers=auth).json()

    assert tested["ok"] is False
    assert tested["error"] == {"class": "retryable", "code": "tls_error", "message": "TLS failed"}
    assert answering.hosts == []
