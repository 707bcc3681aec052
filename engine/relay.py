"""The relay: tails the event store's notification log and publishes every event to Kafka.

Order of work per batch: read notifications after the stored position, publish them all with an
idempotent producer (acks=all) and wait for every acknowledgement, then store the new position.
A crash between the two re-publishes the same events with the same ``ce_id``; nothing is skipped,
because eventsourcing's PostgreSQL recorder serialises inserts (notification id order is commit
order), so a reader never passes over a row that commits later with a smaller id.

A stored event is a fact: the relay never skips one. An event it cannot turn into a message (no
mapping, a value the Avro schema refuses) stops it with :class:`UnencodableEvent`, logged at
CRITICAL with ``alert=true``, naming the event; the events before it in the batch are published
and the position stored, so a restart stops at exactly that event until the code (the mapping or
the schema) is fixed. Consumers see a delay, never a gap.

Throughput (issue 15, docs/performance.md): a page is read with one kept connection in binary
(bytea as bytes, no hex round trip), each event is encoded with the schema's precompiled writer
and appended straight to a Kafka record batch of its partition (the partition aiokafka's default
partitioner picks for the key, murmur2 as in the Java client, so every message lands where a plain
``send`` would put it), and a batch goes out as soon as it is full, while the rest of the page is
encoded. The next page is read in a thread meanwhile. With encoder processes
(engine/relay_encoders.py) the relay reads only a page's notification ids, and the encoders read,
encode and batch the events themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.util import calc_crc32c
from eventsourcing.persistence import Notification
from eventsourcing.postgres import PostgresApplicationRecorder
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from psycopg import sql

from engine import db, kafka, relay_direct, telemetry
from engine.application import open_ledger
from engine.config import Settings
from engine.errors import IntegrityFault
from engine.publishing import AGGREGATE_TOPICS, OutboundEvent, encode_stored
from engine.relay_direct import encode_direct
from engine.relay_encoders import LOG_COLUMNS, BatchSpec, EncoderLost, EncoderPool, LogRange

log = logging.getLogger("ledgerflow.relay")

published = telemetry.meter.create_counter(
    "ledgerflow.relay.published", unit="{event}", description="Events the relay published (acknowledged)"
)

RELAY_NAME = "ledger"

# Every logical topic an event can be published to.
_LOGICAL_TOPICS = frozenset(AGGREGATE_TOPICS.values())


class UnencodableEvent(IntegrityFault):
    """A stored event the relay cannot encode; the relay stops rather than skip it."""

    def __init__(self, notification: Notification, error: Exception) -> None:
        self.notification_id = notification.id
        self.originator_id = str(notification.originator_id)
        self.originator_version = notification.originator_version
        self.stored_topic = notification.topic
        self.error = error
        super().__init__(
            f"cannot encode stored event: notification {notification.id}, originator"
            f" {notification.originator_id} version {notification.originator_version}, topic"
            f" {notification.topic}: {type(error).__name__}: {error}"
        )


@dataclass
class RelayStats:
    published: int = 0
    batches: int = 0
    position: int = 0
    # Pages whose events the encoder processes encoded; times they were started again.
    pooled_pages: int = 0
    encoder_restarts: int = 0
    # Record batches the encoder processes built (engine/relay_encoders.py, batch_chunk).
    built_batches: int = 0
    # Messages the encoders handed back one by one (a topic whose partitions the relay had not
    # listed yet), appended to record batches in this process.
    appended_here: int = 0


# One stored event as the relay reads it: (notification id, originator id's canonical text,
# originator version, stored topic, state). Plain tuples: a page holds thousands.
StoredRow = tuple[int, str, int, str, bytes]


class NotificationLog:
    """The event store's notification log, read in pages over one kept connection."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._conn: psycopg.Connection | None = None
        self.table = ""

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if not self.table:
                # The event store's own set-up (tables, functions) happens once, where it always did.
                recorder = open_ledger(self.settings).recorder
                assert isinstance(recorder, PostgresApplicationRecorder)
                self.table = recorder.events_table_name
            self._conn = db.connect(self.settings, autocommit=True)
        return self._conn

    def ids(self, after: int, limit: int) -> list[int]:
        """The notification ids of ``page(after, limit)``, without the events (the encoder processes
        read those themselves, ``LogRange``)."""
        conn = self._connection()
        query = sql.SQL(
            "SELECT notification_id FROM {} WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
        ).format(sql.Identifier(self.table))
        with conn.cursor(binary=True) as cursor:
            cursor.execute(query, (after, limit))
            return [row[0] for row in cursor.fetchall()]

    def between(self, after: int, last: int) -> list[StoredRow]:
        """The stored events with notification ids in (``after``, ``last``], in notification order."""
        conn = self._connection()
        query = sql.SQL(
            "SELECT " + LOG_COLUMNS + " FROM {} WHERE notification_id > %s AND notification_id <= %s"
            " ORDER BY notification_id"
        ).format(sql.Identifier(self.table))
        with conn.cursor(binary=True) as cursor:
            cursor.execute(query, (after, last))
            return cursor.fetchall()

    def page(self, after: int, limit: int) -> list[StoredRow]:
        """Up to ``limit`` stored events after notification ``after``, in notification order."""
        conn = self._connection()
        query = sql.SQL(
            "SELECT " + LOG_COLUMNS + " FROM {} WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
        ).format(sql.Identifier(self.table))
        # Binary results: bytea arrives as the stored bytes (text mode sends hex, about three times
        # the read time). The originator id as text (LOG_COLUMNS): encoding uses only its canonical
        # text, which is PostgreSQL's uuid output, so no UUID object is built per row.
        with conn.cursor(binary=True) as cursor:
            cursor.execute(query, (after, limit))
            return cursor.fetchall()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


