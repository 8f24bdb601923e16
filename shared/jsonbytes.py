"""JSON as ready bytes (orjson), times as RFC 3339 UTC with ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["dumps", "loads", "rfc3339"]

_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC


def _default(obj: Any) -> Any:
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=_OPTIONS, default=_default)


loads = orjson.loads


def rfc3339(value: datetime) -> str:
    """``2026-11-22T10:05:00Z``, or with the fraction (microseconds) when there is one."""
    return orjson.dumps(value.astimezone(UTC), option=_OPTIONS).decode()[1:-1]
