"""The requests read model against a real broker and a real PostgreSQL: its tables, counters and
queries equal a brute-force recomputation from the pure fold, through duplicates and membership
changes (business unit moves, reassignments, solving and reopening)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import orjson
import psycopg

from readside.load import Record, request_stream
from readside.readmodels.requests.fold import RequestRow
from readside.readmodels.requests.queries import technician_views
from readside.readmodels.requests.store import PROJECTION
from readside.readmodels.requests.views import (
    COUNTED_VIEWS,
    TECHNICIAN_VIEWS,
    TICKET_TYPES,
    VIEWS,
    in_view,
    window_keys,
)
from readside.shared.db import migrate
from readside.shared.jsonbytes import dumps
from tests.support import as_event, dedupe, projection_topics, send, wait_caught_up, with_stale_reads
from tests.unit.test_requests_fold import assigned, rows_of, said, taken, updated

TECHS = [f"tech-{i}" for i in range(1, 6)] + ["tech-none"]


def _caught_up(settings) -> None:
    wait_caught_up(settings.database_url, settings.kafka_bootstrap, "requests", projection_topics(settings, "requests"))


def expected_tables(records: list[Record]) -> dict:
    rows = rows_of(dedupe(records))
    table = {
        rid: (r.listed, r.status, r.priority, r.business_unit_id, r.is_subtask, r.unsolved, r.unassigned,
              r.urgent_high, r.created_at, r.updated_at, r.solved_at, orjson.loads(dumps(r.item)) if r.item else None)
        for rid, r in rows.items()
    }
    assignees = {
        (rid, t): (r.business_unit_id, r.is_subtask, r.unsolved, r.updated_at)
        for rid, r in rows.items() if r.listed for t in r.assignees
    }
    counts: Counter = Counter()
    now = datetime.now(UTC)  # the counted views do not depend on it
    for r in rows.values():
        for scope in ("*", str(r.business_unit_id)):
            for view in COUNTED_VIEWS:
                for tech in (TECHS if view in TECHNICIAN_VIEWS else [""]):
                    if in_view(r, view, tech or "nobody", now):
                        counts[(scope, tech, view, r.is_subtask)] += 1
    windows = Counter(k for r in rows.values() for k in window_keys(r))
    return {"rows": table, "assignees": assignees, "counts": dict(counts), "windows": dict(windows)}


def actual_tables(db_url: str) -> dict:
    with psycopg.connect(db_url) as conn:
        table = {
            rid: (listed, status, priority, bu, sub, unsolved, unassigned, high, c, u, s, orjson.loads(item) if item else None)
            for rid, listed, status, priority, bu, sub, unsolved, unassigned, high, c, u, s, item in conn.execute(
                "SELECT request_id, listed, status, priority, business_unit_id, is_subtask, unsolved, unassigned, "
                "urgent_high, created_at, updated_at, solved_at, item FROM requests_rows"
            )
        }
        assignees = {
            (rid, t): (bu, sub, unsolved, u)
            for rid, t, bu, sub, unsolved, u in conn.execute(
                "SELECT request_id, technician_id, business_unit_id, is_subtask, unsolved, updated_at FROM request_assignees"
            )
        }
        counts = {
            (scope, t, v, sub): n
            for scope, t, v, sub, n in conn.execute("SELECT scope, technician_id, view, subtask, n FROM request_counts")
            if n != 0 and (t == "" or t in TECHS)
        }
        windows = {
            (scope, v, bucket, sub): n
            for scope, v, bucket, sub, n in conn.execute("SELECT scope, view, bucket, subtask, n FROM request_window_counts")
            if n != 0
        }
    return {"rows": table, "assignees": assignees, "counts": counts, "windows": windows}


def assert_tables_equal_fold(db_url: str, records: list[Record]) -> None:
    expected, actual = expected_tables(records), actual_tables(db_url)
    for part in ("rows", "assignees", "counts", "windows"):
        exp, act = expected[part], actual[part]
        missing = [k for k in exp if k not in act][:5]
        extra = [k for k in act if k not in exp][:5]
        wrong = [(k, exp[k], act[k]) for k in exp if k in act and exp[k] != act[k]][:3]
        assert not (missing or extra or wrong), f"{part}: missing={missing} extra={extra} wrong={wrong}"


def _expected_view(rows: list[RequestRow], view: str, tech: str, bu: int | None, now: datetime) -> list[RequestRow]:
    members = [r for r in rows if in_view(r, view, tech, now) and (bu is None or r.business_unit_id == bu)]
    return sorted(members, key=lambda r: (r.updated_at, r.request_id), reverse=True)


def assert_queries_equal_fold(db_url: str, records: list[Record], now: datetime, per_page: int = 7) -> int:
    """Every view, business unit, ticket type and page through ``readside.readmodels.requests.queries`` equals the
    fold's brute force at ``now``; returns how many pages were compared."""
    rows = [r for r in rows_of(dedupe(records)).values() if r.listed]
    units = sorted({r.business_unit_id for r in rows})

    async def go() -> int:
        pages = 0
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True, options="-c TimeZone=UTC") as conn:
            for tech in ("tech-1", "tech-2", "tech-none"):
                for bu in [None, *units, 999]:
                    for view in VIEWS:
                        members = _expected_view(rows, view, tech, bu, now)
                        for kind in TICKET_TYPES:
                            want = [r for r in members if kind == "all" or r.is_subtask == (kind == "subtasks")]
                            got: list[dict] = []
                            page = 0
                            while True:
                                result = await technician_views(conn, tech, bu, now, (view, kind, page * per_page, per_page))
                                pages += 1
                                assert result.counts.total(view, kind) == len(want), (tech, bu, view, kind)
                                got += orjson.loads(b"[" + result.items + b"]")  # joined by PostgreSQL
                                page += 1
                                if page * per_page >= len(want) + per_page:  # one page past the end: empty
                                    assert result.items == b""
                                    break
                            assert [g["id"] for g in got] == [r.request_id for r in want], (tech, bu, view, kind)
                            assert got == [orjson.loads(dumps(r.item)) for r in want]
                        counts = (await technician_views(conn, tech, bu, now)).counts
                        assert counts.total(view) == len(members), (tech, bu, view)
        return pages

    return asyncio.run(go())


