"""The relay's direct path: a stored event's JSON straight to its Avro message, no record dict between.

The general path (``engine.publishing.encode_stored``) parses the stored JSON into a
``StoredEventView``, builds the Avro record as nested dicts (``RECORD_BUILDERS``) and hands it to the
precompiled writer of its schema (``schemas/codec.py``), which reads the dicts back field by field.
Profiled in the encoder processes, building those dicts was 35% of the relay's CPU per event and
decoding the JSON 14% (docs/performance.md, "Encoder processes"). Here a writer is generated once
per (event type, schema) from a *plan*: for each field of the schema, the Python expression the
record builder uses to compute it, evaluated over the orjson-parsed stored dict and written at once
with the same Avro primitives as the compiled writer (``codec._Compiler``).

Exactness, by construction: a plan's expressions call the builders' own helpers (``_money``,
``_number``, ``_price``, ``_date``, ``seller_address``, ...) on the same stored values, and read a
key with ``[...]`` where the builder reads an attribute (it would fail) and with ``.get`` where it uses
``getattr(..., None)``. Anything else gives ``None`` and the caller takes the general path: a plan
whose fields are not exactly the schema's (a schema changed without its plan: the whole type goes
the general way), a value not of exactly the schema's type (the compiled writer would have handed
the record to fastavro, which may coerce it), any exception (the general path then raises the real
error, e.g. the relay's ``UnencodableEvent``). ``tests/unit/test_relay_direct.py`` compares both paths
byte for byte on every event type and on random invoices.
"""

from __future__ import annotations

import ast
import builtins
import re
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson

from engine import publishing
from engine.domain.invoice import Invoice
from engine.publishing import (
    _NAMESPACE_BYTES,
    AGGREGATE_TOPICS,
    TENANT_KEYED_AGGREGATES,
    _ce_types,
    _unwrap_top,
    event_id_text,
    new_traceparent,
)
from schemas import codec, native_writer, registry

# (logical topic, key, Avro value, CloudEvents headers): one event's message.
DirectMessage = tuple[str, bytes, bytes, list[tuple[str, bytes]]]


@dataclass(frozen=True)
class Rec:
    """A record field computed field by field: ``pre`` statements (may name locals), then one
    expression (or nested ``Rec``/``Arr``) per schema field, by name."""

    fields: Mapping[str, str | Rec | Arr | Switch]
    pre: tuple[str, ...] = ()


@dataclass(frozen=True)
class Arr:
    """An array field: ``items`` (an expression giving a list) with each item, named ``var``, written
    as ``item``."""

    items: str
    var: str
    item: Rec | Switch | str = field(default="")


@dataclass(frozen=True)
class Switch:
    """A record written as ``then`` where ``condition`` holds, else as ``otherwise`` (one
    country's line or the other's: each with the other country's fields as constant nulls)."""

    condition: str
    then: Rec
    otherwise: Rec


