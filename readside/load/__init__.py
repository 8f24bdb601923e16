"""The synthetic event generator behind ``readside load``: realistic contract events (CONTRACT §1).

Each aggregate (a thread, a request, a provider listing, a workflow) is a small simulation with
``start(now)`` and ``step(now)``; both return the records of what happened at ``now`` (never
earlier than the aggregate's previous event, so its times strictly increase). The same
simulations serve two drivers:

- the batch streams (``thread_stream`` …, ``mixed_stream``): deterministic for a seed — event ids
  included — with times from ``start`` (default 2026-11-01T08:00Z) spread over two weeks, and
  returned in time order of the payloads' own times (``occurred_at`` equals that time);
- ``run_load``: a live world at about ``rate`` events/s with times = now, where a pool of active
  aggregates keeps receiving events, so inboxes and listings change while you watch.

Ids carry a tag — the seed, or a random one in live mode — so streams of different seeds never
collide on one broker: ``t-<tag>-<n>``, ``r-…``, ``p-…``, ``w-…``. User ids (``u-1``…) are shared,
with a skew that gives ``u-1``, ``u-2``… heavy inboxes; requests are worked by ``tech-1``….
"""

from __future__ import annotations

from datetime import datetime

from readside.load._broker import DLQ_SUFFIX, MAX_MESSAGE_BYTES, TOPICS, ensure_topics, publish
from readside.load._live import run_load
from readside.load._providers import provider_stream
from readside.load._requests import request_stream
from readside.load._threads import thread_stream
from readside.load._workflows import workflow_stream
from readside.load._world import Record, time_order

__all__ = [
    "DLQ_SUFFIX",
    "MAX_MESSAGE_BYTES",
    "TOPICS",
    "Record",
    "ensure_topics",
    "mixed_stream",
    "provider_stream",
    "publish",
    "request_stream",
    "run_load",
    "thread_stream",
    "workflow_stream",
]


def mixed_stream(scale: int, seed: int = 0, *, start: datetime | None = None) -> list[Record]:
    """All five topics in time order: about 800 events per unit of ``scale``."""
    users = max(10, 20 * scale // 3)
    records = (thread_stream(threads=20 * scale, users=users, seed=seed, start=start)
               + request_stream(requests=10 * scale, users=users, seed=seed, start=start)
               + provider_stream(providers=10 * scale, seed=seed, start=start)
               + workflow_stream(workflows=5 * scale, users=users, seed=seed, start=start))
    return time_order(records)

