"""Operator views against a real broker and PostgreSQL: ``readside status``, the projector's own
``/readyz`` and ``/metrics``, and the admin endpoint. The CLI runs as a real process.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import redis

from readside.embedded import free_port
from readside.load import Record, thread_stream
from readside.readmodels.registry import REGISTRY
from readside.shared.db import migrate
from readside.shared.settings import Settings
from tests.conftest import InProcessProjector
from tests.support import (
    assert_tables_equal_fold,
    message,
    projection_topics,
    send,
    send_raw,
    started,
    wait_caught_up,
    wait_until,
)


def readside(settings: Settings, *args: str, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
    """``readside <args>`` as an operator runs it, configured by ``settings``."""
    done = subprocess.run(
        [sys.executable, "-m", "readside.cli", *args],
        env={**os.environ, **settings.to_env()},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in ok, f"readside {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def status(settings: Settings) -> dict[str, Any]:
    return orjson.loads(readside(settings, "status", "--json").stdout)


def projection(doc: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [p for p in doc["projections"] if p["name"] == name]
    return found


def fresh_keys(records: list[Record], seen: list[Record]) -> list[Record]:
    keys = {r.key for r in seen}
    return [r for r in records if r.key not in keys]


def test_status_shows_the_lag_a_stopped_projector_left_then_stalled_then_the_catch_up(settings: Settings) -> None:
    settings = replace(settings, stall_after=1.5)
    first = thread_stream(threads=10, seed=11)
    send(settings, first)
    runner = InProcessProjector(settings, ["threads"]).start()
    wait_caught_up(settings.database_url, settings.kafka_bootstrap, "threads", projection_topics(settings, "threads"))
    runner.stop()

    caught_up = projection(status(settings), "threads")
    assert (caught_up["state"], caught_up["stalled"], caught_up["lag"], caught_up["lag_seconds"]) == ("live", False, 0, 0.0)
    assert sum(p["offset"] for p in caught_up["partitions"]) == len(first)
    assert {p["topic"] for p in caught_up["partitions"]} == set(projection_topics(settings, "threads"))

    # the projector is down: only the broker knows about these
    second = fresh_keys(thread_stream(threads=10, seed=12), first)
    send(settings, second)
    doc = status(settings)
    assert doc["heads_from"] == "broker"
    behind = projection(doc, "threads")
    assert behind["lag"] == len(second)
    assert sum(p["high_watermark"] for p in behind["partitions"]) == len(first) + len(second)
    assert all(p["lag"] == p["high_watermark"] - p["offset"] for p in behind["partitions"])

    stalled = wait_until(lambda: (p := projection(status(settings), "threads"))["stalled"] and p, 60, "threads to be stalled")
    assert stalled["state"] == "live" and stalled["lag"] == len(second)  # state: the contract's live | rebuilding
    assert all(p["stalled"] == (p["lag"] > 0) for p in stalled["partitions"])
    table = readside(settings, "status").stdout
    (row,) = [line.split() for line in table.splitlines() if line.split()[:2] == ["threads", "1"]]  # the summary row
    assert row[:4] == ["threads", "1", "stalled", str(len(second))]

    runner = InProcessProjector(settings, ["threads"]).start()
    try:
        wait_caught_up(settings.database_url, settings.kafka_bootstrap, "threads", projection_topics(settings, "threads"))
    finally:
        runner.stop()
    again = projection(status(settings), "threads")
    assert (again["state"], again["stalled"], again["lag"]) == ("live", False, 0)
    assert sum(p["offset"] for p in again["partitions"]) == len(first) + len(second)


def test_status_falls_back_to_the_recorded_heads_when_the_broker_is_unreachable(settings: Settings) -> None:
    records = thread_stream(threads=5, seed=13)
    send(settings, records)
    runner = InProcessProjector(settings, ["threads"]).start()
    try:
        wait_caught_up(settings.database_url, settings.kafka_bootstrap, "threads", projection_topics(settings, "threads"))
    finally:
        runner.stop()
    unreachable = replace(settings, kafka_bootstrap=f"127.0.0.1:{free_port()}")
    doc = status(unreachable)
    assert doc["heads_from"] == "partition_heads" and doc["broker_error"]
    threads = projection(doc, "threads")
    assert threads["lag"] == 0 and sum(p["high_watermark"] for p in threads["partitions"]) == len(records)
    table = readside(unreachable, "status").stdout
    assert "READSIDE_KAFKA_BOOTSTRAP" in table


def _metric(text: str, name: str, **labels: str) -> float:
    want = name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{want} not in /metrics:\n{text}")


def test_projector_readyz_is_503_naming_a_stalled_projection_until_it_moves_again(settings: Settings) -> None:
    port = free_port()
    settings = replace(settings, stall_after=1.5, projector_port=port)
    base = f"http://127.0.0.1:{port}"
    first = thread_stream(threads=8, seed=14)
    send(settings, first)
    runner = InProcessProjector(settings, ["threads"]).start()
    try:
        wait_caught_up(settings.database_url, settings.kafka_bootstrap, "threads", projection_topics(settings, "threads"))
        wait_until(lambda: httpx.get(base + "/readyz").status_code == 200, 30, "the projector to be ready")
        assert httpx.get(base + "/healthz").json() == {"status": "ok"}

        second = fresh_keys(thread_stream(threads=8, seed=15), first)
        # Something holds the checkpoint rows (a long migration, a forgotten psql session):
        # the projector is up but cannot commit.
        with psycopg.connect(settings.database_url) as blocker:
            blocker.execute("SELECT 1 FROM checkpoints WHERE projection = 'threads' FOR UPDATE")
            send(settings, second)
            ready = wait_until(
                lambda: (r := httpx.get(base + "/readyz")).status_code == 503 and r, 60, "/readyz to report the stall"
            )
            assert ready.headers["content-type"] == "application/problem+json"
            problem = ready.json()
            assert problem["status"] == 503 and problem["stalled"] == ["threads"]
            assert "threads" in problem["detail"]
            metrics = wait_until(
                lambda: (t := httpx.get(base + "/metrics").text)
                and _metric(t, "readside_projection_lag_events", projection="threads") == len(second)
                and t,
                30,
                "the lag gauge",
            )
            assert _metric(metrics, "readside_projection_stalled", projection="threads") == 1
            assert _metric(metrics, "readside_projection_lag_seconds", projection="threads") > 0
            assert projection(status(settings), "threads")["stalled"] is True
            blocker.rollback()

        wait_caught_up(settings.database_url, settings.kafka_bootstrap, "threads", projection_topics(settings, "threads"))
        wait_until(lambda: httpx.get(base + "/readyz").status_code == 200, 30, "/readyz to recover")
        metrics = httpx.get(base + "/metrics").text
        assert _metric(metrics, "readside_projection_stalled", projection="threads") == 0
        assert _metric(metrics, "readside_projection_lag_events", projection="threads") == 0
        assert _metric(metrics, "readside_projector_events_total", projection="threads") == len(first) + len(second)
    finally:
        runner.stop()


def test_admin_endpoint_returns_the_figures_of_status_json(settings: Settings, tmp_path: Path) -> None:
    first = thread_stream(threads=6, seed=16)
    send(settings, first)
    runner = InProcessProjector(settings, ["threads"]).start()
    try:
        wait_caught_up(settings.database_url, settings.kafka_bootstrap, "threads", projection_topics(settings, "threads"))
    finally:
        runner.stop()
    send(settings, fresh_keys(thread_stream(threads=6, seed=17), first))  # lag only the broker knows

    port = free_port()
    with open(tmp_path / "api.log", "wb") as log:
        api = subprocess.Popen(
            [sys.executable, "-m", "readside.cli", "api", "--port", str(port)],
            env={**os.environ, **settings.to_env()},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert api.poll() is None, f"API exited; see {tmp_path / 'api.log'}"
            try:
                return httpx.get(base + "/readyz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, 30, "the API")
        token = readside(settings, "token", "ops-1", "--role", "admin").stdout.strip()
        response = httpx.get(base + "/v1/admin/projections", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
        from_api = response.json()
        from_cli = status(settings)
    finally:
        api.terminate()
        api.wait(10)

    def figures(doc: dict[str, Any]) -> Any:
        drop = {"lag_seconds"}  # read a moment apart: the pending events aged in between
        return [
            {k: v for k, v in p.items() if k not in drop} | {"partitions": [{k: v for k, v in q.items() if k not in drop} for q in p["partitions"]]}
            for p in doc["projections"]
        ]

    assert from_api["heads_from"] == from_cli["heads_from"] == "broker"
    assert figures(from_api) == figures(from_cli)
    threads = projection(from_api, "threads")
    assert threads["lag"] > 0 and {"version", "state", "partitions"} <= set(threads)
    assert {"offset", "high_watermark", "lag"} <= set(threads["partitions"][0])


# -- dead letters ----------------------------------------------------------------------------------

def dead_letters(settings: Settings) -> list[dict[str, Any]]:
    return orjson.loads(readside(settings, "dlq", "list", "--json").stdout)["dead_letters"]


def wait_dead_letters(settings: Settings, count: int) -> list[dict[str, Any]]:
    return wait_until(lambda: len(d := dead_letters(settings)) == count and d, 60, f"{count} dead letter(s)")


def test_dlq_list_and_show_give_reason_origin_key_and_the_original_value(settings: Settings) -> None:
    t = settings.topic_prefix + "threads.events"
    good = [started("d1"), message("d1", "m1", 10)]
    invalid = orjson.dumps({**good[1].value, "event_id": "bad-1", "payload": {"thread_id": "d1"}})
    garbage = b"\xff\x00{not json"
    items = [(t, r.key.encode(), orjson.dumps(r.value)) for r in good] + [(t, b"d1", invalid), (t, b"d1", garbage)]
    asyncio.run(send_raw(settings.kafka_bootstrap, items))
    runner = InProcessProjector(settings, ["threads"]).start()
    try:
        wait_caught_up(settings.database_url, settings.kafka_bootstrap, "threads", projection_topics(settings, "threads"))
    finally:
        runner.stop()

    listed = dead_letters(settings)
    assert [d["projection"] for d in listed] == ["threads", "threads"]
    assert listed[0]["id"] > listed[1]["id"]  # newest first
    by_size = {d["value_bytes"]: d for d in listed}
    assert "message_id" in by_size[len(invalid)]["reason"] and "not JSON" in by_size[len(garbage)]["reason"]
    assert all(d["topic"] == t and d["key"] == "d1" for d in listed)
    table = readside(settings, "dlq", "list").stdout
    assert "REASON" in table and "message_id" in table and "2 dead letter(s)" in table
    newest = orjson.loads(readside(settings, "dlq", "list", "--limit", "1", "--json").stdout)
    assert [d["id"] for d in newest["dead_letters"]] == [listed[0]["id"]] and newest["total"] == 2

    shown = readside(settings, "dlq", "show", str(by_size[len(invalid)]["id"])).stdout
    assert f"topic {t}, partition {by_size[len(invalid)]['partition']}, offset {by_size[len(invalid)]['offset']}" in shown
    assert '\n  "event_id": "bad-1",' in shown  # pretty-printed
    assert "message_id" in shown
    shown = readside(settings, "dlq", "show", str(by_size[len(garbage)]["id"])).stdout
    assert "not JSON; shown escaped" in shown and "\\xff\\x00{not json" in shown
    missing = readside(settings, "dlq", "show", "999999", ok=(1,))
    assert "no dead letter #999999" in missing.stderr


def test_dlq_replay_applies_a_fixed_dead_letter_once_however_often_and_keeps_what_still_fails(
    settings: Settings, redis_url: str
) -> None:
    settings = replace(settings, redis_url=redis_url)
    t = settings.topic_prefix + "threads.events"
    migrate(settings.database_url, [REGISTRY["threads"]])
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        # a too-strict migration: previews longer than 40 characters now fail the fold
        conn.execute("ALTER TABLE thread_messages ADD CONSTRAINT preview_short CHECK (char_length(preview) <= 40)")
    long = message("r1", "m2", 20, content="A long message that a too-strict constraint rejects, for now.")
    still_invalid = orjson.dumps({**long.value, "event_id": "bad-2", "payload": {"thread_id": "r1"}})
    records = [started("r1"), message("r1", "m1", 10), long, message("r1", "m3", 30, sender="u-p", sender_type="provider")]
    runner = InProcessProjector(settings, ["threads"]).start()
    try:
        send(settings, records)
        asyncio.run(send_raw(settings.kafka_bootstrap, [(t, b"r1", still_invalid)]))
        first = wait_dead_letters(settings, 2)
        send(settings, [long])  # the producer re-sends it (same event id): it fails again
        wait_caught_up(settings.database_url, settings.kafka_bootstrap, "threads", projection_topics(settings, "threads"))
        letters = wait_dead_letters(settings, 3)
    finally:
        runner.stop()
    fold_failures = sorted(d["id"] for d in letters if d["reason"].startswith("fold error"))
    (invalid_id,) = [d["id"] for d in first if "message_id" in d["reason"]]
    assert len(fold_failures) == 2 and "CheckViolation" in letters[0]["reason"] + letters[1]["reason"]

    before_fix = readside(settings, "dlq", "replay", "--all", ok=(1,)).stdout
    assert "replayed 0, still failing 3, duplicates skipped 0" in before_fix
    assert f"#{invalid_id} threads" in before_fix and "still failing: payload: message_id" in before_fix

    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE thread_messages DROP CONSTRAINT preview_short")  # the fix
    cache = redis.Redis.from_url(redis_url)
    version = int(cache.get("rs:{thread:r1}:v") or 0)

    once = readside(settings, "dlq", "replay", str(fold_failures[0])).stdout
    assert "replayed 1, still failing 0, duplicates skipped 0" in once
    assert int(cache.get("rs:{thread:r1}:v") or 0) > version  # cached bodies follow the replay
    again = readside(settings, "dlq", "replay", str(fold_failures[1])).stdout  # the re-sent copy
    assert "replayed 0, still failing 0, duplicates skipped 1" in again
    gone = readside(settings, "dlq", "replay", str(fold_failures[0]), ok=(1,)).stdout
    assert f"#{fold_failures[0]}: no such dead letter" in gone and "replayed 0" in gone
    rest = readside(settings, "dlq", "replay", "--all", "--projection", "threads", ok=(1,)).stdout
    assert "replayed 0, still failing 1, duplicates skipped 0" in rest

    assert_tables_equal_fold(settings.database_url, records)  # m2 once: summaries are kept by deltas
    (remaining,) = dead_letters(settings)
    assert (remaining["id"], remaining["retries"]) == (invalid_id, 2)  # the two --all replays
    assert projection(status(settings), "threads")["dead_letters"] == 1
    cache.close()
