"""Precompiled Avro readers: a schema pair turned, once, into Python that reads a message body.

fastavro's ``schemaless_reader`` walks the writer schema for every record it reads: a dispatch per
field, a BytesIO call per value and a resolution pass when a reader schema is given. For the v4/v5
invoice (about 190 fields, most of them null unions) that is ~80 µs per 5-line invoice, the largest
share of the projector's and the rebuild's CPU (docs/performance.md, "Compiled reader").

:func:`compile_reader` generates, per (writer, reader) pair, one function that reads the body from the
message bytes with an integer position: zig-zag varints inline with a one-byte fast path, null-union
index 0 read as ``None`` in place, field values kept in locals and put into one dict display per
record. Its output is fastavro's (same keys in the same order, same types: aware UTC datetimes for
``timestamp-millis``, fastavro's own logical readers for the other logical types, reader defaults for
fields the reader adds, skipped fields the reader dropped).

Errors stay fastavro's by construction: the compiled function only handles the plain, well-formed
case, and whatever it does not like (truncated body, bad union index, trailing bytes, bad UTF-8, a
varint longer than 64 bits, an ``int`` out of range, a negative block count, ...) makes it hand the
whole message to :func:`schemas.codec.decode`, which either raises the same ``CodecError`` as before
or returns fastavro's record. Schema constructs the generator does not handle make
:func:`compile_reader` return ``None``; callers then keep fastavro. tests/unit/test_compiled_reader.py
compares both readers on every shipped schema version, resolution pair, sample and on random records.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from struct import Struct
from typing import Any

from fastavro._logical_readers import LOGICAL_READERS

from schemas import codec

__all__ = ["CompiledReader", "compile_reader"]

CompiledReader = Callable[[bytes], dict[str, Any]]

_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
_NAMED = {"record", "enum", "fixed"}
# Keys of a parsed schema that do not change what is read (fastavro adds the two dunder ones).
_IGNORED = {"doc", "default", "aliases", "order", "__fastavro_parsed", "__named_schemas"}
# Promotions fastavro accepts when matching a writer union branch to a reader branch (Avro
# specification, "Schema Resolution"); used to check that each branch resolves to its own twin.
_PROMOTIONS = {
    ("int", "long"),
    ("int", "float"),
    ("int", "double"),
    ("long", "float"),
    ("long", "double"),
    ("float", "double"),
    ("string", "bytes"),
    ("bytes", "string"),
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FLOAT = Struct("<f").unpack_from
_DOUBLE = Struct("<d").unpack_from
_NO_MATCH = object()
# A string or bytes length of one byte: zig-zag even bytes below 128 are 0..63; -1 for the rest.
_LENGTH = tuple(b >> 1 if b < 128 and not b & 1 else -1 for b in range(256))
# Deepest nesting of generated blocks: CPython refuses more than 20 statically nested blocks.
_MAX_DEPTH = 16


def _immutable(default: Any) -> bool:
    """A reader default that can be shared by every record (others are deep-copied per record)."""
    return default is None or isinstance(default, (str, int, float, bool))


class _Unsupported(Exception):
    """A schema construct or resolution the generator leaves to fastavro."""


class _Fallback(Exception):
    """The bytes are outside the compiled reader's well-formed case; fastavro decides."""


def _long(d: bytes, p: int) -> tuple[int, int]:
    """Zig-zag varint at ``p`` (Avro spec, "Binary Encoding"), for the multi-byte case."""
    n = shift = 0
    while True:
        b = d[p]
        p += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if shift > 63:
            raise _Fallback  # more than 10 bytes: fastavro's reading of it is its own business
    v = (n >> 1) ^ -(n & 1)
    if not -(2**63) <= v < 2**63:
        raise _Fallback
    return v, p


def _int(d: bytes, p: int) -> tuple[int, int]:
    v, p = _long(d, p)
    if not -(2**31) <= v < 2**31:
        raise _Fallback
    return v, p


def _count(d: bytes, p: int) -> tuple[int, int]:
    """A length or block count; negative ones (sized blocks, hostile lengths) go to fastavro."""
    v, p = _long(d, p)
    if v < 0:
        raise _Fallback
    return v, p


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        kind = schema["type"]
        return _kind(kind) if isinstance(kind, (dict, list)) else str(kind)
    return str(schema)


