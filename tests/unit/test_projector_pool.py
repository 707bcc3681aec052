"""The projector pool's pure parts (ops/projector_pool.py): shares, child command lines, defaults."""

from __future__ import annotations

import sys
from dataclasses import replace

import pytest

from engine.config import load_settings
from ops import projector_pool


@pytest.mark.parametrize(
    ("text", "expected"),
    [(None, None), ("0/1", (0, 1)), ("0/2", (0, 2)), ("1/2", (1, 2)), ("3/4", (3, 4))],
)
def test_a_share_is_read_as_index_and_count(text: str | None, expected: tuple[int, int] | None) -> None:
    assert projector_pool.parse_share(text) == expected


@pytest.mark.parametrize("text", ["2/2", "-1/2", "0/0", "1", "a/b", "1/2/3", ""])
def test_a_share_that_does_not_exist_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        projector_pool.parse_share(text)


def test_each_child_reads_its_own_share_of_the_chosen_projections() -> None:
    children = projector_pool.children(["invoice_register"], 3)
    assert [c.name for c in children] == ["projector-1", "projector-2", "projector-3"]
    for i, child in enumerate(children):
        assert child.args == [
            sys.executable,
            "-m",
            "engine.cli",
            "projector",
            "--processes",
            "1",
            "--share",
            f"{i}/3",
            "--projection",
            "invoice_register",
        ]


def test_a_single_process_reads_through_the_group() -> None:
    (child,) = projector_pool.children((), 1)
    assert child.name == "projector"
    assert "--share" not in child.args


@pytest.mark.parametrize(
    ("cores", "partitions", "expected"), [(1, 6, 1), (2, 6, 2), (8, 6, 4), (8, 3, 3), (2, 1, 1)]
)
def test_one_process_per_core_at_most_four_and_one_per_partition(
    monkeypatch: pytest.MonkeyPatch, cores: int, partitions: int, expected: int
) -> None:
    monkeypatch.setattr(projector_pool.os, "cpu_count", lambda: cores)
    settings = replace(load_settings(), partitions=partitions)
    assert projector_pool.default_processes(settings) == expected
