"""Record batches built by the relay's encoder processes (engine/relay_encoders.py, ``batch_chunk``)
hold exactly the messages the relay would append one by one, on the partitions it would pick, in
order; and the producer state the relay writes into one (engine/relay.py, ``BuiltBatch``) gives the
bytes aiokafka's own builder gives when the state is set before building."""

from __future__ import annotations

import random
import struct
from collections import Counter
from typing import Any
from uuid import uuid4

import orjson
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from aiokafka.record.util import calc_crc32c

from engine.relay import BuiltBatch
from engine.relay_encoders import BatchSpec, EncodedMessage, batch_chunk, encode_chunk
from tests.unit.test_relay_direct import ISSUED, STORED


def rows_of(stored: list[Any]) -> list[tuple[int, Any, int, str, bytes]]:
    return [(n, s.originator_id, s.originator_version, s.topic, s.state) for n, s in enumerate(stored, 1)]


def many_invoices(count: int) -> list[tuple[int, Any, int, str, bytes]]:
    """``count`` issued invoices (new aggregates: their keys spread over the partitions), as the
    relay reads them (the originator id as text), with a few other event types among them; each
    with a stored trace context (without one an event gets a fresh random one at each encoding)."""
    rnd = random.Random(7)
    rows = []
    for n in range(1, count + 1):
        sample = rnd.choice(ISSUED) if n % 5 else rnd.choice(STORED)
        state = orjson.loads(sample.state)
        state["traceparent"] = f"00-{rnd.getrandbits(128):032x}-{rnd.getrandbits(64):016x}-01"
        rows.append((n, str(uuid4()), sample.originator_version, sample.topic, orjson.dumps(state)))
    return rows


def records(data: bytes) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    batch = DefaultRecordBatch(bytearray(data))
    assert batch.validate_crc()
    return [(r.key, r.value, list(r.headers)) for r in batch]


def test_the_state_written_into_a_built_batch_gives_the_builders_own_bytes() -> None:
    messages, failed = encode_chunk(rows_of(STORED))
    assert failed is None and len(messages) > 10

    def build(state: tuple[int, int, int] | None) -> bytes:
        builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, 0, 1 << 20)
        for offset, (_, key, value, headers, _) in enumerate(messages):
            # Fixed timestamps: the two builds are compared byte for byte.
            assert builder.append(offset, 1_764_000_000_000 + offset, key, value, headers) is not None
        if state is not None:
            builder.set_producer_state(*state)
        return bytes(builder.build())

    for state in [(0, 0, 0), (4711, 3, 2_000_000_001), (2**62, 2**15 - 1, 17)]:
        built = BuiltBatch(build(None), len(messages))
        built._set_producer_state(*state)
        data = built._build()
        assert bytes(data) == build(state)
        header = DefaultRecordBatch(bytearray(data))
        assert (header.producer_id, header.producer_epoch, header.base_sequence) == state
        assert header.validate_crc()
        assert built.record_count() == len(messages) and built.size() == len(data)


def test_a_chunks_batches_hold_its_messages_on_the_partitioners_partitions_in_order() -> None:
    rows = many_invoices(600)
    messages, failed = encode_chunk(rows)
    assert failed is None
    # Most messages first: invoices.
    topics = [topic for topic, _ in Counter(m[0] for m in messages).most_common()]
    assert len(topics) > 1, topics
    # One topic left out: its messages come back one by one; small batches: several per partition.
    listed = {topic: [0, 1, 2, 4, 5, 9] for topic in topics[:-1]}
    built, loose, failed = batch_chunk(rows, BatchSpec(16 * 1024, 0, listed))
    assert failed is None
    assert loose == [m for m in messages if m[0] == topics[-1]]

    expected: dict[tuple[str, int], list[EncodedMessage]] = {}
    for m in messages:
        if m[0] in listed:
            ids = listed[m[0]]
            expected.setdefault((m[0], ids[m[4] % len(ids)]), []).append(m)
    got: dict[tuple[str, int], list[tuple[bytes, bytes, list[tuple[str, bytes]]]]] = {}
    for topic, partition, data, count in built:
        found = records(data)
        assert len(found) == count
        assert len(data) <= 16 * 1024 or count == 1, "closed when full, as the relay's own batches"
        got.setdefault((topic, partition), []).extend(found)
    assert sum(len(v) > 2 for v in got.values()) > 0
    assert max(sum(1 for b in built if (b[0], b[1]) == tp) for tp in got) > 1, "several batches"
    assert got == {tp: [(m[1], m[2], m[3]) for m in ms] for tp, ms in expected.items()}


def test_a_chunk_stops_at_the_event_it_cannot_encode_with_the_ones_before_it_built() -> None:
    rows = many_invoices(40)
    bad = list(rows[25])
    bad[4] = b'{"not": "an invoice"}'
    rows[25] = tuple(bad)  # type: ignore[call-overload]
    topics = {m[0] for m in encode_chunk(rows[:25])[0]}
    built, loose, failed = batch_chunk(rows, BatchSpec(1 << 20, 0, {t: [0, 1, 2] for t in topics}))
    assert failed == 25 and loose == []
    assert sum(count for *_, count in built) == 25


def test_the_checksum_of_a_built_batch_with_its_state_written_is_the_full_one() -> None:
    # BuiltBatch corrects the encoder's CRC-32C for the changed bytes only; it must equal the CRC
    # taken again over the whole batch, whatever the batch's length (lengths around powers of two,
    # up to past the 256 KiB the relay's batches hold) and whatever state replaces whatever was there.
    rnd = random.Random(11)
    lengths = [57, 58, 59, 64, 100, 1000, 4095, 4096, 4097, 65_536, 262_144 + 17, 1 << 20, 3_000_001]
    for length in lengths:
        data = bytearray(rnd.randbytes(length))
        data[17:21] = calc_crc32c(memoryview(data)[21:]).to_bytes(4, "big")
        built = BuiltBatch(bytes(data), 1)
        for state in [
            (rnd.getrandbits(63), rnd.getrandbits(15), rnd.getrandbits(31)),
            (-1, -1, -1),
            (0, 0, 0),
        ]:
            built._set_producer_state(*state)
            written = built._build()
            assert written[43:57] == struct.pack(">qhi", *state)
            assert int.from_bytes(written[17:21], "big") == calc_crc32c(memoryview(written)[21:]), length
            assert written[:17] == data[:17] and written[57:] == data[57:]
