"""``readside demo``: the whole stack on one machine, embedded servers where nothing is configured.

Starts (unless configured through ``READSIDE_*``) the embedded Kafka-protocol broker (tansu), an
embedded PostgreSQL and an embedded Valkey (the cache); creates topics, migrates, seeds a realistic history, runs the projector
and the API as child processes, keeps a synthetic stream flowing, and prints a ready ``curl``.
Unless ``READSIDE_JWT_SECRET`` is set, the run signs its tokens with a random secret of its own,
and prints the ``readside token`` command that makes more of them for this run.
Ctrl-C (or SIGTERM) stops every process it started. While it runs, ``<data dir>/demo.env`` holds
the settings a second terminal needs (:mod:`readside.demo_env`).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.error import URLError
from urllib.parse import quote
from urllib.request import Request, urlopen

from readside import demo_env
from readside.api.auth import make_token
from readside.embedded import EmbeddedBroker, EmbeddedPostgres, EmbeddedValkey
from readside.load import mixed_stream, publish, run_load
from readside.schemas.registry import contract_topics
from readside.shared.errors import ConfigError
from readside.shared.kafka import create_topics
from readside.shared.settings import Settings

__all__ = ["run_demo"]

SEED_SCALE = 15  # mixed_stream: 300 threads, 150 requests, 150 providers, 75 workflows


def _say(text: str) -> None:
    print(f"[demo] {text}", file=sys.stderr, flush=True)


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    handle = open(log, "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "readside.cli", *args],
        env={**os.environ, **env},
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for_inbox(url: str, token: str, procs: list[subprocess.Popen], timeout: float = 120.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a child process exited early (code {proc.returncode}); see the logs in the data dir")
        try:
            # The standard library's client: the demo runs on the base install (no test extras).
            with urlopen(Request(url, headers={"Authorization": f"Bearer {token}"}), timeout=2.0) as r:
                items = json.loads(r.read())["items"]
            if items:
                return len(items)
        except (URLError, OSError, ValueError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the inbox did not fill within {timeout:.0f} s; see the logs in the data dir")


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C: every process started is stopped


def _with_keys(settings: Settings) -> Settings:
    """The demo's keys: the configured ones, else random ones of this run (never a published default)."""
    if settings.jwt_algorithm != "HS256":
        raise ConfigError("readside demo signs its own tokens with HS256: unset READSIDE_JWT_ALGORITHM")
    if not settings.jwt_secret:
        settings = replace(settings, jwt_secret=secrets.token_urlsafe(32))
    if not settings.cursor_secret:
        settings = replace(settings, cursor_secret="cursor:" + settings.jwt_secret)
    return settings.require_keys()


