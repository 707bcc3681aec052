"""Secrets at rest: AES-256-GCM with a key ring, so keys can be rotated without re-encrypting first.

A sealed value reads ``<key id>:<base64(nonce || ciphertext+tag)>``. The key id says which key of the
ring opens it; new values are always sealed with the active (first) key. The associated data binds
a ciphertext to its owner (tenant, provider), so a value copied into another tenant's row does not
decrypt.

Keys come from ``LEDGERFLOW_SECRET_KEYS`` (``kid:base64key[,kid:base64key...]``, the first one
active). Without it, a local key is generated once into ``var/secret-keys`` (mode 0600): fine for
the local stack, never for a deployment.
"""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12  # the size GCM is specified for (NIST SP 800-38D)


class SecretError(Exception):
    """A sealed value could not be opened: unknown key id, tampering, or the wrong owner."""


@dataclass(frozen=True)
class KeyRing:
    keys: dict[str, bytes]
    active: str

    @classmethod
    def parse(cls, spec: str) -> KeyRing:
        keys: dict[str, bytes] = {}
        order: list[str] = []
        for item in spec.split(","):
            item = item.strip()
            if not item:
                continue
            kid, _, encoded = item.partition(":")
            key = base64.b64decode(encoded)
            if not kid or len(key) != 32:
                raise SecretError(f"key {kid or '?'} must be 'kid:<base64 of 32 bytes>'")
            keys[kid] = key
            order.append(kid)
        if not order:
            raise SecretError("the key ring is empty")
        return cls(keys, order[0])

    def seal(self, plaintext: bytes, associated_data: bytes) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = AESGCM(self.keys[self.active]).encrypt(nonce, plaintext, associated_data)
        return f"{self.active}:{base64.b64encode(nonce + sealed).decode()}"

    def open(self, sealed: str, associated_data: bytes) -> bytes:
        kid, _, encoded = sealed.partition(":")
        key = self.keys.get(kid)
        if key is None:
            raise SecretError(f"no key {kid!r} in the key ring")
        raw = base64.b64decode(encoded)
        try:
            return AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], associated_data)
        except InvalidTag as exc:
            raise SecretError("sealed value was tampered with or belongs to another owner") from exc

    def key_id_of(self, sealed: str) -> str:
        return sealed.partition(":")[0]


def new_key_spec(kid: str) -> str:
    return f"{kid}:{base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()}"


def load_key_ring(var_dir: Path) -> KeyRing:
    spec = os.environ.get("LEDGERFLOW_SECRET_KEYS")
    if spec:
        return KeyRing.parse(spec)
    path = Path(var_dir) / "secret-keys"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(new_key_spec("local-1"))
    return KeyRing.parse(path.read_text())
