"""The served path's ceiling: the API's own server stack returning the API's own bytes from memory.

uvicorn with the API's protocol and limits (``readside.api.server``) and a Starlette route at
``/v1/threads/preview`` that looks the body up by the ``Authorization`` header (no verification,
no cache, no database) and answers it with the headers the API sends. Whatever the API does more
than this is what the served-path ratios measure.

Run: ``python -m bench._ceiling_app --port P`` with ``READSIDE_BENCH_CEILING`` naming a JSON file
``{"<Authorization value>": ["<body>", "<etag>"], ...}`` (the bench writes it from the API's answers).
"""

from __future__ import annotations

import argparse
import os

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ENV = "READSIDE_BENCH_CEILING"


def app_from_env() -> Starlette:
    with open(os.environ[ENV], "rb") as f:
        bodies = {k: (v[0].encode(), v[1]) for k, v in orjson.loads(f.read()).items()}

    async def preview(request: Request) -> Response:
        found = bodies.get(request.headers.get("authorization", ""))
        if found is None:
            return Response(status_code=401)
        body, tag = found
        return Response(body, media_type="application/json",
                        headers={"ETag": tag, "Cache-Control": "private, no-cache", "Vary": "Authorization"})

    async def readyz(request: Request) -> Response:
        return Response(b"{}", media_type="application/json")

    return Starlette(routes=[Route("/v1/threads/preview", preview), Route("/readyz", readyz)])


if __name__ == "__main__":
    import uvicorn

    from readside.api.server import PROTOCOL
    from readside.shared.settings import Settings

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    limits = Settings.from_env()
    uvicorn.run("bench._ceiling_app:app_from_env", factory=True, host="127.0.0.1", port=args.port,
                log_level="warning", access_log=False, http=PROTOCOL,
                timeout_keep_alive=limits.http_keepalive, limit_concurrency=limits.http_max_concurrency)
