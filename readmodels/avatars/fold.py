"""Avatars given as ``data:`` URLs, the pure core: decode them, and pick each owner's current one.

CONTRACT §2: an avatar that is a ``data:`` URL is never shipped in a list; it becomes
``/v1/img/avatar/<id>`` (``route_url``: the id percent-encoded as one path segment, RFC 6570
simple expansion), and ``GET /v1/img/avatar/{id}`` serves the bytes the projector kept.

``decode`` follows the WHATWG "data: URL processor": ``data:[<media type>][;base64],<body>``,
the body percent-decoded, then forgiving-base64-decoded if the media type ends with ``;base64``
(ASCII whitespace ignored, padding optional). Only an ``image/*`` media type is kept (its
parameters dropped, lower-cased); any other type, a body that does not decode, an empty one, or
one larger than ``MAX_BYTES`` decoded is *no avatar* — never an error, never poison: the list
still ships the route URL (the contract's rule is about the URL's scheme) and the route answers 404.

Whose avatar is current (the same in every arrival order):

- a user's: the one of ``thread.started`` of their latest thread by ``(created_at, thread_id)``
  (then role, ``client`` < ``provider``, for a user on both sides of one thread) — ``Offer.rank``;
  that thread's avatar wins even when it is not a usable ``data:`` URL (an https URL, null, or an
  undecodable one): then the user has no stored avatar;
- a provider listing's: the one of its latest profile snapshot (the providers fold's register).

No I/O here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote_to_bytes

if TYPE_CHECKING:
    from readside.readmodels.threads.fold import Started, ThreadState

__all__ = [
    "MAX_BYTES", "MAX_URL_CHARS", "Image", "Offer", "decode", "latest", "offers", "route_url", "shipped", "user_avatars",
]

MAX_BYTES = 256 * 1024
# A longer URL cannot decode to MAX_BYTES or less (every byte of the body percent-encoded,
# base64's 4/3, a 4 KiB header): not even decoded.
MAX_URL_CHARS = 4 * MAX_BYTES + 4096
ROUTE = "/v1/img/avatar/"

_BASE64_SUFFIX = re.compile(r";[ ]*base64$", re.IGNORECASE)
_IMAGE_TYPE = re.compile(r"image/[a-z0-9!#$&^_.+-]+")  # an RFC 9110 token subtype
_BASE64_CHARS = re.compile(rb"[A-Za-z0-9+/]*")
_ASCII_WHITESPACE = b" \t\n\f\r"


@dataclass(frozen=True, slots=True)
class Image:
    media_type: str
    data: bytes

    @property
    def etag(self) -> str:
        """The opaque part of the entity tag: a digest of the media type and the bytes."""
        return hashlib.sha256(self.media_type.encode() + b"\n" + self.data).hexdigest()[:32]


def route_url(owner_id: str) -> str:
    """``/v1/img/avatar/<id>`` with the id as one path segment (``/``, ``?``, ``#``, ``%`` encoded)."""
    return ROUTE + quote(owner_id, safe="")


def shipped(url: str | None, owner_id: str) -> str | None:
    """What a list ships for ``url``: the route for a ``data:`` URL, anything else as given."""
    return route_url(owner_id) if url is not None and url.startswith("data:") else url


def _forgiving_base64(body: bytes) -> bytes | None:
    data = body.translate(None, _ASCII_WHITESPACE)
    if len(data) % 4 == 0 and data.endswith(b"="):
        data = data[:-2] if data.endswith(b"==") else data[:-1]
    if len(data) % 4 == 1 or not _BASE64_CHARS.fullmatch(data):
        return None
    try:
        return base64.b64decode(data + b"=" * (-len(data) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def decode(url: str | None) -> Image | None:
    """The image a ``data:`` URL carries, or None (not a ``data:`` URL, not ``image/*``, not
    decodable, empty, or larger than ``MAX_BYTES``)."""
    if url is None or not url.startswith("data:") or len(url) > MAX_URL_CHARS:
        return None
    header, comma, body = url[5:].partition(",")
    if not comma:
        return None
    header = header.strip(" \t\n\f\r")
    is_base64 = _BASE64_SUFFIX.search(header) is not None
    media_type = header.split(";", 1)[0].strip(" \t\n\f\r").lower()
    if not _IMAGE_TYPE.fullmatch(media_type):
        return None
    try:
        raw = unquote_to_bytes(body)
    except (TypeError, ValueError):  # pragma: no cover - str input never fails
        return None
    data = _forgiving_base64(raw) if is_base64 else raw
    if not data or len(data) > MAX_BYTES:
        return None
    return Image(media_type, data)


@dataclass(frozen=True, slots=True)
class Offer:
    """One thread's avatar for one of its participants; the greatest ``rank`` is current."""

    user_id: str
    rank: tuple[datetime, str, str]  # (thread created_at, thread_id, role)
    url: str | None


def offers(thread_id: str, started: Started) -> tuple[Offer, Offer]:
    """The avatars ``thread.started`` of ``thread_id`` gives its client and its provider."""
    return (
        Offer(started.client_id, (started.created_at, thread_id, "client"), started.client_avatar),
        Offer(started.provider_id, (started.created_at, thread_id, "provider"), started.provider_avatar),
    )


def latest(candidates: Iterable[Offer]) -> dict[str, Offer]:
    """Per user, the offer of greatest rank (a register: any order, any grouping, same result)."""
    out: dict[str, Offer] = {}
    for offer in candidates:
        known = out.get(offer.user_id)
        if known is None or offer.rank > known.rank:
            out[offer.user_id] = offer
    return out


def user_avatars(states: Iterable[ThreadState]) -> dict[str, tuple[Offer, Image | None]]:
    """The reference for ``user_avatars``: every user of a started thread, their current offer
    and the image it decodes to (None: no stored avatar)."""
    chosen = latest(o for s in states if s.started is not None for o in offers(s.thread_id, s.started))
    return {user: (offer, decode(offer.url)) for user, offer in chosen.items()}
