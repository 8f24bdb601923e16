"""Real projector processes killed and rebalanced while events flow.

The final tables must equal the fold of all events: nothing lost, nothing applied twice (the
summaries are kept by deltas, so a batch applied twice would double them; the dedupe table must
hold each event id once).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest

from readside.load import Record, publish, thread_stream
from readside.shared.settings import Settings
from tests.support import assert_tables_equal_fold, wait_caught_up

pytestmark = pytest.mark.slow

TOPICS = ("threads.events", "payments.events")


class Proc:
    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings, self.log = settings, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> Proc:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "readside.cli", "projector"],
                env={**os.environ, **self.settings.to_env()},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(60) == 0, f"graceful stop failed; see {self.log}"


def _publish_slowly(settings: Settings, records: list[Record], chunks: int, pause: float) -> threading.Thread:
    async def go() -> None:
        size = len(records) // chunks + 1
        for i in range(0, len(records), size):
            await publish(records[i : i + size], bootstrap=settings.kafka_bootstrap, prefix=settings.topic_prefix)
            await asyncio.sleep(pause)

    thread = threading.Thread(target=lambda: asyncio.run(go()))
    thread.start()
    return thread


def _assert_final(settings: Settings, records: list[Record]) -> None:
    wait_caught_up(settings.database_url, settings.kafka_bootstrap, "threads", [settings.topic_prefix + t for t in TOPICS], timeout=180)
    assert_tables_equal_fold(settings.database_url, records)
    with psycopg.connect(settings.database_url) as conn:
        (dedupe,) = conn.execute("SELECT count(*) FROM dedupe WHERE projection = 'threads'").fetchone()
    assert dedupe == len({r.value["event_id"] for r in records})


def test_kill_9_at_random_moments_loses_nothing_and_applies_nothing_twice(settings: Settings, tmp_path: Path) -> None:
    rng = random.Random(1234)
    records = thread_stream(threads=120, seed=31)
    publisher = _publish_slowly(settings, records, chunks=30, pause=0.4)
    proc = Proc(settings, tmp_path / "projector.log").start()
    try:
        for _ in range(4):
            threading.Event().wait(rng.uniform(1.5, 4.0))  # a random moment, by design
            proc.kill()
            proc = Proc(settings, tmp_path / "projector.log").start()
        publisher.join(120)
        _assert_final(settings, records)
    finally:
        proc.terminate()


def test_two_instances_in_one_group_with_one_stopped_and_restarted(settings: Settings, tmp_path: Path) -> None:
    records = thread_stream(threads=120, seed=32)
    a = Proc(settings, tmp_path / "a.log").start()
    b = Proc(settings, tmp_path / "b.log").start()
    publisher = _publish_slowly(settings, records, chunks=30, pause=0.5)
    try:
        threading.Event().wait(5)  # mid-stream
        b.terminate()
        threading.Event().wait(4)
        b = Proc(settings, tmp_path / "b.log").start()
        publisher.join(120)
        _assert_final(settings, records)
    finally:
        a.terminate()
        b.terminate()