def run_demo(rate: float, port: int, data_dir: str, reset: bool = False) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    base = Path(data_dir).resolve()
    base.mkdir(parents=True, exist_ok=True)
    settings = _with_keys(Settings.from_env())
    with ExitStack() as stack:
        if not os.environ.get("READSIDE_KAFKA_BOOTSTRAP"):
            broker = EmbeddedBroker(log_path=base / "broker.log")
            settings = replace(settings, kafka_bootstrap=broker.start())
            stack.callback(broker.stop)
            _say(f"embedded Kafka-protocol broker (tansu) at {settings.kafka_bootstrap}")
        if not os.environ.get("READSIDE_REDIS_URL"):
            valkey = EmbeddedValkey(data_dir=base / "valkey")
            settings = replace(settings, redis_url=valkey.start())
            stack.callback(valkey.stop)
            _say(f"embedded Valkey (cache) at {settings.redis_url}")
        embedded_db = not os.environ.get("READSIDE_DATABASE_URL")
        if embedded_db:
            pg = EmbeddedPostgres(base / "pg")
            settings = replace(settings, database_url=pg.start())
            stack.callback(pg.stop)
            _say("embedded PostgreSQL started")
        from readside.projector.service import select
        from readside.shared.db import connect, migrate

        if embedded_db or reset:
            # The embedded broker keeps topics in memory: start the read tables afresh with it.
            with connect(settings.database_url, autocommit=True) as conn:
                for projection in select(None):
                    for table in projection.tables:
                        conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
                    for schema in (f"rs_build_{projection.name}", f"rs_prev_{projection.name}"):  # rebuilds
                        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
                conn.execute(
                    "DROP TABLE IF EXISTS checkpoints, dedupe, dead_letters, partition_heads, projections, rebuilds"
                )
        elif not os.environ.get("READSIDE_KAFKA_BOOTSTRAP"):
            raise ConfigError(
                "the demo's embedded broker starts empty but READSIDE_DATABASE_URL points at a database that may "
                "hold checkpoints of another broker: use an empty database, or pass --reset to drop the read tables"
            )
        migrate(settings.database_url, select(None))

        # A history of the last 30 days; whatever the simulations would do after now is left to the live load.
        now = datetime.now(UTC)
        cutoff = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        seed = [r for r in mixed_stream(SEED_SCALE, seed=7, start=now - timedelta(days=30))
                if r.value["occurred_at"] <= cutoff]
        heavy = Counter(
            r.value["payload"]["client"]["id"] for r in seed if r.value["type"] == "thread.started"
        ).most_common(1)[0][0]
        category = Counter(
            r.value["payload"]["category"] for r in seed if r.value["type"] == "provider.profile_updated"
        ).most_common(1)[0][0]

        async def prepare() -> None:
            await create_topics(settings.kafka_bootstrap, contract_topics(settings.topic_prefix))
            await publish(seed, bootstrap=settings.kafka_bootstrap, prefix=settings.topic_prefix)

        asyncio.run(prepare())
        _say(f"published {len(seed)} seed events")
        env = settings.to_env()
        env_file = demo_env.write(base, env)
        stack.callback(demo_env.remove, base)
        procs = [
            _spawn(["projector"], env, base / "projector.log"),
            _spawn(["api", "--port", str(port)], env, base / "api.log"),
        ]
        for proc in procs:
            stack.callback(_stop, proc)
        token = make_token(settings.jwt_secret, heavy, ["technician", "admin"], ttl=7 * 24 * 3600)
        url = f"http://127.0.0.1:{port}/v1/threads/preview?limit=5"
        count = _wait_for_inbox(url, token, procs)
        _say(f"API answering at http://127.0.0.1:{port} ({count} threads in {heavy}'s first page)")
        print(f"\ncurl -s -H 'Authorization: Bearer {token}' '{url}'\n", flush=True)
        base_url = f"http://127.0.0.1:{port}"
        _say("the other endpoints, with the same token (a technician and admin too):")
        for path in ("/v1/threads/summary", "/v1/workflows?limit=5", "/v1/templates?limit=5",
                     "/v1/requests/technician-views?view=all_unsolved&per_page=5",
                     "/v1/requests/technician-views/counts", "/v1/admin/projections"):
            print(f"curl -s -H 'Authorization: Bearer {token}' '{base_url}{path}'", flush=True)
        print(f"curl -s '{base_url}/v1/providers?category={quote(category)}&sort=most_booked&limit=5'\n", flush=True)
        if os.environ.get("READSIDE_JWT_SECRET"):
            _say("tokens for other users: `readside token <user id> [--role admin]` with your READSIDE_JWT_SECRET")
        else:
            _say("this run's random JWT secret; tokens for other users (in another terminal):")
            print(f"READSIDE_JWT_SECRET={settings.jwt_secret} readside token <user id> --role admin\n", flush=True)
        here = " (from this directory they find it by themselves)" if base == Path(demo_env.DEFAULT_DIR).resolve() else ""
        _say(f"in a second terminal, `. {env_file}` gives `readside status`, `dlq`, `load`, `rebuild` and `token` "
             f"this demo's settings{here}")
        _say(f"streaming ~{rate:g} events/s; logs in {base}; Ctrl-C stops everything")
        try:
            asyncio.run(run_load(bootstrap=settings.kafka_bootstrap, prefix=settings.topic_prefix, rate=rate, seed=11))
        except KeyboardInterrupt:
            pass
        _say("stopping")
    return 0
