"""The compute-on-read inbox that the thread read models replace, served like the real API.

Same stack as ``readside.api.app``: uvicorn + Starlette, the same auth, parameter parsing, pool, Timing
and ready-bytes orjson responses; only the query differs. Over the normalized tables the bench
fills (``messages``, ``threads_base``, ``reads_base``) it computes per request: the latest
visible message per thread by window function, unread and visible counts by aggregation, the
paid flag from payment messages, then sorts all the viewer's threads and keeps ``limit``.
The body is byte-identical to the projection's (the bench checks it).

Run: ``python -m bench._baseline_app --port 8001 [--workers N]`` with ``READSIDE_*`` set.
"""

from __future__ import annotations

import argparse
import hashlib

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from bench._common import baseline_starlette
from readside.api.http import PRIVATE, Context, Timing, json_response
from readside.api.params import Query
from readside.readmodels.threads.fold import message_preview
from readside.shared.jsonbytes import dumps, rfc3339
from readside.shared.settings import Settings

# Its best session settings: custom plans (see create_app) and sorts in memory (~10% faster).
PG_OPTIONS = "-c TimeZone=UTC -c plan_cache_mode=force_custom_plan -c work_mem=64MB"
BASELINE_DDL = """
CREATE TABLE threads_base (
    thread_id text COLLATE "C" PRIMARY KEY,
    client_id text COLLATE "C" NOT NULL, client_name text NOT NULL, client_avatar text,
    provider_id text COLLATE "C" NOT NULL, provider_name text NOT NULL, provider_business_name text,
    provider_avatar text, service_type text NOT NULL, created_at timestamptz NOT NULL, state text NOT NULL,
    paid_by_payment bool NOT NULL);
CREATE TABLE messages (
    thread_id text COLLATE "C" NOT NULL, message_id text COLLATE "C" NOT NULL,
    sender_id text COLLATE "C", sender_type text NOT NULL, visible_to text NOT NULL, content text NOT NULL,
    system_key text, system_args jsonb, attachment_kind text, created_at timestamptz NOT NULL,
    deleted bool NOT NULL);
CREATE TABLE reads_base (
    thread_id text COLLATE "C" NOT NULL, user_id text COLLATE "C" NOT NULL,
    read_up_to timestamptz, pinned bool NOT NULL);
"""
# The baseline's best indexes, built after the bulk load.
BASELINE_INDEXES = """
ALTER TABLE messages ADD PRIMARY KEY (thread_id, message_id);
CREATE INDEX messages_thread_latest ON messages (thread_id, created_at DESC, message_id DESC);
CREATE INDEX messages_payment ON messages (thread_id) WHERE system_key = 'payment_received' AND NOT deleted;
ALTER TABLE reads_base ADD PRIMARY KEY (thread_id, user_id);
CREATE INDEX threads_base_client ON threads_base (client_id);
CREATE INDEX threads_base_provider ON threads_base (provider_id);
"""

_SIDES = {
    None: "client_id = %(u)s OR provider_id = %(u)s",
    "client": "client_id = %(u)s",
    "provider": "provider_id = %(u)s",
}
SQL = """
WITH mine AS (
    SELECT t.*, CASE WHEN t.client_id = %(u)s THEN 'client' ELSE 'provider' END AS role
    FROM threads_base t WHERE {side}
), visible AS (
    SELECT m.thread_id, m.created_at, m.sender_id, m.sender_type, m.content, m.system_key, m.system_args,
           m.attachment_kind,
           row_number() OVER (PARTITION BY m.thread_id ORDER BY m.created_at DESC, m.message_id DESC) AS rn
    FROM mine JOIN messages m ON m.thread_id = mine.thread_id
    WHERE NOT m.deleted AND m.visible_to IN ('both', mine.role)
), counts AS (
    SELECT v.thread_id, count(*) AS message_count,
           count(*) FILTER (WHERE (r.read_up_to IS NULL OR v.created_at > r.read_up_to)
                            AND v.sender_id IS DISTINCT FROM %(u)s) AS unread_count
    FROM visible v LEFT JOIN reads_base r ON r.thread_id = v.thread_id AND r.user_id = %(u)s
    GROUP BY v.thread_id
), paid AS (
    SELECT DISTINCT m.thread_id FROM mine JOIN messages m ON m.thread_id = mine.thread_id
    WHERE m.system_key = 'payment_received' AND NOT m.deleted
)
SELECT mine.thread_id, mine.role, mine.client_id, mine.client_name, mine.client_avatar, mine.provider_id,
       mine.provider_name, mine.provider_business_name, mine.provider_avatar, mine.service_type,
       mine.created_at, mine.state, mine.paid_by_payment OR p.thread_id IS NOT NULL,
       l.created_at, l.sender_type, l.content, l.system_key, l.system_args, l.attachment_kind,
       coalesce(c.message_count, 0), coalesce(c.unread_count, 0), coalesce(r.pinned, false),
       coalesce(l.created_at, mine.created_at) AS last_ts
FROM mine
LEFT JOIN visible l ON l.thread_id = mine.thread_id AND l.rn = 1
LEFT JOIN counts c ON c.thread_id = mine.thread_id
LEFT JOIN paid p ON p.thread_id = mine.thread_id
LEFT JOIN reads_base r ON r.thread_id = mine.thread_id AND r.user_id = %(u)s
WHERE mine.service_type <> 'personalized_video' OR mine.paid_by_payment OR p.thread_id IS NOT NULL
ORDER BY last_ts DESC, mine.thread_id DESC
LIMIT %(n)s
"""


