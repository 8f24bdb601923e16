"""Listening sockets bound before any other work, so a taken port fails the start with one line;
and serving a small app on one until told to stop (the projector's endpoint, the API's metrics port)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn
from starlette.applications import Starlette

from readside.shared.errors import ConfigError

__all__ = ["listening_socket", "serve"]


def listening_socket(host: str, port: int, *, setting: str, otherwise: str, reuse_port: bool = False) -> socket.socket:
    """A non-blocking TCP socket bound to ``(host, port)``; a :class:`ConfigError` naming
    ``setting`` and what to do (``otherwise``) when the address cannot be used. ``reuse_port``:
    several processes (``--workers N``) may bind it, and each connection reaches one of them."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port and hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"{setting} {port} on {host} cannot be used ({exc.strerror}); {otherwise}") from None
    sock.setblocking(False)
    return sock


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the projector owns SIGTERM/SIGINT: it sets ``stop``, and ``serve`` stops us


async def serve(app: Starlette, sock: socket.socket, stop: asyncio.Event) -> None:
    """Serve ``app`` on ``sock`` until ``stop`` is set."""
    server = _Server(uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False))

    async def stopper() -> None:
        await stop.wait()
        server.should_exit = True

    watcher = asyncio.ensure_future(stopper())
    try:
        await server.serve(sockets=[sock])
    finally:
        watcher.cancel()
        sock.close()
