"""Start order is not the projector's to choose: started before its broker, it waits and says so."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from readside.embedded import EmbeddedBroker, free_port
from readside.load import publish
from readside.schemas.registry import contract_topics
from readside.shared.kafka import create_topics
from readside.shared.settings import Settings
from tests.support import message, started, wait_caught_up, wait_until

pytestmark = pytest.mark.slow


def test_a_projector_started_before_its_broker_waits_then_projects(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    own = replace(settings, kafka_bootstrap=f"127.0.0.1:{port}")
    log = tmp_path / "projector.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "readside.cli", "projector", "--only", "threads"],
            env={**os.environ, **own.to_env()}, stdout=out, stderr=subprocess.STDOUT,
        )
    broker = EmbeddedBroker(port=port, log_path=tmp_path / "tansu.log")
    try:
        wait_until(lambda: f"waiting for the Kafka broker at 127.0.0.1:{port}" in log.read_text(), 60, "a waiting line")
        assert proc.poll() is None, log.read_text()
        assert "Traceback" not in log.read_text()

        broker.start()
        names = contract_topics(own.topic_prefix)
        records = [started("t-1", at=0), message("t-1", "m-1", at=1)]

        async def go() -> None:
            await create_topics(own.kafka_bootstrap, names)
            await publish(records, bootstrap=own.kafka_bootstrap, prefix=own.topic_prefix)

        asyncio.run(go())
        wait_caught_up(own.database_url, own.kafka_bootstrap, "threads", names[:2], timeout=120)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        broker.stop()


@pytest.mark.parametrize("form", ["text", "json"])
def test_sigterm_while_waiting_for_the_broker_is_a_clean_stop(settings: Settings, tmp_path: Path, form: str) -> None:
    port = free_port()
    own = replace(settings, kafka_bootstrap=f"127.0.0.1:{port}")
    log = tmp_path / "projector.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "readside.cli", "projector"],
            env={**os.environ, **own.to_env(), "READSIDE_LOG_FORMAT": form}, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: "waiting for the Kafka broker" in log.read_text(), 60, "a waiting line")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
        assert "Traceback" not in log.read_text()
        if form == "json":  # every line a JSON object, ours among them
            entries = [orjson.loads(line) for line in log.read_text().splitlines() if line.strip()]
            assert any(e["logger"] == "readside.projector.service" and "waiting for" in e["message"] for e in entries)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_api_on_a_busy_port_says_so_in_one_line() -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("READSIDE_")}
        env["READSIDE_JWT_SECRET"] = "s" * 40
        out = subprocess.run([sys.executable, "-m", "readside.cli", "api", "--port", str(port)],
                             env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"readside: --port {port} on 127.0.0.1 cannot be used (Address already in use); stop what holds it, or pass another --port or --host"]


def test_an_api_started_before_the_migration_is_not_ready_and_says_what_to_run(settings: Settings, tmp_path: Path) -> None:
    import httpx

    port = free_port()
    log = tmp_path / "api.log"
    with open(log, "ab") as out:
        api = subprocess.Popen([sys.executable, "-m", "readside.cli", "api", "--port", str(port)],
                               env={**os.environ, **settings.to_env()}, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        def answers() -> httpx.Response | None:
            try:
                return httpx.get(base + "/healthz", timeout=1)
            except httpx.HTTPError:
                return None

        wait_until(answers, 30, "the API to listen")
        ready = httpx.get(base + "/readyz", timeout=5)
        assert ready.status_code == 503 and ready.headers["content-type"] == "application/problem+json"
        assert "readside migrate" in ready.json()["detail"]
        listing = httpx.get(base + "/v1/providers", timeout=5)  # public: reaches the database
        assert listing.status_code == 503, listing.text
        assert listing.headers["content-type"] == "application/problem+json"
        assert "readside migrate" in listing.json()["detail"]

        migrated = subprocess.run([sys.executable, "-m", "readside.cli", "migrate"], env={**os.environ, **settings.to_env()},
                                  capture_output=True, text=True, timeout=120)
        assert migrated.returncode == 0, migrated.stderr
        assert httpx.get(base + "/readyz", timeout=5).status_code == 200
        assert httpx.get(base + "/v1/providers", timeout=5).status_code == 200
    finally:
        api.terminate()
        api.wait(20)
