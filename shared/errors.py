"""The one error hierarchy of Readside.

    ReadsideError
    ├── ConfigError            bad or missing configuration; raised before any work starts
    ├── RetryableError         the broker or the database is unavailable: retry with backoff,
    │                          never dead-letter, never skip
    └── FencedError            a checkpoint moved under us (rebalance, zombie instance):
                               the whole batch rolls back and the consumer re-seeks

Poison (an event that fails validation or a fold) is not an exception that leaves the
projector: it is dead-lettered (see ``readside.projector.engine``). ``schemas.InvalidEvent`` carries the
reason. :func:`record_fault` tells, for an exception raised while writing records, whether it
belongs to the records (isolate and dead-letter them) or to the world (retry the batch).
"""

from __future__ import annotations

import psycopg

__all__ = ["ConfigError", "FencedError", "ReadsideError", "RetryableError", "record_fault"]

# SQLSTATE classes that name the rows a statement was given: 21 cardinality violation (one batch
# touching a row twice), 22 data exception (out of range, untranslatable character...), 23
# integrity constraint violation, 54 program limit exceeded ("index row requires N bytes").
# Every other class is the world's — a database down or busy (08, 40, 53, 57...), but also a
# deployment fault (42501 permission denied, 42P01 a missing table, 0A000): retried, never a
# reason to dead-letter a whole stream one event at a time.
_RECORD_SQLSTATE_CLASSES = frozenset({"21", "22", "23", "54"})


class ReadsideError(Exception):
    """Base of every error Readside raises on purpose."""


class ConfigError(ReadsideError):
    """Configuration is missing or contradictory; the message says which variable to set."""


class RetryableError(ReadsideError):
    """An operational failure (connection, timeout): the operation may succeed later."""


class FencedError(ReadsideError):
    """Another consumer owns the partition now: this batch must not commit."""


def record_fault(exc: BaseException) -> bool:
    """True when ``exc``, raised while applying records, is the records' fault: isolate them
    (bisect down to the culprit) and dead-letter it. False when the world is down: retry the
    whole batch with backoff, dead-letter nothing.

    - The records': a PostgreSQL error of the classes that name the rows
      (:data:`_RECORD_SQLSTATE_CLASSES`) — ``CardinalityViolation`` (21), ``DataError`` (22: a
      value out of range, an untranslatable character), ``IntegrityError`` (23),
      ``ProgramLimitExceeded`` (54: "index row requires N bytes", though it is an
      ``OperationalError``) — a ``DataError`` raised before sending (a NUL in a text value), and
      any other exception from the fold (a ``ValueError``, an ``OverflowError``...).
    - The world's: ``RetryableError``, ``FencedError``, ``OSError``, ``TimeoutError``,
      ``MemoryError``, a psycopg error without SQLSTATE other than a ``DataError`` (connection
      lost or closed), ``InterfaceError``, and every SQLSTATE class outside
      :data:`_RECORD_SQLSTATE_CLASSES` — deadlocks, a read-only standby, permission denied, a
      missing table: the whole batch is retried, as a fresh transaction, and the projection shows
      lag (then *stalled*) until the world is mended.
    """
    if isinstance(exc, (RetryableError, FencedError, OSError, TimeoutError, MemoryError, psycopg.InterfaceError)):
        return False
    if isinstance(exc, psycopg.Error):
        if exc.sqlstate is None:  # raised before sending: a value libpq cannot carry (a NUL in text)
            return isinstance(exc, psycopg.DataError)
        return exc.sqlstate[:2] in _RECORD_SQLSTATE_CLASSES
    return True