_CASTAGNOLI = 0x82F63B78  # CRC-32C's polynomial, bit-reflected (the v2 record batch's checksum)


@functools.cache
def _zero_bytes_tables() -> list[tuple[list[int], ...]]:
    """For k = 0..31: the CRC-32C register (no initial value, no final xor: the part of a CRC that
    is linear in the message) carried over 2**k zero bytes, as a linear map given by four byte
    tables (the image of each byte of the register)."""
    images = []  # of each register bit over one zero byte
    for bit in range(32):
        register = 1 << bit
        for _ in range(8):
            register = (register >> 1) ^ (_CASTAGNOLI if register & 1 else 0)
        images.append(register)
    levels = []
    for _ in range(32):
        tables = []
        for byte in range(4):
            table = [0] * 256
            for value in range(1, 256):
                low = value & -value
                table[value] = table[value ^ low] ^ images[8 * byte + low.bit_length() - 1]
            tables.append(table)
        levels.append(tuple(tables))
        images = [_carry(tables, image) for image in images]  # the map applied twice: 2**(k+1) bytes
    return levels


def _carry(tables: Sequence[list[int]], register: int) -> int:
    t0, t1, t2, t3 = tables
    return t0[register & 255] ^ t1[(register >> 8) & 255] ^ t2[(register >> 16) & 255] ^ t3[register >> 24]


def _crc32c_of_change(changed: bytes, after: int) -> int:
    """What XORing ``changed`` into a message, ``after`` bytes before its end, does to its CRC-32C:
    CRCs are affine, so crc(m ^ d) = crc(m) ^ crc(d) ^ crc(0...0) for messages of one length, and
    the last two terms leave the linear part of d's CRC: that of ``changed`` (its CRC against that
    of as many zero bytes) carried over the ``after`` zero bytes that follow it (leading zero bytes
    change nothing). ``tests/unit/test_built_batches.py`` compares with full CRCs."""
    register = calc_crc32c(changed) ^ calc_crc32c(bytes(len(changed)))
    levels = _zero_bytes_tables()
    level = 0
    while after:
        if after & 1:
            register = _carry(levels[level], register)
        after >>= 1
        level += 1
    return register


