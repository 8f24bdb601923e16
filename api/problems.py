"""RFC 9457 problem responses; every error the API returns goes through here."""

from __future__ import annotations

from starlette.responses import Response

from readside.shared.errors import ReadsideError
from readside.shared.jsonbytes import dumps

__all__ = ["Problem", "bad_param", "forbidden", "not_found", "unauthorized", "unavailable"]

_TITLES = {
    400: ("invalid-parameter", "Invalid parameter"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    431: ("header-too-large", "Request header fields too large"),
    500: ("internal", "Internal server error"),
    503: ("unavailable", "Service unavailable"),
}


class Problem(ReadsideError):
    """An error answer: ``status`` and ``detail`` become an ``application/problem+json`` body."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail

    def response(self, server_timing: str) -> Response:
        kind, title = _TITLES[self.status]
        body = dumps({"type": f"/problems/{kind}", "title": title, "status": self.status, "detail": self.detail})
        headers = {"Cache-Control": "no-store", "Server-Timing": server_timing}
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="readside"'
        return Response(body, status_code=self.status, media_type="application/problem+json", headers=headers)


def bad_param(detail: str) -> Problem:
    return Problem(400, detail)


def unauthorized(detail: str) -> Problem:
    return Problem(401, detail)


def forbidden(detail: str) -> Problem:
    return Problem(403, detail)


def not_found(detail: str) -> Problem:
    return Problem(404, detail)


def unavailable(detail: str) -> Problem:
    return Problem(503, detail)
