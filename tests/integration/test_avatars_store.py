"""The avatar tables against PostgreSQL directly (no broker): shuffled streams whose threads and
profiles carry every kind of avatar (images, https URLs, nulls, undecodable and oversized
``data:`` URLs), split into random batches, leave ``user_avatars`` equal to the pure
``avatars.user_avatars`` — through the live ``apply`` and through the rebuild's bulk loader —
and ``provider_avatars`` equal to the image of each provider's latest snapshot."""

from __future__ import annotations

import asyncio
import random

import psycopg
import pytest

from readside.load import Record, provider_stream, thread_stream
from readside.readmodels.avatars.fold import decode, user_avatars
from readside.readmodels.providers.fold import fold_all as fold_providers
from readside.readmodels.providers.store import PROJECTION as PROVIDERS
from readside.readmodels.threads.fold import fold_all
from readside.readmodels.threads.store import PROJECTION as THREADS
from readside.shared.db import migrate
from tests.integration.test_threads_store import _run, _split
from tests.support import as_event, envelope, send
from tests.unit.test_avatars import AVATARS, _with_avatars


def _expected_users(records: list[Record]) -> dict[str, tuple]:
    return {
        user: (offer.rank, image.media_type if image else None, image.etag if image else None, image.data if image else None)
        for user, (offer, image) in user_avatars(fold_all(as_event(r) for r in records).values()).items()
    }


def _actual_users(db_url: str) -> dict[str, tuple]:
    with psycopg.connect(db_url, options="-c TimeZone=UTC") as conn:
        return {
            user: ((at, tid, role), media_type, etag, bytes(data) if data is not None else None)
            for user, at, tid, role, media_type, etag, data in conn.execute(
                "SELECT user_id, thread_created_at, thread_id, role, media_type, etag, data FROM user_avatars"
            )
        }


@pytest.fixture
def migrated(db_url: str) -> str:
    migrate(db_url, [THREADS, PROVIDERS])
    return db_url


def test_user_avatars_equal_the_fold_in_the_live_and_the_bulk_path(migrated):
    images = 0
    for seed in range(25):
        rng = random.Random(seed)
        records = _with_avatars(thread_stream(threads=rng.randint(2, 12), messages_per_thread=(0, 3), users=5, seed=seed), rng)
        rng.shuffle(records)
        expected = _expected_users(records)
        images += sum(v[3] is not None for v in expected.values())
        for bulk in (False, True):
            asyncio.run(_run(migrated, _split(rng, records), bulk=bulk))
            assert _actual_users(migrated) == expected, f"seed {seed}, {'bulk' if bulk else 'live'} path"
    assert images > 10  # the streams exercise stored images, not only their absence


def _with_provider_avatars(stream: list[Record], rng: random.Random) -> list[Record]:
    out = []
    for rec in stream:
        if rec.value["type"] == "provider.profile_updated":
            payload = dict(rec.value["payload"], avatar_url=rng.choice(AVATARS))
            rec = Record(rec.topic, rec.key, envelope(rec.value["type"], payload))
        out.append(rec)
    return out


async def _run_providers(db_url: str, batches: list[list[Record]]) -> None:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True, options="-c TimeZone=UTC") as conn:
        await conn.execute("TRUNCATE " + ", ".join(PROVIDERS.tables))
        for batch in batches:
            async with conn.transaction():
                await PROVIDERS.apply(conn, [as_event(r) for r in batch])


def test_provider_avatars_follow_the_latest_snapshot_over_any_batching(migrated):
    images = 0
    for seed in range(25):
        rng = random.Random(seed)
        records = _with_provider_avatars(provider_stream(providers=rng.randint(1, 6), seed=seed), rng)
        # more snapshots per provider, each with its own avatar, at times that may tie
        records += [
            Record(r.topic, r.key, envelope(r.value["type"], dict(r.value["payload"], avatar_url=rng.choice(AVATARS))))
            for r in records if r.value["type"] == "provider.profile_updated" and rng.random() < 0.7
        ]
        rng.shuffle(records)
        expected = {}
        for pid, state in fold_providers(as_event(r) for r in records).items():
            image = decode(state.profile.avatar_url) if state.profile else None
            if image is not None:
                expected[pid] = (image.media_type, image.etag, image.data)
        asyncio.run(_run_providers(migrated, _split(rng, records)))
        with psycopg.connect(migrated) as conn:
            actual = {
                pid: (media_type, etag, bytes(data))
                for pid, media_type, etag, data in conn.execute("SELECT provider_id, media_type, etag, data FROM provider_avatars")
            }
        assert actual == expected, f"seed {seed}"
        images += len(expected)
    assert images > 10


def test_a_rollback_to_a_version_kept_from_before_the_avatar_tables_creates_them_empty(
    settings, projector, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from readside.cli import main as cli
    from tests.support import started, wait_caught_up

    records = [started("t1", client="u-1", provider="u-2", client_avatar="data:image/png;base64,AAA")]
    send(settings, records)
    topics = [settings.topic_prefix + t for t in THREADS.topics]
    wait_caught_up(settings.database_url, settings.kafka_bootstrap, "threads", topics)
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    assert cli(["rebuild", "threads"]) == 0
    with psycopg.connect(settings.database_url, autocommit=True) as conn:  # v1 as an older release kept it
        conn.execute("DROP TABLE rs_prev_threads.user_avatars")
    assert cli(["rollback", "threads"]) == 0
    assert "had no user_avatars; created empty" in "".join(capsys.readouterr())
    with psycopg.connect(settings.database_url) as conn:
        assert conn.execute("SELECT version, state FROM projections WHERE name = 'threads'").fetchone() == (1, "live")
        assert conn.execute("SELECT count(*) FROM user_avatars").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)
    # the next event applies to the rolled-back tables, avatars included
    records = [started("t2", client="u-1", provider="u-2", at=5, client_avatar="data:image/png;base64,AAA")]
    send(settings, records)
    wait_caught_up(settings.database_url, settings.kafka_bootstrap, "threads", topics)
    with psycopg.connect(settings.database_url) as conn:
        assert conn.execute("SELECT thread_id, data FROM user_avatars WHERE user_id = 'u-1'").fetchone() == ("t2", b"\0\0")
