"""One pipelined Redis connection for the API's hot reads: many requests share it, replies come back in order.

A profile of a Redis HIT under load (py-spy, wrk -c16) put about 30% of the API process in
redis-py around one command: the pool checkout and release, the stream reader and writer, the
encoder, the observability hooks and an ``asyncio.timeout`` per call. Here a command is packed by
hiredis and written on one ``asyncio.Protocol`` whose replies hiredis parses; each caller awaits a
future, answered in the order the commands were sent (Redis answers one connection in order).
Concurrent requests are thereby pipelined on one connection, as Redis serves them anyway (one
thread), and the commands of one turn of the event loop go out in one write (the profile had a
write system call per command at 17% of the process).

Timeout: one timer for the connection, not one per call. Replies come in order, so if the oldest
command waiting has waited less than ``timeout``, every later one has too; when it has waited
longer, the connection is aborted and every waiting caller gets ``TimeoutError`` (a slow Redis:
the cache's cooldown takes over). A caller that gives up (cancelled) leaves its reply to be read
and dropped: the connection stays in step. A lost connection fails what waits on it with
``ConnectionError``; the next command connects again.

``Pipe.for_url`` gives None for a URL it does not handle (TLS, a Unix socket): the caller uses
redis-py then.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import hiredis
from redis.asyncio.connection import parse_url
from redis.exceptions import NoScriptError, ResponseError

__all__ = ["Pipe"]


class _Protocol(asyncio.Protocol):
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader()
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()  # (caller, sent at), in send order
        self.timer: asyncio.TimerHandle | None = None
        self.outgoing: list[bytes] = []  # packed commands not yet written
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.waiting
        while (reply := self.reader.gets()) is not False:
            future = waiting.popleft()[0]
            if future.done():  # its caller gave up
                continue
            if isinstance(reply, hiredis.ReplyError):
                text = str(reply)
                future.set_exception(NoScriptError(text) if text.startswith("NOSCRIPT") else ResponseError(text))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("Redis closed the connection"))

    def _fail(self, exc: BaseException) -> None:
        self.lost = exc
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        while self.waiting:
            future = self.waiting.popleft()[0]
            if not future.done():
                future.set_exception(exc if isinstance(exc, OSError | TimeoutError) else ConnectionError(str(exc)))

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        loop = self.loop
        future = loop.create_future()
        now = loop.time()
        self.waiting.append((future, now))
        if not self.outgoing:  # the first command of this turn of the loop: written at its end
            loop.call_soon(self._flush)
        self.outgoing.append(packed)
        if self.timer is None:
            self.timer = loop.call_at(now + self.timeout, self._check)
        return future

    def _flush(self) -> None:
        """The commands of one turn of the event loop in one write (one system call, not one each)."""
        outgoing, self.outgoing = self.outgoing, []
        if self.lost is None:
            self.transport.write(b"".join(outgoing))  # type: ignore[union-attr]

    def _check(self) -> None:
        self.timer = None
        if not self.waiting:
            return
        due = self.waiting[0][1] + self.timeout
        if due <= self.loop.time():
            self._fail(TimeoutError(f"no reply from Redis within {self.timeout:g}s"))
            self.transport.abort()  # type: ignore[union-attr]
        else:
            self.timer = self.loop.call_at(due, self._check)


class Pipe:
    """``await pipe.command(*args)``: the reply (bytes, int, list...), or raises ``ResponseError``,
    ``OSError``/``ConnectionError`` or ``TimeoutError``."""

    def __init__(self, host: str, port: int, *, db: int = 0, username: str | None = None,
                 password: str | None = None, timeout: float = 0.25) -> None:
        self.host, self.port, self.db = host, port, db
        self.username, self.password = username, password
        self.timeout = timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None

    @classmethod
    def for_url(cls, url: str, *, timeout: float) -> Pipe | None:
        kwargs = parse_url(url)
        if "path" in kwargs or "connection_class" in kwargs or set(kwargs) - {"host", "port", "db", "username", "password"}:
            return None  # a Unix socket, TLS or options: redis-py handles them
        return cls(str(kwargs.get("host", "localhost")), int(kwargs.get("port", 6379)), db=int(kwargs.get("db", 0)),
                   username=kwargs.get("username"), password=kwargs.get("password"), timeout=timeout)

    async def command(self, *args: object) -> Any:
        protocol = self._protocol
        if protocol is None or protocol.lost is not None:
            protocol = await self._connect()
        return await protocol.send(hiredis.pack_command(args))  # type: ignore[arg-type]

    async def _connect(self) -> _Protocol:
        if self._connecting is not None:  # one connection attempt for all callers
            return await asyncio.shield(self._connecting)
        loop = asyncio.get_running_loop()
        self._connecting = loop.create_future()
        try:
            async with asyncio.timeout(self.timeout):
                _, protocol = await loop.create_connection(lambda: _Protocol(self.timeout), self.host, self.port)
                try:
                    if self.password is not None:
                        auth = (self.username, self.password) if self.username else (self.password,)
                        await protocol.send(hiredis.pack_command(("AUTH", *auth)))
                    if self.db:
                        await protocol.send(hiredis.pack_command(("SELECT", self.db)))  # type: ignore[arg-type]  # the stub declares a 1-tuple
                except BaseException:
                    protocol.transport.abort()  # type: ignore[union-attr]
                    raise
            self._protocol = protocol
            self._connecting.set_result(protocol)
            return protocol
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                self._connecting.cancel()
            else:
                self._connecting.set_exception(exc)
                self._connecting.exception()  # retrieved: waiters get it, nobody logs "never retrieved"
            raise
        finally:
            self._connecting = None

    def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None
