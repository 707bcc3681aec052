"""The native Avro writer: the compiled writer's work in C (issue 15).

The compiled Python writer (``codec.compile_writer``) and the relay's direct path
(``engine/relay_direct.py``) generate Python functions that append one bytes object per Avro item
and call ``.encode()`` per string: about 280 items for a 5-line invoice, the larger share of the
relay's CPU per event (docs/performance.md, "relay-cpu"). Here the same walk of a schema yields a
flat program of op codes that the Cython extension ``schemas._native_writer`` interprets: varints,
type checks and UTF-8 in C, into one buffer. One extension serves every schema (and every direct
path plan, which ``engine/relay_direct.py`` builds with :class:`Builder`), so a schema added later
needs no C build.

Program layout, one list of ints (a node is its op code, then its words; children by offset;
``constant`` is an index into the program's tuple of constants):

    writes of a given value as a schema type:
    null, boolean, int, long, string:  [op]
    union:   [op, index of null or -1, index of the other branch, its child]
    array:   [op, items child]          map:   [op, values child] (keys are strings)
    record:  [op, fields, per field (constant: name, child)]   (exactly these fields)

    statements of a direct path plan:
    seq:     [op, count, children...]   bytes: [op, constant: bytes]
    field:   [op, value node, write node]
    set:     [op, slot, value node]     exec:  [op, constant: function of the slots]
    switch:  [op, condition value node, then statement, otherwise statement]
    each:    [op, items value node, slot of the item, item statement]

    values of a direct path plan:
    slot:    [op, slot]                 const: [op, constant]
    item:    [op, container value node, constant: key]  (d[key])
    get:     [op, container value node, constant: key, default value node or -1]  (d.get(key[, default]))
    or, eq:  [op, left value node, right value node]  (left or right, left == right)
    unwrap:  [op, value node, constant: _unwrap_top]
    money, number, price, apply:  [op, value node, constant: helper]
    call:    [op, constant: function of the slots]

The contract is the Python writer's the program is built beside: the same bytes, and for anything
outside the exact case the whole call goes to that writer (``slow``), which writes it or raises
its own error. tests/unit/test_compiled_writer.py and tests/unit/test_relay_direct.py run their
equivalence tests against both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from schemas import codec

try:
    from schemas import _native_writer
except ImportError:  # not built (no C compiler at install): the Python writers stay
    _native_writer = None  # type: ignore[assignment]

__all__ = ["Builder", "available", "compile_native_writer"]


def available() -> bool:
    """Whether the extension is built and importable."""
    return _native_writer is not None


class Builder:
    """A program under construction: nodes, constants, slots."""

    def __init__(self) -> None:
        if _native_writer is None:
            raise ImportError("schemas._native_writer is not built (pip install -e . builds it)")
        self.ops: dict[str, int] = _native_writer.OPS
        self.code: list[int] = []
        self.values: list[Any] = []

    def constant(self, value: Any) -> int:
        self.values.append(value)
        return len(self.values) - 1

    def node(self, op: str, *words: int) -> int:
        at = len(self.code)
        self.code.append(self.ops[op])
        self.code.extend(words)
        return at

    def write(self, schema: Any) -> int:
        """The node writing a value as ``schema``; raises ``codec._Unsupported`` exactly where
        ``codec._Compiler.value`` does (the compiled writer then leaves the schema to fastavro)."""
        if isinstance(schema, list):
            return self.union(schema)
        kind = schema if isinstance(schema, str) else schema.get("type")
        logical = schema.get("logicalType") if isinstance(schema, dict) else None
        if logical is not None and (kind, logical) != ("long", "timestamp-millis"):
            raise codec._Unsupported(f"logical type {logical}")
        if isinstance(kind, (dict, list)):
            return self.write(kind)
        if kind in ("null", "boolean", "int", "long", "string"):
            return self.node(kind)
        if kind == "array":
            return self.node("array", self.write(schema["items"]))
        if kind == "map":
            return self.node("map", self.write(schema["values"]))
        if kind == "record":
            words: list[int] = [len(schema["fields"])]
            for field in schema["fields"]:
                words += [self.constant(field["name"]), self.write(field["type"])]
            return self.node("record", *words)
        raise codec._Unsupported(f"type {kind!r}")

    def union(self, branches: list[Any]) -> int:
        kinds = [b if isinstance(b, str) else b.get("type") for b in branches]
        others = [i for i, k in enumerate(kinds) if k != "null"]
        if len(others) != 1 or len(branches) > 2:
            raise codec._Unsupported("union of more than null and one type")
        null = kinds.index("null") if "null" in kinds else -1
        return self.node("union", null, others[0], self.write(branches[others[0]]))

    def program(
        self, root: int, *, statement: bool, arguments: int, slots: int, prefix: bytes, slow: Any
    ) -> Any:
        """The built program: ``root`` a statement (plans) or a write of the first argument."""
        assert _native_writer is not None
        return _native_writer.Program(
            self.code, tuple(self.values), root, statement, arguments, slots, prefix, slow
        )


def compile_native_writer(
    schema: Mapping[str, Any], fp: bytes, slow: Callable[[Mapping[str, Any]], bytes] | None = None
) -> Callable[[Mapping[str, Any]], bytes]:
    """As :func:`schemas.codec.compile_writer` (same arguments, same bytes and errors), writing in
    C; a record outside the exact case goes to ``slow``, by default the compiled writer (which
    hands it to fastavro). Raises ImportError when the extension is not built."""
    if slow is None:
        slow = codec.compile_writer(schema, fp)
    builder = Builder()
    try:
        root = builder.write(dict(schema))
    except codec._Unsupported:
        return slow  # fastavro, as the compiled writer
    write: Callable[[Mapping[str, Any]], bytes] = builder.program(
        root, statement=False, arguments=1, slots=1, prefix=codec.MAGIC + fp, slow=slow
    )
    return write
