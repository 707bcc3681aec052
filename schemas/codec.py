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
    "compile_writer",
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


# -- precompiled writers ---------------------------------------------------------------------------
#
# fastavro walks the schema for every record it writes: about 8 µs of set-up per call plus a
# dispatch per field, 44 µs for a 5-line invoice, the largest share of the relay's time per event.
# `compile_writer` turns a schema, once, into a Python function that writes its records field by
# field with nothing to look up. It only takes the plain, exact case (every field present, values
# of exactly the schema's Python types, ints in range, unions of null and one other type); any
# other record goes to fastavro, so defaults, coercions and error messages stay fastavro's and the
# bytes are fastavro's in every case (tests/unit/test_compiled_writer.py checks both, record by
# record, for every shipped schema).


class _Unsupported(Exception):
    """A schema construct the compiler leaves to fastavro."""


class _Mismatch(Exception):
    """A record outside the compiled writer's exact case; fastavro writes it instead."""


def _zigzag(n: int) -> bytes:
    """Avro's variable-length zig-zag encoding of a 64-bit integer (spec, "Binary Encoding")."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Encoded lengths of short strings, the common case, looked up instead of computed.
_SHORT = 1024
_LENGTHS = tuple(_zigzag(n) for n in range(_SHORT))
_INT_RANGE = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_PRIMITIVES = {"null", "boolean", "int", "long", "string"}


class _Compiler:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names = 0
        self.constants: dict[str, Any] = {}

    def fresh(self, stem: str) -> str:
        self.names += 1
        return f"{stem}{self.names}"

    def constant(self, value: Any) -> str:
        name = f"_c{len(self.constants)}"
        self.constants[name] = value
        return name

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)

    def string(self, v: str, lengths: str, index: str, depth: int) -> None:
        # Like fastavro: whatever ``.encode()`` gives (a non-string fails there, and fastavro then
        # reports it); ``lengths`` holds the union index (if any) and the length, pre-encoded.
        b, n = self.fresh("b"), self.fresh("n")
        self.emit(depth, f"{b} = {v}.encode()")
        self.emit(depth, f"{n} = len({b})")
        self.emit(depth, f"if {n} < {_SHORT}: w({lengths}[{n}])")
        self.emit(depth, f"else: w({index}_zigzag({n}))")
        self.emit(depth, f"w({b})")

    def value(self, schema: Any, source: str, depth: int) -> None:
        """Emit code writing the value of expression ``source`` (evaluated once) as ``schema``."""
        if isinstance(schema, list):
            return self.union(schema, source, depth)
        kind = schema if isinstance(schema, str) else schema.get("type")
        # timestamp-millis: fastavro also takes a datetime here; the compiled writer only epoch millis.
        logical = schema.get("logicalType") if isinstance(schema, dict) else None
        if logical is not None and (kind, logical) != ("long", "timestamp-millis"):
            raise _Unsupported(f"logical type {logical}")
        if isinstance(kind, (dict, list)):
            return self.value(kind, source, depth)
        v = self.fresh("v")
        self.emit(depth, f"{v} = {source}")
        if kind == "null":
            self.emit(depth, f"if {v} is not None: raise _Mismatch")
        elif kind == "boolean":
            self.emit(depth, f"if {v} is True: w(b'\\x01')")
            self.emit(depth, f"elif {v} is False: w(b'\\x00')")
            self.emit(depth, "else: raise _Mismatch")
        elif kind in ("int", "long"):
            low, high = _INT_RANGE[kind]
            self.emit(depth, f"if type({v}) is not int or not {low} <= {v} <= {high}: raise _Mismatch")
            self.emit(depth, f"w(_zigzag({v}))")
        elif kind == "string":
            self.string(v, "_LENGTHS", "", depth)
        elif kind == "array":
            item = self.fresh("i")
            self.emit(depth, f"if type({v}) is not list: raise _Mismatch")
            self.emit(depth, f"if {v}:")
            self.emit(depth + 1, f"w(_zigzag(len({v})))")
            self.emit(depth + 1, f"for {item} in {v}:")
            self.value(schema["items"], item, depth + 2)
            self.emit(depth, "w(b'\\x00')")
        elif kind == "map":
            # One block of (key, value) pairs in the dict's order, then the empty block: as fastavro.
            key, item = self.fresh("k"), self.fresh("i")
            self.emit(depth, f"if type({v}) is not dict: raise _Mismatch")
            self.emit(depth, f"if {v}:")
            self.emit(depth + 1, f"w(_zigzag(len({v})))")
            self.emit(depth + 1, f"for {key}, {item} in {v}.items():")
            self.emit(depth + 2, f"if type({key}) is not str: raise _Mismatch")
            self.string(key, "_LENGTHS", "", depth + 2)
            self.value(schema["values"], item, depth + 2)
            self.emit(depth, "w(b'\\x00')")
        elif kind == "record":
            fields = schema["fields"]
            # Exactly the schema's fields (a missing one raises KeyError below): fastavro handles
            # defaults and reports unknown fields.
            self.emit(depth, f"if type({v}) is not dict or len({v}) != {len(fields)}: raise _Mismatch")
            for field in fields:
                self.value(field["type"], f"{v}[{field['name']!r}]", depth)
        else:
            raise _Unsupported(f"type {kind!r}")
        return None

    def union(self, branches: list[Any], source: str, depth: int) -> None:
        kinds = [b if isinstance(b, str) else b.get("type") for b in branches]
        others = [i for i, k in enumerate(kinds) if k != "null"]
        if len(others) != 1 or len(branches) > 2:
            raise _Unsupported("union of more than null and one type")
        v = self.fresh("u")
        self.emit(depth, f"{v} = {source}")
        if "null" in kinds:
            self.emit(depth, f"if {v} is None: w({self.constant(_zigzag(kinds.index('null')))})")
            self.emit(depth, "else:")
            depth += 1
        index = _zigzag(others[0])
        if kinds[others[0]] == "string" and isinstance(branches[others[0]], str):
            table = self.constant(tuple(index + length for length in _LENGTHS))
            self.string(v, table, f"{self.constant(index)} + ", depth)
            return
        self.emit(depth, f"w({self.constant(index)})")
        self.value(branches[others[0]], v, depth)


def compile_writer(schema: Mapping[str, Any], fp: bytes) -> Callable[[Mapping[str, Any]], bytes]:
    """A function writing a record of ``schema`` (the raw JSON form) as a single-object message with
    fingerprint ``fp``: the same bytes and errors as :func:`encode`, faster. Schemas with constructs
    the compiler does not handle (enums, named references, ...) get :func:`encode` itself."""
    parsed = parse(schema)

    def slow(record: Mapping[str, Any]) -> bytes:
        return encode(parsed, record, fp=fp)

    compiler = _Compiler()
    try:
        compiler.value(dict(schema), "record", 1)
    except _Unsupported:
        return slow
    source = "\n".join(
        [
            "def write(record):",
            "    parts = [prefix]",
            "    w = parts.append",
            "    try:",
            *("    " + line for line in compiler.lines),
            "    except Exception:",
            "        return slow(record)",
            "    return b''.join(parts)",
        ]
    )
    scope: dict[str, Any] = {
        "_zigzag": _zigzag,
        "_LENGTHS": _LENGTHS,
        "_Mismatch": _Mismatch,
        "prefix": MAGIC + fp,
        "slow": slow,
        **compiler.constants,
    }
    exec(compile(source, f"<avro writer {schema.get('name')}>", "exec"), scope)
    writer: Callable[[Mapping[str, Any]], bytes] = scope["write"]
    writer.source = source  # type: ignore[attr-defined]  # for a reader debugging a mismatch
    return writer


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
