"""Listening sockets bound before any other work, so a taken port fails the start with one line."""

from __future__ import annotations

import socket

from readside.shared.errors import ConfigError

__all__ = ["listening_socket"]


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
