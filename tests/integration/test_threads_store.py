"""The live threads ``apply`` against PostgreSQL directly (no broker): random shuffles of
adversarial thread histories — starts after messages, deletes before creates, re-sent creates,
read markers moving back and forth, messages visible to one side, system and payment messages,
payments — split into random batches must leave the preview rows byte-identical to the pure
fold's ``render``, and the summaries equal to their sums. ``apply`` keeps counts by deltas and
looks the latest message up by index, so the batch splits are what this exercises."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime

import orjson
import psycopg
import pytest

from readside.load import Record
from readside.readmodels.threads.bulk import BULK
from readside.readmodels.threads.fold import fold_all, render
from readside.readmodels.threads.queries import message_page
from readside.readmodels.threads.store import PROJECTION
from readside.shared.db import migrate
from readside.shared.jsonbytes import dumps
from tests.support import (
    as_event,
    deleted,
    message,
    payment,
    pinned,
    read,
    started,
    state_changed,
    with_stale_reads,
)

TABLES = ", ".join(PROJECTION.tables)


def _history(rng: random.Random, tid: str) -> list[Record]:
    client, provider = f"c-{tid}", f"p-{tid}"
    recs = [started(tid, client, provider, at=0, service_type=rng.choice(["live_performance", "personalized_video"]))]
    mids = [f"m{i}" for i in range(rng.randint(1, 9))]
    for mid in mids:
        at = rng.choice([1, 2, 3, 4, 5, 6, 7, 8])  # equal times: ties broken by message id
        kind = rng.random()
        if kind < 0.15:
            recs.append(message(tid, mid, at, None, "system", system_key="payment_received"))
        elif kind < 0.3:
            recs.append(message(tid, mid, at, None, "system", system_key="new_booking_request"))
        else:
            sender, stype = rng.choice([(client, "client"), (provider, "provider")])
            recs.append(message(tid, mid, at, sender, stype, visible_to=rng.choice(["both", "both", "client", "provider"])))
        if rng.random() < 0.2:
            recs.append(message(tid, mid, at + 1, client, "client", content="re-sent, loses"))
        if rng.random() < 0.3:
            recs.append(deleted(tid, mid, 10))
    if rng.random() < 0.3:  # not from a participant: kept, counts as never sent
        sender, stype = rng.choice([("stranger", "client"), (provider, "client"), (client, "provider")])
        recs.append(message(tid, "m-odd", rng.randint(1, 9), sender, stype, system_key=rng.choice([None, "payment_received"])))
    if rng.random() < 0.2:
        recs.append(deleted(tid, "never-created", 10))
    for _ in range(rng.randint(0, 4)):
        recs.append(read(tid, rng.choice([client, provider]), up_to=rng.choice([0, 2, 4, 6, 9]), at=rng.randint(1, 9)))
    if rng.random() < 0.5:
        recs.append(pinned(tid, client, rng.random() < 0.5, rng.randint(1, 9)))
    if rng.random() < 0.3:
        recs.append(state_changed(tid, "booked", rng.randint(1, 9)))
    if rng.random() < 0.3:
        recs.append(payment(tid, f"pay-{tid}", rng.randint(1, 9)))
    return recs


async def _run(db_url: str, batches: list[list[Record]], *, bulk: bool = False) -> None:
    """Apply ``batches`` with the live ``apply`` or, with ``bulk``, the rebuild's bulk loader."""
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True, options="-c TimeZone=UTC") as conn:
        await conn.execute(f"TRUNCATE {TABLES}")
        for batch in batches:
            async with conn.transaction():
                if bulk:
                    await BULK.apply(conn, [as_event(r) for r in batch])
                else:
                    await PROJECTION.apply(conn, [as_event(r) for r in batch])
        if bulk:
            async with conn.transaction():
                await BULK.finish(conn)


def _split(rng: random.Random, records: list[Record], most: int = 12) -> list[list[Record]]:
    cuts = sorted(rng.sample(range(1, len(records)), min(len(records) - 1, rng.randint(0, most))))
    return [records[a:b] for a, b in zip([0, *cuts], [*cuts, len(records)])]


