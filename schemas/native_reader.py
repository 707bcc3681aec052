"""The native Avro reader: the compiled reader's work at a fraction of its CPU (issue 15).

The compiled Python reader (schemas/compiled_reader.py) still spends ~2,000 instructions per value:
the interpreter loop, an int object per position, a bytes slice per string, dict building
(docs/performance.md, perf-decode). Here the same analysis of a (writer, reader) schema pair, its
``_Generator`` with the emitting methods overridden, yields a flat program of op codes that the
Cython extension ``schemas._native_reader`` interprets: varints in C, strings decoded straight from
the message buffer, dicts and lists filled in C loops. One extension serves every schema, so a
schema added later needs no C build.

Program layout, one list of ints (a node is its op code, then its words; children by offset):

    null, boolean, int, long, float, double, string, bytes, timestamp-millis:  [op]
    fixed:   [op, size]                 enum:  [op, constant: tuple of symbols]
    logical: [op, child, constant: fastavro's logical reader, constant: the writer schema]
    array:   [op, items child]          map:   [op, values child] (keys are strings)
    record:  [op, writer fields, reader-only fields,
              per writer field (constant: key or -1 when the reader drops it, child),
              per reader-only field (constant: key, constant: default, 1 when deep-copied)]
    union:   [op, branches, per branch: child or -1 when the reader has no match]

The contract is the compiled reader's: fastavro's record, and for anything outside the well-formed
case the whole message goes to :func:`schemas.codec.decode`, so errors stay fastavro's.
tests/unit/test_compiled_reader.py runs every equivalence test against both readers.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import orjson
from fastavro._logical_readers import LOGICAL_READERS

from schemas import codec
from schemas.compiled_reader import (
    _EPOCH,
    _NO_MATCH,
    CompiledReader,
    _Generator,
    _immutable,
    _Unsupported,
    parse_pair,
)

try:
    from schemas import _native_reader
except ImportError:  # not built (no C compiler at install): registry.py keeps the Python reader
    _native_reader = None  # type: ignore[assignment]

__all__ = ["available", "compile_native"]


def available() -> bool:
    """Whether the extension is built and importable."""
    return _native_reader is not None


class _Builder(_Generator):
    """The compiled reader's resolution, emitting program nodes instead of Python source."""

    def __init__(self, writer: Mapping[str, Any], reader: Mapping[str, Any] | None) -> None:
        super().__init__(writer, reader)
        assert _native_reader is not None
        self.ops: dict[str, int] = _native_reader.OPS
        self.code: list[int] = []
        self.values: list[Any] = []
        self.interned: dict[tuple[type, Any], int] = {}

    def value(self, value: Any) -> int:
        """The index of a constant; equal strings share one object (dict keys hash once)."""
        if isinstance(value, str):
            key = (str, value)
            if key not in self.interned:
                self.interned[key] = len(self.values)
                self.values.append(value)
            return self.interned[key]
        self.values.append(value)
        return len(self.values) - 1

    def node(self, op: str, *words: int) -> int:
        at = len(self.code)
        self.code.append(self.ops[op])
        self.code.extend(words)
        return at

    def plain(self, writer: Any, kind: str, target: str, depth: int, skip: bool) -> int:
        logical = writer.get("logicalType") if isinstance(writer, dict) else None
        if kind == "fixed":
            at = self.node("fixed", int(writer["size"]))
        elif kind == "enum":
            at = self.node("enum", self.value(tuple(writer["symbols"])))
        elif kind in ("null", "boolean", "int", "long", "float", "double", "string", "bytes"):
            if not skip and (kind, logical) == ("long", "timestamp-millis"):
                return self.node("timestamp-millis")
            at = self.node(kind)
        else:
            raise _Unsupported(f"type {kind}")
        if logical is not None and not skip and f"{kind}-{logical}" in LOGICAL_READERS:
            reader = self.value(LOGICAL_READERS[f"{kind}-{logical}"])
            at = self.node("logical", at, reader, self.value(writer))
        return at

    def array(self, writer: Any, target: str, depth: int, skip: bool, reader: Any = None) -> int:
        return self.node("array", self.read(writer["items"], reader, target, depth, skip))

    def map(self, writer: Any, target: str, depth: int, skip: bool, reader: Any = None) -> int:
        return self.node("map", self.read(writer["values"], reader, target, depth, skip))

    def record(self, writer: Any, reader: Any, target: str, depth: int) -> int:
        # A program is a tree: a recursive type would expand forever (the Python generator stops
        # at its nesting limit instead), so it stays on fastavro, as there.
        if writer["name"] in self.expanding:
            raise _Unsupported("recursive type")
        self.expanding.add(writer["name"])
        try:
            return self.record_node(writer, reader, target, depth)
        finally:
            self.expanding.discard(writer["name"])

    def record_node(self, writer: Any, reader: Any, target: str, depth: int) -> int:
        read, defaults = self.fields(writer, reader)
        words: list[int] = [len(read), len(defaults)]
        for name, writer_type, reader_type in read:
            if reader_type is _NO_MATCH:
                words += [-1, self.read(writer_type, None, target, depth, skip=True)]
            else:
                words += [self.value(name), self.read(writer_type, reader_type, target, depth)]
        for name, default in defaults:
            words += [self.value(name), self.value(default), 0 if _immutable(default) else 1]
        return self.node("record", *words)

    def union(self, writer: list[Any], reader: Any, target: str, depth: int, skip: bool) -> int:
        children = [
            -1 if branch is _NO_MATCH else self.read(writer[i], branch, target, depth, skip)
            for i, branch in enumerate(self.branches(writer, reader))
        ]
        return self.node("union", len(children), *children)


def compile_native(
    writer_schema: Mapping[str, Any], reader_schema: Mapping[str, Any] | None = None
) -> CompiledReader | None:
    """The native reader of a (writer, reader) pair, as :func:`schemas.compiled_reader.compile_reader`
    (same arguments, same record or CodecError); ``None`` when the analysis does not handle these
    schemas. Raises ImportError when the extension is not built."""
    if _native_reader is None:
        raise ImportError("schemas._native_reader is not built (pip install -e . builds it)")
    pair = parse_pair(writer_schema, reader_schema)
    if pair is None:
        return None
    writer, reader = pair
    builder = _Builder(writer, reader)
    try:
        reader = builder.resolving(writer, reader)
        root = builder.read(writer, reader, "record", 0)
    except _Unsupported:
        return None

    def slow(data: bytes) -> dict[str, Any]:
        return codec.decode(data, lambda _fp: writer, reader)

    program: CompiledReader = _native_reader.Program(
        builder.code,
        tuple(builder.values),
        root,
        slow,
        _EPOCH,
        copy.deepcopy,
        codec.HEADER_SIZE,
        orjson.dumps,
    )
    return program
