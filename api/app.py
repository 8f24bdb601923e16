"""The query API: ``create_app(settings, registry=..., status=...)`` builds it; nothing connects at import.

What the API reads of the engine is handed in — the read models' registry (their topics, for
``X-Readside-After``) and the projection status collector (``/v1/admin/projections``) — by the
composition root, ``readside.serve`` (``readside api`` serves ``readside.serve:app_from_env``): no
module of the API imports the projector.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from readside.api import avatars, events, openapi, ops, payments, providers, threads, workflows
from readside.api import requests as requests_api
from readside.api.auth import Authenticator
from readside.api.changes import Hub
from readside.api.cursors import CursorCodec
from readside.api.fastpath import App, Hot, Metrics, Recorder
from readside.api.http import Context, StatusCollector, Timing, endpoint
from readside.api.metrics import POOL_REFRESH, ApiMetrics
from readside.api.problems import Problem
from readside.api.replicas import Replicas
from readside.api.ryw import Watcher
from readside.readmodels.threads import queries as thread_queries
from readside.shared.cache import Cache
from readside.shared.db import open_pool
from readside.shared.kafka import BrokerHeads
from readside.shared.listen import serve
from readside.shared.settings import Settings

__all__ = ["create_app"]


def create_app(settings: Settings, *, registry: Mapping[str, Any], status: StatusCollector) -> App:
    """The app; ``registry``: the read models by name (each with ``topics``); ``status``: the
    projection status collector."""
    settings.require_keys()  # never serve with a missing or public key
    metrics = ApiMetrics()
    topics = {name: frozenset(settings.topic_prefix + t for t in model.topics) for name, model in registry.items()}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # First what can fail on configuration (a taken metrics port), then what must be closed.
        metrics_sock = ops.bind_metrics(settings) if settings.metrics_port else None
        pool = await open_pool(settings.database_url, min_size=1, max_size=settings.api_pool_size, timeout=2.0)
        cache = Cache(settings.redis_url, timeout=settings.cache_timeout) if settings.redis_url else None

        async def participants(thread_ids: list[str]) -> dict[str, tuple[str, str]]:
            async with pool.connection(timeout=2.0) as conn:
                return await thread_queries.thread_participants(conn, thread_ids)

        hub = Hub(settings.redis_url, participants) if settings.redis_url else None
        metrics.pool = pool
        metrics_stop = asyncio.Event()
        pool_reader = asyncio.create_task(_read_pool(metrics, metrics_stop), name="readside-pool-metrics")
        metrics_server = None
        if metrics_sock is not None:
            metrics_server = asyncio.create_task(
                serve(ops.metrics_app(metrics), metrics_sock, metrics_stop), name="readside-metrics"
            )
        etag_key = hashlib.sha256(("etag:" + settings.cursor_secret).encode()).digest()
        app.state.ctx = Context(
            settings, pool, Authenticator(settings), CursorCodec(settings.cursor_secret), cache, etag_key,
            renders=metrics.renders, metrics=metrics, heads=BrokerHeads(settings.kafka_bootstrap, timeout=2.0), changes=hub,
            topics=topics, status=status,
        )
        replicas = None
        if settings.database_replica_urls:  # read replicas (api/replicas.py)
            replicas = Replicas(settings.database_replica_urls, pool, pool_size=settings.api_pool_size,
                                max_lag=settings.replica_max_lag, metrics=metrics)
            await replicas.open()
        app.state.ctx.replicas = replicas
        app.state.ctx.ryw = Watcher(pool, BrokerHeads(settings.kafka_bootstrap, timeout=2.0), settings.ryw_max_waiters,
                                    metrics=metrics, wal=replicas is not None)
        try:
            yield
        finally:
            await app.state.ctx.ryw.close()
            if replicas is not None:
                await replicas.close()
            metrics_stop.set()
            await asyncio.gather(pool_reader, *([metrics_server] if metrics_server else []), return_exceptions=True)
            if hub is not None:
                await hub.close()
            if cache is not None:
                await cache.close()
            await pool.close()
            metrics.close()

    def ctx(request: Request) -> Context:
        return request.app.state.ctx

    def route(path: str, handler) -> Route:  # noqa: ANN001
        return Route(path, endpoint(ctx, handler), methods=["GET"])

    async def not_found(request: Request, exc: Exception) -> Response:
        return Problem(404, f"no route {request.url.path!r}").response(Timing().header())

    async def not_allowed(request: Request, exc: Exception) -> Response:
        response = Problem(405, f"method {request.method} is not supported here; use GET").response(Timing().header())
        # RFC 9110 §15.5.6: a 405 lists the methods the resource supports.
        response.headers["Allow"] = (getattr(exc, "headers", None) or {}).get("Allow", "GET, HEAD")
        return response

    routes = [
        route("/healthz", ops.healthz),
        route("/readyz", ops.readyz),
        *([] if settings.metrics_port else [route("/metrics", ops.metrics_endpoint(metrics))]),
        route("/v1/admin/projections", ops.admin_projections),
        route("/v1/events", events.stream),
        route("/v1/threads/preview", threads.preview),
        route("/v1/threads/summary", threads.summary),
        route("/v1/threads/{thread_id}/messages", threads.messages),
        route("/v1/threads/{thread_id}/payments", payments.thread_payments),
        route("/v1/providers", providers.list_providers),
        route("/v1/workflows", workflows.my_workflows),
        route("/v1/templates", workflows.templates),
        route("/v1/requests/technician-views/counts", requests_api.technician_counts),
        route("/v1/requests/technician-views", requests_api.technician_views),
        route("/v1/img/avatar/{avatar_id:path}", avatars.avatar),
        route("/openapi.json", openapi.serve_openapi),
    ]
    app = App(routes=routes, exception_handlers={404: not_found, 405: not_allowed}, lifespan=lifespan)
    if settings.gzip_min_bytes:
        # Weak ETags stay valid across content codings; GZip adds `Vary: Accept-Encoding` and
        # leaves server-sent events alone. Level 1: a 44 KB inbox page in 95 µs to 4.2 KB, against
        # 288 µs to 3.5 KB at level 6 — on the hot path, CPU counts more than the last 700 bytes.
        app.add_middleware(GZipMiddleware, minimum_size=settings.gzip_min_bytes, compresslevel=GZIP_LEVEL)
    if settings.cors_origins:
        # Outermost but metrics: a preflight is answered here, before routing (no 405).
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "HEAD"],
            allow_headers=["Authorization", "If-None-Match", "X-Readside-After"],
            expose_headers=list(EXPOSED_HEADERS),
            max_age=600,
        )
    recorder = Recorder(metrics, settings.access_log)
    app.add_middleware(Metrics, recorder=recorder)
    app.serve_hot(Hot(recorder, gzip_min_bytes=settings.gzip_min_bytes, gzip_level=GZIP_LEVEL,
                      cors=bool(settings.cors_origins)), routes)
    return app


GZIP_LEVEL = 1

# What a browser app may read from an answer (beyond the CORS-safelisted ones).
EXPOSED_HEADERS = ("ETag", "Server-Timing", "X-Cache", "X-Readside-Lag", "X-Readside-Consistency", "X-Readside-Dead-Letters")


async def _read_pool(metrics: ApiMetrics, stop: asyncio.Event) -> None:
    """The pool's statistics into the metrics every ``POOL_REFRESH`` seconds (other workers' scrapes see them)."""
    while not stop.is_set():
        metrics.read_pool()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), POOL_REFRESH)
