"""The projector keeps its tables' planner statistics current (readside.projector.statistics):
with autovacuum off for the tables, a table that changed past autovacuum's threshold since its
last analyze is analyzed, one that did not is left alone, and the running projector does it."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import psycopg

from readside.load import thread_stream
from readside.projector.statistics import analyze_grown
from readside.readmodels.threads.store import PROJECTION
from readside.shared.db import migrate
from tests.conftest import InProcessProjector
from tests.support import projection_topics, send, wait_caught_up, wait_until


def _stats(url: str, table: str) -> tuple[int, float]:
    """How many times ``table`` was analyzed by a command (not autovacuum), and its row estimate."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT s.analyze_count, c.reltuples FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid "
            "WHERE s.relid = %s::regclass", (table,)).fetchone()


def _no_autovacuum(url: str, tables: tuple[str, ...]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for table in tables:
            conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")


def test_only_tables_changed_past_the_threshold_are_analyzed_and_once(db_url):
    migrate(db_url, [PROJECTION])
    _no_autovacuum(db_url, ("threads", "thread_pins"))
    # Rows written (and the writer's statistics flushed: its connection closes) before the check.
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO threads (thread_id) SELECT 't-' || i FROM generate_series(1, 3000) i")
        conn.execute("INSERT INTO thread_pins (thread_id, user_id, changed_at, pinned) "
                     "SELECT 't-' || i, 'u', now(), true FROM generate_series(1, 10) i")  # under the threshold

    async def check() -> list[str]:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            return await analyze_grown(conn, ["threads", "thread_pins", "public.dedupe", "no_such_table"])

    assert asyncio.run(check()) == ["threads"]
    count, rows = _stats(db_url, "threads")
    assert count == 1 and rows == 3000
    assert _stats(db_url, "thread_pins")[0] == 0
    assert asyncio.run(check()) == []  # nothing changed since
    assert _stats(db_url, "threads")[0] == 1


def test_the_running_projector_analyzes_the_tables_it_fills(settings):
    migrate(settings.database_url, [PROJECTION])
    _no_autovacuum(settings.database_url, ("thread_messages", "thread_previews", "dedupe"))
    records = thread_stream(threads=40, seed=5)
    send(settings, records)
    runner = InProcessProjector(replace(settings, analyze_every=0.5), ["threads"]).start()
    try:
        wait_caught_up(settings.database_url, settings.kafka_bootstrap, "threads", projection_topics(settings, "threads"))
        with psycopg.connect(settings.database_url) as conn:
            messages, events = conn.execute(
                "SELECT (SELECT count(*) FROM thread_messages), (SELECT count(*) FROM dedupe)").fetchone()
        for table, rows in (("thread_messages", messages), ("dedupe", events)):
            # Analyzed, and its estimate within autovacuum's threshold (50 + 10%) of the truth.
            wait_until(lambda t=table, n=rows: (s := _stats(settings.database_url, t))[0] >= 1 and n <= 50 + 1.1 * s[1],
                       timeout=30, what=f"{table} analyzed with its {rows} rows")
    finally:
        runner.stop()
