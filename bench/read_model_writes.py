"""PostgreSQL alone storing the rows a projection stage wrote: the stage's ceiling on this machine
with these read models, measured in the same run (issue 15, as the API's bare event-store saves).

The rows already in the tables are copied out in binary, the tables emptied, and the same rows
stored again by as many writers as the projector has processes: per transaction one binary COPY of
one table's next 2,500 rows (the projector's batch) and one position update, the tables of a batch
one after the other as the projector writes them. No Kafka, no decoding, no Python per row: what is
left is PostgreSQL's own work for these rows (input functions such as JSON validation, TOAST
compression, index inserts, WAL). The projector's own SQL does more (the audit trail's previous
state and actor lookups, upserts), so its PostgreSQL CPU per event is above this one's.
"""

from __future__ import annotations

import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from bench.env import cpu_since, postgres_cpu

ROWS_PER_TRANSACTION = 2_500  # projections/runner.py, BATCH_ROWS_ONLY
# PostgreSQL's binary COPY framing ("COPY", File Formats): an 11-byte signature, a 32-bit flags
# field and a 32-bit header-extension length; then per tuple a 16-bit field count and per field a
# 32-bit length (-1 for NULL) and its bytes; a field count of -1 ends the data.
_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_TRAILER = struct.pack("!h", -1)
_POSITIONS = "bench_bare_write_positions"


@dataclass(frozen=True)
class BareWrites:
    tables: list[str]
    events: int
    rows: int
    seconds: float
    postgres_cpu_s: float
    writers: int

    @property
    def rate(self) -> float:
        """Events/s: the events whose rows were stored, over the wall time of storing them."""
        return self.events / self.seconds

    @property
    def postgres_us_per_event(self) -> float:
        return 1e6 * self.postgres_cpu_s / self.events

    def summary(self) -> dict[str, object]:
        """The figures for the bench's results file."""
        return {**self.__dict__, "rate": self.rate}


def split_copy(data: bytes, rows: int) -> Iterator[tuple[bytes, int]]:
    """Cut one binary COPY stream into streams of at most ``rows`` tuples each, each framed alone."""
    view = memoryview(data)
    if bytes(view[:11]) != _SIGNATURE:
        raise ValueError("not a binary COPY stream")
    (extension,) = struct.unpack_from("!I", data, 15)
    header = bytes(view[: 19 + extension])
    position = start = len(header)
    count = 0
    while True:
        (fields,) = struct.unpack_from("!h", data, position)
        if fields == -1:
            break
        position += 2
        for _ in range(fields):
            (length,) = struct.unpack_from("!i", data, position)
            position += 4 + max(length, 0)
        count += 1
        if count == rows:
            yield header + bytes(view[start:position]) + _TRAILER, count
            start, count = position, 0
    if count:
        yield header + bytes(view[start:position]) + _TRAILER, count


def _columns(conn: psycopg.Connection, table: str) -> sql.Composable:
    """The columns COPY can write back (not generated ones), in table order."""
    names = [
        row[0]
        for row in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
            " AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
            (table,),
        )
    ]
    return sql.SQL(", ").join(map(sql.Identifier, names))


