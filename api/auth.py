"""Identity from a verified JWT only: the viewer is the token's ``sub``, never a parameter.

One ``Authorization`` header, ``Bearer <token>``; two are a 400 (which one names the viewer is
ambiguous). The algorithm is the configured one only. ``exp`` is required and must be a JSON
number (not a string, not a boolean) of Unix seconds no later than ``MAX_EXP`` (the end of year
9999 UTC, the bound every time in Readside keeps): anything else is a 401, never a 500 nor a
token that never expires.

A verified token is remembered (by its exact text, up to ``CACHE_TOKENS`` tokens of at most
``CACHE_TOKEN_CHARS`` characters, oldest dropped first) until its ``exp``: the same token is not
verified again, and once ``exp`` (plus the leeway) has passed it is rejected as "token expired",
as the verification would. Only successes are remembered: every other token is verified each time.
Nothing but time can make a verified token invalid here (one key per process, no revocation list),
so the remembered verdict is the one verification would give.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt
from starlette.requests import Request

from readside.api.problems import bad_param, forbidden, unauthorized
from readside.shared.settings import Settings

__all__ = ["Authenticator", "Viewer"]

LEEWAY_SECONDS = 10
MAX_EXP = 253_402_300_799  # 9999-12-31T23:59:59Z
CACHE_TOKENS = 4096
CACHE_TOKEN_CHARS = 4096


@dataclass(frozen=True, slots=True)
class Viewer:
    sub: str
    roles: frozenset[str]
    expires_at: float | None = None  # the token's ``exp`` (Unix seconds)

    def require(self, role: str) -> None:
        if role not in self.roles:
            raise forbidden(f"this endpoint needs the role {role!r}")


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self.algorithm = settings.jwt_algorithm
        # Never empty when serving: ``readside api`` refuses to start without it (Settings.require_keys).
        self.key: str = (settings.jwt_public_key if self.algorithm == "RS256" else settings.jwt_secret) or ""
        self._verified: dict[str, Viewer] = {}  # token -> its viewer, insertion order = age

    def __call__(self, request: Request) -> Viewer:
        headers = request.headers.getlist("authorization")
        if len(headers) > 1:
            raise bad_param("more than one Authorization header: send exactly one")
        header = headers[0] if headers else None
        if not header:
            raise unauthorized("missing Authorization header: send 'Authorization: Bearer <token>'")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("malformed Authorization header: expected 'Bearer <token>'")
        token = token.strip()
        viewer = self._verified.get(token)
        if viewer is not None:
            if viewer.expires_at > time.time() - LEEWAY_SECONDS:  # type: ignore[operator]  # PyJWT's own test
                return viewer
            del self._verified[token]
            raise unauthorized("token expired")
        viewer = self._verify(token)
        if len(token) <= CACHE_TOKEN_CHARS:
            if len(self._verified) >= CACHE_TOKENS:
                del self._verified[next(iter(self._verified))]
            self._verified[token] = viewer
        return viewer

    def _verify(self, token: str) -> Viewer:
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=[self.algorithm],
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized("token expired") from None
        except jwt.InvalidTokenError as exc:
            raise unauthorized(f"invalid token: {exc}") from None
        exp = claims["exp"]
        if type(exp) not in (int, float) or not exp <= MAX_EXP:  # bool is not a number here; NaN fails too
            raise unauthorized("invalid token: 'exp' must be a number of seconds before the year 10000")
        sub, roles = claims.get("sub"), claims.get("roles", [])
        if not isinstance(sub, str) or not sub or "\x00" in sub:
            raise unauthorized("invalid token: 'sub' must be a non-empty string without NUL characters")
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise unauthorized("invalid token: 'roles' must be a list of strings")
        return Viewer(sub, frozenset(roles), float(exp))


def make_token(secret: str, sub: str, roles: list[str] | None = None, ttl: int = 3600, algorithm: str = "HS256") -> str:
    """A token for demos and tests (the core app's identity provider issues real ones)."""
    import time

    return jwt.encode({"sub": sub, "roles": roles or [], "exp": int(time.time()) + ttl}, secret, algorithm=algorithm)