class BuiltBatch:
    """A record batch an encoder process built (``engine.relay_encoders.batch_chunk``), handed to
    ``producer.send_batch`` where a ``BatchBuilder`` goes: the producer asks it only for its size,
    its record count, its bytes, and sets the idempotent producer's id, epoch and first sequence
    before taking the bytes, which are then written into the batch header (v2 record batch: at byte
    43, after base offset, length, leader epoch, magic, CRC, attributes, last offset delta and the
    two timestamps) and the CRC-32C over everything from the attributes on recomputed, as the
    builder's own ``build()`` does after ``set_producer_state``
    (tests/unit/test_built_batches.py compares both byte for byte)."""

    __slots__ = ("_buffer", "_count")

    _STATE = struct.Struct(">qhi")  # producer id, producer epoch, base sequence
    _CRC = struct.Struct(">I")

    def __init__(self, data: bytes | bytearray, count: int) -> None:
        # An encoder's batch arrives as a bytearray of its own (EncodedBatch): written into in place.
        self._buffer = data if type(data) is bytearray else bytearray(data)
        self._count = count

    def append(self, **_: Any) -> None:
        return None  # closed: nothing more goes in

    def close(self) -> None:
        pass

    def closed(self) -> bool:
        return True

    def size(self) -> int:
        return len(self._buffer)

    def record_count(self) -> int:
        return self._count

    def _set_producer_state(self, producer_id: int, producer_epoch: int, base_sequence: int) -> None:
        # The CRC the encoder's builder wrote, corrected for the 14 changed bytes alone rather than
        # computed again over the whole batch: that second pass was a fifth of the relay process's
        # CPU under perf (aiokafka's crc32c, ~0.1 ms per 256 KiB batch).
        buffer = self._buffer
        before = int.from_bytes(buffer[43:57])
        self._STATE.pack_into(buffer, 43, producer_id, producer_epoch, base_sequence)
        changed = (before ^ int.from_bytes(buffer[43:57])).to_bytes(14)
        (crc,) = self._CRC.unpack_from(buffer, 17)
        self._CRC.pack_into(buffer, 17, crc ^ _crc32c_of_change(changed, len(buffer) - 57))

    def _build(self) -> bytearray:
        return self._buffer


class _PageSender:
    """Appends a page's messages to one record batch per partition and hands each full batch to the
    producer while the rest of the page is encoded.

    The partition is the one aiokafka's default partitioner gives the key (murmur2, positive, modulo
    the topic's partition count, as the Java client), so an aggregate's events stay on one partition
    and in order whichever way they were sent. Each partition has a feeder task submitting its
    batches in order: aiokafka takes a partition's next batch only once the previous one left, and
    waiting for that in the encoding loop would stall it for a broker round trip.
    """

    # Give the producer's I/O a turn this often while a page is encoded (the loop is CPU-bound).
    YIELD_EVERY = 200

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self.partitions: dict[str, list[int]] = {}
        self.batches: dict[tuple[str, int], BatchBuilder] = {}
        self.queues: dict[tuple[str, int], asyncio.Queue[BatchBuilder | BuiltBatch | None]] = {}
        self.feeders: list[asyncio.Future[None]] = []
        self.count = 0

    async def add(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        headers: list[tuple[str, bytes]],
        key_hash: int | None = None,
    ) -> None:
        """Append one message; ``key_hash``, when given, is ``murmur2(key) & 0x7FFFFFFF`` (taken by
        an encoder process), from which the partition is picked as ``kafka.partition_for`` does."""
        partitions = self.partitions.get(topic)
        if partitions is None:
            partitions = self.partitions[topic] = sorted(await self.producer.partitions_for(topic))
        if key_hash is None:
            tp = (topic, kafka.partition_for(key, partitions))
        else:
            tp = (topic, partitions[key_hash % len(partitions)])
        batch = self.batches.get(tp)
        if batch is None:
            batch = self.batches[tp] = self.producer.create_batch()
        if batch.append(timestamp=None, key=key, value=value, headers=headers) is None:
            self._submit(tp, batch)
            batch = self.batches[tp] = self.producer.create_batch()
            # A batch's first message always fits (aiokafka grows it), as with send().
            batch.append(timestamp=None, key=key, value=value, headers=headers)
        self.count += 1
        if self.count % self.YIELD_EVERY == 0:
            await asyncio.sleep(0)

    def add_built(self, topic: str, partition: int, data: bytearray, count: int) -> None:
        """Queue a batch an encoder built, after what this page already holds for its partition."""
        tp = (topic, partition)
        pending = self.batches.pop(tp, None)
        if pending is not None:  # messages of this partition appended here (a topic new to the page)
            self._submit(tp, pending)
        self._submit(tp, BuiltBatch(data, count))
        self.count += count

    def _submit(self, tp: tuple[str, int], batch: BatchBuilder | BuiltBatch) -> None:
        # Closed: ready at once, no linger (the page is sent as fast as it is encoded).
        batch.close()
        queue = self.queues.get(tp)
        if queue is None:
            queue = self.queues[tp] = asyncio.Queue()
            self.feeders.append(asyncio.ensure_future(self._feed(tp, queue)))
        queue.put_nowait(batch)

    async def _feed(
        self, tp: tuple[str, int], queue: asyncio.Queue[BatchBuilder | BuiltBatch | None]
    ) -> None:
        acknowledged: list[asyncio.Future[Any]] = []
        while (batch := await queue.get()) is not None:
            acknowledged.append(await self.producer.send_batch(batch, tp[0], partition=tp[1]))
        await asyncio.gather(*acknowledged)

    async def delivered(self) -> None:
        """Send the partly filled batches and wait for every acknowledgement of the page."""
        for tp, batch in self.batches.items():
            self._submit(tp, batch)
        self.batches.clear()
        for queue in self.queues.values():
            queue.put_nowait(None)
        try:
            await asyncio.gather(*self.feeders)
        finally:
            self.abandon()

    def abandon(self) -> None:
        """Stop feeding batches (the page failed; it is sent again from its start)."""
        for feeder in self.feeders:
            feeder.cancel()


