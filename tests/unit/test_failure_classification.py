"""Which failures are a record's fault (dead-letter it) and which an outage (wait): a consumer that
gets this wrong either stops on one bad record or dead-letters everything while PostgreSQL restarts."""

from __future__ import annotations

import psycopg
import pytest
from eventsourcing.persistence import InterfaceError as StoreInterfaceError
from eventsourcing.persistence import OperationalError as StoreOperationalError
from psycopg import errors

from engine import db
from projections.dead_letters import is_poison

OUTAGES = [
    db.DatabaseUnavailable("connection refused"),
    errors.AdminShutdown("terminating connection due to administrator command"),
    errors.SerializationFailure("could not serialize access"),
    errors.DeadlockDetected("deadlock detected"),
    errors.TooManyConnections("sorry, too many clients already"),
    psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly"),
    psycopg.InterfaceError("the connection is closed"),
    StoreOperationalError("server closed the connection"),
    StoreInterfaceError("connection already closed"),
]

POISON = [
    psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"),
    errors.NumericValueOutOfRange("numeric field overflow"),
    errors.UntranslatableCharacter("unsupported Unicode escape sequence"),
    errors.CheckViolation("new row violates check constraint"),
    errors.NotNullViolation("null value in column"),
    KeyError("totals"),
    TypeError("'NoneType' object is not subscriptable"),
    ValueError("badly formed hexadecimal UUID string"),
]

# Neither the record's fault nor an outage: a deployment fault (missing table), waited out with an
# error in the log rather than burying every event in the dead letters.
DEPLOYMENT_FAULTS = [
    errors.UndefinedTable("relation does not exist"),
    errors.InFailedSqlTransaction("aborted"),
]


@pytest.mark.parametrize("exc", OUTAGES, ids=lambda e: type(e).__name__)
def test_an_outage_is_waited_out_and_never_dead_lettered(exc: Exception) -> None:
    assert db.is_outage(exc)
    assert not is_poison(exc)


@pytest.mark.parametrize("exc", POISON, ids=lambda e: type(e).__name__)
def test_a_record_the_database_or_the_code_refuses_is_poison(exc: Exception) -> None:
    assert is_poison(exc)
    assert not db.is_outage(exc)


@pytest.mark.parametrize("exc", DEPLOYMENT_FAULTS, ids=lambda e: type(e).__name__)
def test_a_deployment_fault_is_not_blamed_on_the_record(exc: Exception) -> None:
    assert not is_poison(exc)
