"""``ledgerflow export``: one reporting view to a CSV or Parquet file, streamed in chunks.

Rows come through a server-side cursor and are written chunk by chunk (Parquet: one record batch
per chunk), so memory stays flat whatever the size of the view. The file appears under its name
only when complete: rows go to ``<name>.partial`` first, which is renamed at the end.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal, Protocol
from uuid import UUID

import pyarrow as pa
import pyarrow.parquet as pq

from engine import db
from engine.config import Settings
from projections import reporting

Format = Literal["csv", "parquet"]
FORMATS: tuple[Format, ...] = ("csv", "parquet")


class ExportProgress(Protocol):
    def start(self, total_rows: int) -> None: ...

    def advance(self, rows: int) -> None: ...


@dataclass(frozen=True)
class ExportResult:
    path: Path
    rows: int


_NUMERIC = re.compile(r"numeric\((\d+),(\d+)\)")


def arrow_type(pg_type: str) -> pa.DataType:
    """The Parquet (Arrow) type of a reporting column: decimals stay exact decimals."""
    numeric = _NUMERIC.fullmatch(pg_type)
    if numeric:
        return pa.decimal128(int(numeric.group(1)), int(numeric.group(2)))
    simple: dict[str, pa.DataType] = {
        "uuid": pa.string(),
        "text": pa.string(),
        "date": pa.date32(),
        "boolean": pa.bool_(),
        "integer": pa.int32(),
        "bigint": pa.int64(),
        "timestamp with time zone": pa.timestamp("us", tz="UTC"),
    }
    if pg_type not in simple:
        raise ValueError(f"no Parquet type for the PostgreSQL type {pg_type}")
    return simple[pg_type]


def arrow_schema(chosen: reporting.Report) -> pa.Schema:
    return pa.schema(
        [
            pa.field(c.name, arrow_type(c.type), metadata={"description": c.description})
            for c in chosen.columns
        ],
        metadata={"ledgerflow.report": chosen.name, "description": chosen.description},
    )


class _CsvSink:
    def __init__(self, path: Path, chosen: reporting.Report) -> None:
        self._file = path.open("w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file, lineterminator="\r\n")
        self._writer.writerow(chosen.column_names)
        self._chosen = chosen

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        self._writer.writerows(reporting.csv_row(self._chosen, row) for row in rows)

    def close(self) -> None:
        self._file.close()


class _ParquetSink:
    def __init__(self, path: Path, chosen: reporting.Report) -> None:
        self._schema = arrow_schema(chosen)
        self._uuid_columns = {i for i, c in enumerate(chosen.columns) if c.type == "uuid"}
        self._writer = pq.ParquetWriter(str(path), self._schema, compression="zstd")

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        columns = list(zip(*rows, strict=True))
        arrays = [
            pa.array(
                [None if v is None else str(v) for v in values] if i in self._uuid_columns else values,
                type=self._schema.field(i).type,
            )
            for i, values in enumerate(columns)
        ]
        self._writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=self._schema))

    def close(self) -> None:
        self._writer.close()


_SINKS: dict[Format, Callable[[Path, reporting.Report], _CsvSink | _ParquetSink]] = {
    "csv": _CsvSink,
    "parquet": _ParquetSink,
}


def export(
    settings: Settings,
    name: str,
    fmt: Format,
    out: Path,
    *,
    tenant_id: UUID | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
    chunk_rows: int = 10_000,
    progress: ExportProgress | None = None,
) -> ExportResult:
    """Write the view ``name`` (one tenant's rows, or every tenant's) to ``out``."""
    chosen = reporting.report(name)
    where = reporting.ReportFilter(tenant_id, date_from, date_to)
    partial = out.with_name(out.name + ".partial")
    written = 0
    with db.connect(settings) as conn, conn.transaction():
        # One snapshot for the count and the rows, so the progress bar ends where the file does.
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        if progress is not None:
            progress.start(reporting.count(conn, settings, chosen, where))
        sink = _SINKS[fmt](partial, chosen)
        try:
            for chunk in reporting.stream(conn, settings, chosen, where, chunk_rows=chunk_rows):
                sink.write(chunk)
                written += len(chunk)
                if progress is not None:
                    progress.advance(len(chunk))
        except BaseException:
            sink.close()
            partial.unlink(missing_ok=True)
            raise
        sink.close()
    os.replace(partial, out)
    return ExportResult(out, written)