class _Generator:
    def __init__(self, writer: Mapping[str, Any], reader: Mapping[str, Any] | None) -> None:
        self.lines: list[str] = []
        self.names = 0
        self.constants: dict[str, Any] = {}
        self.writer_named: dict[str, Any] = {}
        self.reader_named: dict[str, Any] = {}
        self._collect(writer, self.writer_named)
        if reader is not None:
            self._collect(reader, self.reader_named)
        self.expanding: set[str] = set()

    def _collect(self, schema: Any, table: dict[str, Any]) -> None:
        if isinstance(schema, list):
            for branch in schema:
                self._collect(branch, table)
        elif isinstance(schema, dict):
            kind = schema["type"]
            if isinstance(kind, (dict, list)):
                self._collect(kind, table)
                return
            if kind in _NAMED:
                table[schema["name"]] = schema
            for field in schema.get("fields", ()):
                self._collect(field["type"], table)
            for key in ("items", "values"):
                if key in schema:
                    self._collect(schema[key], table)

    def fresh(self, stem: str) -> str:
        self.names += 1
        return f"{stem}{self.names}"

    def constant(self, value: Any) -> str:
        name = f"_k{len(self.constants)}"
        self.constants[name] = value
        return name

    def emit(self, depth: int, line: str) -> None:
        if depth > _MAX_DEPTH:
            raise _Unsupported("nested too deeply")
        self.lines.append("    " * depth + line)

    # -- schema helpers ---------------------------------------------------------------------------

    def deref(self, schema: Any, table: dict[str, Any]) -> Any:
        """A named reference (a full name string) replaced by its definition; nested ``type`` unwrapped."""
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            if schema not in table:
                raise _Unsupported(f"unknown name {schema}")
            return table[schema]
        if isinstance(schema, dict) and isinstance(schema["type"], (dict, list)) and len(schema) == 1:
            return self.deref(schema["type"], table)
        if isinstance(schema, dict) and isinstance(schema["type"], (dict, list)):
            raise _Unsupported("attributes around a nested type")
        return schema

    def shape(self, schema: Any, table: dict[str, Any], seen: frozenset[str] = frozenset()) -> Any:
        """What decides the bytes read and the value returned, with references expanded."""
        schema = self.deref(schema, table)
        if isinstance(schema, list):
            return [self.shape(b, table, seen) for b in schema]
        if isinstance(schema, str):
            return schema
        name = schema.get("name")
        if name in seen:
            raise _Unsupported("recursive type")
        if name is not None:
            seen = seen | {name}
        out: dict[str, Any] = {}
        for key, value in schema.items():
            if key in _IGNORED:
                continue
            if key == "fields":
                value = [(f["name"], self.shape(f["type"], table, seen), "aliases" in f) for f in value]
            elif key in ("items", "values"):
                value = self.shape(value, table, seen)
            out[key] = value
        return out

    def resolving(self, writer: Any, reader: Any) -> Any:
        """The reader schema to resolve to: ``None`` when there is none or it has the writer's
        shape (nothing to resolve)."""
        return None if reader is None or self.same(writer, reader) else reader

    def same(self, writer: Any, reader: Any) -> bool:
        return bool(
            json.dumps(self.shape(writer, self.writer_named), sort_keys=True)
            == json.dumps(self.shape(reader, self.reader_named), sort_keys=True)
        )

    # -- code -------------------------------------------------------------------------------------

    def varint(self, target: str, slow: str, depth: int) -> None:
        self.emit(depth, f"{target} = d[p]")
        self.emit(depth, f"if {target} < 128: p += 1; {target} = ({target} >> 1) ^ -({target} & 1)")
        self.emit(depth, f"else: {target}, p = {slow}(d, p)")

    def count(self, target: str, depth: int) -> None:
        # A non-negative count below 64 is one even byte.
        self.emit(depth, f"{target} = d[p]")
        self.emit(depth, f"if {target} < 128 and not {target} & 1: p += 1; {target} >>= 1")
        self.emit(depth, f"else: {target}, p = _count(d, p)")

    def read(self, writer: Any, reader: Any, target: str, depth: int, skip: bool = False) -> Any:
        """Emit code reading ``writer`` resolved to ``reader`` (``None``: the writer's own shape) into
        the variable ``target``. ``skip``: the value is dropped (no logical-type conversion).
        The resolution decided here is shared with schemas/native_reader.py, whose builder overrides
        the emitting methods (plain, record, array, map, union) and returns what they return."""
        writer = self.deref(writer, self.writer_named)
        if reader is not None:
            reader = self.deref(reader, self.reader_named)
            if _kind(writer) == "record" and _kind(reader) == "record":
                return self.record(writer, reader, target, depth)
            if _kind(writer) == _kind(reader) == "array" and not self.same(writer, reader):
                return self.array(writer, target, depth, skip, reader["items"])
            if _kind(writer) == _kind(reader) == "map" and not self.same(writer, reader):
                return self.map(writer, target, depth, skip, reader["values"])
            if _kind(writer) == "union":
                if not self.same(writer, reader):
                    return self.union(writer, reader, target, depth, skip)
            elif _kind(reader) == "union":
                # A plain writer type read as the first reader branch it matches (fastavro's match_schemas).
                j = self.first_match(writer, reader)
                if j is None:
                    raise _Unsupported("writer type not in the reader's union")
                return self.read(writer, reader[j], target, depth, skip)
            elif not self.same(writer, reader):
                raise _Unsupported("resolution other than records and unions")
            reader = None
        kind = _kind(writer)
        if kind == "record":
            return self.record(writer, None, target, depth)
        if kind == "union":
            return self.union(writer, None, target, depth, skip)
        if kind == "array":
            return self.array(writer, target, depth, skip)
        if kind == "map":
            return self.map(writer, target, depth, skip)
        return self.plain(writer, kind, target, depth, skip)

    def plain(self, writer: Any, kind: str, target: str, depth: int, skip: bool) -> Any:
        """A type without children (primitives, fixed, enum), with its logical type unless skipped."""
        logical = writer.get("logicalType") if isinstance(writer, dict) else None
        if kind == "null":
            self.emit(depth, f"{target} = None")
        elif kind == "boolean":
            self.emit(depth, f"{target} = _BOOLEAN[d[p]]; p += 1")
        elif kind == "int":
            self.varint(target, "_int", depth)
        elif kind == "long":
            self.varint(target, "_long", depth)
        elif kind in ("float", "double"):
            size = 4 if kind == "float" else 8
            # unpack_from raises on a short buffer.
            self.emit(depth, f"{target}, = {'_FLOAT' if kind == 'float' else '_DOUBLE'}(d, p); p += {size}")
        elif kind in ("string", "bytes"):
            # A length running past the end leaves p beyond it: the next byte read raises, or the
            # final ``p != end`` check does, so a truncated body never comes back as a record.
            # _LENGTH maps a one-byte length (even, below 128: up to 63 bytes) to itself and any
            # other byte to -1, which sends a longer or negative length through _count. One table
            # look-up and one statement in the common case instead of a test, arithmetic and three
            # statements, and two additions instead of three (each makes a new int past 256): the
            # 5-line invoice has ~110 strings (docs/performance.md, perf-decode).
            n = self.fresh("n")
            convert = ".decode()" if kind == "string" else ""
            self.emit(depth, f"if ({n} := _LENGTH[d[p]]) < 0: {n}, p = _count(d, p); p -= 1")
            self.emit(depth, f"{target} = d[(q := p + 1):(p := q + {n})]{convert}")
        elif kind == "fixed":
            size = int(writer["size"])
            self.emit(depth, f"{target} = d[p:p + {size}]; p += {size}")
        elif kind == "enum":
            symbols = self.constant(dict(enumerate(writer["symbols"])))
            self.varint(target, "_long", depth)
            self.emit(depth, f"{target} = {symbols}[{target}]")
        else:
            raise _Unsupported(f"type {kind}")
        if logical is not None and not skip:
            if (kind, logical) == ("long", "timestamp-millis"):
                # fastavro's own conversion (_logical_readers: epoch + timedelta(microseconds=ms * 1000)),
                # inline; timedelta's fourth argument is milliseconds.
                self.emit(depth, f"{target} = _EPOCH + _timedelta(0, 0, 0, {target})")
            elif f"{kind}-{logical}" in LOGICAL_READERS:
                function = self.constant(LOGICAL_READERS[f"{kind}-{logical}"])
                schema = self.constant(writer)
                self.emit(depth, f"{target} = {function}({target}, {schema}, None)")
        return None

    def array(self, writer: Any, target: str, depth: int, skip: bool, reader: Any = None) -> Any:
        n, item = self.fresh("n"), self.fresh("i")
        self.emit(depth, f"{target} = []")
        self.count(n, depth)
        self.emit(depth, f"while {n}:")
        self.emit(depth + 1, f"for _ in range({n}):")
        self.read(writer["items"], reader, item, depth + 2, skip)
        self.emit(depth + 2, f"{target}.append({item})")
        self.count(n, depth + 1)

    def map(self, writer: Any, target: str, depth: int, skip: bool, reader: Any = None) -> Any:
        n, key, item = self.fresh("n"), self.fresh("k"), self.fresh("i")
        self.emit(depth, f"{target} = {{}}")
        self.count(n, depth)
        self.emit(depth, f"while {n}:")
        self.emit(depth + 1, f"for _ in range({n}):")
        self.read("string", None, key, depth + 2)
        self.read(writer["values"], reader, item, depth + 2, skip)
        self.emit(depth + 2, f"{target}[{key}] = {item}")
        self.count(n, depth + 1)

    def fields(self, writer: Any, reader: Any) -> tuple[list[tuple[str, Any, Any]], list[tuple[str, Any]]]:
        """A record's resolution: per writer field, its name, type and the reader's type (``None``:
        read as written; ``_NO_MATCH``: the reader drops it), then the fields only the reader has,
        with their defaults (fastavro: the parsed schema's value), in fastavro's output order."""
        if reader is None:
            return [(f["name"], f["type"], None) for f in writer["fields"]], []
        if reader["name"] != writer["name"] or reader.get("aliases"):
            raise _Unsupported("renamed or aliased record")
        reader_fields = {f["name"]: f for f in reader["fields"]}
        if any(f.get("aliases") for f in reader["fields"]):
            raise _Unsupported("field aliases")
        read: list[tuple[str, Any, Any]] = []
        for field in writer["fields"]:
            found = reader_fields.pop(field["name"], None)
            read.append((field["name"], field["type"], _NO_MATCH if found is None else found["type"]))
        defaults: list[tuple[str, Any]] = []
        for name, field in reader_fields.items():
            if "default" not in field:
                raise _Unsupported(f"no default for {name}")  # fastavro raises for every record
            defaults.append((name, field["default"]))
        return read, defaults

    def record(self, writer: Any, reader: Any, target: str, depth: int) -> Any:
        read, defaults = self.fields(writer, reader)
        entries: list[str] = []
        for name, writer_type, reader_type in read:
            value = self.fresh("v")
            if reader_type is _NO_MATCH:
                self.read(writer_type, None, value, depth, skip=True)
            else:
                self.read(writer_type, reader_type, value, depth)
                entries.append(f"{name!r}: {value}")
        for name, default in defaults:
            if _immutable(default):
                entries.append(f"{name!r}: {self.constant(default)}")
            else:
                entries.append(f"{name!r}: _deepcopy({self.constant(default)})")
        self.emit(depth, f"{target} = {{{', '.join(entries)}}}")

    def branches(self, writer: list[Any], reader: Any) -> list[Any]:
        """Per writer branch, the reader branch it is read as (``None``: as written; ``_NO_MATCH``:
        none, which fails in fastavro for every record using it, so the readers fall back)."""
        if len(writer) > 63:
            raise _Unsupported("union index beyond one byte")
        # Each writer branch is read as the first reader branch it matches (fastavro's read_union).
        resolved: list[Any] = [None] * len(writer)
        if reader is not None:
            candidates = reader if isinstance(reader, list) else [reader]
            for i, branch in enumerate(writer):
                j = self.first_match(branch, candidates)
                resolved[i] = _NO_MATCH if j is None else candidates[j]
        return resolved

    def union(self, writer: list[Any], reader: Any, target: str, depth: int, skip: bool) -> Any:
        resolved = self.branches(writer, reader)
        null_first = len(writer) == 2 and _kind(self.deref(writer[0], self.writer_named)) == "null"
        if null_first and _NO_MATCH not in resolved:
            # ["null", X], most of the invoice's optional fields: index 0 (None) is one test and
            # one statement, without a variable for the index; anything but 0 or 2 goes to
            # fastavro as before.
            self.emit(depth, "if d[p]:")
            self.emit(depth + 1, "if d[p] != 2: raise _Fallback")
            self.emit(depth + 1, "p += 1")
            self.read(writer[1], resolved[1], target, depth + 1, skip)
            self.emit(depth, "else:")
            self.emit(depth + 1, "p += 1")
            self.read(writer[0], resolved[0], target, depth + 1, skip)
            return
        b = self.fresh("b")
        self.emit(depth, f"{b} = d[p]; p += 1")
        for i, branch in enumerate(writer):
            self.emit(depth, f"{'if' if i == 0 else 'elif'} {b} == {2 * i}:")
            if resolved[i] is _NO_MATCH:
                self.emit(depth + 1, "raise _Fallback")
            else:
                self.read(branch, resolved[i], target, depth + 1, skip)
        self.emit(depth, "else: raise _Fallback")

    def first_match(self, branch: Any, reader: list[Any]) -> int | None:
        w = self.deref(branch, self.writer_named)
        for j, candidate in enumerate(reader):
            r = self.deref(candidate, self.reader_named)
            wk, rk = _kind(w), _kind(r)
            if wk in _NAMED or rk in _NAMED:
                if wk == rk and w.get("name") == r.get("name"):
                    return j
            elif wk == rk or (wk, rk) in _PROMOTIONS:
                return j
        return None


