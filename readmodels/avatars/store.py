"""Avatars, the storage side: the two tables and their set-based writes.

Two tables, one per projection and per id space (CONTRACT §3: user ids and ``provider_id``s are
unrelated), so neither can overwrite the other's:

- ``user_avatars``      (threads projection) one row per user of a started thread: the rank of
                        their current offer (``avatars.Offer``: the latest thread) and, when that
                        offer is a usable ``data:`` image, its media type, ETag digest and bytes
                        (else NULL). The rank is kept even without an image, so an earlier thread
                        arriving later never brings an old image back.
- ``provider_avatars``  (providers projection) one row per provider whose latest profile
                        snapshot carries a usable ``data:`` image; none otherwise.

Both are written in the batch's transaction, rows in key order (two projector instances, or two
rebuild workers, never wait on each other in a cycle). ``user_avatars`` is a register: the upsert
keeps the greater rank whatever order the writes come in, so the live path, the rebuild's bulk
path (``threads.bulk``) and the pure ``avatars.fold.user_avatars`` agree for any batching.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import psycopg

from readside.readmodels.avatars.fold import Image, Offer, decode, latest

__all__ = ["PROVIDER_DDL", "USER_DDL", "write_provider_avatars", "write_user_avatars"]

USER_DDL = """
CREATE TABLE IF NOT EXISTS user_avatars (
    user_id text COLLATE "C" PRIMARY KEY,
    thread_created_at timestamptz NOT NULL,
    thread_id text COLLATE "C" NOT NULL,
    role text COLLATE "C" NOT NULL,
    media_type text, etag text, data bytea
);
"""

PROVIDER_DDL = """
CREATE TABLE IF NOT EXISTS provider_avatars (
    provider_id text COLLATE "C" PRIMARY KEY,
    media_type text NOT NULL, etag text NOT NULL, data bytea NOT NULL
);
"""


async def write_user_avatars(conn: psycopg.AsyncConnection, candidates: Iterable[Offer]) -> None:
    """Offer each user the avatars of the threads whose start the batch brought; the greatest
    rank stays (the stored one included)."""
    chosen = latest(candidates)
    if not chosen:
        return
    users = sorted(chosen)
    offers = [chosen[u] for u in users]
    images: list[Image | None] = [decode(o.url) for o in offers]
    await conn.execute(
        "INSERT INTO user_avatars (user_id, thread_created_at, thread_id, role, media_type, etag, data) "
        "SELECT * FROM unnest(%b::text[], %b::timestamptz[], %b::text[], %b::text[], %b::text[], %b::text[], %b::bytea[]) "
        "ON CONFLICT (user_id) DO UPDATE SET thread_created_at = excluded.thread_created_at, "
        "thread_id = excluded.thread_id, role = excluded.role, media_type = excluded.media_type, "
        "etag = excluded.etag, data = excluded.data "
        "WHERE (excluded.thread_created_at, excluded.thread_id, excluded.role) "
        "> (user_avatars.thread_created_at, user_avatars.thread_id, user_avatars.role)",
        (
            users,
            [o.rank[0] for o in offers],
            [o.rank[1] for o in offers],
            [o.rank[2] for o in offers],
            [i.media_type if i else None for i in images],
            [i.etag if i else None for i in images],
            [i.data if i else None for i in images],
        ),
    )


async def write_provider_avatars(conn: psycopg.AsyncConnection, urls: Mapping[str, str | None]) -> None:
    """Set each named provider's avatar to what ``urls[provider_id]`` (its latest snapshot's
    ``avatar_url``) decodes to: stored if a usable image, removed otherwise."""
    if not urls:
        return
    pids = sorted(urls)
    images = {pid: decode(urls[pid]) for pid in pids}
    gone = [pid for pid in pids if images[pid] is None]
    kept = [pid for pid in pids if images[pid] is not None]
    if gone:
        await conn.execute("DELETE FROM provider_avatars WHERE provider_id = ANY(%b::text[])", (gone,))
    if kept:
        await conn.execute(
            "INSERT INTO provider_avatars (provider_id, media_type, etag, data) "
            "SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::bytea[]) "
            "ON CONFLICT (provider_id) DO UPDATE SET media_type = excluded.media_type, etag = excluded.etag, "
            "data = excluded.data",
            (
                kept,
                [images[p].media_type for p in kept],  # type: ignore[union-attr]
                [images[p].etag for p in kept],  # type: ignore[union-attr]
                [images[p].data for p in kept],  # type: ignore[union-attr]
            ),
        )
