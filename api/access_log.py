"""The access log of ``readside api`` (``READSIDE_ACCESS_LOG=1``, or ``--access-log``).

One line per request, when its response has ended, on the logger ``readside.access`` at INFO,
through the process's logging setup (``READSIDE_LOG_FORMAT=json`` makes each line a JSON object
with the fields ``method``, ``path``, ``status``, ``duration_ms`` and ``cache``). It holds the
method, the path *without* the query string, the status, the duration in milliseconds, and the
``X-Cache`` answer when there was one — never a header (the ``Authorization`` token) nor a query
string. The path is logged as sent (percent-encoded), so no decoded newline can forge a line.
"""

from __future__ import annotations

import logging

from starlette.types import Scope

__all__ = ["access"]

log = logging.getLogger("readside.access")


def access(scope: Scope, status: int, seconds: float, cache: str | None) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    raw = scope.get("raw_path")
    path = raw.decode("ascii", "backslashreplace") if raw else scope.get("path", "")
    path = path.partition("?")[0]
    method = scope.get("method", "")
    ms = round(seconds * 1000, 2)
    log.info(
        "%s %s %d %.2fms%s", method, path, status, ms, f" cache={cache}" if cache else "",
        extra={"method": method, "path": path, "status": status, "duration_ms": ms, "cache": cache},
    )
