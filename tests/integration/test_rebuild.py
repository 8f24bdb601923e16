"""``readside rebuild`` / ``rollback`` against a real broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import io

import psycopg

from projector.projections import REGISTRY
from projector.rebuild import Options, Rebuilder
from shared.load import publish, thread_stream
from tests.support import assert_tables_equal_fold, wait_caught_up

THREAD_TOPICS = ("threads.events", "payments.events")


def topics(settings):  # noqa: ANN001, ANN201
    return [settings.topic_prefix + t for t in THREAD_TOPICS]


def _projection_row(url: str) -> tuple:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT version, previous_version, generation, state FROM projections WHERE name = 'threads'"
        ).fetchone()


def test_rebuild_then_rollback_while_idle(settings, projector):  # noqa: ANN001
    records = thread_stream(threads=40, seed=11)
    asyncio.run(publish(records, bootstrap=settings.kafka_bootstrap, prefix=settings.topic_prefix))
    wait_caught_up(settings.database_url, settings.kafka_bootstrap, "threads", topics(settings))
    out = io.StringIO()
    line = asyncio.run(Rebuilder(settings, REGISTRY["threads"], Options(verify=True, bulk_batch=300, stream=out)).rebuild())
    print(out.getvalue())
    print(line)
    assert _projection_row(settings.database_url) == (2, 1, 2, "live")
    assert_tables_equal_fold(settings.database_url, records)
    line = asyncio.run(Rebuilder(settings, REGISTRY["threads"], Options(stream=out)).rollback())
    print(out.getvalue())
    assert _projection_row(settings.database_url) == (1, 2, 3, "live")
    assert_tables_equal_fold(settings.database_url, records)