def _stream(seed: int, requests: int) -> list[Record]:
    # Times around now, so the time windows hold some requests and not others.
    return request_stream(requests=requests, technicians=5, seed=seed, start=datetime.now(UTC) - timedelta(days=12))


def _changes(records: list[Record], seed: int) -> list[Record]:
    """A second wave on the same requests: business unit moves, reassignments, takes, solving and
    reopening, messages and a no-op update — all later than anything before."""
    rng = random.Random(seed)
    ids = sorted({r.key for r in records})
    base = datetime.now(UTC) + timedelta(days=3)
    out = []
    for n, rid in enumerate(rng.sample(ids, min(len(ids), 30))):
        stamp = (base + timedelta(seconds=n * 10)).isoformat().replace("+00:00", "Z")
        kind = n % 6
        if kind == 0:
            out.append(updated(rid, 0, stamp=stamp, business_unit_id=rng.randint(1, 6)))
        elif kind == 1:
            out.append(assigned(rid, rng.sample(TECHS[:5], rng.randint(0, 2)), 0, stamp=stamp))
        elif kind == 2:
            out.append(taken(rid, rng.choice(TECHS[:5]), 0, stamp=stamp))
        elif kind == 3:
            out.append(updated(rid, 0, stamp=stamp, status=rng.choice(["solved", "open", "closed", "pending_subtask"])))
        elif kind == 4:
            out.append(said(rid, f"late-{n}", 0, role=rng.choice(["requester", "technician"]), stamp=stamp))
        else:
            out.append(updated(rid, 0, stamp=stamp))
    return out


def test_tables_counters_and_queries_equal_the_fold(settings, projector):
    records = _stream(seed=11, requests=80)
    send(settings, records)
    _caught_up(settings)
    assert_tables_equal_fold(settings.database_url, records)
    assert assert_queries_equal_fold(settings.database_url, records, datetime.now(UTC)) > 0

    later = _changes(records, seed=12)
    send(settings, later)
    _caught_up(settings)
    assert_tables_equal_fold(settings.database_url, records + later)
    # the clock moves requests out of the windows with no event: the queries follow it
    for now in (datetime.now(UTC), datetime.now(UTC) + timedelta(days=2), datetime.now(UTC) + timedelta(days=9)):
        assert_queries_equal_fold(settings.database_url, records + later, now, per_page=25)


def test_redelivered_events_apply_once_and_leave_versions_alone(settings, projector):
    records = _stream(seed=21, requests=40)
    send(settings, records)
    _caught_up(settings)
    with psycopg.connect(settings.database_url) as conn:
        versions = dict(conn.execute("SELECT scope, version FROM request_versions").fetchall())
    # a producer retrying: a third of the events again (same event ids), and copies under new ids
    rng = random.Random(22)
    again = rng.sample(records, len(records) // 3)
    copies = [Record(r.topic, r.key, {**r.value, "event_id": r.value["event_id"] + "-copy"}) for r in again[:20]]
    send(settings, again + copies)
    _caught_up(settings)
    assert_tables_equal_fold(settings.database_url, records)
    with psycopg.connect(settings.database_url) as conn:
        assert dict(conn.execute("SELECT scope, version FROM request_versions").fetchall()) == versions
        (n,) = conn.execute("SELECT count(*) FROM dedupe WHERE projection = 'requests'").fetchone()
    assert n == len(records) + len(copies)


def test_stale_reads_never_bring_unread_flags_back(db_url):
    # The live apply straight against PostgreSQL, over random batches of a shuffled stream in which
    # every read has a stale twin (an earlier read_up_to with a later read_at): the tables equal
    # the fold of the stream without the twins — requester_unread never comes back true.
    migrate(db_url, [PROJECTION])

    async def run(batches: list[list[Record]]) -> None:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True, options="-c TimeZone=UTC") as conn:
            await conn.execute("TRUNCATE " + ", ".join(PROJECTION.tables))
            for batch in batches:
                async with conn.transaction():
                    await PROJECTION.apply(conn, [as_event(r) for r in batch])

    for seed in range(6):
        rng = random.Random(seed)
        clean = _stream(seed=30 + seed, requests=30)
        records = with_stale_reads(clean, rng, share=1.0)
        rng.shuffle(records)
        cuts = sorted(rng.sample(range(1, len(records)), 15))
        asyncio.run(run([records[a:b] for a, b in zip([0, *cuts], [*cuts, len(records)])]))
        assert_tables_equal_fold(db_url, clean)