class _PlanCompiler(codec._Compiler):
    """The compiled writer's code generator, with plan nodes as sources."""

    def value(self, schema: Any, source: Any, depth: int) -> None:
        if source == "None" and isinstance(schema, list) and "null" in schema:
            # A null known when the writer is generated: its union index, as a constant.
            self.emit(depth, f"w({self.constant(codec._zigzag(schema.index('null')))})")
            return None
        if isinstance(source, str):
            for helper, shortcut in _SHORTCUTS.items():
                if source.startswith(f"{helper}(") and source.endswith(")"):
                    source = self.shortcut(helper, shortcut, source[len(helper) + 1 : -1], depth)
                    break
            return super().value(schema, source, depth)
        if isinstance(source, Switch):
            self.emit(depth, f"if {source.condition}:")
            self.value(schema, source.then, depth + 1)
            self.emit(depth, "else:")
            self.value(schema, source.otherwise, depth + 1)
            return None
        kind = schema if isinstance(schema, str) else schema.get("type")
        if isinstance(source, Rec):
            if kind != "record":
                raise codec._Unsupported(f"plan record for a {kind!r}")
            names = [f["name"] for f in schema["fields"]]
            if sorted(names) != sorted(source.fields):
                raise codec._Unsupported(f"plan fields differ from {schema.get('name')}'s")
            for line in source.pre:
                self.emit(depth, line)
            for f in schema["fields"]:
                self.value(f["type"], source.fields[f["name"]], depth)
            return None
        if isinstance(source, Arr):
            if kind != "array":
                raise codec._Unsupported(f"plan array for a {kind!r}")
            items = self.fresh("a")
            self.emit(depth, f"{items} = {source.items}")
            self.emit(depth, f"if type({items}) is not list: raise _Mismatch")
            self.emit(depth, f"if {items}:")
            self.emit(depth + 1, f"w(_zigzag(len({items})))")
            self.emit(depth + 1, f"for {source.var} in {items}:")
            self.value(schema["items"], source.item or source.var, depth + 2)
            self.emit(depth, "w(b'\\x00')")
            return None
        raise codec._Unsupported(f"plan node {source!r}")

    def shortcut(self, helper: str, condition: str, argument: str, depth: int) -> str:
        """``helper(argument)`` into a fresh local: the helper's first early return inline (the
        common case: an amount already in wire form), the call otherwise."""
        raw, data, result = self.fresh("m"), self.fresh("d"), self.fresh("r")
        self.emit(depth, f"{raw} = {argument}")
        self.emit(depth, f"{data} = {raw}['_data_'] if type({raw}) is dict and '_type_' in {raw} else {raw}")
        self.emit(depth, f"if type({data}) is str and {condition.format(d=data)}: {result} = {data}")
        self.emit(depth, f"else: {result} = {helper}({raw})")
        return result


# The early returns of engine/publishing.py's _money and _number, for a string ``d`` (what either
# unwraps a stored {"_type_", "_data_"} value to): _money returns a 2-place amount as it is, _number
# an integer's digits as they are (_is_plain_decimal, then no point to strip zeros after).
_SHORTCUTS = {
    "_money": "0 < {d}.find('.') == len({d}) - 3 and 'E' not in {d}",
    "_number": "{d}.isdigit()",
}


# Names a plan's expressions may use: the record builders' own helpers.
_SCOPE: dict[str, Any] = {
    "_u": lambda v: _unwrap_top(v) if type(v) is dict else v,
    "_money": publishing._money,
    "_number": publishing._number,
    "_price": publishing._price,
    "_date": publishing._date,
    "_optional_date": publishing._optional_date,
    "_int_or_none": publishing._int_or_none,
    "_export": publishing._export,
    "seller_address": publishing.seller_address,
}

# Writer inputs besides the stored dict ``s``: the envelope every record starts with (``base`` in
# engine/publishing.py) and the aggregate id's canonical text.
_ARGS = "s, aggregate_id, ce_id, tenant_id, occurred_at"


def compile_plan(plan: Rec, schema: Mapping[str, Any], fp: bytes) -> Callable[..., bytes] | None:
    """The writer of ``plan`` for ``schema`` (raises on anything unexpected), or ``None`` when the
    plan does not fit the schema."""
    compiler = _PlanCompiler()
    try:
        compiler.value(dict(schema), plan, 1)
    except codec._Unsupported:
        return None
    lines = _merge_constant_writes(compiler)
    source = "\n".join(
        [
            f"def write({_ARGS}):",
            "    parts = [prefix]",
            "    w = parts.append",
            *lines,
            "    return b''.join(parts)",
        ]
    )
    scope: dict[str, Any] = {
        **_SCOPE,
        "_zigzag": codec._zigzag,
        "_LENGTHS": codec._LENGTHS,
        "_Mismatch": codec._Mismatch,
        "prefix": codec.MAGIC + fp,
        **compiler.constants,
    }
    exec(compile(source, f"<direct avro writer {schema.get('name')}>", "exec"), scope)
    writer: Callable[..., bytes] = scope["write"]
    writer.source = source  # type: ignore[attr-defined]  # for a reader debugging a mismatch
    return writer


