"""Bounds every floor agrees on, without importing a driver (a publisher imports this too)."""

from __future__ import annotations

__all__ = ["MAX_RECORD_BYTES"]

MAX_RECORD_BYTES = 4 * 1024 * 1024
"""The largest record: the topics' ``max.message.bytes`` and the producers' ``max_request_size``
(workflow payloads reach 1 MB; at least 2 MiB is needed)."""
