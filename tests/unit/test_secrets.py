from pathlib import Path

import pytest

from engine.security.secrets import KeyRing, KeySet, SecretError, new_key_spec, write_key_ring_file


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


def test_a_ring_read_from_a_file_follows_a_rotation_written_to_that_file(tmp_path: Path) -> None:
    path = tmp_path / "secret-keys"
    path.write_text(new_key_spec("k1"))
    ring = KeyRing.from_file(path)
    before = ring.seal(b"v1", b"owner")
    rotated = KeySet.parse(f"{new_key_spec('k2')},{path.read_text()}")
    write_key_ring_file(path, rotated)

    ring.reload()  # what the periodic check does within RELOAD_INTERVAL_S
    assert ring.active == "k2"
    assert ring.key_id_of(ring.seal(b"v2", b"owner")) == "k2"
    assert ring.open(before, b"owner") == b"v1"


def test_a_value_sealed_with_a_key_added_moments_ago_opens_without_waiting_for_the_periodic_check(
    tmp_path: Path,
) -> None:
    path = tmp_path / "secret-keys"
    path.write_text(new_key_spec("k1"))
    reader = KeyRing.from_file(path)
    assert reader.active == "k1"
    write_key_ring_file(path, KeySet.parse(f"{new_key_spec('k2')},{path.read_text()}"))
    writer = KeyRing.from_file(path)

    sealed_with_new_key = writer.seal(b"fresh", b"owner")
    assert reader.open(sealed_with_new_key, b"owner") == b"fresh"


def test_a_key_ring_file_that_does_not_parse_keeps_the_ring_in_use(tmp_path: Path) -> None:
    path = tmp_path / "secret-keys"
    path.write_text(new_key_spec("k1"))
    ring = KeyRing.from_file(path)
    sealed = ring.seal(b"v", b"owner")
    path.write_text("k2:not-a-key")
    ring.reload()
    assert ring.active == "k1"
    assert ring.open(sealed, b"owner") == b"v"


def test_the_key_ring_file_is_private_to_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "secret-keys"
    write_key_ring_file(path, KeySet.parse(new_key_spec("k1")))
    assert path.stat().st_mode & 0o777 == 0o600
    assert KeySet.parse(path.read_text()).active == "k1"


def test_a_key_id_given_twice_is_refused() -> None:
    with pytest.raises(SecretError, match="twice"):
        KeyRing.parse(f"{new_key_spec('k1')},{new_key_spec('k1')}")
