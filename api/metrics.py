"""The API's Prometheus metrics, one coherent scrape with ``readside api --workers N``.

One process (``--workers 1``, or an app made in a test): the metrics live in the app's registry.
Several: ``readside api`` makes a fresh directory and names it in ``PROMETHEUS_MULTIPROC_DIR``
before the workers start (:func:`shared_directory`, removed at exit). prometheus_client then keeps
each worker's values in files there, and a scrape — whichever worker answers it — adds every
worker's up (``MultiProcessCollector``): counters and histograms are totals over all workers,
past and present; gauges are summed over the live ones (``livesum``). A worker marks itself dead
when it stops (:meth:`ApiMetrics.close`), and the gauges of one that was killed are dropped at the
next scrape (its pid is gone).

Metrics (names as scraped):

- ``readside_http_requests_total{route,status}``, ``readside_http_request_seconds{route}``
- ``readside_renders_total{projection}``: list bodies rendered from PostgreSQL
- ``readside_cache_hits_total{projection}`` / ``readside_cache_misses_total{projection}``: what
  ``X-Cache`` said (a 304 from the cache is a hit; a read-your-writes request is a miss)
- ``readside_sse_clients``: open ``GET /v1/events`` streams
- ``readside_ryw_waiting``, ``readside_ryw_checks_total``: read-your-writes waits (api/ryw.py)
- ``readside_replica_reads_total{replica}``: PostgreSQL reads a read replica answered;
  ``readside_replica_fallbacks_total{replica}``: reads that failed on it, answered by the primary
  (api/replicas.py)
- the database pool, from psycopg_pool's statistics (every :data:`POOL_REFRESH` seconds per worker,
  and at once in the worker that answers a scrape): ``readside_db_pool_connections``,
  ``readside_db_pool_idle``, ``readside_db_pool_max``, ``readside_db_pool_waiting`` (requests
  waiting for a connection now), ``readside_db_pool_requests_total``, ``readside_db_pool_waits_total``
  (requests that had to wait), ``readside_db_pool_wait_seconds_total``, ``readside_db_pool_errors_total``
  (requests that got no connection: timeouts).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from readside.shared.processes import pid_alive

__all__ = ["POOL_REFRESH", "ApiMetrics", "shared_directory"]

ENV = "PROMETHEUS_MULTIPROC_DIR"
POOL_REFRESH = 1.0  # seconds between two readings of a worker's pool statistics


@contextlib.contextmanager
def shared_directory(workers: int) -> Iterator[str | None]:
    """With several workers: a fresh directory for their metrics, named in ``PROMETHEUS_MULTIPROC_DIR``
    for the workers to inherit (a directory left by an earlier run would add its counts), removed
    when the server stops. One worker needs none."""
    if workers <= 1:
        yield None
        return
    path = tempfile.mkdtemp(prefix="readside-metrics-")
    previous = os.environ.get(ENV)
    os.environ[ENV] = path
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = previous
        shutil.rmtree(path, ignore_errors=True)


def _directory() -> str | None:
    """The multiprocess directory, if this process writes its values there (prometheus_client
    chose its value class when first imported: the variable must have been set before)."""
    path = os.environ.get(ENV)
    if path and os.path.isdir(path) and values.ValueClass is not values.MutexValue:
        return path
    return None


def _forget_the_dead(path: str) -> None:
    """Drop the live gauges of workers that no longer exist (killed: they could not say so)."""
    pids: set[int] = set()
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        digits = os.path.basename(name)[: -len(".db")].rpartition("_")[2]
        if digits.isdigit():
            pids.add(int(digits))
    for pid in pids:
        if not pid_alive(pid):
            mark_process_dead(pid, path)


class ApiMetrics:
    """Every metric of one app, in ``registry``; :meth:`render` is what ``/metrics`` answers."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("readside_http_requests", "HTTP requests", ["route", "status"], registry=registry)
        self.latency = Histogram("readside_http_request_seconds", "HTTP request latency", ["route"], registry=registry)
        self.renders = Counter("readside_renders", "List bodies rendered from PostgreSQL", ["projection"], registry=registry)
        self.cache_hits = Counter("readside_cache_hits", "Responses served from the Redis cache (X-Cache: HIT)",
                                  ["projection"], registry=registry)
        self.cache_misses = Counter("readside_cache_misses", "Responses not served from the Redis cache (X-Cache: MISS)",
                                    ["projection"], registry=registry)
        self.sse_clients = self._gauge("readside_sse_clients", "Open GET /v1/events streams")
        self.ryw_waiting = self._gauge("readside_ryw_waiting", "Requests waiting on X-Readside-After")
        self.ryw_checks = Counter("readside_ryw_checks", "Checkpoint reads of the shared read-your-writes poll",
                                  registry=registry)
        self.replica_reads = Counter("readside_replica_reads", "PostgreSQL reads a read replica answered",
                                     ["replica"], registry=registry)
        self.replica_fallbacks = Counter("readside_replica_fallbacks", "Reads that failed on a read replica (the primary answered)",
                                         ["replica"], registry=registry)
        self._pool_gauges = {
            "pool_size": self._gauge("readside_db_pool_connections", "Database connections open"),
            "pool_available": self._gauge("readside_db_pool_idle", "Database connections open and idle"),
            "pool_max": self._gauge("readside_db_pool_max", "Database connections allowed (READSIDE_API_POOL_SIZE per worker)"),
            "requests_waiting": self._gauge("readside_db_pool_waiting", "Requests waiting for a database connection"),
        }
        self._pool_counters = {
            "requests_num": (Counter("readside_db_pool_requests", "Database connections asked for", registry=registry), 1),
            "requests_queued": (Counter("readside_db_pool_waits", "Database connections waited for (none was idle)",
                                        registry=registry), 1),
            "requests_wait_ms": (Counter("readside_db_pool_wait_seconds", "Time spent waiting for a database connection",
                                         registry=registry), 0.001),
            "requests_errors": (Counter("readside_db_pool_errors", "Database connections not obtained (timeouts)",
                                        registry=registry), 1),
        }
        self._cache_children: dict[tuple[str, str], Any] = {}
        self.pool: Any = None  # psycopg_pool.AsyncConnectionPool, once the app has opened it

    def _gauge(self, name: str, documentation: str) -> Gauge:
        return Gauge(name, documentation, registry=self.registry, multiprocess_mode="livesum")

    def cache_result(self, projection: str, x_cache: str | None) -> None:
        if x_cache == "HIT" or x_cache == "MISS":
            child = self._cache_children.get((projection, x_cache))
            if child is None:  # labels() once per pair (it takes a lock and builds a key each time)
                counter = self.cache_hits if x_cache == "HIT" else self.cache_misses
                child = self._cache_children[(projection, x_cache)] = counter.labels(projection)
            child.inc()

    def read_pool(self) -> None:
        """Copy the pool's statistics into the metrics (its counters are taken and reset)."""
        if self.pool is None:
            return
        stats = self.pool.pop_stats()
        for key, gauge in self._pool_gauges.items():
            gauge.set(stats.get(key, 0))
        for key, (counter, scale) in self._pool_counters.items():
            if stats.get(key):
                counter.inc(stats[key] * scale)

    def render(self) -> bytes:
        """The Prometheus text of a scrape: this process's metrics, or every worker's."""
        self.read_pool()
        path = _directory()
        if path is None:
            return generate_latest(self.registry)
        _forget_the_dead(path)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path)
        return generate_latest(registry)

    def close(self) -> None:
        """This worker stops: its gauges no longer count (its counters do)."""
        self.read_pool()
        self.pool = None
        path = _directory()
        if path is not None:
            mark_process_dead(os.getpid(), path)
