"""Building blocks shared by every payload model: the base model and the time type.

Every payload model (and every nested part of one) is strict, frozen and tolerant:

- strict: no coercion. ``"5"`` is not ``5``, ``1`` is not ``True``, ``5.0`` is not ``5``.
- frozen: a decoded payload is a value; it cannot be changed after validation.
- tolerant: unknown fields are ignored, so a producer may add fields without breaking readers.

Times travel as RFC 3339 strings with an offset (``2026-11-22T10:00:00Z``). Pydantic's strict
mode accepts only ``datetime`` objects from Python data, and its lax mode would also accept Unix
numbers and date-only strings, so :data:`Timestamp` parses the string itself. A time without an
offset is invalid; a valid one is returned as an aware ``datetime`` converted to UTC (the same
instant), so times from different producers compare and store alike. A time whose UTC instant
falls outside years 1..9999 (``0001-01-01T00:00:00+01:00``) is invalid too: ``datetime`` cannot
hold it.

Ids (:data:`Id`) are bounded (CONTRACT §3 "Bounds"): 1 to 200 characters, no control
characters (C0, DEL, C1: ``\x00``-``\x1f``, ``\x7f``-``\x9f``). Longer ones break PostgreSQL
indexes, control characters break logs, headers and line-based streams.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, WithJsonSchema
from pydantic_core import PydanticCustomError

__all__ = ["ID_MAX", "ID_PATTERN", "RFC3339_PATTERN", "Id", "Payload", "Timestamp", "id_problem", "parse_rfc3339", "rfc3339_problem"]

ID_MAX = 200
"""The most characters an id may have (CONTRACT §3 "Bounds")."""

# JSON Schema patterns end with ``(?![\s\S])`` ("nothing follows"), not ``$``: Python's ``$`` (used
# by Python's JSON Schema validators) also matches before a final newline, ECMA-262's does not.
ID_PATTERN = r"^[^\u0000-\u001f\u007f-\u009f]*(?![\s\S])"
"""No control character (C0, DEL, C1); the same text is a Python, Rust and ECMA-262 regex."""

RFC3339_PATTERN = (
    r"^(?!0000)[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"[Tt](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?"
    r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])(?![\s\S])"
)
"""RFC 3339 ``date-time`` with an offset, as the decoder reads it (Python and ECMA-262 alike): "T"
and "Z" in either case, any number of fractional digits, no leap second (``:60``). What a pattern
leaves to :func:`parse_rfc3339`: the length of each month (``02-30``) and years 1..9999 once
converted to UTC."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

_RFC3339 = re.compile(RFC3339_PATTERN)


def _parse(text: str) -> datetime | str:
    if _RFC3339.fullmatch(text) is None:
        return "format"
    try:
        # Python 3.11's fromisoformat takes "Z" and long fractions, but only an upper-case "T".
        local = datetime.fromisoformat(text.upper())
    except ValueError:
        return "format"
    try:
        return local.astimezone(UTC)
    except OverflowError:  # the UTC instant is before year 1 or after year 9999
        return "range"


def parse_rfc3339(text: str) -> datetime | None:
    """The instant ``text`` names, in UTC; None unless it is an RFC 3339 date-time with offset
    whose UTC instant falls within years 1..9999 (:func:`rfc3339_problem` says which).

    Fractional seconds beyond microseconds are truncated (``datetime`` holds no more). A leap
    second (``:60``) or an impossible date is not a valid time.
    """
    parsed = _parse(text)
    return parsed if isinstance(parsed, datetime) else None


def rfc3339_problem(text: str) -> str | None:
    """Why ``text`` is not a valid time (a phrase to follow "must be"), or None when it is."""
    parsed = _parse(text)
    if parsed == "format":
        return "an RFC 3339 time with offset"
    if parsed == "range":
        return "within years 0001..9999 once converted to UTC"
    return None


def id_problem(value: str) -> str | None:
    """Why ``value`` is not a valid id (a phrase to follow "must"), or None when it is."""
    if not value:
        return "not be empty"
    if len(value) > ID_MAX:
        return f"have at most {ID_MAX} characters (has {len(value)})"
    if _CONTROL.search(value):
        return "not contain control characters"
    return None


def _from_string(value: object) -> object:
    if isinstance(value, str):
        parsed = _parse(value)
        if parsed == "format":
            raise PydanticCustomError(
                "rfc3339",
                "Input should be an RFC 3339 time with an offset, like 2026-11-22T10:00:00Z",
            )
        if parsed == "range":
            raise PydanticCustomError(
                "rfc3339_range", "Input should be a time within years 0001..9999 once converted to UTC"
            )
        return parsed
    # A datetime goes on to the strict aware check (a naive one fails there); anything else,
    # a Unix number included, fails there too.
    return value


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # an aware datetime given as such (Python callers)
        raise PydanticCustomError(
            "rfc3339_range", "Input should be a time within years 0001..9999 once converted to UTC"
        ) from None


def _bounded_id(value: str) -> str:
    problem = id_problem(value)
    if problem is not None:
        raise PydanticCustomError("id", "An id must {problem}", {"problem": problem})
    return value


Timestamp = Annotated[
    AwareDatetime,
    BeforeValidator(_from_string),
    AfterValidator(_to_utc),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": RFC3339_PATTERN}),
]
"""An RFC 3339 time string (or an aware ``datetime``), validated to an aware UTC ``datetime``."""

Id = Annotated[
    str,
    AfterValidator(_bounded_id),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": ID_MAX, "pattern": ID_PATTERN}),
]
"""An id: a string of 1 to :data:`ID_MAX` characters without control characters."""


class Payload(BaseModel):
    """Base of every payload model and of their nested parts: strict, frozen, extra ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)
