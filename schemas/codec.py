"""Avro single-object encoding, the value format of every Ledgerflow Kafka message.

Layout (Avro specification, "Single-object encoding")::

    C3 01 | 8-byte CRC-64-AVRO fingerprint, little-endian | Avro binary body

The fingerprint is taken over the schema's Parsing Canonical Form, so whitespace, ``doc`` strings and
attribute order in the ``.avsc`` file do not change it, while any change a decoder cares about does. The
prefix lets a consumer in any language find the writer schema (``GET /v1/schemas/<hex>``) without a
schema-registry client.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from typing import Any

import fastavro
from fastavro.schema import fingerprint as _avro_fingerprint
from fastavro.schema import parse_schema, to_parsing_canonical_form
from fastavro.types import Schema

__all__ = [
    "FINGERPRINT_SIZE",
    "HEADER_SIZE",
    "MAGIC",
    "CodecError",
    "decode",
    "encode",
    "fingerprint",
    "fingerprint_hex",
    "parse",
    "split",
]

MAGIC = b"\xc3\x01"
FINGERPRINT_SIZE = 8
HEADER_SIZE = len(MAGIC) + FINGERPRINT_SIZE

# A fastavro-parsed schema; raw JSON dicts are accepted too (fastavro parses them on use, which is slower).
ParsedSchema = Schema
WriterSchemaLookup = Callable[[bytes], Schema | None]


class CodecError(ValueError):
    """The bytes are not a decodable single-object message (or the record does not fit its schema)."""


def fingerprint(schema: Schema) -> bytes:
    """CRC-64-AVRO (Rabin) fingerprint of the schema's Parsing Canonical Form, 8 bytes little-endian.

    fastavro renders this fingerprint as hex of the little-endian bytes, i.e. already in message order;
    tests/unit/test_codec.py pins that against an independent Rabin implementation and the Avro
    project's published test vectors, so a change of convention in fastavro would be caught there.
    """
    canonical = to_parsing_canonical_form(schema)
    fp = bytes.fromhex(_avro_fingerprint(canonical, "CRC-64-AVRO"))
    if len(fp) != FINGERPRINT_SIZE:  # pragma: no cover - guards against a fastavro behaviour change
        raise CodecError(f"unexpected fingerprint length {len(fp)}")
    return fp


def fingerprint_hex(schema: Schema) -> str:
    """The 16 lowercase hex digits of :func:`fingerprint`, in message byte order (``ce_dataschema``)."""
    return fingerprint(schema).hex()


def encode(schema: ParsedSchema, record: Mapping[str, Any], *, fp: bytes | None = None) -> bytes:
    """Encode ``record`` as a single-object message.

    ``fp`` lets callers that already know the schema's fingerprint (the registry) skip recomputing the
    canonical form on every message, which costs more than encoding a small record.
    """
    if fp is None:
        fp = fingerprint(schema)
    elif len(fp) != FINGERPRINT_SIZE:
        raise CodecError(f"fingerprint must be {FINGERPRINT_SIZE} bytes, got {len(fp)}")
    buf = io.BytesIO()
    buf.write(MAGIC)
    buf.write(fp)
    try:
        # strict_allow_default: a misspelt or unknown field name is an error instead of being silently
        # dropped, while fields with schema defaults may still be left out by the producer.
        fastavro.schemaless_writer(buf, schema, record, strict_allow_default=True)
    except Exception as exc:  # fastavro raises ValueError/TypeError/AttributeError depending on the field
        raise CodecError(f"record does not match schema: {exc}") from exc
    return buf.getvalue()


def split(data: bytes) -> tuple[bytes, memoryview]:
    """Return ``(fingerprint, body)`` of a single-object message, checking the magic bytes."""
    if len(data) < HEADER_SIZE:
        raise CodecError(f"message too short for a single-object header: {len(data)} bytes")
    if data[: len(MAGIC)] != MAGIC:
        raise CodecError(f"bad magic {bytes(data[: len(MAGIC)]).hex()}, expected {MAGIC.hex()}")
    view = memoryview(data)
    return bytes(view[len(MAGIC) : HEADER_SIZE]), view[HEADER_SIZE:]


def decode(
    data: bytes,
    writer_schema_lookup: WriterSchemaLookup,
    reader_schema: Schema | None = None,
) -> dict[str, Any]:
    """Decode a single-object message.

    ``writer_schema_lookup`` maps the 8 fingerprint bytes to the writer schema (``None`` or ``KeyError``
    when unknown). With ``reader_schema`` the record is resolved to it (Avro schema resolution: added
    fields get their defaults, removed ones are skipped). ``timestamp-millis`` fields come back as
    timezone-aware UTC ``datetime`` objects.
    """
    fp, body = split(data)
    try:
        writer = writer_schema_lookup(fp)
    except KeyError:
        writer = None
    if writer is None:
        raise CodecError(f"unknown schema fingerprint {fp.hex()}")
    if reader_schema is writer:
        # Same schema object: skip fastavro's resolution pass, which is pure overhead here.
        reader_schema = None
    buf = io.BytesIO(body)
    try:
        record = fastavro.schemaless_reader(buf, writer, reader_schema)
    except Exception as exc:
        # Truncated or corrupted bodies surface from fastavro as EOFError, UnicodeDecodeError, IndexError
        # or resolution errors; callers should only have to handle one type for "undecodable input".
        raise CodecError(f"cannot decode body written with schema {fp.hex()}: {exc!r}") from exc
    if buf.tell() != len(body):
        # Leftover bytes mean the body was not written with the schema its fingerprint names.
        raise CodecError(f"{len(body) - buf.tell()} trailing bytes after record (schema {fp.hex()})")
    if not isinstance(record, dict):
        raise CodecError(f"schema {fp.hex()} does not describe a record")
    return record


def parse(schema: Mapping[str, Any]) -> ParsedSchema:
    """Parse a raw schema dict with fastavro (a fresh named-type table, so versions never clash)."""
    return parse_schema(dict(schema))
