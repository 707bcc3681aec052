"""Shared fixtures. Integration tests use the real Kafka and PostgreSQL started by `ledgerflow stack up`;
each test gets its own PostgreSQL schema and Kafka topic prefix, so tests cannot see each other's data."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import replace
from typing import Any, TypeVar

import psycopg
import pytest

from connectors import registry as connector_registry
from engine.config import Settings, load_settings
from ops import schema as outer_schema

# The test session is a composition root like the CLI and the API: the connectors' providers and
# tables, and the outer packages' tables, are handed to the core before any test touches the schema.
connector_registry.register()
outer_schema.register()

T = TypeVar("T")

TEST_DATABASE_URL = os.environ.get(
    "LEDGERFLOW_TEST_DATABASE_URL", "postgresql://ledgerflow:ledgerflow@127.0.0.1:5432/ledgerflow_test"
)


def wait_for(condition: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.05, what: str) -> T:
    """Poll ``condition`` until it returns something truthy; fail saying what never happened."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        threading.Event().wait(interval)
    raise AssertionError(f"within {timeout:.0f}s, {what} never happened (last seen: {last!r})")


@pytest.fixture(autouse=True)
def no_tracing_left_behind() -> Iterator[None]:
    """Fail the test that leaves a global tracer provider installed.

    With one installed, every later test of the same worker takes the traced paths of the relay
    and the consumers instead of the ones it means to test (a CI run failed so, far from the cause).
    """
    yield
    from engine import telemetry

    assert not telemetry.tracing_enabled(), "this test left an SDK tracer provider installed globally"


@pytest.fixture
def settings() -> Iterator[Settings]:
    """Fresh schema + topic prefix for one test; the schema is dropped afterwards."""
    suffix = uuid.uuid4().hex[:10]
    s = replace(
        load_settings(),
        database_url=TEST_DATABASE_URL,
        owner_database_url="",  # the test database's role owns the test's schema
        db_schema=f"t_{suffix}",
        topic_prefix=f"t{suffix}.",
        partitions=3,
    )
    yield s
    from tests.integration.helpers import close_clients

    close_clients()
    try:
        with psycopg.connect(TEST_DATABASE_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{s.db_schema}" CASCADE')
            conn.execute(f'DROP SCHEMA IF EXISTS "{s.reporting_schema}" CASCADE')
    except psycopg.OperationalError:
        pass
    delete_topics(s)


def delete_topics(settings: Settings) -> None:
    """Delete the test's topics: the broker keeps files open for every partition, and a whole suite
    run would otherwise leave thousands behind (and exhaust its open-files limit)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "socket.timeout.ms": 5000})
    try:
        listed = admin.list_topics(timeout=5).topics
    except Exception:  # the broker may be down after a crash test; leftovers are harmless
        return
    mine = [name for name in listed if settings.topic_prefix and name.startswith(settings.topic_prefix)]
    if mine:
        for future in admin.delete_topics(mine, operation_timeout=10).values():
            with contextlib.suppress(Exception):
                future.result(timeout=15)


@pytest.fixture
def service(settings: Settings) -> Iterator[Any]:
    """The write side on the test's schema."""
    from engine.bootstrap import build_service

    built = build_service(settings)
    yield built
    built.close()


@pytest.fixture
def topics(settings: Settings) -> list[str]:
    from engine import kafka
    from ops.topics import ensure_all

    names, _ = ensure_all(settings)

    # The broker applies a new topic to its metadata a moment after creating it (KRaft), and under
    # `make test`'s parallel load that moment was long enough for a test's first reader to miss it.
    def visible() -> bool:
        found = asyncio.run(kafka.topic_partitions(settings, set(names)))
        return all(found.get(name) for name in names)

    wait_for(visible, timeout=60, what="the test's topics in the broker's metadata")
    return names


class BackgroundLoop:
    """Runs async services (relay, projector) in a thread with their own event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.tasks: list[tuple[asyncio.Event, Any]] = []

    def start(self, make: Callable[[asyncio.Event], Coroutine[Any, Any, Any]]) -> None:
        async def create() -> tuple[asyncio.Event, Any]:
            stop = asyncio.Event()
            return stop, asyncio.ensure_future(make(stop))

        self.tasks.append(asyncio.run_coroutine_threadsafe(create(), self.loop).result())

    def check(self) -> None:
        """Raise the error of any service that died."""
        for _, task in self.tasks:
            if task.done() and task.exception():
                raise task.exception()

    def close(self) -> None:
        async def stop_all() -> None:
            for stop, _ in self.tasks:
                stop.set()
            await asyncio.gather(*(t for _, t in self.tasks), return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop_all(), self.loop).result(timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture
def background() -> Iterator[BackgroundLoop]:
    loop = BackgroundLoop()
    yield loop
    loop.close()


# The longest files first. `make test` runs `--dist loadfile`, which hands out whole files in
# collection order; the CI dry run of 2026-12-02 ended with one worker alone on a late long file
# for minutes. Measured per-file times (that run's --durations) decide the order; the rest keep theirs.
LONGEST_FILES_FIRST = (
    "test_etims_e2e.py",
    "test_api_fuzz.py",
    "test_college_accounts_e2e.py",
    "test_einvoicing_e2e.py",
    "test_expenses.py",
    "test_tally.py",
    "test_hostile_input.py",
    "test_gstr1_filing.py",
    "test_scale_out.py",
    "test_crash_recovery.py",
    "test_kafka_acls.py",
    "test_canary_secrets.py",
    "test_ingest_batches.py",
    "test_database_roles.py",
    "test_projection_poison.py",
    "test_rebuild.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FILES_FIRST)}
    # A stable sort: within a file, and among the files not listed, the order stays as collected.
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
