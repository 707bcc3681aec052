import pytest

from engine.security.secrets import KeyRing, SecretError, new_key_spec


def test_a_sealed_secret_opens_with_its_owner_and_not_with_another() -> None:
    ring = KeyRing.parse(new_key_spec("k1"))
    sealed = ring.seal(b"client-secret", b"tenant-a/gst-irp")
    assert b"client-secret" not in sealed.encode()
    assert ring.open(sealed, b"tenant-a/gst-irp") == b"client-secret"
    with pytest.raises(SecretError):
        ring.open(sealed, b"tenant-b/gst-irp")


def test_after_rotation_old_values_still_open_and_new_ones_use_the_new_key() -> None:
    old_spec = new_key_spec("k1")
    old = KeyRing.parse(old_spec)
    sealed_before = old.seal(b"v1", b"owner")
    rotated = KeyRing.parse(f"{new_key_spec('k2')},{old_spec}")
    assert rotated.open(sealed_before, b"owner") == b"v1"
    assert rotated.key_id_of(rotated.seal(b"v2", b"owner")) == "k2"
    with pytest.raises(SecretError, match="no key"):
        KeyRing.parse(new_key_spec("k3")).open(sealed_before, b"owner")


def test_a_tampered_value_is_refused() -> None:
    ring = KeyRing.parse(new_key_spec("k1"))
    sealed = ring.seal(b"secret", b"owner")
    kid, _, body = sealed.partition(":")
    flipped = body[:-4] + ("A" if body[-4] != "A" else "B") + body[-3:]
    with pytest.raises(SecretError):
        ring.open(f"{kid}:{flipped}", b"owner")


@pytest.mark.parametrize("spec", ["", "k1", "k1:AAAA", ":" + "A" * 44])
def test_malformed_key_rings_are_rejected_with_a_reason(spec: str) -> None:
    with pytest.raises(SecretError):
        KeyRing.parse(spec)
