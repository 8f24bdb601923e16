"""Opaque keyset cursors: tamper-evident (HMAC) and bound to the viewer and the parameters."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import orjson

from api.problems import bad_param

__all__ = ["CursorCodec"]

_MAC_BYTES = 16


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
