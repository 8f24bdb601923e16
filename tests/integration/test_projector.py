"""The engine against a real broker and a real PostgreSQL: equality with the fold, dedupe, poison."""

from __future__ import annotations

import asyncio
import gc

import orjson
import psycopg

from readside.load import thread_stream
from readside.shared.processes import BATCH_GC_THRESHOLDS
from tests.conftest import InProcessProjector
from tests.support import (
    assert_tables_equal_fold,
    message,
    projection_topics,
    read_topics,
    send,
    send_raw,
    started,
    wait_caught_up,
    wait_until,
)


def test_projected_tables_equal_the_fold_of_all_events(settings, projector):
    records = thread_stream(threads=60, seed=3)
    send(settings, records)
    wait_caught_up(settings.database_url, settings.kafka_bootstrap, "threads", projection_topics(settings, "threads"))
    assert_tables_equal_fold(settings.database_url, records)


def test_redelivered_events_apply_once(settings, projector):
    records = thread_stream(threads=20, seed=4)
    # a producer retrying: every event sent twice, the copies later in the stream
    send(settings, records + records)
    wait_caught_up(settings.database_url, settings.kafka_bootstrap, "threads", projection_topics(settings, "threads"))
    assert_tables_equal_fold(settings.database_url, records)
    with psycopg.connect(settings.database_url) as conn:
        (n,) = conn.execute("SELECT count(*) FROM dedupe WHERE projection = 'threads'").fetchone()
    assert n == len(records)


def _dlq_records(bootstrap: str, topic: str, count: int) -> list:
    return read_topics(bootstrap, [topic], count, polls=100)


def test_poison_goes_to_the_dead_letter_topic_and_table_and_the_rest_is_projected(settings, projector):
    t = settings.topic_prefix + "threads.events"
    good = [started("p1"), message("p1", "m1", 10), message("p1", "m2", 20, sender="u-p", sender_type="provider")]
    valid_env = good[1].value
    poison = [
        (b"p1", b"{not json", "not JSON"),
        (b"p1", orjson.dumps({**valid_env, "event_id": "x1", "payload": {"thread_id": "p1"}}), "message_id"),
        (b"p1", orjson.dumps({**valid_env, "event_id": "x2", "payload": {**valid_env["payload"], "created_at": 5}}), "created_at"),
        (b"p1", orjson.dumps({**valid_env, "event_id": "x3", "schema_version": 2}), "schema_version"),
        (b"other", orjson.dumps({**valid_env, "event_id": "x4"}), "key"),
    ]
    unknown = orjson.dumps({**valid_env, "event_id": "x5", "type": "message.reacted"})
    items = [(t, r.key.encode(), orjson.dumps(r.value)) for r in good[:1]]
    items += [(t, k, v) for k, v, _ in poison[:3]]
    items += [(t, b"p1", unknown)]
    items += [(t, r.key.encode(), orjson.dumps(r.value)) for r in good[1:]]
    items += [(t, k, v) for k, v, _ in poison[3:]]
    asyncio.run(send_raw(settings.kafka_bootstrap, items))
    wait_caught_up(settings.database_url, settings.kafka_bootstrap, "threads", projection_topics(settings, "threads"))

    assert_tables_equal_fold(settings.database_url, good)
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute('SELECT value, reason, topic FROM dead_letters ORDER BY "offset"').fetchall()
        (skipped,) = conn.execute("SELECT skipped_unknown FROM projections WHERE name = 'threads'").fetchone()
    assert skipped == 1
    reasons = {bytes(v): reason for v, reason, topic in rows if topic == t}
    assert len(rows) == len(reasons) == len(poison)
    for _, value, hint in poison:
        assert hint in reasons[value], reasons[value]
    dlq = _dlq_records(settings.kafka_bootstrap, t + ".dlq", len(poison))
    assert sorted(r.value for r in dlq) == sorted(v for _, v, _ in poison)
    headers = dict(dlq[0].headers)
    assert headers["readside-origin-topic"] == t.encode()
    assert set(headers) == {"readside-error", "readside-origin-topic", "readside-origin-partition", "readside-origin-offset"}


def test_graceful_stop_and_resume_from_the_stored_checkpoint(settings):
    first, second = thread_stream(threads=15, seed=5), thread_stream(threads=15, seed=6)
    send(settings, first)
    runner = InProcessProjector(settings).start()
    wait_caught_up(settings.database_url, settings.kafka_bootstrap, "threads", projection_topics(settings, "threads"))
    runner.stop()
    second = [r for r in second if r.key not in {x.key for x in first}]
    send(settings, second)
    runner = InProcessProjector(settings).start()
    try:
        wait_caught_up(settings.database_url, settings.kafka_bootstrap, "threads", projection_topics(settings, "threads"))
    finally:
        runner.stop()
    assert_tables_equal_fold(settings.database_url, first + second)


