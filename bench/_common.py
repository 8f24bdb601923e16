"""What the benchmarks share: a throwaway database, the broker, server subprocesses, a load client.

Services: ``READSIDE_BENCH_DATABASE_URL`` (an admin URL; default the local PostgreSQL) and
``READSIDE_BENCH_KAFKA_BOOTSTRAP`` (default: an embedded tansu broker started for the run).
Nothing here imports from ``tests/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from readside.api import ops
from readside.api.auth import Authenticator
from readside.api.cursors import CursorCodec
from readside.api.http import Context, endpoint
from readside.embedded import EmbeddedBroker, free_port
from readside.shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
JWT_SECRET = "bench-secret-0123456789-abcdefghijklmnop"


def say(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def with_db(url: str, name: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**info)


@contextlib.contextmanager
def bench_database(keep: bool = False) -> Iterator[str]:
    """A fresh database ``rs_bench_<hex>``; dropped at the end unless ``keep``."""
    admin = os.environ.get("READSIDE_BENCH_DATABASE_URL") or DEFAULT_ADMIN_URL
    name = f"rs_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_db(admin, name)
    say(f"database {name}")
    try:
        yield url
    finally:
        if keep:
            say(f"kept database {name}: {url}")
        else:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def kafka() -> Iterator[str]:
    """The configured broker, or an embedded tansu broker for the duration of the run."""
    configured = os.environ.get("READSIDE_BENCH_KAFKA_BOOTSTRAP")
    if configured:
        yield configured
        return
    broker = EmbeddedBroker(log_path=Path(tempfile.mkdtemp(prefix="rs-bench-broker-")) / "tansu.log")
    say(f"embedded broker on {broker.start()}")
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


def publish_fresh(records: Sequence[Any], bootstrap: str, prefix: str, topics: Sequence[str], partitions: int) -> int:
    """Create ``topics`` under ``prefix`` (``partitions`` each) and publish ``records`` to them,
    with progress; returns how many were sent."""
    from readside.load import publish
    from readside.shared.kafka import create_topics

    asyncio.run(create_topics(bootstrap, [prefix + t for t in topics], partitions=partitions))
    return asyncio.run(publish(list(records), bootstrap=bootstrap, prefix=prefix,
                               progress=lambda d, t: say(f"  published {d:,}/{t:,}")))


def bench_settings(database_url: str, bootstrap: str = "127.0.0.1:9", **overrides: object) -> Settings:
    unique = uuid.uuid4().hex[:8]
    return replace(
        Settings(), kafka_bootstrap=bootstrap, database_url=database_url, jwt_secret=JWT_SECRET,
        cursor_secret="bench-cursor-secret-0123456789-abcdefgh", topic_prefix=f"b{unique}.", group_prefix=f"bench{unique}", **overrides,
    )


class Server:
    """An HTTP server subprocess in its own session, ready once ``/readyz`` answers 200."""

    def __init__(self, name: str, argv: Sequence[str], settings: Settings, port: int) -> None:
        self.name, self.port = name, port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = Path(tempfile.mkdtemp(prefix=f"rs-bench-{name}-")) / f"{name}.log"
        env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(ROOT)}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(list(argv), cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 30.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; log {self.log_path}:\n"
                                   + self.log_path.read_text(errors="replace")[-2000:])
            try:
                if httpx.get(self.base_url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready within {timeout:.0f}s; log {self.log_path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)  # the group of the child we started
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@contextlib.contextmanager
def server(name: str, module_argv: Sequence[str], settings: Settings) -> Iterator[Server]:
    """``python -m <module_argv> --port P`` with ``settings`` in its environment."""
    port = free_port()
    srv = Server(name, [sys.executable, "-m", *module_argv, "--port", str(port)], settings, port)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


# -- load ------------------------------------------------------------------------------------------

def pct(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


@dataclass
class LoadResult:
    label: str
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, client side
    server_ms: list[float] = field(default_factory=list)  # Server-Timing total
    errors: int = 0
    first_error: str = ""
    body_bytes: int = 0

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def p(self, q: float) -> float:
        return pct(sorted(self.latencies), q) * 1000

    def srv(self, q: float) -> float:
        return pct(sorted(self.server_ms), q)

    def line(self) -> str:
        return (f"{self.label:<28} {self.rps:>9.1f} req/s  p50 {self.p(0.5):>8.2f} ms  p99 {self.p(0.99):>8.2f} ms"
                f"  server p50 {self.srv(0.5):>7.2f} ms  n={len(self.latencies)} err={self.errors}")


def _server_total(header: str | None) -> float | None:
    for part in (header or "").split(","):
        name, _, dur = part.strip().partition(";dur=")
        if name == "total" and dur:
            return float(dur)
    return None


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> tuple[int, dict, bytes]:
    """One HTTP/1.1 keep-alive exchange (Content-Length bodies only, as the API sends)."""
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name:
            headers[name.strip().lower()] = value.strip()
    if b"chunked" in headers.get(b"transfer-encoding", b""):
        raise RuntimeError("chunked responses are not supported by the bench client")
    length = int(headers.get(b"content-length", b"0"))
    return int(lines[0].split(b" ", 2)[1]), headers, (await reader.readexactly(length) if length else b"")


class Connection:
    """One keep-alive HTTP/1.1 connection for scripted GETs (checks, pollers), same client as ``hammer``."""

    def __init__(self, base_url: str) -> None:
        self.host, _, self.port = base_url.removeprefix("http://").partition(":")
        self._rw: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def get(self, path: str, headers: dict[str, str]) -> tuple[int, dict[bytes, bytes], bytes]:
        raw = (f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
               + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()
        if self._rw is not None:
            try:
                return await _get(*self._rw, raw)
            except (asyncio.IncompleteReadError, ConnectionError):
                self.close()  # the server closed an idle keep-alive connection (uvicorn: after 5 s)
        self._rw = await asyncio.open_connection(self.host, int(self.port), limit=1 << 22)
        return await _get(*self._rw, raw)

    def close(self) -> None:
        if self._rw is not None:
            self._rw[1].close()
            self._rw = None


async def hammer(label: str, base_url: str, path: str, headers: Sequence[dict[str, str]], *, expect: int,
                 concurrency: int, duration: float, warmup: float) -> LoadResult:
    """``concurrency`` keep-alive connections sending GET ``path`` for ``warmup`` + ``duration`` s.

    A minimal asyncio HTTP/1.1 client: httpx.AsyncClient tops out near 700 req/s on these
    machines (it would measure itself, not the server). Requests cycle through ``headers`` (one
    set per viewer); only those started after the warmup count, and the rate is over the time
    from the end of the warmup to the last measured answer.
    """
    host, _, port = base_url.removeprefix("http://").partition(":")
    raws = [(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
             + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n").encode() for h in headers]
    result = LoadResult(label)
    begin = time.perf_counter()
    start, end = begin + warmup, begin + warmup + duration
    last_done = [start]

    async def worker(i: int) -> None:
        reader, writer = await asyncio.open_connection(host, int(port), limit=1 << 20)
        n = i
        try:
            while (t0 := time.perf_counter()) < end:
                status, head, body = await _get(reader, writer, raws[n % len(raws)])
                t1 = time.perf_counter()
                n += 1
                if t0 < start:
                    continue
                if status != expect:
                    result.errors += 1
                    result.first_error = result.first_error or f"{status} {body[:300]!r}"
                    continue
                result.latencies.append(t1 - t0)
                result.body_bytes += len(body)
                if (total := _server_total(head.get(b"server-timing", b"").decode())) is not None:
                    result.server_ms.append(total)
                last_done[0] = max(last_done[0], t1)
        finally:
            writer.close()

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    result.elapsed = last_done[0] - start
    return result


def use_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def table(title: str, rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [title, "-" * len(title)]
    for j, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def baseline_starlette(settings: Settings, routes: dict[str, Any], pg_options: str) -> Starlette:
    """A compute-on-read server on the API's own stack (uvicorn, Starlette, auth, pool, orjson
    bytes): only the handlers differ. ``pg_options`` are its sessions' settings (custom plans:
    psycopg auto-prepares after 5 runs, and PostgreSQL's generic plans of these queries are slower)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = AsyncConnectionPool(settings.database_url, min_size=1, max_size=settings.api_pool_size, timeout=30.0,
                                   open=False, check=AsyncConnectionPool.check_connection,
                                   kwargs={"autocommit": True, "options": pg_options})
        await pool.open(wait=False)
        app.state.ctx = Context(settings, pool, Authenticator(settings), CursorCodec(settings.cursor_secret))
        try:
            yield
        finally:
            await pool.close()

    def ctx(request: Request) -> Context:
        return request.app.state.ctx

    return Starlette(
        routes=[Route("/readyz", endpoint(ctx, ops.readyz))]
        + [Route(path, endpoint(ctx, handler)) for path, handler in routes.items()],
        lifespan=lifespan,
    )
