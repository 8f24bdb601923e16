"""Opaque keyset cursors: tamper-evident (HMAC) and bound to the viewer and the parameters.

The HMAC is the first line of defence; the position inside is still checked as if anyone could
have written it (a leaked or weak key must not turn into a 500): ids are strings of 1 to 200
characters without control characters, times are RFC 3339 with an offset and within years 1 to
9999 in UTC, integers fit in int8, decimals are finite and short — anything else is a 400.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from readside.api.problems import bad_param

__all__ = ["CursorCodec", "position_decimal", "position_id", "position_int", "position_time"]

_MAC_BYTES = 16
MAX_ID = 200  # the contract's bound on every id
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
INT8 = (-(2**63), 2**63 - 1)


class CursorCodec:
    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(secret.encode()).digest()

    def _mac(self, scope: str, body: bytes) -> bytes:
        return hmac.new(self._key, scope.encode() + b"\x00" + body, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, scope: str, position: list[Any]) -> str:
        body = orjson.dumps(position)
        return base64.urlsafe_b64encode(self._mac(scope, body) + body).rstrip(b"=").decode()

    def decode(self, scope: str, token: str) -> list[Any]:
        """The position inside ``token``; a forged, garbled or re-scoped cursor is a 400."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError):
            raise bad_param("cursor is not valid") from None
        mac, body = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
        if len(mac) != _MAC_BYTES or not hmac.compare_digest(mac, self._mac(scope, body)):
            raise bad_param("cursor is not valid for this viewer and these parameters; start again without it")
        try:
            position = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise bad_param("cursor is not valid") from None
        if not isinstance(position, list):
            raise bad_param("cursor is not valid")
        return position


def _invalid() -> Exception:
    return bad_param("cursor is not valid")


def position_id(value: Any) -> str:
    """An id from a cursor position: a string of 1 to 200 characters, no control characters."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID or _CONTROL.search(value):
        raise _invalid()
    return value


def position_time(value: Any) -> datetime:
    """A time from a cursor position: RFC 3339 with an offset, within years 1 to 9999 in UTC."""
    if not isinstance(value, str) or len(value) > 40 or _CONTROL.search(value):
        raise _invalid()
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise ValueError("no offset")
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise _invalid() from None


def position_int(value: Any) -> int:
    """An integer sort key from a cursor position (a JSON integer within int8)."""
    if type(value) is not int or not INT8[0] <= value <= INT8[1]:
        raise _invalid()
    return value


def position_decimal(value: Any) -> Decimal:
    """A numeric sort key from a cursor position: a short decimal string, finite and within the
    range PostgreSQL's ``numeric`` accepts."""
    if not isinstance(value, str) or len(value) > 64:
        raise _invalid()
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise _invalid() from None
    if not number.is_finite() or not -1000 < number.adjusted() < 1000:
        raise _invalid()
    return number
