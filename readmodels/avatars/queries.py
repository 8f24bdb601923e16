"""Read query for ``GET /v1/img/avatar/{id}``: plain SQL, ``(conn, params) -> row``.

One statement, two primary-key lookups: a user's avatar first (``user_avatars``, only when it
holds an image), else a provider's (``provider_avatars``).
"""

from __future__ import annotations

import psycopg

__all__ = ["find"]

# A user's avatar, else a provider's; the bytes only when no given tag matches (a 304 reads none).
_FIND = """
SELECT media_type, etag, CASE WHEN etag = ANY(%(tags)s::text[]) THEN NULL ELSE data END
FROM (
    SELECT 0 AS k, media_type, etag, data FROM user_avatars WHERE user_id = %(id)s AND data IS NOT NULL
    UNION ALL
    SELECT 1 AS k, media_type, etag, data FROM provider_avatars WHERE provider_id = %(id)s
) a
ORDER BY k
LIMIT 1
"""


async def find(conn: psycopg.AsyncConnection, owner_id: str, tags: list[str]) -> tuple[str, str, bytes | None] | None:
    """``(media type, ETag digest, bytes)`` of the owner's avatar, the bytes None when one of
    ``tags`` matches; None when the id has no image."""
    cur = await conn.execute(_FIND, {"id": owner_id, "tags": tags})
    row = await cur.fetchone()
    if row is None:
        return None
    media_type, digest, data = row
    return media_type, digest, None if data is None else bytes(data)
