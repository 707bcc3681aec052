"""A rebuild's fill and the live projector turn automatic garbage collection off and collect every so
many events written, or once enough time has passed (projections/collection.py): cycles are still
freed, and the process's collector is left as it was found."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from projections.collection import CollectingBetweenBatches


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _cycle() -> weakref.ref[_Node]:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture
def collector_state() -> Iterator[None]:
    was = gc.isenabled()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


@pytest.mark.usefixtures("collector_state")
@pytest.mark.parametrize("enabled_before", [True, False])
def test_automatic_collection_is_off_inside_and_as_before_after(enabled_before: bool) -> None:
    (gc.enable if enabled_before else gc.disable)()
    with CollectingBetweenBatches(every=10):
        assert not gc.isenabled()
    assert gc.isenabled() is enabled_before


@pytest.mark.usefixtures("collector_state")
def test_a_cycle_is_freed_once_enough_events_are_written() -> None:
    with CollectingBetweenBatches(every=100) as collector:
        alive = _cycle()
        collector.written(60)
        assert alive() is not None  # no automatic collection, and not yet 100 events
        collector.written(40)
        assert alive() is None
        again = _cycle()
        collector.written(99)
        assert again() is not None  # the count starts again after a collection
        collector.written(1)
        assert again() is None


@pytest.mark.usefixtures("collector_state")
def test_restored_when_the_fill_fails() -> None:
    gc.enable()
    with pytest.raises(RuntimeError), CollectingBetweenBatches():
        raise RuntimeError("the fill failed")
    assert gc.isenabled()


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.usefixtures("collector_state")
def test_an_idle_process_still_collects_once_the_time_bound_passes() -> None:
    # A projector with nothing to read makes cycles too (asyncio, aiokafka): without the time bound
    # they would pile up for as long as no events come.
    clock = _Clock()
    with CollectingBetweenBatches(every=1000, at_least_every_s=60, clock=clock) as collector:
        alive = _cycle()
        clock.now += 59
        collector.idle()
        assert alive() is not None
        clock.now += 1
        collector.idle()
        assert alive() is None
        # A few events written after the bound passed collect as well; the bound starts again.
        again = _cycle()
        clock.now += 30
        collector.written(1)
        assert again() is not None
        clock.now += 30
        collector.written(1)
        assert again() is None