def _merge_constant_writes(compiler: codec._Compiler) -> list[str]:
    """Consecutive writes of constant bytes at one indentation (runs of known nulls) as one write."""
    merged: list[str] = []
    run: tuple[str, bytes] | None = None  # (indentation, bytes) of the pending run

    def flush() -> None:
        if run is not None:
            merged.append(f"{run[0]}w({compiler.constant(run[1])})")

    for line in compiler.lines:
        body = line.lstrip(" ")
        name = body[2:-1] if body.startswith("w(_c") and body.endswith(")") else None
        constant = compiler.constants.get(name) if name else None
        if isinstance(constant, bytes):
            indent = line[: len(line) - len(body)]
            if run is not None and run[0] == indent:
                run = (indent, run[1] + constant)
            else:
                flush()
                run = (indent, constant)
            continue
        flush()
        run = None
        merged.append(line)
    flush()
    return merged


# -- the native writer of a plan -------------------------------------------------------------------
#
# The generated writer above still spends its time in the interpreter: one ``append`` per Avro
# item (~280 for a 5-line invoice), one ``.encode()`` per string, a type check per value
# (docs/performance.md, "relay-cpu": its own code ~55% of the direct path). The same plan as a
# program of schemas._native_writer (schemas/native_writer.py) does that walk in C: key lookups,
# the helpers' early returns (an amount already in wire form), type checks, varints and UTF-8. An
# expression it has no node for is compiled to a Python function of the slots and called from C;
# a helper is called as such. Anything outside the exact case makes the whole call go to the
# generated writer, which then writes the event or raises (and the general path takes it).

_ARG_NAMES = tuple(name.strip() for name in _ARGS.split(","))
# Helpers whose early return the program takes in C (their conditions in _native_writer.pyx).
_SHORTCUT_OPS = {"_money": "money", "_number": "number", "_price": "price"}


