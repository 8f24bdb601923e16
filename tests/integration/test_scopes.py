"""Every scope a registered read model's ``apply`` returns is declared by that read model and
reaches, through ``/v1/events``' hub (subscribed to a real Redis), exactly the viewers its
audience names: a read model's scopes are never silently dropped by the change feed."""

from __future__ import annotations

import asyncio
import random

import psycopg
import pytest

from readside.api.auth import Viewer
from readside.api.changes import Hub, Listener
from readside.load import Record, provider_stream, request_stream, thread_stream, workflow_stream
from readside.readmodels.base import EVERYONE, NOBODY, OWNER, PARTICIPANTS, ROLE
from readside.readmodels.registry import REGISTRY, route
from readside.readmodels.threads.queries import thread_participants
from readside.shared.db import migrate
from tests.support import as_event

STREAMS = {
    "threads": lambda: thread_stream(threads=6, messages_per_thread=(1, 5), users=5, seed=3),
    "requests": lambda: request_stream(requests=12, steps_per_request=(2, 6), technicians=3, seed=3),
    "providers": lambda: provider_stream(providers=6, seed=3),
    "workflows": lambda: workflow_stream(workflows=8, versions=(1, 3), users=3, seed=3),
    "payments": lambda: thread_stream(threads=12, messages_per_thread=(1, 5), users=5, seed=3),
}


async def _applied(db_url: str, name: str, records: list[Record]) -> set[str]:
    """Every scope the read model's ``apply`` returned, over a few random batches."""
    projection = REGISTRY[name]
    events = [e for e in map(as_event, records) if projection.handles(e.type)]
    rng = random.Random(7)
    returned: set[str] = set()
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True, options="-c TimeZone=UTC") as conn:
        while events:
            cut = rng.randint(1, 20)
            batch, events = events[:cut], events[cut:]
            async with conn.transaction():
                returned |= await projection.apply(conn, batch)
    return returned


async def _routed(db_url: str, redis_url: str, scopes: set[str], viewers: list[Viewer]) -> dict[str, set[str]]:
    """What the hub hands each viewer (by ``sub``) when ``scopes`` change."""

    async def participants(thread_ids: list[str]) -> dict[str, tuple[str, str]]:
        async with await psycopg.AsyncConnection.connect(db_url) as conn:
            return await thread_participants(conn, thread_ids)

    hub = Hub(redis_url, participants)
    try:
        listeners: list[Listener] = [await hub.join(v) for v in viewers]
        await hub.dispatch(sorted(scopes))
        return {listener.viewer.sub: set(await listener.next(0.0)) for listener in listeners}
    finally:
        await hub.close()


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_every_scope_apply_returns_is_declared_and_reaches_its_audience(name: str, db_url: str, redis_url: str) -> None:
    assert set(STREAMS) == set(REGISTRY)  # a new read model gets a stream here
    # A scope told to a thread's participants needs the threads read model to know them.
    threaded = any(kind.audience == PARTICIPANTS for kind in REGISTRY[name].scopes)
    migrate(db_url, [REGISTRY[name]] + ([REGISTRY["threads"]] if threaded and name != "threads" else []))
    if threaded and name != "threads":
        asyncio.run(_applied(db_url, "threads", STREAMS[name]()))
    scopes = asyncio.run(_applied(db_url, name, STREAMS[name]()))
    assert scopes, f"{name}: apply returned no scope"

    kinds = {}
    for scope in scopes:
        found = route(scope)
        assert found is not None, f"{name}: {scope!r} is declared by no read model"
        assert found[0] in REGISTRY[name].scopes, f"{name}: {scope!r} is another read model's scope"
        kinds[scope] = found

    # One viewer per owner key and per thread participant, a technician and a bystander.
    subs = {key for kind, key in kinds.values() if kind.audience == OWNER}
    if threaded:
        with psycopg.connect(db_url) as conn:
            subs |= {u for row in conn.execute("SELECT client_id, provider_id FROM threads WHERE client_id IS NOT NULL")
                     for u in row}
    viewers = [Viewer(s, frozenset()) for s in sorted(subs)]  # type: ignore[arg-type]
    viewers += [Viewer("~technician", frozenset({"technician"})), Viewer("~bystander", frozenset())]
    got = asyncio.run(_routed(db_url, redis_url, scopes, viewers))

    with psycopg.connect(db_url) as conn:
        parts = dict(
            (tid, (c, p)) for tid, c, p in conn.execute("SELECT thread_id, client_id, provider_id FROM threads")
        ) if threaded else {}
    for scope, (kind, key) in kinds.items():
        if kind.audience == OWNER:
            expected = {key}
        elif kind.audience == PARTICIPANTS:
            expected = set(parts[key]) - {None}
        elif kind.audience == EVERYONE:
            expected = set(got)
        elif kind.audience.startswith(ROLE):
            expected = {v.sub for v in viewers if kind.audience[len(ROLE):] in v.roles}
        else:
            assert kind.audience == NOBODY
            expected = set()
        assert {sub for sub, seen in got.items() if scope in seen} == expected, scope