def preview_sql(role: str | None) -> str:
    return SQL.format(side=_SIDES[role])


def _avatar(url: str | None, user_id: str) -> str | None:
    return f"/v1/img/avatar/{user_id}" if url is not None and url.startswith("data:") else url


def item(row: tuple) -> dict:
    """One inbox item from one result row (the same dict ``render`` builds)."""
    (tid, role, cid, cname, cav, pid, pname, pbiz, pav, stype, created, state, paid,
     l_at, l_actor, l_content, l_key, l_args, l_kind, count, unread, pinned, last_ts) = row
    name, avatar, other = (pbiz or pname, pav, pid) if role == "client" else (cname, cav, cid)
    label = key = args = None
    if l_at is not None:
        label, key, args = message_preview(l_content, l_key, l_args, {"kind": l_kind} if l_kind else None)
    return {
        "thread_id": tid,
        "counterparty": {"name": name, "avatar_url": _avatar(avatar, other)},
        "last_message_preview": label,
        "last_actor": l_actor,
        "last_ts": last_ts,
        "unread_count": unread,
        "state": state,
        "meta": {"service_type": stype, "paid": paid, "message_count": count},
        "pinned": pinned,
        "preview_key": key,
        "preview_args": args,
    }


async def preview(request: Request, ctx: Context, timing: Timing) -> Response:
    viewer = ctx.auth(request)
    q = Query(request, frozenset({"role", "limit"}))
    role = q.choice("role", ("client", "provider"))
    limit = q.integer("limit", 20, 1, 100)
    async with timing.connection(ctx.pool) as conn:
        cur = await conn.execute(preview_sql(role), {"u": viewer.sub, "n": limit + 1})
        rows = await cur.fetchall()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        scope = f"preview\x1f{viewer.sub}\x1f{role}\x1f{limit}"
        next_cursor = ctx.cursors.encode(scope, [rfc3339(rows[-1][-1]), rows[-1][0]])
    body = dumps({"items": [item(r) for r in rows], "next_cursor": next_cursor})
    # No version to build an ETag from: only a hash of the body, i.e. after the whole query.
    etag = 'W/"b' + hashlib.blake2b(body, digest_size=8).hexdigest() + '"'
    return json_response(body, etag, PRIVATE)


def create_app(settings: Settings) -> Starlette:
    return baseline_starlette(settings, {"/v1/threads/preview": preview}, PG_OPTIONS)


def app_from_env() -> Starlette:
    return create_app(Settings.from_env())


if __name__ == "__main__":
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    # The same server options as ``readside api`` (api/server.py: its bounded protocol and limits).
    from readside.api.server import PROTOCOL

    limits = Settings.from_env()
    uvicorn.run("bench._baseline_app:app_from_env", factory=True, host="127.0.0.1", port=args.port,
                workers=args.workers, log_level="warning", access_log=False, http=PROTOCOL,
                timeout_keep_alive=limits.http_keepalive, limit_concurrency=limits.http_max_concurrency)
