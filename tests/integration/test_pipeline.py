"""The write pipeline (projector/pipeline.py) gives every store the same meaning of dedupe, poison
and position: one batch, run against the live tables (``LiveStore``) and a rebuild's shadow schema
(``ShadowStore``), must apply, remember and fail the same records.

The batch: an event, a re-send of it (same ``event_id``, later offset), an event whose id was
applied before, a fold that raises on one event, a tombstone, one more event, a type the probe
does not handle (skipped), and an event whose statement the server refuses (a division by zero:
in pipeline mode it surfaces only at a later sync). The live store first writes a batch whole,
without a savepoint, and isolates after a record's fault: its dead letters must still be sent
once each."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

import orjson
import psycopg
import pytest
from aiokafka import AIOKafkaProducer

from readside.projector import bookkeeping
from readside.projector.live import LiveStore
from readside.projector.pipeline import Batch, Pipeline, Store, decode_record
from readside.projector.rebuild_bulk import ShadowStore
from readside.projector.shadow import Shadow
from readside.readmodels.base import Projection
from readside.schemas import Event
from readside.shared.db import migrate
from readside.shared.settings import Settings
from tests.support import high_watermarks, message, read

DDL = "CREATE TABLE IF NOT EXISTS probe_rows (event_id text PRIMARY KEY)"


async def _apply(conn: psycopg.AsyncConnection, events: Sequence[Event]) -> set[str]:
    if any("poison" in e.payload.content for e in events):  # type: ignore[attr-defined]
        raise ValueError("the probe's fold refuses poison")
    await conn.execute("INSERT INTO probe_rows SELECT unnest(%s::text[])", ([e.event_id for e in events],))
    if any("zero" in e.payload.content for e in events):  # type: ignore[attr-defined]
        await conn.execute("SELECT 1 / 0")  # refused by the server, answer not read here
    return {f"probe:{e.event_id}" for e in events}


PROBE = Projection(
    name="probe", version=1, topics=("threads.events",), event_types=frozenset({"message.created"}),
    ddl=DDL, apply=_apply, tables=("probe_rows",),
)


def _batch(prefix: str) -> tuple[Batch, dict[str, str]]:
    topic = prefix + "threads.events"
    good, resent, seen, poison, last = (message("t-1", f"m-{i}", i, content=c) for i, c in
                                        enumerate(["first", "again", "seen", "poison", "last"]))
    resent = replace(resent, value=resent.value | {"event_id": good.value["event_id"]})
    raw: list[tuple[bytes | None, bytes | None]] = [
        (r.key.encode(), orjson.dumps(r.value)) for r in (good, resent, seen, poison)
    ] + [(b"t-1", None), (last.key.encode(), orjson.dumps(last.value))]
    skipped = read("t-1", "u-c", 0, 1)
    raw.append((skipped.key.encode(), orjson.dumps(skipped.value)))
    zero = message("t-1", "m-zero", 7, content="zero")
    raw.append((zero.key.encode(), orjson.dumps(zero.value)))
    batch = Batch(starts={(topic, 0): 0}, ends={(topic, 0): len(raw)}, read=len(raw))
    for offset, (key, value) in enumerate(raw):
        record = decode_record(PROBE, prefix, topic, 0, offset, key, value)
        if record is None:
            batch.skipped += 1
        else:
            batch.records.append(record)
    ids = {"good": good.value["event_id"], "seen": seen.value["event_id"], "poison": poison.value["event_id"],
           "last": last.value["event_id"], "zero": zero.value["event_id"]}
    return batch, ids


def _check(written: Any, batch: Batch, ids: dict[str, str]) -> None:
    assert batch.skipped == 1 and len(batch.rejected) == 1
    assert written.fresh_ids == {ids["good"], ids["last"]}
    assert written.poison_ids == {ids["poison"], ids["zero"]}
    reasons = sorted(reason for _, reason in written.poison)
    assert reasons[0].startswith("fold error (probe): DivisionByZero(")
    assert reasons[1].startswith("fold error (probe): ValueError(")
    assert written.changed == {f"probe:{ids['good']}", f"probe:{ids['last']}"}


async def _scalar_set(conn: psycopg.AsyncConnection, query: str, *args: Any) -> set[Any]:
    cur = await conn.execute(query, args)
    return {row[0] if len(row) == 1 else tuple(row) for row in await cur.fetchall()}


@pytest.mark.parametrize("kind", ["live", "shadow"])
def test_every_store_dedupes_isolates_and_records_alike(settings: Settings, kind: str) -> None:
    migrate(settings.database_url, [PROBE])
    topic = settings.topic_prefix + "threads.events"
    batch, ids = _batch(settings.topic_prefix)

    async def go() -> None:
        conn = await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True)
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        await producer.start()
        try:
            store: Store
            if kind == "live":
                store = LiveStore(PROBE.name, producer)
                await bookkeeping.seed_checkpoints(conn, PROBE.name, [(topic, 0)])
                await bookkeeping.first_seen(conn, PROBE.name, [ids["seen"]])
                rows, seen, failed, positions = ("probe_rows", "dedupe WHERE projection = 'probe'",
                                                 "dead_letters WHERE projection = 'probe'", "checkpoints")
            else:
                shadow = Shadow(PROBE, "rs_build_probe")
                async with conn.transaction():
                    await shadow.drop(conn)
                    await shadow.create(conn, {(topic, 0): 0})
                    await shadow.first_seen(conn, [ids["seen"]])
                store = ShadowStore(shadow)
                rows, seen, failed, positions = ("rs_build_probe.probe_rows", "rs_build_probe.rs_seen",
                                                 "rs_build_probe.rs_failed", "rs_build_probe.rs_checkpoints")
                await conn.execute("SET search_path = rs_build_probe")  # as ShadowWriter does
            written = await Pipeline(store, PROBE.apply, fold_error="fold error (probe)").commit(conn, batch)
            await conn.execute("SET search_path = public")
            _check(written, batch, ids)
            assert await _scalar_set(conn, f"SELECT event_id FROM {rows}") == {ids["good"], ids["last"]}
            # the poison's id is forgotten: a replay after a fix must apply it
            assert await _scalar_set(conn, f"SELECT event_id FROM {seen}") == {ids["good"], ids["last"], ids["seen"]}
            failures = await _scalar_set(conn, f'SELECT "offset", left(reason, 18) FROM {failed}')
            assert failures == {(3, "fold error (probe)"), (4, "not JSON: empty re"), (7, "fold error (probe)")}
            assert await _scalar_set(conn, f"SELECT next_offset FROM {positions} WHERE topic = %s", topic) == {8}
            if kind == "live":  # each dead letter sent once: the attempt without isolation sent none
                assert sum((await high_watermarks(settings.kafka_bootstrap, [topic + ".dlq"])).values()) == 3
        finally:
            await producer.stop()
            if kind == "shadow":
                await Shadow(PROBE, "rs_build_probe").drop(conn)
            await conn.execute("DROP TABLE IF EXISTS public.probe_rows")
            await conn.close()

    asyncio.run(go())


async def _fenced_store(settings: Settings, batch: Batch, check: Callable[[psycopg.AsyncConnection, AIOKafkaProducer], Awaitable[None]]) -> None:
    """``batch`` committed through the live store while the checkpoint it starts from was moved to
    2 by another instance: it raises ``FencedError``; then ``check(conn, producer)``."""
    from readside.shared.errors import FencedError

    topic = settings.topic_prefix + "threads.events"
    conn = await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        await bookkeeping.seed_checkpoints(conn, PROBE.name, [(topic, 0)])
        await conn.execute("UPDATE checkpoints SET next_offset = 2 WHERE projection = 'probe'")
        with pytest.raises(FencedError):
            await Pipeline(LiveStore(PROBE.name, producer), PROBE.apply).commit(conn, batch)
        await check(conn, producer)
    finally:
        await producer.stop()
        await conn.execute("DROP TABLE IF EXISTS public.probe_rows")
        await conn.close()


def test_the_live_store_fences(settings: Settings) -> None:
    """A batch starting where the checkpoint no longer is rolls back whole (another instance moved it)."""
    migrate(settings.database_url, [PROBE])
    batch, _ = _batch(settings.topic_prefix)

    async def check(conn: psycopg.AsyncConnection, _producer: AIOKafkaProducer) -> None:
        assert await _scalar_set(conn, "SELECT count(*) FROM probe_rows") == {0}
        assert await _scalar_set(conn, "SELECT count(*) FROM dedupe WHERE projection = 'probe'") == {0}

    asyncio.run(_fenced_store(settings, batch, check))


@pytest.mark.parametrize("kind", ["rejected only", "skipped only"])
def test_the_live_store_fences_a_batch_without_events(settings: Settings, kind: str) -> None:
    """In pipeline mode the fencing check is read with a later statement's answer: a batch with no
    event to dedupe is still fenced — before its dead letters are kept or sent, or at its end."""
    migrate(settings.database_url, [PROBE])
    topic = settings.topic_prefix + "threads.events"
    batch, _ = _batch(settings.topic_prefix)
    keep = (lambda r: r.reason is not None) if kind == "rejected only" else (lambda r: False)
    batch = replace(batch, records=[r for r in batch.records if keep(r)])

    async def check(conn: psycopg.AsyncConnection, producer: AIOKafkaProducer) -> None:
        assert await _scalar_set(conn, "SELECT count(*) FROM dead_letters WHERE projection = 'probe'") == {0}
        assert await _scalar_set(conn, "SELECT next_offset FROM checkpoints WHERE projection = 'probe'") == {2}
        moved = replace(batch, starts={(topic, 0): 2})
        await Pipeline(LiveStore(PROBE.name, producer), PROBE.apply).commit(conn, moved)
        assert await _scalar_set(conn, "SELECT next_offset FROM checkpoints WHERE projection = 'probe'") == {batch.ends[(topic, 0)]}

    asyncio.run(_fenced_store(settings, batch, check))
