"""``readside api``'s HTTP server: uvicorn with httptools, bounded in what one client can hold.

- **Request head** (request line and headers) at most ``READSIDE_HTTP_MAX_HEADER_BYTES`` (32 KiB):
  counted as bytes arrive, and the connection is answered 431 and closed as soon as a head
  outgrows it. httptools itself has no limit, and gathers a header's value by concatenation, so
  before this a 64 MB header was accepted after seconds of blocked event loop.
- **Header-read timeout** ``READSIDE_HTTP_HEADER_TIMEOUT`` (10 s): a new connection must deliver a
  whole request head within it, and so must a kept-alive connection once the next head's first
  byte has come. Bytes trickling in do not restart it. Past it the connection is closed — after a
  408 problem if part of a head had come. A request body still arriving once its response is
  sent (the API reads none) gets the same time to finish.
- **Idle keep-alive** ``READSIDE_HTTP_KEEPALIVE`` (75 s, uvicorn's default is 5): longer than the
  idle timeout of the proxies and load balancers commonly in front (nginx, AWS ALB: 60 s), so a
  proxy never reuses a connection the server is closing at that moment.
- **Concurrency** ``READSIDE_HTTP_MAX_CONCURRENCY`` (1000, uvicorn's ``limit_concurrency``): open
  connections plus running requests per worker; past it new requests get a quick 503.

Why httptools and not h11 (which bounds heads by itself): on this machine h11 served about half
the requests per second of httptools on a trivial endpoint, and the bounds above are a few lines
on httptools' callbacks. The protocol reads its limits from the environment (``READSIDE_*``), so
workers started by ``--workers N`` get the same ones.

With ``--workers N`` the workers share a fresh metrics directory (``PROMETHEUS_MULTIPROC_DIR``,
made before they start and removed when the server stops): every scrape holds all workers'
metrics (api/metrics.py). uvicorn's own log lines go through our logging setup (each worker
configures it from ``READSIDE_LOG_*``), so ``READSIDE_LOG_FORMAT=json`` covers them too.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from readside.api.metrics import shared_directory
from readside.shared.jsonbytes import dumps
from readside.shared.settings import Settings

__all__ = ["BoundedHttpToolsProtocol", "run"]

PROTOCOL = "readside.api.server:BoundedHttpToolsProtocol"
LINGER = 1.0  # seconds a refused connection is drained before it is closed


@functools.cache
def _settings() -> Settings:
    return Settings.from_env()


def _problem(status: int, reason: str, kind: str, detail: str) -> bytes:
    body = dumps({"type": f"/problems/{kind}", "title": reason, "status": status, "detail": detail})
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a head size cap and a header-read timeout (see above)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = _settings()
        self._max_head = settings.http_max_header_bytes
        self._head_timeout = settings.http_header_timeout
        self._in_head = True  # a new connection owes a request head
        self._head_bytes = 0  # bytes received while in the head (at most one read too few)
        self._message_done = True  # the current request's body has been received whole
        self._deadline: asyncio.TimerHandle | None = None
        self._refused = False  # an error answer is sent: what still comes is read and dropped

    # -- the deadline ------------------------------------------------------------------------
    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self._head_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or self._refused:
            return
        if self._in_head and self._head_bytes:
            self._refuse(_problem(
                408, "Request Timeout", "request-timeout",
                f"the request head did not arrive within {self._head_timeout:g} s"))
        else:
            self.transport.close()

    def _refuse(self, response: bytes) -> None:
        """Answer ``response`` and close — gracefully: closing a socket with unread bytes sends
        a reset, and the client would lose the answer. So the answer goes out with a FIN, what the
        client still sends is read and dropped, and the connection is closed a second later."""
        self._refused = True
        self._disarm()
        self._unset_keepalive_if_required()
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # a pipelined head while a response is under way: no interleaving
            return
        self.transport.write(response)
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER, self.transport.close)
        else:
            self.transport.close()

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused or self.transport.is_closing():
            return
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self._max_head and not self.transport.is_closing():
            self._refuse(_problem(
                431, "Request Header Fields Too Large", "header-too-large",
                f"the request line and headers exceed {self._max_head} bytes"))

    # -- httptools callbacks -----------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes, self._message_done = True, 0, False
        self._arm()

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes = False, 0
        self._disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._message_done = True
        super().on_message_complete()
        if self.cycle is not None and self.cycle.response_complete and not self.pipeline:
            # The body's end came after the response: the connection is idle from now on, and
            # uvicorn cancelled its keep-alive timer when these bytes arrived.
            self._disarm()
            if self.timeout_keep_alive_task is None and not self.transport.is_closing():
                self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self._message_done and not self.transport.is_closing():
            self._arm()  # the rest of a body nobody reads: it gets the head's time to arrive


def run(factory: str, host: str, port: int, workers: int) -> None:
    """Serve the app ``factory`` makes (an import string, ``module:function``; each worker calls
    it) with the bounds above (``readside api``: ``readside.serve:app_from_env``)."""
    settings = _settings()
    with shared_directory(workers):
        uvicorn.run(
            factory,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            http=PROTOCOL,
            h11_max_incomplete_event_size=settings.http_max_header_bytes,  # if ever run on h11
            timeout_keep_alive=settings.http_keepalive,
            limit_concurrency=settings.http_max_concurrency,
            log_config=None,  # our handlers (shared/logs.py), not uvicorn's
            log_level="warning",
            access_log=False,  # ours is READSIDE_ACCESS_LOG (api/access_log.py)
            timeout_graceful_shutdown=5,  # open /v1/events streams never finish by themselves
        )
