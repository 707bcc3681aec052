"""db.locked_transaction on the real PostgreSQL: callers sharing a lock name queue behind the holder,
give up with the caller's own error once their bounded wait is over, and proceed once it commits or
rolls back; other names never wait. The expense submissions and budget changes rely on it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from psycopg_pool import ConnectionPool

from engine import db
from engine.config import Settings


class Busy(Exception):
    pass


@pytest.fixture
def pool(settings: Settings) -> Iterator[ConnectionPool]:
    opened = db.make_pool(settings, min_size=1, max_size=3)
    yield opened
    opened.close()


def test_a_second_caller_of_one_name_gets_its_busy_error_after_the_wait(pool: ConnectionPool) -> None:
    name = f"test/{uuid.uuid4()}"
    with (
        db.locked_transaction(pool, name, wait_seconds=1, busy=Busy("first")),
        pytest.raises(Busy, match="second"),
        db.locked_transaction(pool, name, wait_seconds=1, busy=Busy("second")),
    ):
        pytest.fail("the lock was taken twice")


def test_another_name_does_not_wait_for_the_holder(pool: ConnectionPool) -> None:
    with (
        db.locked_transaction(pool, f"test/{uuid.uuid4()}", wait_seconds=1, busy=Busy("first")),
        db.locked_transaction(pool, f"test/{uuid.uuid4()}", wait_seconds=1, busy=Busy("other")) as conn,
    ):
        assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}


@pytest.mark.parametrize("ending", ["commit", "rollback"])
def test_the_lock_is_free_once_the_holder_commits_or_rolls_back(pool: ConnectionPool, ending: str) -> None:
    name = f"test/{uuid.uuid4()}"
    try:
        with db.locked_transaction(pool, name, wait_seconds=1, busy=Busy("first")):
            if ending == "rollback":
                raise RuntimeError("the holder failed")
    except RuntimeError:
        pass
    with db.locked_transaction(pool, name, wait_seconds=1, busy=Busy("second")) as conn:
        assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}
