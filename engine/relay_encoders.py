"""Encoder processes for the relay: a page's stored events turned into Kafka messages on other cores.

Encoding (JSON decode, the Avro record, the precompiled writer, the CloudEvents headers) is about
85 µs of Python per 5-line invoice and holds the GIL, so one relay process tops out near 10,000
events/s whatever Kafka and PostgreSQL could take (docs/performance.md, "What limits each stage").
Here each encoder is a spawned process running :func:`engine.publishing.encode_stored`, the very
function the relay calls in process, on chunks of a page; the relay process lists a page's
notification ids, hands each encoder ranges of them (``LogRange``), and queues the returned batches
in notification order and waits for the acknowledgements. The bytes are the same by construction
(same function); the order is kept because the chunks' results are taken in page order, whichever
encoder finishes first.

Each encoder reads its ranges from PostgreSQL itself, over a session of its own: the stored events
(about 5.3 KB of JSON each in the bench) then never pass through the relay process. Profiled with
py-spy (GIL samples of the relay process, 50,000-event catch-up), reading them there and pickling
them to the encoders had been 35% and 24% of the relay process. A range PostgreSQL cannot serve
(an outage, a dropped session) comes back as such, and the relay waits and publishes the page again.

An encoder also appends its chunk's messages to Kafka record batches, one per partition (aiokafka's
own builder, the one ``producer.create_batch()`` wraps, with the producer's batch size and
compression), and returns the built batches: the relay process only hands them to the producer.
Profiled with py-spy (GIL samples of the relay process, 50,000-event catch-up), taking the
messages back one by one (unpickling each message's key, value and nine header tuples, then
``BatchBuilder.append``) was about 15% of the relay process; a built batch is one bytes object. The
idempotent producer's id, epoch and sequence are written into a batch when it is drained
(``BuiltBatch``). Messages of a topic whose partitions the relay had not listed yet come back one
by one, as before, and the relay appends them itself.

A chunk goes to an encoder over its own pipe, one chunk in flight per encoder: a second one would
have the two ends block on each other's full pipe buffers. An encoder exits when its pipe closes,
so a relay killed with SIGKILL leaves no encoder behind even where its process group is not killed
with it. An event an encoder cannot encode is reported by its index only; the relay encodes that one
event itself, so the error it stops with (``UnencodableEvent``) is exactly the in-process one.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from engine.db import DatabaseUnavailable
from engine.errors import Unavailable

# (logical topic, key, Avro value, CloudEvents headers, the key's positive murmur2 hash): what the
# relay appends for one event; the hash (the partitioner's, engine.kafka.partition_for) is taken here
# too, one more share of the per-event work off the relay process.
EncodedMessage = tuple[str, bytes, bytes, list[tuple[str, bytes]], int]
# (notification id, originator id, originator version, stored topic, state): the relay's row.
StoredEvent = tuple[int, Any, int, str, bytes]
# (logical topic, partition, a built record batch, its records): one batch of a chunk. The builder's
# own bytearray, unpickled as one: the relay writes the producer state into it (BuiltBatch) without
# copying it first.
EncodedBatch = tuple[str, int, bytearray, int]
# What the relay and the encoders select of a stored event (the relay's StoredRow): the originator
# id as text, which is what encoding uses of it (engine/relay.py, NotificationLog.page).
LOG_COLUMNS = "notification_id, originator_id::text, originator_version, topic, state"


@dataclass(frozen=True)
class LogRange:
    """A chunk the encoder reads from the notification log itself: the ``count`` stored events with
    notification ids in (``after``, ``last``], whose ids the relay has listed. Rows are not inserted
    into a range already read (inserts are serialised: engine/relay.py's docstring), so the
    encoder reads exactly those; it checks the count all the same."""

    database_url: str
    db_schema: str
    table: str
    after: int
    last: int
    count: int


@dataclass(frozen=True)
class BatchSpec:
    """How the relay's producer builds a record batch (``create_batch``): an encoder builds the
    same, for the partitions known to the relay (logical topic -> partition ids, sorted)."""

    batch_size: int
    compression_type: int
    partitions: Mapping[str, list[int]]


class EncoderLost(Unavailable):
    """An encoder process died (OOM killer, a signal); the relay stops and is restarted, the page is
    published again from its stored position."""


def encode_chunk(rows: Sequence[StoredEvent]) -> tuple[list[EncodedMessage], int | None]:
    """The messages of ``rows`` in order, up to the first one that cannot be encoded, and that one's
    index (``None`` when all could be)."""
    from engine.kafka import murmur2
    from engine.publishing import encode_stored
    from engine.relay_direct import encode_direct

    messages: list[EncodedMessage] = []
    append = messages.append
    for index, (_, originator_id, version, topic, state) in enumerate(rows):
        # The direct path first (the same bytes, engine/relay_direct.py), the general one otherwise.
        direct = encode_direct(originator_id, version, topic, state)
        if direct is not None:
            append((*direct, murmur2(direct[1]) & 0x7FFFFFFF))
            continue
        try:
            encoded = encode_stored(originator_id, version, topic, state)
        except Exception:
            return messages, index
        key = encoded.key
        append((encoded.outbound.topic, key, encoded.value, encoded.headers, murmur2(key) & 0x7FFFFFFF))
    return messages, None


def batch_chunk(
    rows: Sequence[StoredEvent], spec: BatchSpec
) -> tuple[list[EncodedBatch], list[EncodedMessage], int | None]:
    """The messages of ``rows`` (as ``encode_chunk``) in built record batches: for each partition, its
    batches in order, each closed when full as the relay's own (``_PageSender``); the messages of
    topics missing from ``spec.partitions`` apart, in order; the index of the event that could not
    be encoded (``None`` when all could be)."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    messages, failed = encode_chunk(rows)
    built: list[EncodedBatch] = []
    loose: list[EncodedMessage] = []
    # (topic, partition) -> [builder, records in it]
    open_: dict[tuple[str, int], list[Any]] = {}
    partitions = spec.partitions

    def new() -> list[Any]:
        # As aiokafka's BatchBuilder (create_batch) makes it for a producer that is not transactional;
        # the producer id, epoch and base sequence are set by the relay (BuiltBatch).
        builder = DefaultRecordBatchBuilder(2, spec.compression_type, 0, -1, -1, 0, spec.batch_size)
        return [builder, 0]

    for message in messages:
        topic, key, value, headers, key_hash = message
        ids = partitions.get(topic)
        if ids is None:
            loose.append(message)
            continue
        tp = (topic, ids[key_hash % len(ids)])
        batch = open_.get(tp)
        if batch is None:
            batch = open_[tp] = new()
        if batch[0].append(batch[1], None, key, value, headers) is None:
            built.append((*tp, batch[0].build(), batch[1]))
            batch = open_[tp] = new()
            # A batch's first message always fits (the builder grows), as with send().
            batch[0].append(0, None, key, value, headers)
        batch[1] += 1
    for tp, (builder, count) in open_.items():
        built.append((*tp, builder.build(), count))
    return built, loose, failed


class _LogReader:
    """The encoder's own connection to the event store, opened on first use, replaced when broken."""

    def __init__(self) -> None:
        self.conn: Any = None
        self.target: tuple[str, str] | None = None

    def rows(self, chunk: LogRange) -> list[StoredEvent]:
        import psycopg
        from psycopg import sql

        target = (chunk.database_url, chunk.db_schema)
        if self.conn is None or self.conn.closed or self.conn.broken or self.target != target:
            if self.conn is not None:
                self.conn.close()
            # As engine.db.connect, with the relay's settings.
            self.conn = psycopg.connect(
                chunk.database_url,
                autocommit=True,
                connect_timeout=5,
                options=f"-c search_path={chunk.db_schema}",
            )
            self.target = target
        query = sql.SQL(
            "SELECT " + LOG_COLUMNS + " FROM {} WHERE notification_id > %s AND notification_id <= %s"
            " ORDER BY notification_id"
        ).format(sql.Identifier(chunk.table))
        # Binary, as the relay's own reader (bytea as the stored bytes).
        with self.conn.cursor(binary=True) as cursor:
            cursor.execute(query, (chunk.after, chunk.last))
            rows: list[StoredEvent] = cursor.fetchall()
        return rows


def serve_chunk(log: _LogReader, chunk: Sequence[StoredEvent] | LogRange, spec: BatchSpec) -> tuple[Any, ...]:
    """One request: ``("ok", built, loose, failed)`` (``batch_chunk``), or, for a chunk read here,
    ``("unavailable", message)`` when PostgreSQL is unreachable (the relay waits and publishes the
    page again) or ``("error", message)`` for anything else the read raised."""
    from engine.db import is_outage

    if isinstance(chunk, LogRange):
        try:
            rows = log.rows(chunk)
        except Exception as exc:
            return ("unavailable" if is_outage(exc) else "error", f"{type(exc).__name__}: {exc}")
        if len(rows) != chunk.count:
            return (
                "error",
                f"notification log range ({chunk.after}, {chunk.last}] has {len(rows)} events,"
                f" the relay listed {chunk.count}",
            )
        chunk = rows
    return ("ok", *batch_chunk(chunk, spec))


def _serve(conn: Connection) -> None:
    """An encoder's loop: a pickled chunk and batch spec in, its pickled batches out, until the pipe
    closes."""
    import gc

    # The engine's imports, done before the relay counts on this encoder.
    import aiokafka.record.default_records  # noqa: F401

    import engine.kafka
    import engine.publishing
    import engine.relay_direct

    # The direct path's writers too (~80 ms for Invoice.Issued): compiled on the first chunk, they
    # were a first chunk of ~92 ms against ~12 ms for the next ones, in each encoder at once, after
    # the relay had said it was starting (docs/performance.md, "relay-murmur2").
    engine.relay_direct.prepare()
    log = _LogReader()
    conn.send_bytes(b"ready")
    # As the relay process itself (engine/cli.py): a chunk allocates thousands of containers.
    gc.set_threshold(50_000, 20, 100)
    parent = os.getppid()
    while True:
        try:
            # Wake now and then to notice a parent gone without closing the pipe (a forked holder).
            if not conn.poll(5.0):
                if os.getppid() != parent:
                    return
                continue
            payload = conn.recv_bytes()
        except (EOFError, OSError):
            return
        chunk, spec = pickle.loads(payload)
        conn.send_bytes(pickle.dumps(serve_chunk(log, chunk, spec), pickle.HIGHEST_PROTOCOL))


class _Encoder:
    def __init__(self) -> None:
        # A plain child interpreter (`python -m engine.relay_encoders FD`) on one end of a socket
        # pair: multiprocessing's spawn would re-run the parent's __main__ in it.
        ours, theirs = socket.socketpair()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "engine.relay_encoders", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self.conn = Connection(ours.detach())
        self.lock = threading.Lock()

    def wait_ready(self) -> None:
        try:
            self.conn.recv_bytes()
        except (EOFError, OSError) as exc:
            raise EncoderLost(f"relay encoder process {self.process.pid} did not start: {exc}") from exc

    def call(self, payload: bytes) -> bytes:
        """Send a pickled chunk, return the pickled result. Both are (un)pickled by the caller in the
        event loop's thread: done in the worker threads, the page's objects are allocated in their
        malloc arenas, which glibc keeps per thread (the relay process peaked at 273-289 MB in two
        50,000-event bench runs that way, 234-238 MB in two runs this way)."""
        with self.lock:
            try:
                self.conn.send_bytes(payload)
                return self.conn.recv_bytes()
            except (EOFError, OSError) as exc:
                raise EncoderLost(f"relay encoder process {self.process.pid} is gone: {exc}") from exc

    def close(self) -> None:
        # The closed socket ends the encoder's loop.
        self.conn.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


class EncoderPool:
    """``workers`` encoder processes; :meth:`encode` yields a page's messages chunk by chunk, in order."""

    def __init__(self, workers: int, chunk_size: int = 500) -> None:
        if workers < 1:
            raise ValueError("an encoder pool needs at least one encoder")
        self.chunk_size = chunk_size
        # Fresh interpreters: nothing of the relay's threads, sockets or event loop is copied.
        self._encoders = [_Encoder() for _ in range(workers)]
        for encoder in self._encoders:
            encoder.wait_ready()

    @property
    def pids(self) -> list[int]:
        return [e.process.pid for e in self._encoders]

    async def encode(
        self, page: Sequence[tuple[int, Sequence[StoredEvent] | LogRange]], spec: BatchSpec
    ) -> AsyncGenerator[tuple[int, list[EncodedBatch], list[EncodedMessage], int | None], None]:
        """For each chunk of a page in order, given as (index of its first event in the page, its
        rows or the range the encoder reads them from): (that index, its built batches and loose
        messages (``batch_chunk``), the index in the page of an event that could not be encoded, or
        ``None``). Every encoder works on its next chunk while earlier ones are consumed; an
        abandoned iteration lets the chunks in flight finish and drops them. A range PostgreSQL
        could not be read for raises ``DatabaseUnavailable``."""
        starts = [start for start, _ in page]
        chunks = [chunk for _, chunk in page]
        loop = asyncio.get_running_loop()
        results: list[asyncio.Future[bytes]] = [loop.create_future() for _ in chunks]

        async def work(encoder: _Encoder, mine: range) -> None:
            for i in mine:
                if results[i].done():  # cancelled: the page was abandoned
                    return
                try:
                    payload = pickle.dumps((chunks[i], spec), pickle.HIGHEST_PROTOCOL)
                    outcome = await asyncio.to_thread(encoder.call, payload)
                except BaseException as exc:
                    if not results[i].done():
                        results[i].set_exception(exc)
                    return
                if not results[i].done():
                    results[i].set_result(outcome)

        count = len(self._encoders)
        tasks = [
            asyncio.ensure_future(work(encoder, range(n, len(chunks), count)))
            for n, encoder in enumerate(self._encoders)
        ]
        try:
            for start, result in zip(starts, results, strict=True):
                outcome = pickle.loads(await result)
                if outcome[0] == "unavailable":
                    raise DatabaseUnavailable(f"relay encoder reading the notification log: {outcome[1]}")
                if outcome[0] != "ok":
                    raise RuntimeError(f"relay encoder reading the notification log: {outcome[1]}")
                _, built, loose, failed = outcome
                yield start, built, loose, None if failed is None else start + failed
                if failed is not None:
                    return
        finally:
            for future in results:
                if not future.done():
                    future.cancel()
            # Let each encoder's call in flight complete (its thread holds the pipe) before the
            # next page uses the encoder; nothing is consumed from them.
            await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        for encoder in self._encoders:
            encoder.close()


if __name__ == "__main__":
    # From the module under its own name, not __main__: the relay pickles a BatchSpec by that name.
    from engine.relay_encoders import _serve as serve

    serve(Connection(int(sys.argv[1])))
