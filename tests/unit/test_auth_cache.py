"""The verified-token cache of ``Authenticator``: a remembered token gives the verdict verification
would, expires with the token, and only successes are remembered."""

from __future__ import annotations

import time
from dataclasses import replace

import jwt
import pytest
from starlette.requests import Request

from readside.api import auth
from readside.api.auth import Authenticator
from readside.api.problems import Problem
from readside.shared.settings import Settings

SECRET = "s" * 40
SETTINGS = replace(Settings(), jwt_secret=SECRET, cursor_secret="c" * 40)


def request(token: str) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "query_string": b"",
                    "headers": [(b"authorization", f"Bearer {token}".encode())]})


def token(exp: float, sub: str = "u-1", **claims: object) -> str:
    return jwt.encode({"sub": sub, "exp": exp, **claims}, SECRET, algorithm="HS256")


def test_a_verified_token_is_remembered_and_rejected_once_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    authenticate = Authenticator(SETTINGS)
    now = time.time()
    tok = token(int(now) + 30, roles=["admin"])
    first = authenticate(request(tok))
    assert first.sub == "u-1" and first.roles == frozenset({"admin"})
    calls = []
    monkeypatch.setattr(auth.jwt, "decode", lambda *a, **k: calls.append(a) or pytest.fail("verified again"))
    assert authenticate(request(tok)) is first  # not verified again
    # Past exp + the leeway: "token expired", as PyJWT says, and the token is forgotten.
    monkeypatch.setattr(auth.time, "time", lambda: now + 30 + auth.LEEWAY_SECONDS + 1)
    with pytest.raises(Problem) as err:
        authenticate(request(tok))
    assert err.value.status == 401 and "token expired" in str(err.value.detail)
    assert tok not in authenticate._verified


def test_failures_are_never_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    authenticate = Authenticator(SETTINGS)
    bad = [token(time.time() - 60), jwt.encode({"sub": "u-1", "exp": time.time() + 60}, "x" * 40, algorithm="HS256"),
           token(time.time() + 60, sub=""), token(time.time() + 60, roles="admin")]
    for tok in bad:
        for _ in range(2):
            with pytest.raises(Problem) as err:
                authenticate(request(tok))
            assert err.value.status == 401
    assert authenticate._verified == {}


def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "CACHE_TOKENS", 3)
    authenticate = Authenticator(SETTINGS)
    tokens = [token(time.time() + 60, sub=f"u-{i}") for i in range(5)]
    for tok in tokens:
        authenticate(request(tok))
    assert list(authenticate._verified) == tokens[2:]  # the oldest are dropped first
    long = token(time.time() + 60, sub="u-" + "x" * auth.CACHE_TOKEN_CHARS)
    assert authenticate(request(long)).sub.startswith("u-x")
    assert long not in authenticate._verified
