"""The projector's own HTTP endpoint (``READSIDE_PROJECTOR_PORT``; 0 = not served).

- ``GET /healthz``: the process and its event loop answer.
- ``GET /readyz``: 200 while every projection this process runs is moving or caught up; 503
  (``application/problem+json``) naming the stalled projections (``stalled`` member), or when
  the status could not be read lately (database unreachable).
- ``GET /metrics``: Prometheus text — ``readside_projection_stalled{projection}`` (0/1),
  ``readside_projection_lag_events``, ``readside_projection_lag_seconds``,
  ``readside_partition_lag_events{projection,topic,partition}``,
  ``readside_projection_dead_letters``, and ``readside_projector_events_total`` /
  ``readside_projector_batches_total`` counted by this process, with the histograms
  ``readside_projector_batch_seconds{projection}`` (a batch from its processing's start to its
  offsets committed) and ``readside_projector_batch_events{projection}`` (records per batch).

A :class:`Monitor` refreshes the status (``readside.projector.status.collect``: PostgreSQL plus the
broker's heads) every ``min(5, READSIDE_STALL_AFTER / 4)`` seconds; the endpoints serve its last
reading, so a probe never waits on the broker. It logs when a projection stalls and recovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from readside.projector.engine import ProjectionRunner
from readside.projector.status import Status, collect
from readside.shared.jsonbytes import dumps
from readside.shared.kafka import BrokerHeads
from readside.shared.listen import listening_socket, serve
from readside.shared.settings import Settings
from readside.shared.table import duration

__all__ = ["Monitor", "bind", "build_app", "serve"]

log = logging.getLogger(__name__)


class _RunnerCounts(Collector):
    """Events and batches this process committed, and its batch histograms, read from the
    runners at scrape time."""

    def __init__(self, runners: Sequence[ProjectionRunner]) -> None:
        self.runners = runners

    def collect(self) -> Iterator[Metric]:
        events = CounterMetricFamily("readside_projector_events", "Records committed by this process", labels=["projection"])
        batches = CounterMetricFamily("readside_projector_batches", "Batches committed by this process", labels=["projection"])
        for runner in self.runners:
            events.add_metric([runner.projection.name], runner.events)
            batches.add_metric([runner.projection.name], runner.batches)
        yield events
        yield batches
        for attribute in ("batch_seconds", "batch_events"):
            merged: Metric | None = None
            for runner in self.runners:
                for family in getattr(runner, attribute).collect():
                    if merged is None:
                        merged = Metric(family.name, family.documentation, family.type)
                    for sample in family.samples:
                        merged.add_sample(sample.name, {"projection": runner.projection.name, **sample.labels}, sample.value)
            if merged is not None:
                yield merged


class Monitor:
    """The last projection status of this process's projections, and gauges that follow it."""

    def __init__(self, settings: Settings, names: Sequence[str], runners: Sequence[ProjectionRunner] = ()) -> None:
        self.settings = settings
        self.names = list(names)
        self.interval = min(5.0, max(0.2, settings.stall_after / 4))
        self.reader = BrokerHeads(settings.kafka_bootstrap, timeout=min(3.0, max(1.0, self.interval)))
        self.status: Status | None = None
        self.error: str | None = None
        self.refreshed_at = 0.0  # monotonic time of the last successful reading
        self.registry = CollectorRegistry()
        self.registry.register(_RunnerCounts(runners))
        self._stalled = Gauge("readside_projection_stalled", "1 while the projection is stalled", ["projection"], registry=self.registry)
        self._lag = Gauge("readside_projection_lag_events", "Events not yet applied", ["projection"], registry=self.registry)
        self._lag_seconds = Gauge(
            "readside_projection_lag_seconds", "Age of the oldest event not yet applied", ["projection"], registry=self.registry
        )
        self._partition_lag = Gauge(
            "readside_partition_lag_events", "Events not yet applied, per partition", ["projection", "topic", "partition"],
            registry=self.registry,
        )
        self._dead = Gauge("readside_projection_dead_letters", "Dead letters recorded", ["projection"], registry=self.registry)

    async def refresh(self, pool: Any) -> None:
        try:
            status = await collect(
                pool, self.reader, prefix=self.settings.topic_prefix, stall_after=self.settings.stall_after, names=self.names
            )
        except Exception as exc:  # noqa: BLE001 - reported by /readyz; the projector goes on
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("projection status not read: %s", self.error)
            return
        before = set(self.status.stalled) if self.status else set()
        for p in status.projections:
            if p.stalled and p.name not in before:
                log.warning(
                    "%s stalled: %d event(s) pending for %s, checkpoints unmoved for over %s",
                    p.name, p.lag, duration(p.lag_seconds), duration(status.stall_after),
                )
            elif not p.stalled and p.name in before:
                log.info("%s moving again (lag %d)", p.name, p.lag)
            self._stalled.labels(p.name).set(1 if p.stalled else 0)
            self._lag.labels(p.name).set(p.lag)
            self._lag_seconds.labels(p.name).set(p.lag_seconds or 0.0)
            self._dead.labels(p.name).set(p.dead_letters)
            for part in p.partitions:
                self._partition_lag.labels(p.name, part.topic, str(part.partition)).set(part.lag)
        self.status, self.error, self.refreshed_at = status, None, time.monotonic()

    async def run(self, pool: Any, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.refresh(pool)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval)

    def readiness(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) for ``/readyz``."""

        def problem(detail: str, **extra: Any) -> tuple[int, dict[str, Any]]:
            return 503, {"type": "/problems/not-ready", "title": "Projector not ready", "status": 503, "detail": detail, **extra}

        age = time.monotonic() - self.refreshed_at
        if self.status is None:
            return problem(f"projection status not read yet ({self.error or 'starting'})")
        if age > max(30.0, 6 * self.interval):
            return problem(f"projection status not read for {duration(age)}: {self.error or 'the status check is stuck'}")
        stalled = [p for p in self.status.projections if p.stalled]
        if stalled:
            parts = [f"{p.name} ({p.lag} event(s) pending for {duration(p.lag_seconds)})" for p in stalled]
            return problem(
                f"stalled: {', '.join(parts)}; checkpoints have not moved for over "
                f"{duration(self.status.stall_after)}. Look at this projector's log, at database locks, "
                "and at `readside status`.",
                stalled=[p.name for p in stalled],
            )
        return 200, {"status": "ready", "projections": {p.name: p.shown_state for p in self.status.projections}}


def build_app(monitor: Monitor) -> Starlette:
    async def healthz(request: Request) -> Response:
        return Response(dumps({"status": "ok"}), media_type="application/json", headers={"Cache-Control": "no-store"})

    async def readyz(request: Request) -> Response:
        code, body = monitor.readiness()
        kind = "application/json" if code == 200 else "application/problem+json"
        return Response(dumps(body), status_code=code, media_type=kind, headers={"Cache-Control": "no-store"})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(monitor.registry), media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})

    return Starlette(routes=[Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)])


def bind(settings: Settings) -> socket.socket:
    """The listening socket, bound before any other work so a taken port fails the start."""
    return listening_socket(
        settings.projector_host, settings.projector_port, setting="READSIDE_PROJECTOR_PORT",
        otherwise="choose a free port, or 0 to serve no endpoint",
    )
