"""The one error hierarchy of Readside.

    ReadsideError
    ├── ConfigError            bad or missing configuration; raised before any work starts
    ├── RetryableError         the broker or the database is unavailable: retry with backoff,
    │                          never dead-letter, never skip
    └── FencedError            a checkpoint moved under us (rebalance, zombie instance):
                               the whole batch rolls back and the consumer re-seeks

Poison (an event that fails validation or a fold) is not an exception that leaves the
projector: it is dead-lettered (see ``projector.engine``). ``schemas.InvalidEvent`` carries the
reason.
"""

from __future__ import annotations

__all__ = ["ConfigError", "FencedError", "ReadsideError", "RetryableError"]


class ReadsideError(Exception):
    """Base of every error Readside raises on purpose."""


class ConfigError(ReadsideError):
    """Configuration is missing or contradictory; the message says which variable to set."""


class RetryableError(ReadsideError):
    """An operational failure (connection, timeout): the operation may succeed later."""


class FencedError(ReadsideError):
    """Another consumer owns the partition now: this batch must not commit."""
