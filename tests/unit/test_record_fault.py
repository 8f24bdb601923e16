"""readside.shared.errors.record_fault: the records' fault (isolate, dead-letter) or the world's (retry)."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from readside.shared.errors import FencedError, RetryableError, record_fault


@pytest.mark.parametrize(
    "exc",
    [
        errors.ProgramLimitExceeded("index row size 6032 exceeds btree version 4 maximum 2704"),  # an OperationalError
        errors.StatementTooComplex("x"),
        errors.UntranslatableCharacter("unsupported Unicode escape sequence"),
        errors.CharacterNotInRepertoire('invalid byte sequence for encoding "UTF8": 0x00'),
        errors.NumericValueOutOfRange("x"),
        errors.DatetimeFieldOverflow("x"),
        errors.UniqueViolation("x"),
        errors.CheckViolation("x"),
        errors.NotNullViolation("x"),
        errors.CardinalityViolation("ON CONFLICT DO UPDATE command cannot affect row a second time"),
        psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"),  # raised before sending
        ValueError("a fold bug"),
        OverflowError("date value out of range"),
        KeyError("x"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_the_records_fault(exc: BaseException) -> None:
    assert record_fault(exc)


@pytest.mark.parametrize(
    "exc",
    [
        psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly"),
        psycopg.InterfaceError("the connection is closed"),
        errors.AdminShutdown("terminating connection due to administrator command"),
        errors.CannotConnectNow("the database system is starting up"),
        errors.QueryCanceled("canceling statement due to statement timeout"),
        errors.DeadlockDetected("deadlock detected"),
        errors.SerializationFailure("could not serialize access"),
        errors.LockNotAvailable("x"),
        errors.TooManyConnections("x"),
        errors.DiskFull("x"),
        errors.ReadOnlySqlTransaction("cannot execute UPDATE in a read-only transaction"),
        errors.ConnectionFailure("x"),
        errors.InternalError_("x"),
        errors.IoError("x"),
        OSError("connection reset"),
        TimeoutError(),
        TimeoutError(),
        FencedError("x"),
        RetryableError("x"),
        # a deployment fault, not the rows': retried (the projection stalls, visibly), never a
        # stream dead-lettered one event at a time
        errors.InsufficientPrivilege("permission denied for table user_avatars"),
        errors.UndefinedTable('relation "user_avatars" does not exist'),
        errors.UndefinedColumn("x"),
        errors.FeatureNotSupported("x"),
        MemoryError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_the_worlds_fault(exc: BaseException) -> None:
    assert not record_fault(exc)