def _expected(records: list[Record]) -> dict:
    """The tables the pure fold of ``records`` gives (previews byte for byte, summaries, markers)."""
    previews, summaries, reads = {}, {}, {}
    for state in fold_all(as_event(r) for r in records).values():
        reads.update({(state.thread_id, user): marker for user, marker in state.reads.items()})
        for row in render(state):
            previews[(row.user_id, row.thread_id)] = (row.role, row.listed, row.last_ts, row.unread_count, dumps(row.item))
            if row.listed:
                s = summaries.setdefault((row.user_id, row.role), [0, 0])
                s[0] += row.unread_count
                s[1] += 1
    return {"previews": previews, "summaries": summaries, "reads": reads}


def _actual(db_url: str) -> dict:
    with psycopg.connect(db_url, options="-c TimeZone=UTC") as conn:
        return {
            "previews": {
                (u, t): (role, listed, last_ts, unread, bytes(item))
                for u, t, role, listed, last_ts, unread, item in conn.execute(
                    "SELECT user_id, thread_id, role, listed, last_ts, unread_count, item FROM thread_previews"
                )
            },
            "summaries": {
                (u, r): [n, c]
                for u, r, n, c in conn.execute("SELECT user_id, role, unread_total, thread_count FROM thread_summaries")
                if (n, c) != (0, 0)
            },
            "reads": {
                (t, u): (at, up_to)
                for t, u, at, up_to in conn.execute("SELECT thread_id, user_id, read_at, read_up_to FROM thread_reads")
            },
        }


@pytest.fixture
def migrated(db_url: str) -> str:
    migrate(db_url, [PROJECTION])
    return db_url


def test_any_batching_of_any_order_renders_the_fold_byte_for_byte(migrated):
    for seed in range(40):
        rng = random.Random(seed)
        records = [r for t in range(rng.randint(1, 4)) for r in _history(rng, f"t{t}")]
        rng.shuffle(records)
        cuts = sorted(rng.sample(range(1, len(records)), min(len(records) - 1, rng.randint(0, 12))))
        batches = [records[a:b] for a, b in zip([0, *cuts], [*cuts, len(records)])]
        asyncio.run(_run(migrated, batches))

        expected, summaries = {}, {}
        for state in fold_all(as_event(r) for r in records).values():
            for row in render(state):
                expected[(row.user_id, row.thread_id)] = (row.role, row.listed, row.last_ts, row.unread_count, dumps(row.item))
                if row.listed:
                    s = summaries.setdefault((row.user_id, row.role), [0, 0])
                    s[0] += row.unread_count
                    s[1] += 1
        with psycopg.connect(migrated, options="-c TimeZone=UTC") as conn:
            actual = {
                (u, t): (role, listed, last_ts, unread, bytes(item))
                for u, t, role, listed, last_ts, unread, item in conn.execute(
                    "SELECT user_id, thread_id, role, listed, last_ts, unread_count, item FROM thread_previews"
                )
            }
            sums = {
                (u, r): [n, c]
                for u, r, n, c in conn.execute("SELECT user_id, role, unread_total, thread_count FROM thread_summaries")
                if (n, c) != (0, 0)
            }
        assert actual == expected, f"seed {seed}, batches of {[len(b) for b in batches]}"
        assert sums == summaries, f"seed {seed}"


def test_stale_reads_never_move_a_marker_back_in_the_live_or_the_bulk_path(migrated):
    # A stale client re-sends an old position with a later read_at, before or after the newer
    # read: both write paths, over any batching and order, give the tables of the stream without
    # those reads, and each marker is the greatest read_up_to its reader sent.
    for seed in range(30):
        rng = random.Random(1000 + seed)
        clean = [r for t in range(rng.randint(1, 4)) for r in _history(rng, f"t{t}")]
        clean += [read(f"t{t}", rng.choice([f"c-t{t}", f"p-t{t}"]), up_to=9, at=5) for t in range(2) if rng.random() < 0.5]
        records = with_stale_reads(clean, rng, share=1.0)
        rng.shuffle(records)
        ids = {r.value["event_id"] for r in clean}
        # the same order without the stale reads (a re-sent create's first arrival wins)
        expected = _expected([r for r in records if r.value["event_id"] in ids])
        for bulk in (False, True):
            asyncio.run(_run(migrated, _split(rng, records), bulk=bulk))
            assert _actual(migrated) == expected, f"seed {seed}, {'bulk' if bulk else 'live'} path"
        greatest: dict = {}
        for r in clean:
            if r.value["type"] == "message.read":
                p = r.value["payload"]
                key, up_to = (p["thread_id"], p["reader_id"]), datetime.fromisoformat(p["read_up_to"])
                greatest[key] = max(greatest.get(key, up_to), up_to)
        assert {k: v[1] for k, v in expected["reads"].items()} == greatest, f"seed {seed}"


