"""Strict query-parameter parsing: unknown, repeated or out-of-range parameters are a 400."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import QueryParams
from starlette.requests import Request

from readside.api.problems import bad_param

__all__ = ["MAX_LENGTH", "MAX_LENGTHS", "Choice", "Integer", "Param", "Query", "Text", "names"]

_INTEGER = re.compile(r"-?[0-9]{1,19}")  # ASCII digits, one optional sign, at most int8's width

# The longest value a parameter may have, in characters: ids and categories are at most 200
# characters (what the projector accepts), a cursor carries a position of such ids, ``fields`` a
# list of field names. Past it: a 400, before the value reaches a query, a cache key or a log.
MAX_LENGTH = 200
MAX_LENGTHS = {"cursor": 4096, "fields": 1000}


CHECKED_MAX = 2048  # query strings whose verdicts are kept (_checked)


# Kept by (raw query string, names accepted), the least recently used dropped past CHECKED_MAX: a
# page of a list is asked for with the same few query strings over and over, and parsing one
# (Starlette's QueryParams, then the checks) was ~6% of a cached answer's CPU. A rejected string
# raises, and a raise is not kept: it is checked again.
@functools.lru_cache(maxsize=CHECKED_MAX)
def _checked(query_string: bytes, allowed: frozenset[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, value in QueryParams(query_string).multi_items():
        if name not in allowed:
            raise bad_param(f"unknown parameter {name[:100]!r}; allowed: {', '.join(sorted(allowed))}")
        cap = MAX_LENGTHS.get(name, MAX_LENGTH)
        if len(value) > cap:
            raise bad_param(f"parameter {name!r} is longer than {cap} characters")
        if name in values:
            raise bad_param(f"parameter {name!r} given more than once")
        if "\x00" in value:
            raise bad_param(f"parameter {name!r} contains a NUL character")
        values[name] = value
    return values


class Query:
    """The query string of one request, checked against the names an endpoint accepts.

    Empty values (``cursor=``) mean "not given". A value longer than its ``MAX_LENGTHS`` entry
    (default ``MAX_LENGTH``) is a 400. ``values`` is shared by the requests of one query string:
    read it, never change it.
    """

    def __init__(self, request: Request, allowed: frozenset[str]) -> None:
        self.values = _checked(request.scope.get("query_string", b""), allowed)

    def text(self, name: str) -> str | None:
        value = self.values.get(name, "")
        return value if value != "" else None

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.text(name)
        if raw is None:
            return default
        if not _INTEGER.fullmatch(raw):
            raise bad_param(f"{name} must be an integer between {low} and {high}, got {raw[:40]!r}")
        value = int(raw)
        if not low <= value <= high:
            raise bad_param(f"{name} must be between {low} and {high}, got {value}")
        return value

    def choice(self, name: str, choices: tuple[str, ...], default: str | None = None) -> str | None:
        raw = self.text(name)
        if raw is None:
            return default
        if raw not in choices:
            raise bad_param(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
        return raw


# -- declared parameters: what an endpoint reads, and what its OpenAPI document says -----------

@dataclass(frozen=True)
class Param:
    """One query parameter an endpoint accepts; its bounds live here only (the handler reads
    through it, ``api/openapi.py`` documents it)."""

    name: str
    description: str

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "maxLength": MAX_LENGTHS.get(self.name, MAX_LENGTH)}


@dataclass(frozen=True)
class Integer(Param):
    default: int | None  # None: absent means "not given" (read returns None)
    low: int
    high: int

    def read(self, q: Query) -> int | None:
        if self.default is None and q.text(self.name) is None:
            return None
        return q.integer(self.name, self.default or 0, self.low, self.high)

    def value(self, q: Query) -> int:
        """The value, or the default: for a parameter that has one (never None)."""
        assert self.default is not None, f"{self.name} has no default: use read()"
        return q.integer(self.name, self.default, self.low, self.high)

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "integer", "minimum": self.low, "maximum": self.high}
        if self.default is not None:
            out["default"] = self.default
        return out


@dataclass(frozen=True)
class Choice(Param):
    choices: tuple[str, ...]
    default: str | None = None

    def read(self, q: Query) -> str | None:
        return q.choice(self.name, self.choices, self.default)

    def value(self, q: Query) -> str:
        """The choice, or the default: for a parameter that has one (never None)."""
        assert self.default is not None, f"{self.name} has no default: use read()"
        chosen = q.choice(self.name, self.choices, self.default)
        assert chosen is not None
        return chosen

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string", "enum": list(self.choices)}
        if self.default is not None:
            out["default"] = self.default
        return out


@dataclass(frozen=True)
class Text(Param):
    def read(self, q: Query) -> str | None:
        return q.text(self.name)


@functools.cache  # an endpoint's parameters are a constant tuple: once, not per request
def names(params: tuple[Param, ...]) -> frozenset[str]:
    return frozenset(p.name for p in params)