class Relay:
    """Publishes stored events to their ``ledger.<aggregate>.v1`` topics, at least once, in order."""

    def __init__(
        self,
        settings: Settings,
        *,
        batch_size: int = 5000,
        idle_wait: float = 0.05,
        name: str = RELAY_NAME,
        encoders: int = 0,
        encoder_chunk: int = 500,
        encoder_min_page: int = 200,
    ) -> None:
        self.settings = settings
        # Encoder processes (engine/relay_encoders.py); 0 encodes in this process. A page shorter
        # than ``encoder_min_page`` is encoded in process all the same: the round trip would cost
        # more than it saves, and the tail of a live log comes a few events at a time.
        self.encoders = encoders
        self.encoder_chunk = encoder_chunk
        self.encoder_min_page = encoder_min_page
        self._pool: EncoderPool | None = None
        # Events per page: a page is read in one query and its position stored once delivered.
        self.batch_size = batch_size
        self.idle_wait = idle_wait
        self.name = name
        self.stats = RelayStats()
        self._log = NotificationLog(settings)
        self._positions: psycopg.Connection | None = None
        # Logical topics this relay has published to: their partitions go to the encoders with each
        # page, so that they build those topics' batches themselves.
        self._topics_seen: set[str] = set()

    # -- position ---------------------------------------------------------------------------

    def _position_conn(self) -> psycopg.Connection:
        # A connection lost to an outage reports itself broken; the next call opens a new one.
        if self._positions is None or self._positions.closed or self._positions.broken:
            self._positions = db.connect(self.settings)
        return self._positions

    def load_position(self) -> int:
        conn = self._position_conn()
        with conn.transaction():
            row = conn.execute(
                "SELECT notification_id FROM relay_position WHERE relay = %s", (self.name,)
            ).fetchone()
        return int(row[0]) if row else 0

    def save_position(self, notification_id: int) -> None:
        conn = self._position_conn()
        with conn.transaction():
            conn.execute(
                "INSERT INTO relay_position (relay, notification_id) VALUES (%s, %s)"
                " ON CONFLICT (relay) DO UPDATE SET notification_id = EXCLUDED.notification_id,"
                " updated_at = now()",
                (self.name, notification_id),
            )

    # -- loop -------------------------------------------------------------------------------

    def _read(self, after: int) -> list[StoredRow] | list[int]:
        """The next page: with encoder processes only its notification ids (the encoders read the
        events themselves, ``_publish_listed``), otherwise its rows."""
        if self.encoders > 0:
            return self._log.ids(after, self.batch_size)
        return self._log.page(after, self.batch_size)

    async def _publish_listed(
        self, producer: AIOKafkaProducer, after: int, ids: list[int], stop: asyncio.Event
    ) -> bool:
        """Publish the page of notifications ``ids`` (those after ``after``): read and encoded by the
        encoder processes, or, where the page is short or traced (``publish``), read here and
        encoded in process. False when stopped while waiting for PostgreSQL."""
        if self._pool is not None and not telemetry.tracing_enabled() and len(ids) >= self.encoder_min_page:
            await self._publish_pooled(producer, self._pool, after, ids)
            return True
        rows = await self._retrying(lambda: self._log.between(after, ids[-1]), stop)
        if rows is None:
            return False
        await self.publish(producer, rows)
        return True

    async def publish(self, producer: AIOKafkaProducer, rows: Sequence[StoredRow]) -> None:
        # Spans only where something records them: creating one costs about 25 µs, more than the
        # relay's whole budget per event. With tracing on, one PRODUCER span per sampled event
        # (parent: the event's stored trace context; unsampled events, e.g. under
        # OTEL_TRACES_SAMPLER=parentbased_traceidratio, pass their context on unchanged), ended
        # once the page is acknowledged. The message carries the span's own context, so the
        # consumers' spans are its children.
        tracing = telemetry.tracing_enabled()
        spans: list[Span] = []
        page = _PageSender(producer)
        topic_of = self.settings.topic
        try:
            for row in rows:
                # Without tracing nothing needs the OutboundEvent: the direct path, when it takes
                # the event (the same bytes, engine/relay_direct.py).
                direct = None if tracing else encode_direct(row[1], row[2], row[3], row[4])
                if direct is not None:
                    await page.add(topic_of(direct[0]), direct[1], direct[2], direct[3])
                    continue
                try:
                    # Straight from the stored JSON (no cipher or compressor is configured on the store).
                    message = encode_stored(row[1], row[2], row[3], row[4])
                except Exception as exc:
                    # What was appended before it is still delivered (the caller stores that position).
                    await page.delivered()
                    published.add(page.count, {"relay": self.name})
                    stored = Notification(
                        id=row[0], originator_id=row[1], originator_version=row[2], topic=row[3], state=row[4]
                    )
                    raise UnencodableEvent(stored, exc) from exc
                outbound = message.outbound
                topic = topic_of(outbound.topic)
                headers = message.headers
                if tracing and (not outbound.stored_trace or telemetry.is_sampled(outbound.traceparent)):
                    span = _publish_span(outbound, topic, row[0])
                    spans.append(span)
                    traceparent = telemetry.span_traceparent(span) or outbound.traceparent
                    headers = [*headers[:-1], ("traceparent", traceparent.encode())]
                await page.add(topic, message.key, message.value, headers)
            await page.delivered()
        except BaseException as exc:
            page.abandon()
            for span in spans:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
            raise
        finally:
            for span in spans:
                span.end()
        published.add(len(rows), {"relay": self.name})

    async def _publish_pooled(
        self, producer: AIOKafkaProducer, pool: EncoderPool, after: int, ids: list[int]
    ) -> None:
        """``publish`` with the page encoded by the encoder processes (no spans: tracing encodes in
        process). An event an encoder could not encode is encoded here again, to stop with the
        same error, after the events before it are delivered."""
        page = _PageSender(producer)
        topic_of = self.settings.topic
        # Listed once per page, as the page sender does for what it appends itself (a topic given
        # more partitions is seen from the next page on).
        partitions = {}
        for logical in self._topics_seen:
            topic = topic_of(logical)
            partitions[logical] = page.partitions[topic] = sorted(await producer.partitions_for(topic))
        accumulator = producer._message_accumulator
        spec = BatchSpec(accumulator._batch_size, accumulator._compression_type, partitions)
        # Chunks as ranges of notification ids: each encoder reads its events itself, so the relay
        # process neither receives nor pickles them (py-spy, GIL samples of the relay process in a
        # 50,000-event catch-up: reading the rows 35%, pickling them to the encoders 24%).
        url, schema, table, size = (
            self.settings.database_url,
            self.settings.db_schema,
            self._log.table,
            pool.chunk_size,
        )
        chunked = [
            (start, LogRange(url, schema, table, ids[start - 1] if start else after, part[-1], len(part)))
            for start in range(0, len(ids), size)
            if (part := ids[start : start + size])
        ]
        try:
            async with contextlib.aclosing(pool.encode(chunked, spec)) as chunks:
                async for _, built, loose, failed in chunks:
                    for topic, partition, data, count in built:
                        page.add_built(topic_of(topic), partition, data, count)
                    self.stats.built_batches += len(built)
                    for topic, key, value, headers, key_hash in loose:
                        await page.add(topic_of(topic), key, value, headers, key_hash)
                        self._topics_seen.add(topic)
                    self.stats.appended_here += len(loose)
                    if failed is not None:
                        (row,) = await asyncio.to_thread(self._log.between, ids[failed] - 1, ids[failed])
                        try:
                            encode_stored(row[1], row[2], row[3], row[4])
                        except Exception as exc:
                            await page.delivered()
                            published.add(page.count, {"relay": self.name})
                            stored = Notification(
                                id=row[0],
                                originator_id=row[1],
                                originator_version=row[2],
                                topic=row[3],
                                state=row[4],
                            )
                            raise UnencodableEvent(stored, exc) from exc
                        # Encoded here but not there: the encoders run other code than this process.
                        raise RuntimeError(f"notification {row[0]} failed in an encoder process only")
            await page.delivered()
        except BaseException:
            page.abandon()
            raise
        self.stats.pooled_pages += 1
        published.add(len(ids), {"relay": self.name})

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        if self.encoders > 0 and self._pool is None:
            # Started before the producer and the first read: a spawned encoder imports the engine
            # (about a second), which then overlaps the relay's own start-up, and the writers this
            # process needs for short pages are compiled meanwhile (relay_direct.prepare).
            self._pool, *_ = await asyncio.gather(
                asyncio.to_thread(EncoderPool, self.encoders, self.encoder_chunk),
                asyncio.to_thread(relay_direct.prepare),
                asyncio.to_thread(_zero_bytes_tables),
            )
        producer = await self._start_producer(stop)
        if producer is None:
            self._close_pool()
            return
        if self.encoders > 0:
            await self._list_topics(producer)
        next_read: asyncio.Future[Any] | None = None
        try:
            position = await self._retrying(self.load_position, stop)
            if position is None:
                return
            self.stats.position = position
            log.info("relay %s starting after notification %d", self.name, position)
            while not stop.is_set():
                if next_read is None:
                    next_read = self._read_after(self.stats.position, stop)
                notifications = await next_read
                next_read = None
                if notifications is None:
                    return
                if not notifications:
                    await _wait(stop, self.idle_wait)
                    continue
                last = _id(notifications[-1])
                # Read the next page while this one is encoded and published: the database's work
                # and the transfer overlap the CPU-bound encoding. Only positions are stored, after
                # the acknowledgements, so a failure below just discards the read-ahead.
                next_read = self._read_after(last, stop)
                try:
                    if self.encoders > 0:
                        if not await self._publish_listed(producer, self.stats.position, notifications, stop):
                            return
                    else:
                        await self.publish(producer, notifications)
                except UnencodableEvent as exc:
                    await _discard(next_read)
                    next_read = None
                    before = [i for i in map(_id, notifications) if i < exc.notification_id]
                    if before:
                        await self._retrying(lambda: self.save_position(before[-1]), stop)  # noqa: B023
                        self.stats.position = before[-1]
                        self.stats.published += len(before)
                    log.critical(
                        "relay %s stopped: %s. Nothing after it is published until the mapping or"
                        " schema is fixed; the event stays in the store and is published then",
                        self.name,
                        exc,
                        extra={
                            "alert": True,
                            "notification_id": exc.notification_id,
                            "originator_id": exc.originator_id,
                            "originator_version": exc.originator_version,
                            "stored_topic": exc.stored_topic,
                        },
                    )
                    raise
                except db.DatabaseUnavailable as exc:
                    # An encoder could not read its range of the page.
                    log.warning("PostgreSQL unavailable (%s); will retry the same page", exc)
                    await _discard(next_read)
                    next_read = None
                    await _wait(stop, 1.0)
                    continue
                except KafkaError as exc:
                    log.warning("publish failed, will retry the same page: %s", exc)
                    await _discard(next_read)
                    next_read = None
                    await _wait(stop, 1.0)
                    continue
                except EncoderLost as exc:
                    # An encoder killed under us (OOM killer, an operator): new encoders, and the
                    # page again from the stored position (what was sent of it is sent again).
                    await _discard(next_read)
                    next_read = None
                    self._close_pool()
                    if stop.is_set():  # a SIGTERM to the process group reached the encoders too
                        return
                    log.warning("%s; starting new encoders, will retry the same page", exc)
                    self._pool = await asyncio.to_thread(EncoderPool, self.encoders, self.encoder_chunk)
                    self.stats.encoder_restarts += 1
                    continue
                if await self._retrying(lambda: self.save_position(last), stop) is None:  # noqa: B023
                    return
                self.stats.position = last
                self.stats.published += len(notifications)
                self.stats.batches += 1
        finally:
            await _discard(next_read)
            await producer.stop()
            self._close_connections()
            self._close_pool()

    def _close_pool(self) -> None:
        if self._pool is not None:
            with contextlib.suppress(Exception):
                self._pool.close()
            self._pool = None

    def _close_connections(self) -> None:
        with contextlib.suppress(Exception):
            self._log.close()
        if self._positions is not None:
            with contextlib.suppress(Exception):
                self._positions.close()
            self._positions = None

    def _read_after(self, after: int, stop: asyncio.Event) -> asyncio.Future[Any]:
        return asyncio.ensure_future(self._retrying(lambda: self._read(after), stop))

    async def _list_topics(self, producer: AIOKafkaProducer) -> None:
        """Count the topics that already exist as seen, so that the encoders build their batches
        from the first page on. Otherwise the first page after a start came back message by
        message, to be appended here: in the bench's 50,000-event catch-up that was a tenth of the
        backlog and about a fifth of this process's CPU. A topic that does not exist yet is left
        to its first page, as before (listing it here would create it); so is everything when
        Kafka does not answer."""
        try:
            existing = (await producer.client.fetch_all_metadata()).topics()
            for logical in _LOGICAL_TOPICS:
                if self.settings.topic(logical) in existing:
                    await producer.partitions_for(self.settings.topic(logical))
                    self._topics_seen.add(logical)
        except (KafkaError, TimeoutError) as exc:
            log.warning("could not list Kafka's topics (%s); the first page is batched here", exc)

    async def _start_producer(self, stop: asyncio.Event) -> AIOKafkaProducer | None:
        delay = 0.5
        while not stop.is_set():
            try:
                return await kafka.start_producer(self.settings, "bulk")
            except kafka.KAFKA_ERRORS as exc:
                log.warning("Kafka not reachable (%s); retrying in %.1fs", exc, delay)
                await _wait(stop, delay)
                delay = min(delay * 2, 10)
        return None

    async def _retrying(self, work, stop: asyncio.Event):
        """Run blocking database work in a thread, retrying while PostgreSQL is unreachable."""
        delay = 0.5
        while not stop.is_set():
            try:
                result = await asyncio.to_thread(work)
                return result if result is not None else True
            except db.DatabaseUnavailable as exc:
                log.warning("PostgreSQL unavailable (%s); retrying in %.1fs", exc, delay)
            except Exception as exc:
                if not _is_connection_error(exc):
                    raise
                # Nothing to reset: each connection, once broken, is replaced on its next use (the
                # reader and the position writer may be in different threads just then).
                log.warning("PostgreSQL connection lost (%s); retrying in %.1fs", exc, delay)
            await _wait(stop, delay)
            delay = min(delay * 2, 10)
        return None


