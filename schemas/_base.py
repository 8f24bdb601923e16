"""Building blocks shared by every payload model: the base model and the time type.

Every payload model (and every nested part of one) is strict, frozen and tolerant:

- strict: no coercion. ``"5"`` is not ``5``, ``1`` is not ``True``, ``5.0`` is not ``5``.
- frozen: a decoded payload is a value; it cannot be changed after validation.
- tolerant: unknown fields are ignored, so a producer may add fields without breaking readers.

Times travel as RFC 3339 strings with an offset (``2026-11-22T10:00:00Z``). Pydantic's strict
mode accepts only ``datetime`` objects from Python data, and its lax mode would also accept Unix
numbers and date-only strings, so :data:`Timestamp` parses the string itself. A time without an
offset is invalid; a valid one is returned as an aware ``datetime`` converted to UTC (the same
instant), so times from different producers compare and store alike.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict
from pydantic_core import PydanticCustomError

__all__ = ["Payload", "Timestamp", "parse_rfc3339"]

# RFC 3339 `date-time`: "T" and "Z" may be lower case; any number of fractional digits.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})"
)


def parse_rfc3339(text: str) -> datetime | None:
    """The instant ``text`` names, in UTC; None unless it is an RFC 3339 date-time with offset.

    Fractional seconds beyond microseconds are truncated (``datetime`` holds no more). A leap
    second (``:60``) or an impossible date is not a valid time.
    """
    if _RFC3339.fullmatch(text) is None:
        return None
    try:
        # Python 3.11's fromisoformat takes "Z" and long fractions, but only an upper-case "T".
        return datetime.fromisoformat(text.upper()).astimezone(UTC)
    except ValueError:
        return None


def _from_string(value: object) -> object:
    if isinstance(value, str):
        parsed = parse_rfc3339(value)
        if parsed is None:
            raise PydanticCustomError(
                "rfc3339",
                "Input should be an RFC 3339 time with an offset, like 2026-11-22T10:00:00Z",
            )
        return parsed
    # A datetime goes on to the strict aware check (a naive one fails there); anything else,
    # a Unix number included, fails there too.
    return value


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


Timestamp = Annotated[AwareDatetime, BeforeValidator(_from_string), AfterValidator(_to_utc)]
"""An RFC 3339 time string (or an aware ``datetime``), validated to an aware UTC ``datetime``."""


class Payload(BaseModel):
    """Base of every payload model and of their nested parts: strict, frozen, extra ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)
