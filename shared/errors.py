"""The one error hierarchy of Readside.

    ReadsideError
    ├── ConfigError            bad or missing configuration; raised before any work starts
    ├── RetryableError         the broker or the database is unavailable: retry with backoff,
    │                          never dead-letter, never skip
    └── FencedError            a checkpoint moved under us (rebalance, zombie instance):
                               the whole batch rolls back and the consumer re-seeks

Poison (an event that fails validation or a fold) is not an exception that leaves the
projector: it is dead-lettered (see ``projector.engine``). ``schemas.InvalidEvent`` carries the
reason. :func:`record_fault` tells, for an exception raised while writing records, whether it
belongs to the records (isolate and dead-letter them) or to the world (retry the batch).
"""

from __future__ import annotations

import psycopg

__all__ = ["ConfigError", "FencedError", "ReadsideError", "RetryableError", "record_fault"]

# SQLSTATE classes of a database that is down, busy or being operated on: the same statement may
# succeed later. 08 connection exception, 25 invalid transaction state (a read-only standby after
# a failover), 40 transaction rollback (deadlock, serialization failure), 53 insufficient resources
# (disk full, too many connections), 55 object not in prerequisite state (lock not available),
# 57 operator intervention (admin shutdown, statement timeout, query canceled), 58 system error
# (I/O), F0 configuration file error, XX internal error.
_WORLD_SQLSTATE_CLASSES = frozenset({"08", "25", "40", "53", "55", "57", "58", "F0", "XX"})


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

    - The records': a PostgreSQL error of any class but those of an unavailable database —
      ``DataError`` (22: a value out of range, an untranslatable character), ``IntegrityError``
      (23), ``ProgramLimitExceeded`` (54: "index row requires N bytes", though it is an
      ``OperationalError``), a constraint or a statement that rejects these rows — a psycopg
      error raised before sending (a NUL in a text value), and any other exception from the fold
      (a ``ValueError``, an ``OverflowError``...).
    - The world's: ``RetryableError``, ``FencedError``, ``OSError``, ``TimeoutError``, an
      ``OperationalError`` without SQLSTATE (connection lost or closed), ``InterfaceError``, and
      the SQLSTATE classes of :data:`_WORLD_SQLSTATE_CLASSES` — deadlocks and serialization
      failures included: the whole batch is retried, as a fresh transaction.
    """
    if isinstance(exc, (RetryableError, FencedError, OSError, TimeoutError, psycopg.InterfaceError)):
        return False
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate
        if state is None:
            return not isinstance(exc, psycopg.OperationalError)
        return state[:2] not in _WORLD_SQLSTATE_CLASSES
    return True
