"""Secrets at rest: AES-256-GCM with a key ring, so keys can be rotated without re-encrypting first.

A sealed value reads ``<key id>:<base64(nonce || ciphertext+tag)>``. The key id says which key of the
ring opens it; new values are always sealed with the active (first) key. The associated data binds
a ciphertext to its owner (tenant, provider), so a value copied into another tenant's row does not
decrypt.

Keys come from ``LEDGERFLOW_SECRET_KEYS`` (``kid:base64key[,kid:base64key...]``, the first one
active) or else from a key ring file: ``LEDGERFLOW_SECRET_KEYS_FILE``, by default
``var/secret-keys`` (generated once with one key, mode 0600: fine for the local stack, never for a
deployment without a secret store behind it).

A ring loaded from a file follows the file: ``ledgerflow keys rotate`` rewrites it (atomically),
and every running process (API, workers) sees the change without a restart. The file's identity
(inode, size, mtime) is checked at most every ``RELOAD_INTERVAL_S`` seconds, and at once when a
value names a key id the ring does not know yet (another process sealed it with a key added
moments ago). A ring from the environment variable is fixed for the life of the process.
"""

from __future__ import annotations

import base64
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from engine.errors import ConfigurationError

NONCE_BYTES = 12  # the size GCM is specified for (NIST SP 800-38D)

# How stale a process's view of the key ring file may be. `keys rotate` waits longer than this
# after adding a key before it re-encrypts, so that no process still seals with the old key.
RELOAD_INTERVAL_S = 2.0


class SecretError(ConfigurationError):
    """A sealed value could not be opened: unknown key id, tampering, or the wrong owner."""


@dataclass(frozen=True)
class KeySet:
    """The keys of a ring at one moment, by id, and which one seals new values."""

    keys: dict[str, bytes]
    active: str

    @classmethod
    def parse(cls, spec: str) -> KeySet:
        keys: dict[str, bytes] = {}
        order: list[str] = []
        for item in spec.split(","):
            item = item.strip()
            if not item:
                continue
            kid, _, encoded = item.partition(":")
            try:
                key = base64.b64decode(encoded, validate=True)
            except ValueError:
                key = b""
            if not kid or len(key) != 32:
                raise SecretError(f"key {kid or '?'} must be 'kid:<base64 of 32 bytes>'")
            if kid in keys:
                raise SecretError(f"key id {kid!r} appears twice in the key ring")
            keys[kid] = key
            order.append(kid)
        if not order:
            raise SecretError("the key ring is empty")
        # dicts keep insertion order: the first key is the active one
        return cls(keys, order[0])

    def spec(self) -> str:
        """The ring as ``LEDGERFLOW_SECRET_KEYS`` / the key ring file spell it (active key first)."""
        order = [self.active, *(kid for kid in self.keys if kid != self.active)]
        return ",".join(f"{kid}:{base64.b64encode(self.keys[kid]).decode()}" for kid in order)


class KeyRing:
    """Seals and opens values; ``keys`` and ``active`` follow the ring's file when it has one."""

    def __init__(self, keys: dict[str, bytes], active: str, *, source: Path | None = None) -> None:
        self._set = KeySet(dict(keys), active)
        self.source = source
        self._identity = _identity(source) if source else None
        self._checked_at = time.monotonic()
        self._lock = threading.Lock()

    @classmethod
    def parse(cls, spec: str) -> KeyRing:
        parsed = KeySet.parse(spec)
        return cls(parsed.keys, parsed.active)

    @classmethod
    def from_file(cls, path: Path) -> KeyRing:
        parsed = KeySet.parse(path.read_text())
        return cls(parsed.keys, parsed.active, source=path)

    @property
    def keys(self) -> dict[str, bytes]:
        return self._current().keys

    @property
    def active(self) -> str:
        return self._current().active

    def seal(self, plaintext: bytes, associated_data: bytes) -> str:
        current = self._current()
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = AESGCM(current.keys[current.active]).encrypt(nonce, plaintext, associated_data)
        return f"{current.active}:{base64.b64encode(nonce + sealed).decode()}"

    def open(self, sealed: str, associated_data: bytes) -> bytes:
        kid, _, encoded = sealed.partition(":")
        key = self._current().keys.get(kid)
        if key is None:
            key = self._current(force=True).keys.get(kid)
        if key is None:
            raise SecretError(f"no key {kid!r} in the key ring")
        raw = base64.b64decode(encoded)
        try:
            return AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], associated_data)
        except InvalidTag as exc:
            raise SecretError("sealed value was tampered with or belongs to another owner") from exc

    def key_id_of(self, sealed: str) -> str:
        return sealed.partition(":")[0]

    def reload(self) -> None:
        """Read the ring's file again now (SIGHUP handlers and tests; otherwise it is periodic)."""
        self._current(force=True)

    def _current(self, *, force: bool = False) -> KeySet:
        if self.source is None:
            return self._set
        now = time.monotonic()
        if not force and now - self._checked_at < RELOAD_INTERVAL_S:
            return self._set
        with self._lock:
            self._checked_at = now
            identity = _identity(self.source)
            if identity is not None and identity != self._identity:
                # A half-written file cannot be seen: the ring is replaced with os.replace. A file
                # that does not parse keeps the ring in use rather than stopping every process.
                try:
                    self._set = KeySet.parse(self.source.read_text())
                    self._identity = identity
                except (OSError, SecretError):
                    pass
        return self._set


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def new_key_spec(kid: str) -> str:
    return f"{kid}:{base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()}"


def key_ring_file(var_dir: Path) -> Path:
    """Where the key ring file lives: ``LEDGERFLOW_SECRET_KEYS_FILE``, else ``<var>/secret-keys``."""
    configured = os.environ.get("LEDGERFLOW_SECRET_KEYS_FILE")
    return Path(configured) if configured else Path(var_dir) / "secret-keys"


def keys_from_environment() -> bool:
    return bool(os.environ.get("LEDGERFLOW_SECRET_KEYS"))


def load_key_ring(var_dir: Path) -> KeyRing:
    spec = os.environ.get("LEDGERFLOW_SECRET_KEYS")
    if spec:
        return KeyRing.parse(spec)
    path = key_ring_file(var_dir)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(new_key_spec("local-1"))
    return KeyRing.from_file(path)


def write_key_ring_file(path: Path, keys: KeySet) -> None:
    """Replace the key ring file atomically (readers see the old ring or the new one, never half)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(keys.spec())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