def test_messages_not_from_a_participant_are_hidden_in_every_path(migrated):
    # A stranger's message, and messages whose sender_type names the other participant, count as
    # never sent — in the live path, the bulk path and the history endpoint's query — whether they
    # arrive before thread.started or after it.
    odd = [
        message("t1", "m-x1", 20, "stranger", "client", content="not yours"),
        message("t1", "m-x2", 30, "p-t1", "client", content="provider typed client"),
        message("t1", "m-x3", 40, "c-t1", "provider", content="client typed provider"),
        message("t1", "m-x4", 50, "stranger", "provider", system_key="payment_received"),
    ]
    clean = [
        started("t1", "c-t1", "p-t1", at=0, service_type="personalized_video"),  # unpaid: unlisted
        message("t1", "m1", 10, "p-t1", "provider", content="hello"),
        message("t1", "m2", 11, None, "system", system_key="new_booking_request"),
    ]

    async def history(user: str) -> list[str]:
        async with await psycopg.AsyncConnection.connect(migrated, autocommit=True) as conn:
            page = await message_page(conn, "t1", user, None, 50)
        assert page is not None
        return [m["message_id"] for m in orjson.loads(b"[" + page[2][0] + b"]")]

    for seed in range(6):
        rng = random.Random(seed)
        records = clean + odd
        rng.shuffle(records)
        for bulk in (False, True):
            asyncio.run(_run(migrated, _split(rng, records, 3), bulk=bulk))
            actual = _actual(migrated)
            assert actual == _expected(records), f"seed {seed}"
            assert actual == _expected(clean), f"seed {seed}"
            assert asyncio.run(history("c-t1")) == asyncio.run(history("p-t1")) == ["m2", "m1"]


def test_a_live_batch_reads_no_table_whole_however_many_threads_are_stored(migrated):
    """The live ``apply`` looks up what a batch touches by key: with thousands of threads stored
    (and the statistics analyzed), a batch of 30 messages scans no table sequentially, so its cost
    does not grow with the tables. (Joining the previews on ``user_id IN (client, provider)`` made
    the planner hash the whole preview table for every batch.)"""
    tids = [f"t-{i:05d}" for i in range(6000)]
    sides = {t: (f"c-{i % 20}", f"p-{i % 700}") for i, t in enumerate(tids)}  # inboxes of many threads

    async def go() -> dict[str, int]:
        async with await psycopg.AsyncConnection.connect(migrated, autocommit=True, options="-c TimeZone=UTC") as conn:
            await conn.execute(f"TRUNCATE {TABLES}")
            seed = [r for t, (c, p) in sides.items() for r in (
                started(t, c, p, at=0), message(t, "m1", 1, c), read(t, p, up_to=1, at=1), pinned(t, c, True, 1))]
            async with conn.transaction():
                await PROJECTION.apply(conn, [as_event(r) for r in seed])
            await conn.execute("ANALYZE")
            batch = [message(t, "m2", 2, sides[t][1], "provider") for t in random.Random(7).sample(tids, 30)]
            async with conn.transaction():
                before = await (await conn.execute(
                    "SELECT relname, seq_scan FROM pg_stat_xact_user_tables")).fetchall()
                await PROJECTION.apply(conn, [as_event(r) for r in batch])
                after = await (await conn.execute(
                    "SELECT relname, seq_scan FROM pg_stat_xact_user_tables")).fetchall()
        was = dict(before)
        return {name: n - was.get(name, 0) for name, n in after if n != was.get(name, 0)}

    assert asyncio.run(go()) == {}