class _NativePlan(native_writer.Builder):
    """A plan as a native writer program: plan nodes as statements, expressions as value nodes."""

    def __init__(self, scope: Mapping[str, Any]) -> None:
        super().__init__()
        self.slots: dict[str, int] = {name: i for i, name in enumerate(_ARG_NAMES)}
        self.scope = scope

    def slot(self, name: str) -> int:
        return self.slots.setdefault(name, len(self.slots))

    def statement(self, schema: Any, source: Any) -> int:
        """The node writing plan node ``source`` as ``schema`` (as _PlanCompiler.value)."""
        if source == "None" and isinstance(schema, list) and "null" in schema:
            return self.node("bytes", self.constant(codec._zigzag(schema.index("null"))))
        if isinstance(source, str):
            return self.node("field", self.expression(source), self.write(schema))
        if isinstance(source, Switch):
            condition = self.expression(source.condition)
            then = self.statement(schema, source.then)
            return self.node("switch", condition, then, self.statement(schema, source.otherwise))
        kind = schema if isinstance(schema, str) else None if isinstance(schema, list) else schema.get("type")
        if isinstance(source, Rec):
            if kind != "record":
                raise codec._Unsupported(f"plan record for a {kind!r}")
            if sorted(f["name"] for f in schema["fields"]) != sorted(source.fields):
                raise codec._Unsupported(f"plan fields differ from {schema.get('name')}'s")
            children = [self.pre(line) for line in source.pre]
            children += [self.statement(f["type"], source.fields[f["name"]]) for f in schema["fields"]]
            return self.sequence(children)
        if isinstance(source, Arr):
            if kind != "array":
                raise codec._Unsupported(f"plan array for a {kind!r}")
            items = self.expression(source.items)
            slot = self.slot(source.var)
            return self.node("each", items, slot, self.statement(schema["items"], source.item or source.var))
        raise codec._Unsupported(f"plan node {source!r}")

    def sequence(self, children: list[int]) -> int:
        """Children in order; consecutive constant bytes (runs of known nulls) as one write."""
        merged: list[int] = []
        for child in children:
            if self.is_bytes(child) and merged and self.is_bytes(merged[-1]):
                joined = self.values[self.code[merged[-1] + 1]] + self.values[self.code[child + 1]]
                merged[-1] = self.node("bytes", self.constant(joined))
            else:
                merged.append(child)
        return self.node("seq", len(merged), *merged)

    def is_bytes(self, at: int) -> bool:
        return self.code[at] == self.ops["bytes"]

    def pre(self, line: str) -> int:
        """A plan's statement: ``name = expression`` into a slot, anything else as Python."""
        tree = ast.parse(line).body[0]
        if isinstance(tree, ast.Assign) and len(tree.targets) == 1 and isinstance(tree.targets[0], ast.Name):
            value = self.value(tree.value)
            return self.node("set", self.slot(tree.targets[0].id), value)
        function = self.python("def f(env):\n" + textwrap.indent(self.unparse(tree), "    "))
        return self.node("exec", self.constant(function))

    def expression(self, source: str) -> int:
        return self.value(ast.parse(source, mode="eval").body)

    def value(self, tree: ast.expr) -> int:
        if isinstance(tree, ast.Name) and tree.id in self.slots:
            return self.node("slot", self.slots[tree.id])
        if isinstance(tree, ast.Constant):
            return self.node("const", self.constant(tree.value))
        if isinstance(tree, ast.Subscript) and self.is_key(tree.slice):
            key = _parsed_key(tree.slice.value)  # type: ignore[attr-defined]
            return self.node("item", self.value(tree.value), self.constant(key))
        if isinstance(tree, ast.BoolOp) and isinstance(tree.op, ast.Or) and len(tree.values) == 2:
            return self.node("or", *(self.value(side) for side in tree.values))
        if isinstance(tree, ast.Compare) and len(tree.ops) == 1 and isinstance(tree.ops[0], ast.Eq):
            return self.node("eq", self.value(tree.left), self.value(tree.comparators[0]))
        if (
            isinstance(tree, ast.Call)
            and isinstance(tree.func, ast.Attribute)
            and tree.func.attr == "get"
            and len(tree.args) in (1, 2)
            and not tree.keywords
            and self.is_key(tree.args[0])
            # A constant default: evaluated only when the key is missing, with the same result.
            and all(isinstance(a, ast.Constant) for a in tree.args[1:])
        ):
            default = self.value(tree.args[1]) if len(tree.args) == 2 else -1
            container = self.value(tree.func.value)
            key = _parsed_key(tree.args[0].value)  # type: ignore[attr-defined]
            return self.node("get", container, self.constant(key), default)
        if isinstance(tree, ast.Call) and len(tree.args) == 1 and not tree.keywords:
            func, (argument,) = tree.func, tree.args
            name = func.id if isinstance(func, ast.Name) and func.id not in self.slots else None
            if name == "_u":
                return self.node("unwrap", self.value(argument), self.constant(publishing._unwrap_top))
            if name in _SHORTCUT_OPS:
                return self.node(_SHORTCUT_OPS[name], self.value(argument), self.constant(self.scope[name]))
            helper = self.scope.get(name) if name else None
            if helper is None and name in ("int", "bool", "dict"):
                helper = getattr(builtins, name)
            if helper is not None:
                return self.node("apply", self.value(argument), self.constant(helper))
        return self.node("call", self.constant(self.python(f"f = lambda env: ({self.unparse(tree)})\n")))

    @staticmethod
    def is_key(tree: ast.expr) -> bool:
        return isinstance(tree, ast.Constant) and type(tree.value) is str

    def unparse(self, tree: ast.AST) -> str:
        """Python source of ``tree`` with each slot's name read and assigned as ``env[slot]``."""
        slots = self.slots

        class Slots(ast.NodeTransformer):
            def visit_Name(self, node: ast.Name) -> ast.AST:
                if node.id not in slots:
                    return node
                index = ast.Subscript(ast.Name("env", ast.Load()), ast.Constant(slots[node.id]), node.ctx)
                return ast.copy_location(index, node)

        return ast.unparse(ast.fix_missing_locations(Slots().visit(tree)))

    def python(self, source: str) -> Callable[[list[Any]], Any]:
        scope = dict(self.scope)
        exec(compile(source, "<direct avro writer, native plan>", "exec"), scope)
        function: Callable[[list[Any]], Any] = scope["f"]
        return function


