"""``readside rebuild`` against a real broker and PostgreSQL: resume after kill -9, ``--verify``.

The live API under a rebuild, the cache generation and rollback are in
``tests/e2e/test_rebuild_api.py``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import orjson
import psycopg
import pytest

from readside.cli import main as cli
from readside.load import thread_stream
from readside.readmodels.base import BulkLoad, Projection
from readside.readmodels.registry import REGISTRY
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


def row(url: str, sql: str, *args: object) -> tuple | None:
    with psycopg.connect(url) as conn:
        try:
            return conn.execute(sql, args).fetchone()
        except psycopg.errors.UndefinedTable:
            return None


def versions(url: str) -> tuple:
    return row(url, "SELECT version, previous_version, generation, state FROM projections WHERE name = 'threads'")  # type: ignore[return-value]


def with_extra_sql(projection: Projection, statement: str) -> Projection:
    """A deliberately different fold: the projection's own writes, then ``statement`` (test only)."""

    async def apply(conn, events):
        changed = await projection.apply(conn, events)
        await conn.execute(statement)
        return changed

    async def bulk_apply(conn, events):
        assert projection.bulk is not None
        await projection.bulk.apply(conn, events)
        await conn.execute(statement)

    bulk = BulkLoad(bulk_apply, projection.bulk.finish) if projection.bulk else None
    return replace(projection, apply=apply, bulk=bulk)


