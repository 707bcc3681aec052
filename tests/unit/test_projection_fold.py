"""The fold behind set-based projection writes (projections/batch.py): a batch's changes folded per
row must leave every row exactly as applying the changes one by one would. Checked here against a
model of the two statements ``write`` sends; tests/integration/test_projection_batch.py checks the
statements themselves on PostgreSQL."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from projections.batch import FinalEffect, RowChange, fold

Rows = dict[str, dict[str, Any]]


def one_by_one(rows: Rows, changes: list[RowChange]) -> Rows:
    """What the per-event statements do: insert if absent, then update if present."""
    out = {k: dict(v) for k, v in rows.items()}
    for change in changes:
        if change.insert is not None and change.key not in out:
            out[change.key] = dict(change.insert)
        if change.set and change.key in out:
            out[change.key].update(change.set)
    return out


def as_written(rows: Rows, effects: list[FinalEffect]) -> Rows:
    """What ``write``'s two statements do with the folded effects: INSERT ... ON CONFLICT DO NOTHING
    RETURNING key, then UPDATE the rows that existed before (not the ones just inserted)."""
    out = {k: dict(v) for k, v in rows.items()}
    inserted = set()
    for effect in effects:
        if effect.insert is not None and effect.key not in out:
            out[effect.key] = dict(effect.insert)
            inserted.add(effect.key)
    for effect in effects:
        if effect.update and effect.key in out and effect.key not in inserted:
            out[effect.key].update(effect.update)
    return out


keys = st.sampled_from(["a", "b", "c"])
cells = st.one_of(st.none(), st.integers(0, 9))
values = st.dictionaries(st.sampled_from(["x", "y", "z"]), cells, max_size=3)
changes = st.builds(
    RowChange,
    key=keys,
    insert=st.one_of(st.none(), values),
    set=st.one_of(st.none(), values),
)
existing = st.dictionaries(keys, values, max_size=3)


@given(existing, st.lists(changes, max_size=12))
def test_a_folded_batch_leaves_every_row_as_applying_its_changes_one_by_one_would(
    rows: Rows, batch: list[RowChange]
) -> None:
    assert as_written(rows, fold(batch)) == one_by_one(rows, batch)


def test_the_same_row_changed_several_times_is_written_once_with_its_final_values() -> None:
    batch = [
        RowChange("inv-1", insert={"status": "issued", "irn": None}),
        RowChange("inv-1", set={"irn": "A1"}),
        RowChange("inv-1", insert={"status": "issued", "irn": None}),  # a duplicate delivery
        RowChange("inv-1", set={"status": "cancelled"}),
    ]
    (effect,) = fold(batch)
    assert effect.insert == {"status": "cancelled", "irn": "A1"}
    assert effect.update == {"irn": "A1", "status": "cancelled"}


def test_a_change_set_before_its_rows_insert_applies_only_to_a_row_that_already_existed() -> None:
    batch = [RowChange("inv-1", set={"status": "cancelled"}), RowChange("inv-1", insert={"status": "issued"})]
    assert as_written({}, fold(batch)) == {"inv-1": {"status": "issued"}}
    assert as_written({"inv-1": {"status": "issued"}}, fold(batch)) == {"inv-1": {"status": "cancelled"}}