def _parsed_key(key: str) -> str:
    """``key`` as the str object ``orjson.loads`` makes of it: orjson keeps one object per short key
    (its key cache), and a dict lookup whose key *is* the dict's own skips comparing the text. perf
    of the native writer: dict lookups and their memcmp ~35% of it. Equal text either way, so a key
    orjson did not keep only loses the shortcut."""
    (parsed,) = orjson.loads(orjson.dumps({key: None}))
    return str(parsed)


def compile_native_plan(
    plan: Rec, schema: Mapping[str, Any], fp: bytes, slow: Callable[..., bytes]
) -> Callable[..., bytes] | None:
    """``plan``'s writer for ``schema`` as a native program (same arguments and bytes as
    :func:`compile_plan`'s, which it hands anything outside its exact case: ``slow``); ``None``
    when the plan does not fit. Raises ImportError when the extension is not built."""
    builder = _NativePlan({**_SCOPE, "_Mismatch": codec._Mismatch})
    try:
        root = builder.statement(dict(schema), plan)
    except codec._Unsupported:
        return None
    write: Callable[..., bytes] = builder.program(
        root,
        statement=True,
        arguments=len(_ARG_NAMES),
        slots=len(builder.slots),
        prefix=codec.MAGIC + fp,
        slow=slow,
    )
    return write


# -- plans: engine/publishing.py's record builders, field by field ----------------------------------

_ENVELOPE = {"event_id": "ce_id", "tenant_id": "tenant_id", "occurred_at": "occurred_at"}


_LINE_COMMON = {
    "line_no": "int(line['line_no'])",
    "description": "line['description']",
    "quantity": "_number(line['quantity'])",
    "unit_price": "_price(line['unit_price'])",
    "discount": "_money(line['discount'])",
    "total": "_money(line['total'])",
    "original_line_no": "_int_or_none(line.get('original_line_no'))",
}
# _gst_line and _kenyan_line: each with the other country's fields null.
_GST_LINE = Rec(
    {
        **_LINE_COMMON,
        "hsn": "line['hsn']",
        "unit": "line['unit']",
        "taxable_value": "_money(line['taxable_value'])",
        "gst_rate": "_number(line['gst_rate'])",
        "rate_source": "line['rate_source']",
        "master_rate": "_number(line.get('master_rate'))",
        "override_reason": "line.get('override_reason')",
        "cgst": "_money(line['cgst'])",
        "sgst": "_money(line['sgst'])",
        "igst": "_money(line['igst'])",
        "cess_rate": "_number(line['cess_rate'])",
        "cess": "_money(line['cess'])",
        "supply_category": "(line.get('supply_category') or 'taxable')",
        **dict.fromkeys(publishing.KENYAN_LINE_FIELDS, "None"),
    }
)
_KENYAN_LINE = Rec(
    {
        **_LINE_COMMON,
        **dict.fromkeys(publishing.GST_LINE_FIELDS, "None"),
        "supply_category": "'taxable'",
        "item_code": "line['item_code']",
        "tax_type": "line['tax_type']",
        "supply_amount": "_money(line['supply_amount'])",
        "taxable_amount": "_money(line['taxable_amount'])",
        "tax_rate": "_number(line['tax_rate'])",
        "tax_amount": "_money(line['tax_amount'])",
    }
)
_LINE = Switch("kenyan", _KENYAN_LINE, _GST_LINE)

# Totals: the builder's dict is every field of _NO_TOTALS plus the stored ones; exactly the
# schema's fields when the stored names are among them and the two together cover them.
_TOTALS_PRE = (
    "t = _u(s['totals'])",
    "if type(t) is not dict or _TOTALS_NAMES.union(t) != _TOTALS_FIELDS: raise _Mismatch",
)


def _totals(fields: list[str]) -> Rec:
    return Rec({name: f"_money(t.get({name!r}))" for name in fields}, _TOTALS_PRE)


