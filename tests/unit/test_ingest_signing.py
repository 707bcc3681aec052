"""Ingest message signatures and the agent's key cache: pure, no Kafka or PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from engine.ingest import IngestRejected, authenticate, read_headers
from engine.security.ingest_keys import (
    SigningKeys,
    StoredIngestKey,
    seal_secret,
    signature,
    signature_matches,
)
from engine.security.secrets import KeyRing, new_key_spec

SECRET = "lfis_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
BODY = b'{"number":"INV-1"}'

# Computed independently of this code, with OpenSSL 3:
#   printf '%s' 'cmd-2026-0001.{"number":"INV-1"}' | openssl dgst -sha256 -hmac "$SECRET"
#   printf '%s' 'cmd-1.' | openssl dgst -sha256 -hmac "$SECRET"
VECTORS = [
    ("cmd-2026-0001", BODY, "2e1c999320f043d12a90474f65ddd874213423cdc1c65f33897833f70747caef"),
    ("cmd-1", b"", "14ed089982d99002f8eb51a47b0cb1f33f5c7ffbd522ff0474079b08b87e3e6e"),
]


@pytest.mark.parametrize(("ce_id", "value", "hex_mac"), VECTORS)
def test_the_signature_is_hex_hmac_sha256_of_ce_id_a_dot_and_the_value(
    ce_id: str, value: bytes, hex_mac: str
) -> None:
    assert signature(SECRET, ce_id, value) == f"v1={hex_mac}"
    assert signature_matches(SECRET, ce_id, value, f"v1={hex_mac}")


@pytest.mark.parametrize(
    "presented",
    [
        "v1=" + "0" * 64,
        VECTORS[0][2],  # the hex without its scheme
        "v2=" + VECTORS[0][2],
        "",
    ],
)
def test_a_wrong_or_malformed_signature_does_not_match(presented: str) -> None:
    assert not signature_matches(SECRET, "cmd-2026-0001", BODY, presented)


def test_a_signature_does_not_carry_over_to_another_body_id_or_secret() -> None:
    good = signature(SECRET, "cmd-2026-0001", BODY)
    assert not signature_matches(SECRET, "cmd-2026-0001", BODY + b" ", good)
    assert not signature_matches(SECRET, "cmd-2026-0002", BODY, good)
    assert not signature_matches(SECRET[:-1] + "0", "cmd-2026-0001", BODY, good)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class KeyTable:
    """The rows the cache reads, in memory, counting the reads and recorded uses."""

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring
        self.rows: dict[str, StoredIngestKey] = {}
        self.reads = 0
        self.uses: list[str] = []

    def add(self, tenant_id: uuid.UUID, key_id: str, secret: str = SECRET) -> None:
        sealed = seal_secret(self.ring, tenant_id, key_id, secret)
        self.rows[key_id] = StoredIngestKey(key_id, tenant_id, sealed, None)

    def revoke(self, key_id: str) -> None:
        row = self.rows[key_id]
        self.rows[key_id] = StoredIngestKey(row.key_id, row.tenant_id, row.secret_sealed, datetime.now(UTC))

    def find(self, key_id: str) -> StoredIngestKey | None:
        self.reads += 1
        return self.rows.get(key_id)

    def record_use(self, key_id: str) -> None:
        self.uses.append(key_id)


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing.parse(new_key_spec("unit-1"))


def test_a_revoked_key_keeps_working_only_until_the_cache_expires(ring: KeyRing) -> None:
    table, clock, tenant = KeyTable(ring), Clock(), uuid.uuid4()
    table.add(tenant, "ik_a")
    keys = SigningKeys(table.find, table.record_use, ring, ttl=30, clock=clock)
    found = keys.active("ik_a")
    assert found is not None and found.secret == SECRET and found.tenant_id == tenant
    table.revoke("ik_a")
    clock.now += 29
    assert keys.active("ik_a") is not None, "within the TTL the cached key is used"
    assert table.reads == 1
    clock.now += 2
    assert keys.active("ik_a") is None, "after the TTL the revocation is seen"


def test_unknown_key_ids_are_remembered_so_a_flood_of_them_costs_one_read_each(ring: KeyRing) -> None:
    table, clock = KeyTable(ring), Clock()
    keys = SigningKeys(table.find, table.record_use, ring, ttl=30, clock=clock)
    for _ in range(100):
        assert keys.active("ik_made_up") is None
    assert table.reads == 1


def test_a_sealed_secret_copied_to_another_tenants_row_does_not_open(ring: KeyRing) -> None:
    from engine.security.secrets import SecretError

    table, tenant = KeyTable(ring), uuid.uuid4()
    table.add(tenant, "ik_a")
    stolen = table.rows["ik_a"]
    table.rows["ik_a"] = StoredIngestKey("ik_a", uuid.uuid4(), stolen.secret_sealed, None)
    keys = SigningKeys(table.find, table.record_use, ring)
    with pytest.raises(SecretError):
        keys.active("ik_a")


def test_last_use_is_recorded_at_most_once_a_minute_per_key(ring: KeyRing) -> None:
    table, clock = KeyTable(ring), Clock()
    keys = SigningKeys(table.find, table.record_use, ring, clock=clock)
    for _ in range(50):
        keys.used("ik_a")
    keys.used("ik_b")
    clock.now += 61
    keys.used("ik_a")
    assert table.uses == ["ik_a", "ik_b", "ik_a"]


def signed_headers(tenant_id: uuid.UUID, key_id: str, ce_id: str, value: bytes) -> dict[str, str]:
    return {
        "ce_id": ce_id,
        "ce_source": f"/tenants/{tenant_id}",
        "ledgerflow-key-id": key_id,
        "ledgerflow-signature": signature(SECRET, ce_id, value),
    }


def test_authentication_accepts_the_tenants_own_key_and_rejects_everything_else(ring: KeyRing) -> None:
    table, tenant_a, tenant_b = KeyTable(ring), uuid.uuid4(), uuid.uuid4()
    table.add(tenant_a, "ik_a")
    table.add(tenant_b, "ik_b", secret=SECRET)  # even the same secret does not make B's key A's
    keys = SigningKeys(table.find, table.record_use, ring, ttl=0)

    assert authenticate(keys, signed_headers(tenant_a, "ik_a", "c1", BODY), tenant_a, BODY).key_id == "ik_a"

    cases = {
        "unsigned": ({"ce_id": "c1"}, tenant_a),
        "unknown key": (signed_headers(tenant_a, "ik_nope", "c1", BODY), tenant_a),
        "another tenant's key": (signed_headers(tenant_b, "ik_b", "c1", BODY), tenant_a),
        "forged ce_source": (signed_headers(tenant_a, "ik_a", "c1", BODY), tenant_b),
    }
    for what, (headers, tenant) in cases.items():
        with pytest.raises(IngestRejected) as rejected:
            authenticate(keys, headers, tenant, BODY)
        assert rejected.value.code == "unauthenticated", what

    with pytest.raises(IngestRejected) as tampered:
        authenticate(keys, signed_headers(tenant_a, "ik_a", "c1", BODY), tenant_a, BODY + b"\n")
    assert tampered.value.code == "unauthenticated"
    assert "does not match" in tampered.value.message

    table.revoke("ik_a")
    with pytest.raises(IngestRejected) as revoked:
        authenticate(keys, signed_headers(tenant_a, "ik_a", "c1", BODY), tenant_a, BODY)
    assert "unknown or revoked" in revoked.value.message


@pytest.mark.parametrize(
    "repeated",
    [
        "ce_source",
        "ce_type",
        "ce_id",
        "ledgerflow-signature",
        "ledgerflow-key-id",
        "content-type",
        "CE_SOURCE",
    ],
)
def test_a_header_the_engine_reads_may_not_appear_twice(repeated: str) -> None:
    headers = [
        ("ce_id", b"c1"),
        ("ce_source", b"/tenants/x"),
        ("ce_type", b"ledgerflow.invoice.issue"),
        ("content-type", b"application/json"),
        ("ledgerflow-key-id", b"ik_a"),
        ("ledgerflow-signature", b"v1=00"),
        (repeated, b"second"),
    ]
    with pytest.raises(IngestRejected) as rejected:
        read_headers(headers)
    assert rejected.value.code == "duplicate_header"


def test_headers_the_engine_does_not_read_may_repeat() -> None:
    found = read_headers([("ce_id", b"c1"), ("x-app-tag", b"a"), ("x-app-tag", b"b")])
    assert found["ce_id"] == "c1"
