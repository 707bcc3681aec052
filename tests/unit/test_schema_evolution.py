"""Backward compatibility: every message ever written must stay readable with the current schema.

Consumers and replays read with the current (highest) version of each type, so each older version's
sample, written with its own schema, has to resolve to the current one with defaults filled in.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from fastavro.schema import to_parsing_canonical_form
from fastavro.validation import validate

from schemas import codec, registry
from schemas.registry import SchemaVersion

ALL_VERSIONS = [sv for t in registry.all_types() for sv in registry.versions(t)]
PAIRS = [
    (old, new)
    for t in registry.all_types()
    for old, new in zip(registry.versions(t), registry.versions(t)[1:], strict=False)
]


def _id(sv: SchemaVersion) -> str:
    return f"{sv.ce_type}.v{sv.version}"


def _sample(sv: SchemaVersion) -> dict[str, Any]:
    data = json.loads(sv.sample_path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


# --- a tiny model of Avro default filling over the raw JSON schema, to state the expected result --------

Named = dict[str, Any]


def _collect_named(schema: Any, namespace: str, named: Named) -> None:
    if isinstance(schema, list):
        for branch in schema:
            _collect_named(branch, namespace, named)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "enum", "fixed"):
            ns = schema.get("namespace", namespace)
            name = schema["name"] if "." in schema["name"] else f"{ns}.{schema['name']}"
            named[name] = schema
            named[schema["name"].rsplit(".", 1)[-1]] = schema
            for field in schema.get("fields", []):
                _collect_named(field["type"], ns, named)
        elif kind == "array":
            _collect_named(schema["items"], namespace, named)
        elif kind == "map":
            _collect_named(schema["values"], namespace, named)


def _expected(value: Any, schema: Any, named: Named) -> Any:
    """``value`` as the reader ``schema`` should return it; timestamps stay epoch millis."""
    if isinstance(schema, str) and schema in named:
        schema = named[schema]
    if isinstance(schema, list):
        if value is None:
            return None
        records = [b for b in schema if isinstance(b, dict | str) and _is_record(b, named)]
        if isinstance(value, dict) and records:
            return _expected(value, records[0], named)
        return value
    if isinstance(schema, dict):
        kind = schema["type"]
        if kind == "record":
            return {
                f["name"]: _expected(value[f["name"]], f["type"], named)
                if f["name"] in value
                else f["default"]
                for f in schema["fields"]
            }
        if kind == "array":
            return [_expected(item, schema["items"], named) for item in value]
    return value


def _is_record(schema: Any, named: Named) -> bool:
    if isinstance(schema, str):
        schema = named.get(schema)
    return isinstance(schema, dict) and schema.get("type") == "record"


def _to_millis(value: Any) -> Any:
    # fastavro hands timestamp-millis back as datetimes; samples store them as epoch millis.
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, dict):
        return {k: _to_millis(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_millis(v) for v in value]
    return value


# --- tests ----------------------------------------------------------------------------------------------


def test_every_schema_has_a_sample_and_every_sample_a_schema() -> None:
    expected = {sv.sample_path for sv in ALL_VERSIONS}
    assert all(p.is_file() for p in expected), sorted(str(p) for p in expected if not p.is_file())
    found = set(registry.SAMPLES_DIR.glob("*/*.json"))
    assert found == expected


def _fields(schema: dict[str, Any]) -> set[str]:
    return {f["name"] for f in schema["fields"]}


def _seller(schema: dict[str, Any]) -> dict[str, Any]:
    [seller] = [f["type"] for f in schema["fields"] if f["name"] == "seller"]
    assert isinstance(seller, dict)
    return seller


def test_invoice_issued_v2_added_the_command_fields_and_v3_the_seller_trade_name_and_address() -> None:
    v1, v2, v3, *_ = registry.versions("ledgerflow.invoice.issued")
    assert _fields(v2.schema) - _fields(v1.schema) == {"idempotency_key", "source"}
    assert _fields(v3.schema) == _fields(v2.schema)
    assert _fields(_seller(v3.schema)) - _fields(_seller(v2.schema)) == {"trade_name", "address"}


@pytest.mark.parametrize("sv", ALL_VERSIONS, ids=_id)
def test_sample_validates_against_its_own_version(sv: SchemaVersion) -> None:
    # strict: samples document every field, so a field missing from a sample is a mistake in the sample.
    assert validate(_sample(sv), sv.parsed, raise_errors=True, strict=True)


@pytest.mark.parametrize("sv", ALL_VERSIONS, ids=_id)
def test_sample_written_with_its_version_reads_with_current(sv: SchemaVersion) -> None:
    sample = _sample(sv)
    current = registry.current(sv.ce_type)
    data = codec.encode(sv.parsed, sample)
    assert data[2:10] == sv.fingerprint  # the message names the writer version, not the current one

    decoded = registry.decode_event(data, sv.ce_type)

    named: Named = {}
    _collect_named(current.schema, current.schema["namespace"], named)
    assert _to_millis(decoded) == _expected(sample, current.schema, named)


def test_issued_v1_message_gets_v2_and_v3_defaults() -> None:
    v1 = registry.versions("ledgerflow.invoice.issued")[0]
    decoded = registry.decode_event(codec.encode(v1.parsed, _sample(v1)))
    assert decoded["source"] == "api"
    assert decoded["idempotency_key"] is None
    assert decoded["seller"]["address"] is None and decoded["seller"]["trade_name"] is None


def test_issued_v3_message_carries_the_seller_trade_name_and_address() -> None:
    v3 = registry.versions("ledgerflow.invoice.issued")[2]
    decoded = registry.decode_event(codec.encode(v3.parsed, _sample(v3)))
    assert decoded["seller"]["address"]["city"] == "Bengaluru"
    assert decoded["seller"]["trade_name"] == "Anand Traders"


# --- guard: how a new version may differ from the previous one ------------------------------------------

# Avro's permitted writer -> reader promotions (specification, "Schema Resolution").
PROMOTIONS = {
    ("int", "long"),
    ("int", "float"),
    ("int", "double"),
    ("long", "float"),
    ("long", "double"),
    ("float", "double"),
    ("string", "bytes"),
    ("bytes", "string"),
}


def _resolve(schema: Any, named: Named) -> Any:
    return named.get(schema, schema) if isinstance(schema, str) else schema


def _type_name(schema: Any) -> str:
    if isinstance(schema, dict):
        return str(schema["type"])
    return str(schema)


def _compatible(old: Any, new: Any, path: str, old_named: Named, new_named: Named) -> list[str]:
    """Problems reading data written with ``old`` through reader ``new``."""
    old, new = _resolve(old, old_named), _resolve(new, new_named)
    if isinstance(old, list) or isinstance(new, list):
        old_branches = old if isinstance(old, list) else [old]
        new_branches = new if isinstance(new, list) else [new]
        problems: list[str] = []
        for ob in old_branches:
            # Each branch the writer could have used must still resolve to some reader branch.
            if all(_compatible(ob, nb, path, old_named, new_named) for nb in new_branches):
                problems.append(
                    f"{path}: union branch {_type_name(_resolve(ob, old_named))} no longer readable"
                )
        return problems
    if isinstance(old, dict) and old.get("type") == "record":
        if not (isinstance(new, dict) and new.get("type") == "record"):
            return [f"{path}: record became {_type_name(new)}"]
        if old["name"].rsplit(".", 1)[-1] != new["name"].rsplit(".", 1)[-1]:
            return [f"{path}: record renamed {old['name']} -> {new['name']}"]
        old_fields = {f["name"]: f for f in old["fields"]}
        problems = []
        for field in new["fields"]:
            sub = f"{path}.{field['name']}"
            if field["name"] not in old_fields:
                if "default" not in field:
                    problems.append(f"{sub}: added without a default")
                continue
            problems += _compatible(
                old_fields[field["name"]]["type"], field["type"], sub, old_named, new_named
            )
        return problems
    if isinstance(old, dict) and old.get("type") == "array":
        if not (isinstance(new, dict) and new.get("type") == "array"):
            return [f"{path}: array became {_type_name(new)}"]
        return _compatible(old["items"], new["items"], f"{path}[]", old_named, new_named)
    if _leaf_key(old) == _leaf_key(new):
        return []
    if (_type_name(old), _type_name(new)) in PROMOTIONS:
        return []
    return [f"{path}: {_type_name(old)} -> {_type_name(new)} is not a permitted change"]


def _leaf_key(schema: Any) -> tuple[str, Any]:
    # The canonical form drops logicalType, but turning a timestamp into a plain long (or back) changes
    # what readers get, so it counts as a type change here.
    logical = schema.get("logicalType") if isinstance(schema, dict) else None
    return to_parsing_canonical_form(schema), logical


def _named(sv: SchemaVersion) -> Named:
    named: Named = {}
    _collect_named(sv.schema, sv.schema["namespace"], named)
    return named


@pytest.mark.parametrize(("old", "new"), PAIRS, ids=[_id(new) for _, new in PAIRS])
def test_consecutive_versions_are_backward_compatible(old: SchemaVersion, new: SchemaVersion) -> None:
    assert _compatible(old.schema, new.schema, new.ce_type, _named(old), _named(new)) == []


def test_guard_detects_breaking_changes() -> None:
    # The guard itself must fail on the mistakes it exists to catch.
    v1 = registry.versions("ledgerflow.invoice.cancelled")[0]
    named = _named(v1)
    no_default = json.loads(json.dumps(v1.schema))
    no_default["fields"].append({"name": "actor", "type": "string"})
    assert _compatible(v1.schema, no_default, "t", named, named) == ["t.actor: added without a default"]

    retyped = json.loads(json.dumps(v1.schema))
    retyped["fields"][4]["type"] = "int"
    assert _compatible(v1.schema, retyped, "t", named, named) != []

    nested = registry.versions("ledgerflow.invoice.issued")[1]
    nested_named = _named(nested)
    changed = json.loads(json.dumps(nested.schema))
    changed["fields"][10]["type"]["fields"].append({"name": "country", "type": "string"})
    assert _compatible(nested.schema, changed, "t", nested_named, nested_named) == [
        "t.buyer.country: added without a default"
    ]


def test_prepare_readers_builds_every_version_of_the_types_asked_for_and_no_other() -> None:
    # A projector builds its readers at start (projections/runner.py, prepare), not on its first
    # batch. Asked for one type, it builds each of that type's versions, nothing of the others.
    registry._decoder.cache_clear()
    registry.prepare_readers(["ledgerflow.invoice.cancelled", "ledgerflow.invoice.issued"])
    built = {registry._decoder(sv.fingerprint) for sv in registry.versions("ledgerflow.invoice.issued")}
    info = registry._decoder.cache_info()
    issued = len(registry.versions("ledgerflow.invoice.issued"))
    cancelled = len(registry.versions("ledgerflow.invoice.cancelled"))
    assert len(built) == issued and issued > 1
    assert (info.currsize, info.hits) == (issued + cancelled, issued)