def _invoice_issued_plan(schema: Mapping[str, Any]) -> Rec:
    """``_invoice_issued``: the envelope, the invoice id, then ``invoice_document``."""
    totals = next(f["type"] for f in schema["fields"] if f["name"] == "totals")
    _SCOPE["_TOTALS_NAMES"] = frozenset(publishing._NO_TOTALS)
    _SCOPE["_TOTALS_FIELDS"] = frozenset(f["name"] for f in totals["fields"])
    return Rec(
        {
            **_ENVELOPE,
            "invoice_id": "aggregate_id",
            "number": "s['number']",
            "financial_year": "s['financial_year']",
            "date": "_date(_u(s['invoice_date']))",
            "currency": "s['currency']",
            "supply_type": "s['supply_type']",
            "seller": Rec(
                {
                    "gstin": "seller.get('gstin')",
                    "legal_name": "seller['legal_name']",
                    "state": "seller.get('state')",
                    "trade_name": "seller.get('trade_name')",
                    "address": "seller_address(seller.get('address'))",
                    "kra_pin": "seller.get('kra_pin')",
                },
                ("seller = _u(s['seller'])",),
            ),
            "buyer": Rec(
                {
                    "name": "buyer['name']",
                    "gstin": "buyer.get('gstin')",
                    "state": "buyer.get('state')",
                    "address": "buyer.get('address')",
                    "kra_pin": "buyer.get('kra_pin')",
                    "phone": "buyer.get('phone')",
                },
                ("buyer = dict(_u(s['buyer']))",),
            ),
            "place_of_supply": "s['place_of_supply']",
            "intra_state": "(None if (x := _u(s['intra_state'])) is None else bool(x))",
            "lines": Arr("_u(s['lines'])", "line", _LINE),
            "totals": _totals([f["name"] for f in totals["fields"]]),
            "idempotency_key": "s['idempotency_key']",
            "source": "s['source']",
            "country": "country",
            "document_type": "(_u(s.get('document_type')) or 'invoice')",
            "original_invoice_id": "_u(s.get('original_invoice_id'))",
            "original_number": "_u(s.get('original_number'))",
            "refund_reason_code": "_u(s.get('refund_reason_code'))",
            "environment": "_u(s.get('environment'))",
            "branch_id": "_u(s.get('branch_id'))",
            "payment_type": "_u(s.get('payment_type'))",
            "tax_breakdown": Arr(
                "(_u(s.get('tax_breakdown')) or [])",
                "item",
                Rec(
                    {
                        "tax_type": "item['tax_type']",
                        "rate": "_number(item['rate'])",
                        "taxable": "_money(item['taxable'])",
                        "tax": "_money(item['tax'])",
                    }
                ),
            ),
            "reverse_charge": "bool(_u(s.get('reverse_charge', False)))",
            "ecommerce_gstin": "_u(s.get('ecommerce_gstin'))",
            "export": "_export(_u(s.get('export')))",
            "note_reason": "_u(s.get('note_reason'))",
            "original_invoice_date": "_optional_date(_u(s.get('original_invoice_date')))",
        },
        # Issued events stored before v4 have no country: Indian invoices (invoice_document).
        ("country = _u(s.get('country')) or 'IN'", "kenyan = country == 'KE'"),
    )


# Stored event class -> its plan for a schema. The builder each plan copies is named beside it;
# test_relay_direct.py fails if a builder changes without its plan.
PLANS: dict[type, Callable[[Mapping[str, Any]], Rec]] = {
    Invoice.Issued: _invoice_issued_plan,
}


Envelope = tuple[str, int, list[tuple[str, bytes]]]
TypeHeaders = tuple[tuple[str, bytes], tuple[str, bytes]]


def envelope_python(
    namespace: bytes,
    aggregate_id: str,
    version: int,
    time: datetime,
    tenant_id: str,
    traceparent: str,
    type_headers: TypeHeaders,
) -> Envelope:
    """(event id text, ``occurred_at`` in milliseconds, CloudEvents headers) of an event, as
    ``to_outbound`` and ``headers_for`` make them, for the event id ``namespace``'s bytes and the
    type's ``type_headers`` (``publishing.type_headers``). ``envelope`` is the C build of the same
    when it is built (tests/unit/test_relay_direct.py compares the two on random values)."""
    ce_id = event_id_text(aggregate_id, version, namespace)
    headers = publishing.envelope_headers(type_headers, ce_id, tenant_id, aggregate_id, time, traceparent)
    return ce_id, publishing._millis(time), headers