def keep_freed_memory() -> None:
    """Have glibc's allocator keep freed memory for reuse instead of handing it back to the kernel.

    The relay process moves every published byte through large short-lived buffers: a chunk's
    results from an encoder (~0.7 MB), the record batches, and aiokafka's produce request, which is
    joined once per nesting level (~1 MB, eight times over). With glibc's defaults those were
    returned on free (heap trimmed, ``brk``/``madvise``) and faulted in again, zeroed, on the next
    page: under ``perf`` page faults and the kernel's unmapping were most of the process's system
    time, which was half its CPU (bench backlog of 50,001, relay process 5.6-5.8 µs per event, of
    which 2.4-3.0 system; with these settings 3.0-3.2 and 0.6-1.0). The process then stays near
    its peak size (about 120 MB) instead of shrinking between pages. Nothing happens where the C
    library has no ``mallopt`` (not glibc)."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    # Blocks up to 32 MiB (glibc's largest threshold) from the heap, not from mmap, which unmaps each
    # one on free; and up to 256 MiB freed at the heap's top kept rather than trimmed.
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_trim_threshold, 256 << 20)


def _publish_span(outbound: OutboundEvent, topic: str, notification_id: int) -> Span:
    return telemetry.tracer.start_span(
        f"publish {outbound.topic}",
        context=telemetry.parent_context(outbound.traceparent) if outbound.stored_trace else None,
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.destination.name": topic,
            "messaging.kafka.message.key": outbound.key,
            "messaging.message.id": outbound.ce_id,
            "cloudevents.event_type": outbound.ce_type,
            "ledgerflow.tenant_id": outbound.tenant_id,
            "ledgerflow.notification_id": notification_id,
        },
    )


def _id(item: int | StoredRow) -> int:
    """The notification id of a page item (an id, or a row)."""
    return item if isinstance(item, int) else item[0]


def _is_connection_error(exc: Exception) -> bool:
    return db.is_outage(exc)


async def _discard(read: asyncio.Future[Any] | None) -> None:
    """Cancel a read-ahead (its thread finishes on its own; the result is dropped)."""
    if read is not None:
        read.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await read


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
