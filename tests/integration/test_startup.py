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

from shared.embedded import EmbeddedBroker, free_port
from shared.kafka import CONTRACT_TOPICS, create_topics
from shared.load import publish
from shared.settings import Settings
from tests.support import message, started, wait_caught_up, wait_until

pytestmark = pytest.mark.slow


def test_a_projector_started_before_its_broker_waits_then_projects(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    own = replace(settings, kafka_bootstrap=f"127.0.0.1:{port}")
    log = tmp_path / "projector.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "projector", "--only", "threads"],
            env={**os.environ, **own.to_env()}, stdout=out, stderr=subprocess.STDOUT,
        )
    broker = EmbeddedBroker(port=port, log_path=tmp_path / "tansu.log")
    try:
        wait_until(lambda: f"waiting for the Kafka broker at 127.0.0.1:{port}" in log.read_text(), 60, "a waiting line")
        assert proc.poll() is None, log.read_text()
        assert "Traceback" not in log.read_text()

        broker.start()
        names = [own.topic_prefix + t for t in CONTRACT_TOPICS]
        records = [started("t-1", at=0), message("t-1", "m-1", at=1)]

        async def go() -> None:
            await create_topics(own.kafka_bootstrap, names + [n + ".dlq" for n in names])
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
            [sys.executable, "-m", "shared.cli", "projector"],
            env={**os.environ, **own.to_env(), "READSIDE_LOG_FORMAT": form}, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: "waiting for the Kafka broker" in log.read_text(), 60, "a waiting line")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
        assert "Traceback" not in log.read_text()
        if form == "json":  # every line a JSON object, ours among them
            entries = [orjson.loads(line) for line in log.read_text().splitlines() if line.strip()]
            assert any(e["logger"] == "projector.service" and "waiting for" in e["message"] for e in entries)
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
        out = subprocess.run([sys.executable, "-m", "shared.cli", "api", "--port", str(port)],
                             env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [f"readside: port {port} on 127.0.0.1 is in use (another server?): stop it, or pass --port"]