try:
    # The envelope's Python glue was ~2.7 µs of ~23 per event in encode_direct (timeit, bench
    # invoice: event id 0.9, _millis 0.3, the _Facts it needed 0.1, headers_for 1.2); in C ~0.5.
    from engine._native_kafka import envelope
except ImportError:  # an install that skipped the C build
    envelope = envelope_python


@dataclass(frozen=True)
class _Type:
    """One stored event type's direct path for the current schema of its CloudEvents type."""

    ce_type: str
    topic: str
    tenant_keyed: bool
    schema: registry.SchemaVersion
    write: Callable[..., bytes]
    # ce_type and ce_dataschema: the same for every event of the type (publishing.type_headers).
    type_headers: TypeHeaders


# Stored topic -> its direct path, or None (no plan, or the plan does not fit the schema).
_types: dict[str, _Type | None] = {}


def _type_for(stored_topic: str) -> _Type | None:
    event_class = publishing.STORED_TOPICS.get(stored_topic)
    plan = PLANS.get(event_class) if event_class is not None else None
    if event_class is None or plan is None:
        return None
    aggregate, ce_type = _ce_types[event_class]
    sv = registry.current(ce_type)
    planned = plan(sv.schema)
    write = compile_plan(planned, sv.schema, sv.fingerprint)
    if write is None:
        return None
    if native_writer.available():
        write = compile_native_plan(planned, sv.schema, sv.fingerprint, write) or write
    return _Type(
        ce_type,
        AGGREGATE_TOPICS[aggregate],
        aggregate in TENANT_KEYED_AGGREGATES,
        sv,
        write,
        publishing.type_headers(ce_type, sv.fingerprint_hex),
    )


def prepare() -> None:
    """Compile the writers of every planned event type now rather than at its first event. The relay
    calls it while its encoder processes start (it waits for them anyway): with encoders, its own
    process encodes only short pages (a live log's tail), and the first one otherwise paid the
    compilation, 75 ms for ``Invoice.Issued`` (bench backlog: the last, one-event page of a
    catch-up). A type that fails to compile is left to ``encode_direct``, which raises as before."""
    for stored_topic, event_class in publishing.STORED_TOPICS.items():
        if event_class in PLANS and stored_topic not in _types:
            try:
                _types[stored_topic] = _type_for(stored_topic)
            except Exception:
                continue


# str(UUID(x)) is x exactly for these: lowercase hex digits in groups of 8-4-4-4-12.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def encode_direct(
    originator_id: object, originator_version: int, stored_topic: str, state: bytes
) -> DirectMessage | None:
    """The message ``encode_stored`` makes for this stored event, byte for byte, or ``None`` when
    the direct path does not take it (then ``encode_stored`` must be asked)."""
    try:
        kind = _types[stored_topic]
    except KeyError:
        kind = _types[stored_topic] = _type_for(stored_topic)
    if kind is None:
        return None
    try:
        s = orjson.loads(state)
        # As StoredEventView and to_outbound compute them. The relay reads the id as PostgreSQL's text,
        # already the canonical form str(UUID(...)) gives (timeit: 0.7 µs to check it, 4.5 µs for
        # the round trip, same load).
        if type(originator_id) is str and _CANONICAL_UUID.fullmatch(originator_id):
            aggregate_id = originator_id
        else:
            aggregate_id = str(originator_id if type(originator_id) is UUID else UUID(str(originator_id)))
        tenant_id = str(_SCOPE["_u"](s.get("tenant_id")) or aggregate_id)
        time = datetime.fromisoformat(_SCOPE["_u"](s["timestamp"]))
        traceparent = _SCOPE["_u"](s.get("traceparent")) or new_traceparent()
        if type(traceparent) is not str:
            # Not one the relay wrote (a number, a list): the general path says what becomes of it.
            return None
        ce_id, occurred_at, headers = envelope(
            _NAMESPACE_BYTES,
            aggregate_id,
            originator_version,
            time,
            tenant_id,
            traceparent,
            kind.type_headers,
        )
        value = kind.write(s, aggregate_id, ce_id, tenant_id, occurred_at)
    except Exception:
        return None
    key = tenant_id if kind.tenant_keyed else aggregate_id
    return kind.topic, key.encode(), value, headers