def store_again(
    connect: Callable[[], psycopg.Connection],
    tables: list[str],
    events: int,
    writers: int,
    progress: Callable[[int], object] | None = None,
) -> BareWrites:
    """Copy ``tables``' rows out, empty the tables and time PostgreSQL storing the same rows again.

    ``connect`` gives an autocommit connection on the run's schema; ``events`` is how many events
    the rows came from (the rate is per event, as the stage's). The tables hold the same rows after
    (checked); if a write fails they are left part-filled, and the run stops with its error.
    """
    with tempfile.TemporaryDirectory(prefix="ledgerflow-bench-rows-") as scratch:
        # Chunks on disk: five read models of 50,000 invoices are ~0.5 GB uncompressed, so only
        # one table's stream is in memory at a time (twice, while it is cut).
        chunks: dict[str, list[tuple[Path, int]]] = {}
        columns: dict[str, sql.Composable] = {}
        with connect() as conn:
            for table in tables:
                columns[table] = _columns(conn, table)
                out = bytearray()
                query = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT (FORMAT BINARY)").format(
                    columns[table], sql.Identifier(table)
                )
                with conn.cursor().copy(query) as copy:
                    for block in copy:
                        out += block
                chunks[table] = []
                for index, (chunk, count) in enumerate(split_copy(bytes(out), ROWS_PER_TRANSACTION)):
                    path = Path(scratch, f"{table}.{index}")
                    path.write_bytes(chunk)
                    chunks[table].append((path, count))
            rows = sum(count for table in tables for _, count in chunks[table])
            written = [table for table in tables if chunks[table]]
            conn.execute(
                sql.SQL("CREATE TABLE IF NOT EXISTS {} (writer int PRIMARY KEY, position bigint)").format(
                    sql.Identifier(_POSITIONS)
                )
            )
            for table in tables:
                conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(table)))
            # Nothing of the stage's own writes left for the timed ones to flush.
            conn.execute("CHECKPOINT")
        try:
            seconds, cpu = _timed_writes(connect, written, columns, chunks, writers, progress)
        finally:
            with connect() as conn:
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(_POSITIONS)))
        with connect() as conn:
            for table in tables:
                stored = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
                count = stored.fetchone()[0]  # type: ignore[index]
                expected = sum(n for _, n in chunks[table])
                if count != expected:
                    raise RuntimeError(f"{table}: {count} rows stored again of {expected}")
    return BareWrites(list(tables), events, rows, seconds, cpu, writers)


def _timed_writes(
    connect: Callable[[], psycopg.Connection],
    tables: list[str],
    columns: dict[str, sql.Composable],
    chunks: dict[str, list[tuple[Path, int]]],
    writers: int,
    progress: Callable[[int], object] | None,
) -> tuple[float, float]:
    """(wall seconds, PostgreSQL CPU seconds) of ``writers`` threads storing the chunks. Each writer's
    connection is open before the first CPU sample and after the last, so that its server process's
    CPU is counted whole."""
    batches = max(len(c) for c in chunks.values())
    # connected: every writer's server process exists before the first CPU sample; ready: no writer
    # starts before that sample (taking it reads every process's counters, which takes a while);
    # finished, then released: no writer's connection closes before the last sample (a server
    # process gone by then is not counted: in some runs the register's figure was half).
    connected = threading.Barrier(writers + 1)
    ready = threading.Barrier(writers + 1)
    finished = threading.Barrier(writers + 1)
    released = threading.Barrier(writers + 1)
    errors: list[BaseException] = []
    lock = threading.Lock()

    def write(writer: int) -> None:
        try:
            with connect() as conn:
                conn.autocommit = False
                conn.execute(
                    sql.SQL("INSERT INTO {} VALUES (%s, 0) ON CONFLICT DO NOTHING").format(
                        sql.Identifier(_POSITIONS)
                    ),
                    (writer,),
                )
                conn.commit()
                connected.wait()
                ready.wait()
                try:
                    for batch in range(writer, batches, writers):
                        for table in tables:
                            if batch >= len(chunks[table]):
                                continue
                            path, count = chunks[table][batch]
                            data = path.read_bytes()
                            with conn.transaction():
                                query = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
                                    sql.Identifier(table), columns[table]
                                )
                                with conn.cursor().copy(query) as copy:
                                    copy.write(data)
                                conn.execute(
                                    sql.SQL("UPDATE {} SET position = %s WHERE writer = %s").format(
                                        sql.Identifier(_POSITIONS)
                                    ),
                                    (batch, writer),
                                )
                            if progress is not None and table == tables[0]:
                                with lock:
                                    progress(count)
                finally:
                    finished.wait()
                    released.wait()
        except threading.BrokenBarrierError:
            pass
        except BaseException as error:  # reported by the caller
            errors.append(error)
            for barrier in (connected, ready, finished, released):
                barrier.abort()

    threads = [threading.Thread(target=write, args=(w,), daemon=True) for w in range(writers)]
    for thread in threads:
        thread.start()
    try:
        connected.wait()
        before = postgres_cpu()
        started = time.perf_counter()
        ready.wait()
        finished.wait()
        seconds, cpu = time.perf_counter() - started, cpu_since(before)
        released.wait()
    except threading.BrokenBarrierError:
        seconds = cpu = 0.0
    except BaseException:
        for barrier in (connected, ready, finished, released):
            barrier.abort()  # no writer left waiting with its connection open
        raise
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return seconds, cpu
