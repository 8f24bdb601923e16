"""``GET /v1/events``: server-sent events telling a viewer which of their cached scopes changed.

A frontend keeps one stream open and refetches, with its ETag, the lists whose scope it is told
about, instead of polling. The stream (``text/event-stream``):

    retry: 3000
    event: ready            once the subscription is live: refetch now (nothing is replayed)
    data: {}

    event: changed          a version this viewer can read was bumped
    data: {"scope":"viewer:u-1"}

    : heartbeat             every ``HEARTBEAT`` seconds without events (keeps proxies from idling out)

Scopes and who gets them: ``api/changes.py``. Identity as everywhere: ``Authorization: Bearer``;
the stream ends when the token expires, so the client reconnects with a fresh one. Without Redis
(``READSIDE_REDIS_URL`` unset, or unreachable) the answer is a quick 503 problem.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from readside.api.auth import LEEWAY_SECONDS
from readside.api.changes import ChangesUnavailable, Hub, Listener
from readside.api.http import Context, Timing
from readside.api.openapi import Operation, documented
from readside.api.params import Query
from readside.api.problems import unavailable
from readside.shared.jsonbytes import dumps

__all__ = ["HEARTBEAT", "EventStream", "stream"]

HEARTBEAT = 15.0


@documented(Operation(
    "Live updates (server-sent events)", "`event: ready` once subscribed, then `event: changed` with "
    '`data: {"scope": "<scope>"}`; a `: heartbeat` comment every 15 s. Ends when the token expires.',
    body={"type": "string", "description": "text/event-stream"}, media="text/event-stream",
    cache_control="no-store", errors={503: "No Redis configured, or Redis does not answer"}))
async def stream(request: Request, ctx: Context, timing: Timing) -> Response:
    viewer = ctx.auth(request)
    Query(request, frozenset())
    if ctx.changes is None:
        raise unavailable("live updates need Redis (READSIDE_REDIS_URL is not set); poll with If-None-Match instead")
    try:
        listener = await ctx.changes.join(viewer)
    except ChangesUnavailable:
        raise unavailable("live updates are unavailable (Redis does not answer); retry shortly") from None
    deadline = viewer.expires_at + LEEWAY_SECONDS if viewer.expires_at is not None else None
    clients = ctx.metrics.sse_clients if ctx.metrics is not None else None
    return EventStream(ctx.changes, listener, deadline, clients)


class EventStream(Response):
    """The ASGI side of one stream: leaves the hub however it ends (client gone, feed lost,
    token expired, server shutting down)."""

    media_type = "text/event-stream"

    def __init__(self, hub: Hub, listener: Listener, deadline: float | None, clients: Any = None) -> None:
        self.status_code = 200
        self.background = None
        self.hub, self.listener, self.deadline = hub, listener, deadline
        self.clients = clients  # the ``readside_sse_clients`` gauge: one while this stream is open
        self.init_headers({"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watcher = asyncio.create_task(self._watch(receive))
        if self.clients is not None:
            self.clients.inc()
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await self._body(send, b"retry: 3000\nevent: ready\ndata: {}\n\n")
            while not self.listener.closed:
                wait = HEARTBEAT
                if self.deadline is not None:
                    wait = min(wait, self.deadline - time.time())
                    if wait <= 0:
                        break
                scopes = await self.listener.next(wait)
                if scopes:
                    await self._body(send, b"".join(
                        b"event: changed\ndata: " + dumps({"scope": s}) + b"\n\n" for s in scopes))
                elif not self.listener.closed:
                    await self._body(send, b": heartbeat\n\n")
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client went away mid-write
        except asyncio.CancelledError:
            # The server's graceful-shutdown timeout (``readside api``: 5 s) cancels open streams:
            # the normal way out for a stream, so end the response instead of failing it.
            with contextlib.suppress(OSError):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
            self.hub.leave(self.listener)
            if self.clients is not None:
                self.clients.dec()

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.listener.close()

    @staticmethod
    async def _body(send: Send, chunk: bytes) -> None:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
