"""The relay picks partitions itself (it fills record batches per partition): the choice must be the
one aiokafka's default partitioner, and so the Java client's, makes for the same key, or an
aggregate's events would be split across partitions and lose their order."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from engine.kafka import murmur2, murmur2_python, partition_for


@given(st.binary(max_size=300))
def test_the_fast_murmur2_hashes_every_key_as_aiokafka_does(key: bytes) -> None:
    assert murmur2(key) == aiokafka_murmur2(key)


@given(st.binary(max_size=300))
def test_the_c_hash_and_the_python_walk_agree_on_every_key(key: bytes) -> None:
    # Every tail length (0-3 bytes after the whole words) comes up in a few hundred random keys.
    assert murmur2(key) == murmur2_python(key)


def test_the_relay_hashes_keys_with_the_c_build() -> None:
    # `pip install -e .` builds engine/_native_kafka.pyx; without it the relay's encoders spend
    # ~2 µs a key in the Python walk (docs/performance.md, "relay-murmur2").
    assert murmur2 is not murmur2_python


@given(st.uuids(), st.integers(1, 64))
def test_an_aggregate_key_goes_to_the_partition_the_default_partitioner_picks(
    uuid: object, count: int
) -> None:
    key = str(uuid).encode()
    partitions = list(range(count))
    assert partition_for(key, partitions) == DefaultPartitioner()(key, partitions, partitions)


def test_known_keys_hash_as_the_java_client_documents() -> None:
    # Values from the Java client's UtilsTest.testMurmur2 (signed ints there, unsigned here).
    cases = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536}
    for key, signed in cases.items():
        assert murmur2(key) == signed & 0xFFFFFFFF
