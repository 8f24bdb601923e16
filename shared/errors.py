"""The one error hierarchy of Readside.

    ReadsideError                      every error Readside raises on purpose
    ├── ConfigError                    bad or missing configuration; raised before any work starts
    ├── RetryableError                 the world is down or busy: retry with backoff, never
    │   │                              dead-letter, never skip
    │   ├── DatabaseUnavailable        PostgreSQL: down, busy, a deadlock, a read-only standby, a
    │   │   │                          deployment fault (permission denied, a missing table)
    │   │   └── api.replicas.ReplicaFailed   a read replica failed a read: the primary answers it
    │   ├── BrokerUnavailable          Kafka: unreachable, or no answer in time
    │   ├── CacheUnavailable           Redis (``readside.shared.cache.CacheDown`` is this class)
    │   └── FencedError                a checkpoint moved under us (rebalance, zombie instance):
    │                                  the whole batch rolls back and the consumer re-seeks
    ├── RecordFault                    one record's own fault: isolate it and dead-letter it
    │   └── schemas.InvalidEvent       the record does not decode (a value-level rejection)
    ├── projector.replay.RetentionError     a partition lost history: no rebuild from offset 0
    ├── projector.rebuild.RebuildAborted    the cutover was stopped (``--verify``, the operator)
    ├── api.problems.Problem                an HTTP problem answer (RFC 9457)
    ├── readside.cli.CommandError           a command cannot run; the message names the fix
    └── readside.embedded.EmbeddedServerError   an embedded server did not start

Driver errors (psycopg, psycopg_pool, aiokafka, redis) are translated into these types in one
place, :func:`translate`, where they leave the driver: it decides what is retryable and what
is a record's fault. :func:`record_fault` is the question the write pipeline asks of an
exception raised while applying records: the records' fault (bisect down to the culprit and
dead-letter it) or the world's (retry the whole batch).
"""

from __future__ import annotations

import psycopg

__all__ = [
    "BrokerUnavailable",
    "CacheUnavailable",
    "ConfigError",
    "DatabaseUnavailable",
    "FencedError",
    "ReadsideError",
    "RecordFault",
    "RetryableError",
    "record_fault",
    "translate",
]

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


class DatabaseUnavailable(RetryableError):
    """PostgreSQL did not take the statement, for reasons that are not the rows' (see above)."""


class BrokerUnavailable(RetryableError):
    """The broker did not answer (in time); status readers fall back to the heads recorded in
    PostgreSQL."""


class CacheUnavailable(RetryableError):
    """The cache did not answer in time; callers fall back to PostgreSQL."""


class FencedError(RetryableError):
    """Another consumer owns the partition now: this batch must not commit."""


class RecordFault(ReadsideError):
    """A record's own fault: a value it carries cannot be decoded, stored or folded. The record
    is isolated and dead-lettered; nothing is retried for it."""


def translate(exc: BaseException) -> ReadsideError | None:
    """``exc`` as Readside's own type: itself when it is one, the type a driver error stands for
    (``raise translate(exc) from exc``), or None when it is neither (a bug, or a fold's own
    exception: the caller decides).

    - PostgreSQL: an error of the classes that name the rows (:data:`_RECORD_SQLSTATE_CLASSES`) —
      ``CardinalityViolation`` (21), ``DataError`` (22), ``IntegrityError`` (23),
      ``ProgramLimitExceeded`` (54, though it is an ``OperationalError``) — and a ``DataError``
      raised before sending (a NUL in a text value) are a :class:`RecordFault`; every other
      psycopg error (connection lost, ``InterfaceError``, deadlocks, a read-only standby,
      permission denied, a missing table) and a pool timeout are :class:`DatabaseUnavailable`.
    - Kafka: a record too large for the producer or the topic is a :class:`RecordFault`; any
      other ``KafkaError`` is :class:`BrokerUnavailable`.
    - Redis: any ``RedisError`` is :class:`CacheUnavailable`.
    - ``OSError``, ``TimeoutError``, ``MemoryError``: a :class:`RetryableError`.
    """
    if isinstance(exc, ReadsideError):
        return exc
    if isinstance(exc, psycopg.Error):
        if isinstance(exc, psycopg.InterfaceError):
            return DatabaseUnavailable(str(exc))
        if exc.sqlstate is None:  # raised before sending: a value libpq cannot carry (a NUL in text)
            return RecordFault(str(exc)) if isinstance(exc, psycopg.DataError) else DatabaseUnavailable(str(exc))
        if exc.sqlstate[:2] in _RECORD_SQLSTATE_CLASSES:
            return RecordFault(str(exc))
        return DatabaseUnavailable(str(exc))
    from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError
    from psycopg_pool import PoolTimeout
    from redis.exceptions import RedisError

    if isinstance(exc, PoolTimeout):
        return DatabaseUnavailable(str(exc))
    if isinstance(exc, (MessageSizeTooLargeError, RecordListTooLargeError)):
        return RecordFault(str(exc) or type(exc).__name__)
    if isinstance(exc, KafkaError):
        return BrokerUnavailable(str(exc) or type(exc).__name__)
    if isinstance(exc, RedisError):
        return CacheUnavailable(str(exc) or type(exc).__name__)
    if isinstance(exc, (OSError, TimeoutError, MemoryError)):
        return RetryableError(str(exc) or type(exc).__name__)
    return None


def record_fault(exc: BaseException) -> bool:
    """True when ``exc``, raised while applying records, is the records' fault: isolate them
    (bisect down to the culprit) and dead-letter it. False when the world is down: retry the
    whole batch with backoff, dead-letter nothing.

    The records': what :func:`translate` makes a :class:`RecordFault`, and any exception that is
    no driver's and not Readside's own (a fold's ``ValueError``, ``OverflowError``...). The
    world's: every :class:`RetryableError` — the whole batch is retried, as a fresh transaction,
    and the projection shows lag (then *stalled*) until the world is mended — and Readside's other
    errors (a ``ConfigError`` is no record's fault either).
    """
    translated = translate(exc)
    return translated is None or isinstance(translated, RecordFault)
