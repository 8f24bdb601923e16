"""The API keeps the verdicts on query strings it already checked (``readside.api.params``) and the
ETags it already made (``readside.api.serving.etag``): the kept answer must be the one a fresh
check or a fresh HMAC gives, for every endpoint's names and every key, and the memory bounded."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from starlette.requests import Request

from readside.api import params, serving
from readside.api.http import Context
from readside.api.problems import Problem


def _request(query: bytes) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": query})


def _verdict(query: bytes, allowed: frozenset[str]) -> dict[str, str] | str:
    try:
        return dict(params.Query(_request(query), allowed).values)
    except Problem as exc:
        return exc.detail


@pytest.mark.parametrize("query", [b"limit=100", b"limit=100&role=client", b"role=x&role=y", b"nope=1", b"limit=1%00", b""])
def test_a_kept_verdict_is_the_verdict_of_a_fresh_check(query):
    for allowed in (frozenset({"limit", "role"}), frozenset({"limit"})):
        params._checked.cache_clear()
        fresh = _verdict(query, allowed)
        assert _verdict(query, allowed) == fresh  # kept (or, for a 400, checked again)
        assert _verdict(query, allowed) == fresh
    # the same string, other names: its own verdict, not the one kept for the first names
    params._checked.cache_clear()
    assert _verdict(b"role=client", frozenset({"role"})) == {"role": "client"}
    assert "unknown parameter 'role'" in _verdict(b"role=client", frozenset({"limit"}))


def test_the_kept_verdicts_are_bounded():
    params._checked.cache_clear()
    for i in range(params.CHECKED_MAX + 10):
        _verdict(f"limit={i}".encode(), frozenset({"limit"}))
    assert params._checked.cache_info().currsize <= params.CHECKED_MAX


def test_a_kept_etag_is_the_hmac_of_its_key_and_bounded():
    a, b = Context.__new__(Context), Context.__new__(Context)
    a.etag_key, b.etag_key = b"a" * 32, b"b" * 32
    serving._tag.cache_clear()
    for ctx in (a, b, a):
        for version in (1, 2):
            raw = f"p3.{version}\x1fviewer:u-1".encode()
            digest = hmac.new(ctx.etag_key, raw, hashlib.blake2b).hexdigest()[:20]
            assert serving.etag(ctx, "p", 3, version, "viewer:u-1") == f'W/"p3.{version}.{digest}"'
    assert serving.etag(a, "p", 3, 1, "viewer:u-1") != serving.etag(b, "p", 3, 1, "viewer:u-1")
    for i in range(serving.TAGS_MAX + 10):
        serving.etag(a, "r", 1, i, "viewer:u-2")
    assert serving._tag.cache_info().currsize <= serving.TAGS_MAX