@pytest.mark.slow
def _killed_in_bulk(settings, tmp_path: Path, seed: int, *extra: str) -> tuple[list, dict[str, str], list[str]]:
    """A rebuild (``readside rebuild threads --batch 100 *extra``, slowed down) killed with -9 well
    into its bulk phase: the records sent, its environment and its command line."""
    records = thread_stream(threads=90, seed=seed)
    send(settings, records)
    wait_caught_up(settings.database_url, settings.kafka_bootstrap, "threads", projection_topics(settings, "threads"))
    env = {**os.environ, **settings.to_env()}
    argv = [sys.executable, "-m", "readside.cli", "rebuild", "threads", "--batch", "100"]
    with open(tmp_path / "first.log", "wb") as log:
        first = subprocess.Popen([*argv, *extra, "--max-rate", "250"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        done = lambda: (row(settings.database_url, "SELECT events_done FROM rebuilds WHERE projection = 'threads'") or (0,))[0]  # noqa: E731
        wait_until(lambda: done() >= 700, 60, "the rebuild to be well into its bulk phase")
    finally:
        first.send_signal(signal.SIGKILL)  # bulk workers follow their parent
        first.wait(10)
    return records, env, argv


def test_a_rebuild_killed_with_sigkill_resumes_where_it_stopped(settings, projector, tmp_path: Path) -> None:
    records, env, argv = _killed_in_bulk(settings, tmp_path, 21)
    saved = row(settings.database_url, "SELECT sum(next_offset) FROM rs_build_threads.rs_checkpoints")[0]  # type: ignore[index]
    assert 0 < saved < len(records)
    assert row(settings.database_url, "SELECT phase FROM rebuilds WHERE projection = 'threads'") == ("bulk",)
    assert versions(settings.database_url)[3] == "rebuilding"  # nobody could say otherwise after kill -9
    # what an operator sees meanwhile
    shown = subprocess.run([sys.executable, "-m", "readside.cli", "status", "--json"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    (threads,) = [p for p in orjson.loads(shown.stdout)["projections"] if p["name"] == "threads"]
    assert threads["state"] == "rebuilding"
    assert threads["rebuild"]["phase"] == "bulk" and threads["rebuild"]["target_version"] == 2
    assert 0 < threads["rebuild"]["events_done"] < threads["rebuild"]["events_total"] == len(records)
    table = subprocess.run([sys.executable, "-m", "readside.cli", "status"], env=env, capture_output=True, text=True, timeout=60)
    assert f"threads: rebuild to v2, phase bulk, {threads['rebuild']['events_done']:,}/{len(records):,} events" in table.stdout

    # resumed by two bulk worker processes: positions are per partition, whoever writes them
    second = subprocess.run([*argv, "--workers", "2"], env=env, capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stderr
    assert "resuming the rebuild of v2 (bulk)" in second.stderr
    shown = [int(line.split(": ")[1].split("/")[0].replace(",", "")) for line in second.stderr.splitlines() if " bulk" in line and "/" in line]
    assert shown[0] >= saved  # it went on from the saved positions
    assert shown[-1] == len(records)
    assert "cut over to v2" in second.stdout
    assert versions(settings.database_url) == (2, 1, 2, "live")
    assert_tables_equal_fold(settings.database_url, records)
    # dedupe and positions of the rebuilt version went along with the replaced one, for rollback
    assert row(settings.database_url, "SELECT count(*) FROM rs_prev_threads.rs_seen") == (len(records),)


def test_a_cutover_blocked_by_a_session_gives_up_names_it_and_resumes_later(
    settings, projector, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    records = thread_stream(threads=10, seed=23)
    send(settings, records)
    wait_caught_up(settings.database_url, settings.kafka_bootstrap, "threads", projection_topics(settings, "threads"))
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("readside.projector.shadow.LOCK_DEADLINE", 1.0)
    with psycopg.connect(settings.database_url) as reporting:  # a long report holding a live table
        reporting.execute("SELECT count(*) FROM thread_previews").fetchone()
        pid = reporting.info.backend_pid
        assert cli(["rebuild", "threads"]) == 3
        err = capsys.readouterr().err
        assert "could not lock the live tables for the cutover" in err and f"pid {pid} (idle in transaction" in err
        assert versions(settings.database_url)[0] == 1  # nothing swapped
    # the live projector was not held: a new event is projected
    more = [started("lk-1", client="u-lk", provider="u-lp", at=0)]
    send(settings, more)
    wait_caught_up(settings.database_url, settings.kafka_bootstrap, "threads", projection_topics(settings, "threads"))
    assert cli(["rebuild", "threads"]) == 0  # the session is gone: it resumes at the catch-up
    assert "cut over to v2" in capsys.readouterr().out
    assert versions(settings.database_url)[0] == 2
    assert_tables_equal_fold(settings.database_url, records + more)


def test_records_the_rebuilds_decoder_rejects_become_dead_letters_of_the_new_version(
    settings, projector, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = thread_stream(threads=8, seed=24)
    send(settings, records)
    topic = settings.topic_prefix + "threads.events"
    poison = [(topic, b"t-x", b"{not json"), (topic, b"t-y", orjson.dumps({"event_id": "e-y", "type": "message.created"}))]
    asyncio.run(send_raw(settings.kafka_bootstrap, poison))
    wait_caught_up(settings.database_url, settings.kafka_bootstrap, "threads", projection_topics(settings, "threads"))
    # As if the live decoder had let them through (the rebuild runs today's, which rejects them).
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM dead_letters")
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    assert cli(["rebuild", "threads"]) == 0
    with psycopg.connect(settings.database_url) as conn:
        letters = conn.execute("SELECT key, value, reason FROM dead_letters WHERE projection = 'threads' ORDER BY key").fetchall()
    assert [(bytes(k), bytes(v)) for k, v, _ in letters] == [(k, v) for _, k, v in poison]
    assert all(reason for _, _, reason in letters)
    assert_tables_equal_fold(settings.database_url, records)


def test_an_event_the_new_fold_fails_on_is_replayed_into_the_new_tables_after_a_fix(
    settings, projector, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    records = thread_stream(threads=6, seed=25)
    records += [started("fx-1", client="u-f1", provider="u-f2", at=0), message("fx-1", "m-bad", 10, sender="u-f1")]
    send(settings, records)
    wait_caught_up(settings.database_url, settings.kafka_bootstrap, "threads", projection_topics(settings, "threads"))  # live applied it all
    live = REGISTRY["threads"]

    def failing(apply):
        async def wrapped(conn, events):
            if any(getattr(e.payload, "message_id", None) == "m-bad" for e in events):
                raise ValueError("the new fold has a bug")
            return await apply(conn, events)
        return wrapped

    bulk = BulkLoad(failing(live.bulk.apply), live.bulk.finish) if live.bulk else None
    monkeypatch.setitem(REGISTRY, "threads", replace(live, apply=failing(live.apply), bulk=bulk))
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    assert cli(["rebuild", "threads"]) == 0
    (reason,) = row(settings.database_url, "SELECT reason FROM dead_letters WHERE key = 'fx-1'") or (None,)
    assert reason.startswith("fold error (rebuild)")
    # the fix is deployed; the operator replays: the event reaches the new tables, exactly once
    monkeypatch.setitem(REGISTRY, "threads", live)
    assert cli(["dlq", "replay", "--all"]) == 0
    assert "replayed 1, still failing 0, duplicates skipped 0" in capsys.readouterr().out
    assert_tables_equal_fold(settings.database_url, records)


def test_verify_reports_the_table_and_key_a_changed_fold_gets_wrong_and_aborts(
    settings, projector, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [started("vt-1", client="u-v1", provider="u-v2", at=0), message("vt-1", "m1", 10, sender="u-v2", sender_type="provider")]
    records += thread_stream(threads=10, seed=22)
    send(settings, records)
    wait_caught_up(settings.database_url, settings.kafka_bootstrap, "threads", projection_topics(settings, "threads"))
    wrong = with_extra_sql(
        REGISTRY["threads"],
        "UPDATE thread_previews SET unread_count = 99 WHERE user_id = 'u-v1' AND thread_id = 'vt-1'",
    )
    monkeypatch.setitem(REGISTRY, "threads", wrong)  # the code the rebuild command runs (in this process)
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)  # nobody to ask: abort
    assert cli(["rebuild", "threads", "--verify"]) == 1
    err = capsys.readouterr().err
    assert "thread_previews: DIFFERS — 1 changed, 0 only in live, 0 only in new" in err
    assert "changed  key (u-v1,vt-1)" in err
    assert "thread_messages: same" in err
    assert "cutover aborted" in err and "--cancel" in err
    assert versions(settings.database_url) == (1, None, 1, "live")
    assert row(settings.database_url, "SELECT phase FROM rebuilds WHERE projection = 'threads'") == ("aborted",)
    assert_tables_equal_fold(settings.database_url, records)  # the live tables were never touched
    assert row(settings.database_url, "SELECT unread_count FROM rs_build_threads.thread_previews "
               "WHERE user_id = 'u-v1' AND thread_id = 'vt-1'") == (99,)

    assert cli(["rebuild", "--cancel", "threads"]) == 0
    assert row(settings.database_url, "SELECT to_regnamespace('rs_build_threads')") == (None,)
    assert versions(settings.database_url) == (1, None, 1, "live")


def test_every_projection_rebuilds_to_tables_verify_finds_equal(
    settings, projector, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from readside.load import mixed_stream
    from tests.support import checkpoints, high_watermarks

    records = mixed_stream(2, seed=23)
    send(settings, records)
    for name, projection in REGISTRY.items():
        wait_caught_up(settings.database_url, settings.kafka_bootstrap, name, [settings.topic_prefix + t for t in projection.topics])
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    assert cli(["rebuild", "--all", "--verify", "--batch", "500"]) == 0
    out, err = capsys.readouterr()
    assert "DIFFERS" not in err
    assert [line.split(":")[0] for line in out.splitlines()] == list(REGISTRY)
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute("SELECT name, version, previous_version, state FROM projections ORDER BY name").fetchall()
    assert rows == sorted((name, 2, 1, "live") for name in REGISTRY)
    heads = asyncio.run(high_watermarks(settings.kafka_bootstrap, [settings.topic_prefix + "requests.events"]))
    assert checkpoints(settings.database_url, "requests") == heads  # the live projector went on from the same place


@pytest.mark.slow
def test_bulk_workers_killed_with_sigkill_resume_with_their_own_split(settings, projector, tmp_path: Path) -> None:
    records, env, argv = _killed_in_bulk(settings, tmp_path, 26, "--workers", "2")
    saved = row(settings.database_url, "SELECT count(DISTINCT worker), sum(next_offset) FROM rs_build_threads.rs_bulk_positions")
    assert saved is not None and saved[0] == 2 and saved[1] > 0

    # asked for one process, it resumes the split the saved positions belong to
    second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stderr
    assert "split between 2 workers: resumed with 2" in second.stderr
    assert "cut over to v2" in second.stdout
    assert row(settings.database_url, "SELECT to_regclass('rs_prev_threads.rs_bulk_positions')") == (None,)
    assert_tables_equal_fold(settings.database_url, records)
    assert row(settings.database_url, "SELECT count(*) FROM rs_prev_threads.rs_seen") == (len(records),)
    assert row(settings.database_url, "SELECT sum(next_offset) FROM rs_prev_threads.rs_checkpoints") == (len(records),)


def test_a_fold_error_midway_through_a_cached_bulk_batch_loses_nothing_else(
    settings, projector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bulk loader keeps thread states between batches: a batch that raises after folding
    part of itself (poison being isolated) must not leave those half-folded states behind."""
    import readside.readmodels.threads.bulk as bulk

    good = thread_stream(threads=6, seed=27)
    bad = [started("fy-1", client="u-y1", provider="u-y2", at=0), message("fy-1", "m-first", 5, sender="u-y1"),
           message("fy-1", "m-bad", 10, sender="u-y1"), message("fy-1", "m-after", 20, sender="u-y2", sender_type="provider")]
    send(settings, good + bad)
    wait_caught_up(settings.database_url, settings.kafka_bootstrap, "threads", projection_topics(settings, "threads"))
    real = bulk.fold_batch

    def fold_then_fail(states, events):
        touched = real(states, events)  # the states are folded in place, then the batch fails
        if any(getattr(e.payload, "message_id", None) == "m-bad" for e in events):
            raise ValueError("the new fold has a bug")
        return touched

    monkeypatch.setattr(bulk, "fold_batch", fold_then_fail)
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    assert cli(["rebuild", "threads", "--batch", "50"]) == 0
    (reason,) = row(settings.database_url, "SELECT reason FROM dead_letters WHERE key = 'fy-1'") or (None,)
    assert reason.startswith("fold error (rebuild)")
    assert_tables_equal_fold(settings.database_url, [r for r in good + bad if r.value.get("payload", {}).get("message_id") != "m-bad"])