def test_a_stop_never_hangs_on_the_broker_and_says_what_it_waits_on(settings, monkeypatch, caplog):
    """A consumer that cannot leave its group (a broker that never answers the LeaveGroup; a fault
    a real broker does not produce on demand) delays the stop by at most one bounded step, and
    the process says, while it waits, where it waits."""
    import aiokafka

    from readside.projector import engine, service

    class Stuck(aiokafka.AIOKafkaConsumer):
        async def stop(self):
            try:
                await asyncio.sleep(3600)
            finally:  # cancelled by the bound: close the consumer for real, so nothing leaks
                await super().stop()

    monkeypatch.setattr(engine, "AIOKafkaConsumer", Stuck)
    monkeypatch.setattr(engine, "STOP_STEP_SECONDS", 2.0)
    monkeypatch.setattr(service, "STOP_REPORT_SECONDS", 0.5)
    records = thread_stream(threads=5, seed=8)
    send(settings, records)
    runner = InProcessProjector(settings, ["threads"]).start()
    wait_caught_up(settings.database_url, settings.kafka_bootstrap, "threads", projection_topics(settings, "threads"))
    caplog.set_level("INFO", logger="readside.projector")
    runner.stop()  # asserts it stopped within 60 s (the stuck step alone would take an hour)
    text = caplog.text
    assert "stopping: finishing the batches in flight" in text
    assert "threads: leaving the consumer group did not finish within 2 s; going on with the stop" in text
    assert "still stopping after" in text and "Stuck.stop (test_projector.py:" in text, text
    assert_tables_equal_fold(settings.database_url, records)


def test_a_batch_that_fails_after_reading_ahead_skips_and_repeats_nothing(settings, monkeypatch):
    """Behind (full batches), the engine fetches and decodes the next batch while it waits for a
    batch's COMMIT. A COMMIT that fails then (the database gone for a moment: a fault PostgreSQL
    does not produce on demand, so the commit raises it here) drops what was read ahead and seeks
    back: every event is applied, once, and the tables equal the fold."""
    from dataclasses import replace

    from readside.projector import engine, pipeline

    real = pipeline.Pipeline.commit
    calls = {"commits": 0, "failed": 0, "ahead": 0}

    async def failing(self, conn, batch, *, before_commit=None):
        calls["commits"] += 1
        if calls["commits"] % 4 != 2 or before_commit is None:
            return await real(self, conn, batch, before_commit=before_commit)

        def then_fail() -> None:
            before_commit()
            calls["failed"] += 1
            raise psycopg.OperationalError("the server went away (test)")

        return await real(self, conn, batch, before_commit=then_fail)

    started = engine.ReadAhead.start

    def counted(self, *args, **kwargs):
        calls["ahead"] += self.task is None
        return started(self, *args, **kwargs)

    monkeypatch.setattr(pipeline.Pipeline, "commit", failing)
    monkeypatch.setattr(engine.ReadAhead, "start", counted)
    records = thread_stream(threads=40, seed=9)
    send(settings, records)  # all there before the projector starts: it is behind from the first batch
    runner = InProcessProjector(replace(settings, batch_max=60), ["threads"]).start()
    try:
        wait_caught_up(settings.database_url, settings.kafka_bootstrap, "threads", projection_topics(settings, "threads"))
    finally:
        runner.stop()
    assert calls["failed"] >= 3 and calls["ahead"] >= calls["failed"], calls
    assert_tables_equal_fold(settings.database_url, records)
    with psycopg.connect(settings.database_url) as conn:
        (n,) = conn.execute("SELECT count(*) FROM dedupe WHERE projection = 'threads'").fetchone()
    assert n == len({r.value["event_id"] for r in records})


def test_the_projector_sets_its_collector_for_batches_and_still_projects(settings):
    """``run_projector`` sets the process's garbage collector to ``BATCH_GC_THRESHOLDS`` (at
    CPython's defaults it walked each batch's young objects over and over: docs/decisions.md)."""
    gc.set_threshold(700, 10, 10)
    runner = InProcessProjector(settings, ["threads"]).start()
    try:
        wait_until(lambda: gc.get_threshold() == BATCH_GC_THRESHOLDS, 30, "the projector's collector thresholds")
        records = thread_stream(threads=20, seed=5)
        send(settings, records)
        wait_caught_up(settings.database_url, settings.kafka_bootstrap, "threads", projection_topics(settings, "threads"))
        assert_tables_equal_fold(settings.database_url, records)
    finally:
        runner.stop()


def test_behind_the_broker_gets_the_long_fetch_wait_and_caught_up_the_short_one(settings, monkeypatch):
    """A runner whose uncommitted records (high watermark minus position) fill a batch lets the
    broker wait ``CATCH_UP_WAIT_MS`` for each fetch; caught up, ``Settings.fetch_wait_ms`` (the
    embedded broker fills a fetch only until the wait runs out: at 10 ms a 1M-event backlog came
    ~100 records a fetch). Each fetch request the consumer sends carries the wait it was given."""
    from dataclasses import replace

    from aiokafka.consumer.fetcher import Fetcher

    from readside.projector import engine

    sent_waits: list[int] = []
    building = Fetcher._get_actions_per_node

    def recorded(self, *args, **kwargs):
        actions = building(self, *args, **kwargs)
        if self._client._client_id == "readside-threads":  # the runner's consumer, not the test's reads
            sent_waits.extend(req._max_wait_ms for _, req in actions[0])
        return actions

    monkeypatch.setattr(Fetcher, "_get_actions_per_node", recorded)
    records = thread_stream(threads=40, seed=11)
    send(settings, records)  # all there before the projector starts: behind from the first batch
    fast = replace(settings, batch_max=50, fetch_wait_ms=7)
    runner = InProcessProjector(fast, ["threads"]).start()
    try:
        wait_caught_up(settings.database_url, settings.kafka_bootstrap, "threads", projection_topics(settings, "threads"))
        count = len(sent_waits)
        wait_until(lambda: len(sent_waits) > count + 3, 30, "fetches after catching up")
        after = sent_waits[count + 1:]  # the first may have been built before the last batch's commit
    finally:
        runner.stop()
    assert engine.CATCH_UP_WAIT_MS in sent_waits, sorted(set(sent_waits))
    assert after and set(after) == {7}, after
    assert_tables_equal_fold(settings.database_url, records)
