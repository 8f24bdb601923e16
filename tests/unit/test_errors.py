"""readside.shared.errors: one tree, and driver errors translated in one place."""

from __future__ import annotations

import ast
from pathlib import Path

import psycopg
import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError, RecordListTooLargeError
from psycopg import errors
from psycopg_pool import PoolTimeout
from redis.exceptions import ConnectionError as RedisConnectionError

from readside.shared.cache import CacheDown
from readside.shared.errors import (
    BrokerUnavailable,
    CacheUnavailable,
    DatabaseUnavailable,
    FencedError,
    ReadsideError,
    RecordFault,
    RetryableError,
    translate,
)

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ["api", "projector", "readmodels", "readside", "schemas", "shared"]


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (errors.UniqueViolation("x"), RecordFault),
        (errors.ProgramLimitExceeded("index row size 6032 exceeds maximum 2704"), RecordFault),
        (psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"), RecordFault),
        (psycopg.OperationalError("server closed the connection unexpectedly"), DatabaseUnavailable),
        (errors.DeadlockDetected("deadlock detected"), DatabaseUnavailable),
        (errors.InsufficientPrivilege("permission denied"), DatabaseUnavailable),
        (psycopg.InterfaceError("the connection is closed"), DatabaseUnavailable),
        (PoolTimeout("couldn't get a connection after 2.00 sec"), DatabaseUnavailable),
        (KafkaConnectionError("no broker"), BrokerUnavailable),
        (KafkaTimeoutError(), BrokerUnavailable),
        (MessageSizeTooLargeError(), RecordFault),
        (RecordListTooLargeError(), RecordFault),
        (RedisConnectionError("refused"), CacheUnavailable),
        (OSError("connection reset"), RetryableError),
        (TimeoutError(), RetryableError),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else type(v).__name__,
)
def test_driver_errors_become_readsides_own(exc: BaseException, kind: type[ReadsideError]) -> None:
    assert type(translate(exc)) is kind


def test_readsides_own_and_other_exceptions() -> None:
    fenced = FencedError("moved")
    assert translate(fenced) is fenced and isinstance(fenced, RetryableError)
    assert translate(ValueError("a fold's own")) is None  # the caller decides (a fold: the record's fault)
    assert CacheDown is CacheUnavailable


def _exception_classes() -> list[tuple[str, str, list[str]]]:
    """(module path, class, base names) of every public class of the product named like an error."""
    out = []
    for folder in PRODUCT:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                    bases = [ast.unparse(b) for b in node.bases]
                    if any(b.endswith(("Exception", "Error")) for b in bases):
                        out.append((str(path.relative_to(ROOT)), node.name, bases))
    return out


def test_every_public_exception_sits_under_readside_error() -> None:
    found = _exception_classes()
    assert len(found) >= 10, found
    outside = [(p, c, b) for p, c, b in found if "Exception" in b and c != "ReadsideError"]
    assert outside == []
