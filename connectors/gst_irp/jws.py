"""The IRP's signed tokens: compact JWS, RS256 (india-gst.md section 1).

Header ``{alg, kid, typ: "JWT", x5t}``; payload ``{"data": "<JSON document as a string>", "iss": "NIC"}``.
The IRP signs with NIC's key; taxpayers verify with NIC's published certificate. The sandbox signs with a
key of its own and publishes it, so tests verify exactly the way production would. Written against
``cryptography`` directly: the format is three base64url parts and one signature, not worth a dependency.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ISSUER = "NIC"


class InvalidToken(ValueError):
    """Not a well-formed RS256 JWS, or its signature does not verify."""


def sign(data: dict[str, Any], key: rsa.RSAPrivateKey, *, kid: str) -> str:
    header = {"alg": "RS256", "kid": kid, "typ": "JWT", "x5t": thumbprint(key.public_key())}
    payload = {"data": json.dumps(data, separators=(",", ":"), ensure_ascii=False), "iss": ISSUER}
    signing_input = f"{_b64(_json(header))}.{_b64(_json(payload))}"
    signature = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64(signature)}"


def verify(token: str, public_key: rsa.RSAPublicKey) -> dict[str, Any]:
    """The ``data`` document of a token whose RS256 signature verifies with ``public_key``."""
    header, payload, signature, signing_input = _split(token)
    if header.get("alg") != "RS256":
        raise InvalidToken(f"alg {header.get('alg')!r} is not RS256")
    try:
        public_key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature as exc:
        raise InvalidToken("signature does not verify") from exc
    return _data(payload)


def decode_unverified(token: str) -> dict[str, Any]:
    """The ``data`` document without checking the signature: for reading our own IRP's answer only."""
    _, payload, _, _ = _split(token)
    return _data(payload)


def thumbprint(public_key: rsa.RSAPublicKey) -> str:
    """x5t stand-in: base64url SHA-1 of the DER public key (NIC's is of its certificate; we have none)."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return _b64(hashlib.sha1(der, usedforsecurity=False).digest())


def _split(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("a compact JWS has three parts")
    try:
        header = json.loads(_unb64(parts[0]))
        payload = json.loads(_unb64(parts[1]))
        signature = _unb64(parts[2])
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidToken("a part is not base64url JSON") from exc
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise InvalidToken("header and payload must be JSON objects")
    return header, payload, signature, f"{parts[0]}.{parts[1]}".encode("ascii")


def _data(payload: dict[str, Any]) -> dict[str, Any]:
    try:
        data = json.loads(payload["data"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidToken("payload has no JSON 'data' claim") from exc
    if not isinstance(data, dict):
        raise InvalidToken("the 'data' claim is not a JSON object")
    return data


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
