"""Identity from a verified JWT only: the viewer is the token's ``sub``, never a parameter.

One ``Authorization`` header, ``Bearer <token>``; two are a 400 (which one names the viewer is
ambiguous). The algorithm is the configured one only. ``exp`` is required and must be a JSON
number (not a string, not a boolean) of Unix seconds no later than ``MAX_EXP`` (the end of year
9999 UTC, the bound every time in Readside keeps): anything else is a 401, never a 500 nor a
token that never expires.
"""

from __future__ import annotations

from dataclasses import dataclass

import jwt
from starlette.requests import Request

from readside.api.problems import bad_param, forbidden, unauthorized
from readside.shared.settings import Settings

__all__ = ["Authenticator", "Viewer"]

LEEWAY_SECONDS = 10
MAX_EXP = 253_402_300_799  # 9999-12-31T23:59:59Z


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
        self.key = settings.jwt_public_key if self.algorithm == "RS256" else settings.jwt_secret

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
        try:
            claims = jwt.decode(
                token.strip(),
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