def parse_pair(
    writer_schema: Mapping[str, Any], reader_schema: Mapping[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
    """Both schemas parsed, when both are records (what the readers handle; ``None`` otherwise)."""
    writer = codec.parse(writer_schema)
    reader = None if reader_schema is None else codec.parse(reader_schema)
    if not isinstance(writer, dict) or writer.get("type") != "record":
        return None
    if reader is not None and (not isinstance(reader, dict) or reader.get("type") != "record"):
        return None
    return writer, reader


def compile_reader(
    writer_schema: Mapping[str, Any], reader_schema: Mapping[str, Any] | None = None
) -> CompiledReader | None:
    """A function reading a whole single-object message written with ``writer_schema`` (the caller has
    checked the header and fingerprint) and resolved to ``reader_schema``: the same record, or the same
    :class:`~schemas.codec.CodecError`, as :func:`schemas.codec.decode`, faster. ``None`` when the
    generator does not handle these schemas. Both schemas are the raw JSON form."""
    pair = parse_pair(writer_schema, reader_schema)
    if pair is None:
        return None
    writer, reader = pair
    generator = _Generator(writer, reader)
    try:
        reader = generator.resolving(writer, reader)
        generator.read(writer, reader, "record", 2)
    except _Unsupported:
        return None

    def slow(data: bytes) -> dict[str, Any]:
        return codec.decode(data, lambda _fp: writer, reader)

    source = "\n".join(
        [
            "def read(d):",
            "    try:",
            "        if type(d) is not bytes: d = bytes(d)",
            f"        p = {codec.HEADER_SIZE}",
            "        end = len(d)",
            *generator.lines,
            "        if p != end: raise _Fallback",
            "        return record",
            "    except Exception:",
            "        return slow(d)",
        ]
    )
    scope: dict[str, Any] = {
        "_BOOLEAN": {0: False, 1: True},
        "_LENGTH": _LENGTH,
        "_EPOCH": _EPOCH,
        "_FLOAT": _FLOAT,
        "_DOUBLE": _DOUBLE,
        "_Fallback": _Fallback,
        "_count": _count,
        "_deepcopy": copy.deepcopy,
        "_int": _int,
        "_long": _long,
        "_timedelta": timedelta,
        "slow": slow,
        **generator.constants,
    }
    try:
        code = compile(source, f"<avro reader {writer.get('name')}>", "exec")
    except (SyntaxError, RecursionError):  # e.g. more nested blocks than CPython allows
        return None
    exec(code, scope)
    read: CompiledReader = scope["read"]
    read.source = source  # type: ignore[attr-defined]  # for a reader debugging a mismatch
    return read
