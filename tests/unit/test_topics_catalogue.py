"""docs/topics.md's event catalogue against what the relay can publish.

What counts as documented (the rule the catalogue follows, stated in docs/topics.md too):

- An event type is documented when the "Event catalogue" section has a ``### `<ce_type>` ...`` heading.
- A field of the type's *current* schema (older versions only lack fields) is documented when a table row in
  that type's section names it, in backticks, in its first cell; several fields may share a row
  (`` `event_id`, `tenant_id`, `occurred_at` ``).
- A field of a nested record (also a record inside an array or a nullable union) has the dotted path
  ``parent.child`` (``buyer.address.city``, ``lines.line_no``). It is documented when any of these holds:
  a row names the dotted path in its first cell; the parent's row lists it in its notes as
  `` `child` (type...) ``; or a table introduced by a line "`` `Record` fields:``" (the Avro record's name)
  has a row for it.

The event types come from the relay's own mapping (engine.publishing) and the fields from the shipped
schemas (schemas.registry), so a new event type or field fails here until it is written up.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from engine.config import PROJECT_ROOT
from engine.publishing import published_ce_types
from schemas import registry

TOPICS_MD = PROJECT_ROOT / "docs" / "topics.md"
_CODE = re.compile(r"`([^`]+)`")


@dataclass
class DocumentedType:
    """What one ``### `<ce_type>` `` section of the catalogue says."""

    rows: dict[str, str] = field(default_factory=dict)  # name in the first cell -> notes cell
    record_tables: dict[str, set[str]] = field(default_factory=dict)  # "`Record` fields:" -> row names


def catalogue_section(text: str) -> str:
    match = re.search(r"^## Event catalogue\n(?P<body>.*?)(?=^## )", text, flags=re.MULTILINE | re.DOTALL)
    assert match, "docs/topics.md has no '## Event catalogue' section"
    return match["body"]


def documented_types(text: str) -> dict[str, DocumentedType]:
    """Per event type, the field names its tables mention, from docs/topics.md's catalogue."""
    found: dict[str, DocumentedType] = {}
    for section in re.split(r"^### ", catalogue_section(text), flags=re.MULTILINE)[1:]:
        title = re.match(r"`(ledgerflow\.[a-z_.]+)`", section)
        if title is None:  # a heading that groups several types, not an entry of its own
            continue
        entry = found.setdefault(title[1], DocumentedType())
        record_table: set[str] | None = None
        for line in section.splitlines():
            introduced = re.match(r"^`(\w+)` fields:", line)
            if introduced:
                record_table = entry.record_tables.setdefault(introduced[1], set())
            elif line.startswith("|"):
                cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
                names = _CODE.findall(cells[0])
                notes = cells[-1] if len(cells) > 1 else ""
                for name in names:
                    if record_table is not None:
                        record_table.add(name)
                    else:
                        entry.rows[name] = notes
            elif line.strip() and not line.startswith("|"):
                record_table = None
    return found


@dataclass(frozen=True)
class SchemaField:
    path: str  # dotted from the top-level record, array items and unions passed through
    record: str  # name of the Avro record the field belongs to


def schema_fields(schema: dict[str, Any]) -> Iterator[SchemaField]:
    """Every field of a record schema, nested records included (depth first, in schema order)."""
    named: dict[str, dict[str, Any]] = {}

    def records_in(avro_type: Any) -> Iterator[dict[str, Any]]:
        if isinstance(avro_type, list):  # union: e.g. ["null", {record}]
            for branch in avro_type:
                yield from records_in(branch)
        elif isinstance(avro_type, str) and avro_type in named:  # a record defined earlier, by name
            yield named[avro_type]
        elif isinstance(avro_type, dict):
            if avro_type["type"] == "record":
                named[avro_type["name"]] = avro_type
                yield avro_type
            elif avro_type["type"] == "array":
                yield from records_in(avro_type["items"])

    def walk(record: dict[str, Any], prefix: str) -> Iterator[SchemaField]:
        for avro_field in record["fields"]:
            path = f"{prefix}{avro_field['name']}"
            yield SchemaField(path, record["name"])
            for nested in records_in(avro_field["type"]):
                yield from walk(nested, f"{path}.")

    yield from walk(schema, "")


def is_documented(entry: DocumentedType, schema_field: SchemaField) -> bool:
    if schema_field.path in entry.rows:
        return True
    parent, dot, leaf = schema_field.path.rpartition(".")
    if not dot:
        return False
    listed_in_parent_row = re.search(rf"`{re.escape(leaf)}` \(", entry.rows.get(parent, ""))
    return bool(listed_in_parent_row) or leaf in entry.record_tables.get(schema_field.record, set())


def undocumented(text: str) -> list[str]:
    """Every published type without an entry, and every field of a current schema without a row."""
    documented = documented_types(text)
    missing: list[str] = []
    for ce_type in published_ce_types():
        entry = documented.get(ce_type)
        if entry is None:
            missing.append(f"{ce_type} (no '### `{ce_type}`' entry)")
            continue
        missing += [
            f"{ce_type}: {schema_field.path}"
            for schema_field in schema_fields(registry.current(ce_type).schema)
            if not is_documented(entry, schema_field)
        ]
    return missing


def test_every_event_type_the_relay_publishes_has_a_shipped_schema() -> None:
    assert published_ce_types(), "the relay publishes no event type at all"
    assert set(published_ce_types()) <= set(registry.all_types())


def test_every_published_event_type_and_every_field_of_its_current_schema_is_in_the_catalogue() -> None:
    missing = undocumented(TOPICS_MD.read_text(encoding="utf-8"))
    assert not missing, "docs/topics.md's event catalogue does not describe:\n" + "\n".join(missing)


def test_the_catalogue_describes_no_event_type_the_relay_cannot_publish() -> None:
    stale = set(documented_types(TOPICS_MD.read_text(encoding="utf-8"))) - set(published_ce_types())
    assert not stale, f"docs/topics.md describes event types nothing publishes: {sorted(stale)}"


def test_the_check_names_a_deleted_entry_and_a_deleted_field_line() -> None:
    # The guard itself must bite: remove one entry and one field row from the real page.
    text = TOPICS_MD.read_text(encoding="utf-8")
    without_entry = re.sub(
        r"^### `ledgerflow\.invoice\.irn_failed`.*?(?=^### )", "", text, flags=re.MULTILINE | re.DOTALL
    )
    without_field = re.sub(r"^\| `cancel_date` \|.*\n", "", text, flags=re.MULTILINE)
    without_nested = text.replace("`pincode` (string, nullable)", "")
    assert without_entry != text and without_field != text and without_nested != text
    assert "ledgerflow.invoice.irn_failed (no '### `ledgerflow.invoice.irn_failed`' entry)" in undocumented(
        without_entry
    )
    assert undocumented(without_field) == ["ledgerflow.invoice.irn_cancelled: cancel_date"]
    assert "ledgerflow.invoice.issued: buyer.address.pincode" in undocumented(without_nested)
