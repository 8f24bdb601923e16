"""The provider and workflow projections against a real broker and a real PostgreSQL: the tables
equal the pure fold of what was published — duplicates, re-sent business keys and bookings or
reviews that arrive before the profile (in earlier batches) included — and ``apply`` reports the
listing keys whose content changed."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import orjson
import psycopg
import pytest

from readside.load import Record, provider_stream, workflow_stream
from readside.readmodels.providers.fold import fold_all as fold_providers
from readside.readmodels.providers.fold import render as render_provider
from readside.readmodels.providers.scopes import listing_key
from readside.readmodels.providers.store import PROJECTION as PROVIDERS
from readside.readmodels.workflows.fold import fold_all as fold_workflows
from readside.readmodels.workflows.fold import render as render_workflow
from readside.readmodels.workflows.store import PROJECTION as WORKFLOWS
from readside.shared.db import migrate
from readside.shared.jsonbytes import dumps
from tests.conftest import InProcessProjector
from tests.support import as_event, dedupe, send, wait_caught_up
from tests.unit.test_providers_fold import booking, profile, resent, review
from tests.unit.test_workflows_fold import created, deleted, saved


def _json(value: object) -> object:
    return orjson.loads(dumps(value))


def expected_providers(records: list[Record]) -> dict:
    cards = {}
    counts: Counter[str] = Counter()
    events = (as_event(r) for r in dedupe(records) if r.topic == "providers.events")
    for pid, state in fold_providers(events).items():
        card = render_provider(state)
        if card is None:
            cards[pid] = None
            continue
        cards[pid] = (card.listed, card.category_key, card.booked_key, card.newest_key, card.rated_key,
                      card.rated_count_key, _json(card.item))
        if card.listed:
            counts[listing_key(card.category_key)] += 1
            counts[listing_key(None)] += 1
    return {"cards": cards, "counts": dict(counts)}


def actual_providers(db_url: str) -> dict:
    with psycopg.connect(db_url) as conn:
        cards = {
            pid: None if item is None else (listed, cat, b, n, r, rc, orjson.loads(item))
            for pid, listed, cat, b, n, r, rc, item in conn.execute(
                "SELECT provider_id, listed, category_key, booked_key, newest_key, rated_key, rated_count_key, item "
                "FROM providers"
            )
        }
        counts = {k: n for k, n in conn.execute("SELECT key, listed FROM provider_counts") if n}
    return {"cards": cards, "counts": counts}


def expected_workflows(records: list[Record]) -> dict:
    out = {}
    events = (as_event(r) for r in dedupe(records) if r.topic == "workflows.events")
    for wid, state in fold_workflows(events).items():
        row = render_workflow(state)
        if row is not None and row.listed:
            out[wid] = (row.owner_id, row.is_template, row.updated_at, _json(row.item))
    return out


def actual_workflows(db_url: str) -> dict:
    with psycopg.connect(db_url, options="-c TimeZone=UTC") as conn:
        return {
            wid: (owner, template, updated, orjson.loads(item))
            for wid, owner, template, updated, item in conn.execute(
                "SELECT workflow_id, owner_id, is_template, updated_at, item FROM workflows WHERE listed"
            )
        }


def _diff(expected: dict, actual: dict) -> str:
    missing = [k for k in expected if k not in actual][:5]
    extra = [k for k in actual if k not in expected][:5]
    wrong = [(k, expected[k], actual[k]) for k in expected if k in actual and expected[k] != actual[k]][:3]
    return "" if not (missing or extra or wrong) else f"missing={missing} extra={extra} wrong={wrong}"


def test_tables_equal_the_fold_with_duplicates_and_stubs_across_batches(settings):
    s = settings
    providers = provider_stream(providers=80, seed=21)
    workflows = workflow_stream(workflows=40, versions=(0, 6), seed=22)
    rng = random.Random(5)
    counted = [r for r in providers if r.value["type"] != "provider.profile_updated"]
    # Phase 1: only bookings and reviews (stubs), some of them twice under new event ids; and
    # workflow versions without their `created`.
    early_versions = [r for r in workflows if r.value["type"] == "workflow.version_saved" and rng.random() < 0.3]
    first = counted + [resent(r) for r in rng.sample(counted, len(counted) // 5)] + early_versions
    # Phase 2: everything, in time order, with retried records (same event ids) mixed in, plus
    # more bookings and reviews re-sent under new event ids.
    second = list(providers) + list(workflows)
    for r in rng.sample(second, len(second) // 4):
        second.insert(rng.randrange(second.index(r) + 1, len(second) + 1), r)
    second += [resent(r) for r in rng.sample(counted, len(counted) // 5)]
    topics = {"providers": [s.topic_prefix + "providers.events"], "workflows": [s.topic_prefix + "workflows.events"]}
    runner = InProcessProjector(s, ["providers", "workflows"]).start()
    try:
        for phase in (first, second):
            send(s, phase)
            for name, names in topics.items():
                wait_caught_up(s.database_url, s.kafka_bootstrap, name, names)
            if phase is first:
                stubs = actual_providers(s.database_url)["cards"]
                assert stubs and all(card is None for card in stubs.values())  # kept, not listed
    finally:
        runner.stop()

    everything = first + second
    exp, act = expected_providers(everything), actual_providers(s.database_url)
    assert exp["cards"] == expected_providers(providers)["cards"]  # re-sent business keys count once
    assert not _diff(exp["cards"], act["cards"]), _diff(exp["cards"], act["cards"])
    assert exp["counts"] == act["counts"]
    assert not _diff(expected_workflows(everything), actual_workflows(s.database_url))
    assert expected_workflows(everything) == expected_workflows(workflows)

    with psycopg.connect(s.database_url) as conn:
        (bookings,) = conn.execute("SELECT count(*) FROM provider_bookings").fetchone()
        versions = dict(conn.execute("SELECT key, version FROM listing_versions").fetchall())
        (big,) = conn.execute("SELECT max(node_count) FROM workflows").fetchone()
        (dead,) = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
    distinct = {(r.key, r.value["payload"]["booking_id"]) for r in providers if r.value["type"] == "booking.confirmed"}
    assert bookings == len(distinct)
    assert set(exp["counts"]) <= {k for k, v in versions.items() if v > 0}
    assert dead == 0
    assert big == max(len(r.value["payload"]["nodes"]) for r in workflows if r.value["type"] == "workflow.version_saved")


# -- apply's changed keys, against PostgreSQL directly (no broker) ---------------------------------

async def _apply(db_url: str, projection, records: list[Record]) -> set[str]:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True, options="-c TimeZone=UTC") as conn:
        async with conn.transaction():
            return await projection.apply(conn, [as_event(r) for r in records])


@pytest.fixture
def migrated(db_url: str) -> str:
    migrate(db_url, [PROVIDERS, WORKFLOWS])
    return db_url


def test_provider_apply_bumps_the_listings_whose_cards_changed(migrated):
    run = lambda *recs: asyncio.run(_apply(migrated, PROVIDERS, list(recs)))  # noqa: E731
    assert run(booking("p1", "b1"), review("p1", "r1", 5)) == set()  # a stub lists nowhere
    assert run(profile("p1", 10, category="Sound - Service")) == {"providers", "providers:sound_service"}
    assert run(booking("p1", "b1")) == set()  # the same booking again: nothing changed
    assert run(booking("p1", "b2")) == {"providers", "providers:sound_service"}
    # an older snapshot does not win, but moves created_at (shown, and the `newest` order)
    assert run(profile("p1", 5, category="DJ")) == {"providers", "providers:sound_service"}
    assert run(profile("p1", 20, category="DJ")) == {"providers", "providers:sound_service", "providers:dj"}
    assert run(profile("p1", 30, category="DJ", status="suspended")) == {"providers", "providers:dj"}
    assert run(booking("p1", "b3")) == set()  # not listed: no listing changed
    with psycopg.connect(migrated) as conn:
        counts = dict(conn.execute("SELECT key, listed FROM provider_counts").fetchall())
        row = conn.execute("SELECT book_count, rating_count, created_at, listed FROM providers").fetchone()
    assert counts == {"providers": 0, "providers:sound_service": 0, "providers:dj": 0}
    assert row[:2] == (3, 1) and row[3] is False
    assert row[2] == as_event(profile("p1", 5)).payload.updated_at


def test_workflow_apply_bumps_the_owner_and_template_lists(migrated):
    run = lambda *recs: asyncio.run(_apply(migrated, WORKFLOWS, list(recs)))  # noqa: E731
    assert run(saved("w1", 1, 10)) == set()  # a stub lists nowhere
    assert run(created("w1", owner="u-1", at=1)) == {"workflows:u-1"}
    assert run(created("w2", owner="u-2", at=1, template=True)) == {"workflows:u-2", "templates"}
    assert run(saved("w2", 1, 20)) == {"workflows:u-2", "templates"}
    assert run(saved("w2", 1, 20)) == set()  # a redelivered version changes nothing
    assert run(deleted("w2", 30)) == {"workflows:u-2", "templates"}
    assert run(saved("w2", 2, 40)) == set()  # after deleted: ignored
    with psycopg.connect(migrated) as conn:
        rows = dict(conn.execute("SELECT workflow_id, latest_version FROM workflows").fetchall())
    assert rows == {"w1": 1, "w2": 1}
