"""One record never stops a projection (CONTRACT §3 "Bounds", issue 9 §1).

A corpus of poison — every kind of bad record we know of — is published between good events on
every topic while the projector runs. The projector never exits, every bad record is a dead letter
(`readside dlq list`) with its reason, every good record is applied: the tables equal the pure
fold of the good events. The rebuild and the dead-letter replay survive the same corpus.
"""

from __future__ import annotations

import asyncio
import random
import string
from typing import Any

import orjson
import psycopg
import pytest

import readside.projector.service
from readside.cli import main as cli
from readside.load import Record, provider_stream, request_stream, thread_stream, workflow_stream
from readside.projector.engine import POINTER_HEADER
from readside.readmodels.payments.fold import fold_all as fold_payments
from readside.readmodels.payments.fold import render as render_payments
from readside.readmodels.registry import REGISTRY
from readside.shared.jsonbytes import dumps
from readside.shared.settings import Settings
from tests.conftest import InProcessProjector
from tests.integration.test_providers_workflows_projection import (
    actual_providers,
    actual_workflows,
    expected_providers,
    expected_workflows,
)
from tests.integration.test_requests_projection import actual_tables as actual_requests
from tests.integration.test_requests_projection import expected_tables as expected_requests
from tests.support import as_event, assert_tables_equal_fold, message, read_topics, send, send_raw, started, wait_caught_up

PROJECTION_TOPICS = {name: projection.topics for name, projection in REGISTRY.items()}


def _readers(topic: str) -> list[str]:
    """The projections that read ``topic``: each dead-letters a bad record of it for itself."""
    return [name for name, topics in PROJECTION_TOPICS.items() if topic in topics]


def _payments(db_url: str) -> dict[str, Any]:
    with psycopg.connect(db_url) as conn:
        return {tid: orjson.loads(item) for tid, item in conn.execute("SELECT thread_id, item FROM thread_payment_totals")}


def _expected_payments(records: list[Record]) -> dict[str, Any]:
    states = fold_payments([as_event(r) for r in records if r.topic == "payments.events"])
    return {tid: orjson.loads(dumps(render_payments(state))) for tid, state in states.items()}
DLQ_MAX_REQUEST = 1024 * 1024  # the projector's dead-letter producer, lowered for this test
BIG = 1_500_000  # a record the dead-letter topic cannot take from that producer


def _env(template: Record, event_id: str, **changes: Any) -> dict[str, Any]:
    """``template``'s envelope with a new event id; ``payload.x`` keys change the payload."""
    env = {**template.value, "event_id": event_id, "payload": dict(template.value["payload"])}
    for name, value in changes.items():
        if name.startswith("payload."):
            env["payload"][name.removeprefix("payload.")] = value
        else:
            env[name] = value
    return env


def _first(records: list[Record], type_: str) -> Record:
    return next(r for r in records if r.value["type"] == type_)


def poison_corpus(good: list[Record]) -> list[tuple[str, bytes | None, bytes | None, str]]:
    """``(base topic, key, value, a fragment of the reason)`` for every poison kind."""
    msg = _first(good, "message.created")
    tid = msg.key
    pay = _first(good, "payment.received")
    req = _first(good, "request.created")
    prof = _first(good, "provider.profile_updated")
    rev = _first(good, "review.posted")
    wf = _first(good, "workflow.created")
    rnd = random.Random(7)
    noise = "".join(rnd.choice(string.ascii_letters) for _ in range(6000))  # does not compress
    k = tid.encode()
    T = "threads.events"

    def j(value: dict[str, Any]) -> bytes:
        return orjson.dumps(value)

    return [
        # times that overflow once converted to UTC: an OverflowError out of decode() on main
        (T, k, j(_env(msg, "px-1", type="message.reacted", occurred_at="0001-01-01T00:00:00+01:00")), "within years"),
        (T, k, j(_env(msg, "px-2", occurred_at="0001-01-01T00:00:00+01:00")), "'occurred_at' must be within years"),
        (T, k, j(_env(msg, "px-3", **{"payload.created_at": "9999-12-31T23:59:59-01:00"})), "created_at"),
        ("payments.events", pay.key.encode(),
         j(_env(pay, "px-4", **{"payload.received_at": "9999-12-31T23:30:00-01:00"})), "received_at"),
        ("requests.events", req.key.encode(),
         j(_env(req, "px-5", **{"payload.created_at": "9999-12-31T23:59:59-01:00"})), "created_at"),
        ("workflows.events", wf.key.encode(),
         j(_env(wf, "px-6", type="workflow.archived", occurred_at="9999-12-31T23:59:59-00:01")), "within years"),
        # ids of thousands of characters: "index row requires N bytes", retried forever on main
        (T, k, j(_env(msg, "px-7", **{"payload.message_id": "m" + noise[:2999]})), "message_id: An id must have at most 200"),
        (T, k, j(_env(msg, "e" + noise[:2999])), "'event_id' must have at most 200"),
        (T, noise[:3000].encode(), j(_env(msg, "px-8", **{"payload.thread_id": noise[:3000]})), "thread_id"),
        ("payments.events", pay.key.encode(), j(_env(pay, "px-9", **{"payload.payment_id": noise[:3000]})), "payment_id"),
        ("providers.events", rev.key.encode(), j(_env(rev, "px-10", **{"payload.review_id": noise[:3000]})), "review_id"),
        ("workflows.events", wf.key.encode(), j(_env(wf, "px-11", **{"payload.owner_id": noise[:3000]})), "owner_id"),
        # control characters in ids
        (T, k, j(_env(msg, "px-12", **{"payload.sender_id": "u-c\x00"})), "sender_id: An id must not contain control"),
        (T, k, j(_env(msg, "px-13\nscope:thread:other")), "'event_id' must not contain control characters"),
        (T, b"t\r1", j(_env(msg, "px-14", **{"payload.thread_id": "t\r1"})), "thread_id: An id must not contain"),
        ("requests.events", req.key.encode(), j(_env(req, "px-15", **{"payload.requester_id": "u\x85"})), "requester_id"),
        # tombstones: a NOT NULL violation of dead_letters.value ended the projector on main
        (T, k, None, "tombstone"),
        ("requests.events", req.key.encode(), None, "tombstone"),
        # larger than the dead-letter producer's max_request_size: retried forever on main
        (T, k, j(_env(msg, "px-16", **{"payload.message_id": None, "payload.content": "x" * BIG})), "message_id"),
        # a fold the database rejects for the data: a NUL the preview's text column cannot hold
        # (CharacterNotInRepertoire, a DataError), a category too long for its index
        # (ProgramLimitExceeded, an OperationalError: retried forever on main)
        (T, b"pz-1", j(message("pz-1", "m-nul", 20, content="a\x00b").value), "fold error"),
        ("providers.events", prof.key.encode(), j(_env(prof, "px-18", **{"payload.category": noise, "payload.status": "active",
                                                                           "payload.updated_at": "2030-01-01T00:00:00Z"})),
         "fold error: ProgramLimitExceeded"),
        # the kinds the suite already had
        (T, k, b"{not json", "not JSON"),
        (T, k, b"\xff\x00{not json", "not JSON"),
        (T, k, j({**_env(msg, "px-19"), "payload": {"thread_id": tid}}), "message_id"),
        (T, k, j(_env(msg, "px-20", **{"payload.created_at": 5})), "created_at"),
        (T, k, j(_env(msg, "px-21", schema_version=2)), "schema_version"),
        (T, b"other", j(_env(msg, "px-22")), "differs from payload thread_id"),
    ]  # fmt: skip


def _dlq_topic_records(bootstrap: str, topics: list[str], count: int) -> list[Any]:
    return read_topics(bootstrap, topics, count)


def _caught_up(settings: Settings) -> None:
    for name, topics in PROJECTION_TOPICS.items():
        wait_caught_up(settings.database_url, settings.kafka_bootstrap, name, [settings.topic_prefix + t for t in topics], 120)


def test_a_poison_corpus_between_good_events_never_stops_the_projector(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(readside.projector.service, "PRODUCER_MAX_REQUEST", DLQ_MAX_REQUEST)
    good = (thread_stream(threads=10, seed=31) + [started("pz-1"), message("pz-1", "m1", 10)]
            + request_stream(requests=6, seed=32) + provider_stream(providers=6, seed=33)
            + workflow_stream(workflows=3, versions=(1, 2), seed=34))  # fmt: skip
    poison = poison_corpus(good)
    rnd = random.Random(9)
    items: list[tuple[str, bytes | None, bytes | None]] = [(r.topic, r.key.encode(), orjson.dumps(r.value)) for r in good]
    for topic, key, value, _ in poison:  # between good events, anywhere
        if key == b"pz-1":
            items.append((topic, key, value))  # after its thread's messages: the latest, its preview fails
        else:
            items.insert(rnd.randrange(len(items) + 1), (topic, key, value))
    p = settings.topic_prefix
    runner = InProcessProjector(settings).start()
    try:
        for i in range(0, len(items), len(items) // 4 + 1):  # in four rounds, the projector running
            asyncio.run(send_raw(settings.kafka_bootstrap, [(p + t, k, v) for t, k, v in items[i : i + len(items) // 4 + 1]]))
        _caught_up(settings)
        assert runner._thread.is_alive() and runner.error is None
    finally:
        runner.stop()

    # every good record applied: each projection's tables equal the fold of the good events
    assert_tables_equal_fold(settings.database_url, [r for r in good if r.topic in PROJECTION_TOPICS["threads"]])
    requests = [r for r in good if r.topic == "requests.events"]
    assert actual_requests(settings.database_url) == expected_requests(requests)
    assert actual_providers(settings.database_url) == expected_providers(good)
    assert actual_workflows(settings.database_url) == expected_workflows(good)
    assert _payments(settings.database_url) == _expected_payments(good)

    # every bad record is a dead letter, with its reason, in `readside dlq list`
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    assert cli(["dlq", "list", "--json", "--limit", "1000"]) == 0
    listed = orjson.loads(capsys.readouterr().out)
    letters_expected = sum(len(_readers(topic)) for topic, *_ in poison)
    assert listed["total"] == letters_expected
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute('SELECT id, topic, key, value, reason, projection FROM dead_letters ORDER BY id').fetchall()
    assert sorted(d["id"] for d in listed["dead_letters"]) == [r[0] for r in rows]
    letters = [(name, t.removeprefix(p), None if k is None else bytes(k), None if v is None else bytes(v), reason)
               for _, t, k, v, reason, name in rows]  # fmt: skip
    unmatched = list(letters)
    for topic, key, value, hint in poison:
        for reader in _readers(topic):
            found = [x for x in unmatched if x[:4] == (reader, topic, key, value)]
            assert found, f"{reader}: no dead letter for {topic} {key!r:.40} {value!r:.80}"
            assert hint in found[0][4], (hint, found[0][4])
            unmatched.remove(found[0])
    assert not unmatched
    rows = [row[:5] for row in rows]
    tombstone = next(d for d in listed["dead_letters"] if d["tombstone"] and d["topic"] == p + "threads.events")
    assert tombstone["value_bytes"] == 0 and "tombstone" in tombstone["reason"]
    assert cli(["dlq", "show", str(tombstone["id"])]) == 0
    assert "value (a tombstone: the record has no value, 0 bytes):" in capsys.readouterr().out
    assert cli(["dlq", "list"]) == 0
    assert "tombstone" in capsys.readouterr().out

    # the dead-letter topics: the records as they were, the too large one as a pointer
    dlq_topics = [p + t + ".dlq" for topics in PROJECTION_TOPICS.values() for t in topics]
    on_topics = _dlq_topic_records(settings.kafka_bootstrap, dlq_topics, letters_expected)
    assert len(on_topics) == letters_expected
    pointers = [r for r in on_topics if POINTER_HEADER in dict(r.headers)]
    (big_id,) = [i for i, _, _, v, _ in rows if v is not None and len(v) > BIG]
    assert len(pointers) == 1 and len(pointers[0].value) < 1000
    ref = orjson.loads(pointers[0].value)
    assert (ref["dead_letter_id"], ref["too_large"], ref["value_bytes"]) == (big_id, True, len(rows[[r[0] for r in rows].index(big_id)][3]))
    assert {"readside-error", "readside-origin-topic", "readside-origin-offset"} <= set(dict(pointers[0].headers))
    # the tombstones, as they were (once per projection reading their topic)
    assert sum(r.value is None for r in on_topics) == sum(len(_readers(topic)) for topic, _, value, _ in poison if value is None)

    # a replay of everything: the corpus still fails, record by record, and nothing else happens
    assert cli(["dlq", "replay", "--all"]) == 1
    assert f"replayed 0, still failing {letters_expected}, duplicates skipped 0" in capsys.readouterr().out
    assert_tables_equal_fold(settings.database_url, [r for r in good if r.topic in PROJECTION_TOPICS["threads"]])

    # a rebuild of every projection over the same corpus cuts over: the shadow writer isolates the
    # same records (the tombstones, the index overflow) and the cutover keeps the dead letters as they are
    assert cli(["rebuild", "--all", "--verify"]) == 0
    out, err = capsys.readouterr()
    assert "DIFFERS" not in err and out.count("cut over to v2") == len(PROJECTION_TOPICS)
    assert_tables_equal_fold(settings.database_url, [r for r in good if r.topic in PROJECTION_TOPICS["threads"]])
    assert actual_providers(settings.database_url) == expected_providers(good)
    with psycopg.connect(settings.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM dead_letters").fetchone() == (letters_expected,)
    assert _payments(settings.database_url) == _expected_payments(good)


def test_a_rebuild_cuts_over_when_a_dead_letter_holds_a_nul(
    settings: Settings, projector: InProcessProjector, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The latest message of a thread holds a NUL: its preview cannot be stored, live or rebuilt (a
    # fold error both times, so --verify finds the tables the same); its value, "\u0000" in JSON,
    # is one PostgreSQL's jsonb cannot hold either — the cutover used to cast it and fail, forever.
    records = thread_stream(threads=4, seed=41) + [started("nul-1"), message("nul-1", "m1", 10)]
    nul = message("nul-1", "m-nul", 20, content="a\x00b")
    assert b"\\u0000" in orjson.dumps(nul.value)
    send(settings, records + [nul])
    topics = [settings.topic_prefix + t for t in PROJECTION_TOPICS["threads"]]
    wait_caught_up(settings.database_url, settings.kafka_bootstrap, "threads", topics)
    with psycopg.connect(settings.database_url) as conn:
        (reason,) = conn.execute("SELECT reason FROM dead_letters WHERE key = 'nul-1'").fetchone()
    assert reason.startswith("fold error")
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    assert cli(["rebuild", "threads", "--verify"]) == 0
    out, err = capsys.readouterr()
    assert "--verify: the tables are the same" in err and "cut over to v2" in out
    assert_tables_equal_fold(settings.database_url, records)
    with psycopg.connect(settings.database_url) as conn:
        assert conn.execute("SELECT version, state FROM projections WHERE name = 'threads'").fetchone() == (2, "live")
        assert conn.execute("SELECT count(*) FROM dead_letters WHERE key = 'nul-1'").fetchone() == (1,)


def _long_category_profile(seed: int) -> tuple[bytes, bytes]:
    """A valid ``provider.profile_updated`` whose category is too long for its index: the fold's
    write fails with ``ProgramLimitExceeded`` (an ``OperationalError``, retried forever on main)."""
    rnd = random.Random(seed)
    profile = _first(provider_stream(providers=2, seed=seed), "provider.profile_updated")
    category = "".join(rnd.choice(string.ascii_letters) for _ in range(6000))
    value = orjson.dumps(_env(profile, f"long-{seed}", **{"payload.category": category, "payload.status": "active"}))
    return profile.key.encode(), value


def test_a_data_error_fails_one_event_of_the_rebuilds_shadow_writer_not_the_rebuild(settings: Settings) -> None:
    from aiokafka import TopicPartition as TP

    from readside.projector.pipeline import Batch, Record
    from readside.projector.rebuild_bulk import ShadowWriter
    from readside.projector.shadow import Shadow
    from readside.readmodels.registry import REGISTRY
    from readside.schemas import decode
    from readside.shared.db import migrate

    providers = REGISTRY["providers"]
    migrate(settings.database_url, [providers])
    good = [r for r in provider_stream(providers=3, seed=51) if r.topic == "providers.events"]
    key, value = _long_category_profile(52)
    tp = TP(settings.topic_prefix + "providers.events", 0)
    raw = [(r.key.encode(), orjson.dumps(r.value)) for r in good[:4]] + [(key, value)] + [
        (r.key.encode(), orjson.dumps(r.value)) for r in good[4:]]  # fmt: skip
    items = [Record(tp.topic, tp.partition, offset, k, v, decode("providers.events", k, v)) for offset, (k, v) in enumerate(raw)]

    async def go() -> tuple[list, int]:
        conn = await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True)
        try:
            shadow = Shadow(providers, "rs_build_providers")
            async with conn.transaction():
                await shadow.create(conn, {(tp.topic, 0): 0})
            for bulk in (True, False):  # the bulk phase's loader, then the catch-up's apply
                async with conn.transaction():
                    await ShadowWriter(conn, providers, shadow).write(Batch(items, {tp: len(items)}, len(items)), bulk=bulk)
                await conn.execute("TRUNCATE rs_build_providers.rs_seen")
            cur = await conn.execute('SELECT "offset", reason FROM rs_build_providers.rs_failed')
            failed = await cur.fetchall()
            cur = await conn.execute("SELECT count(*) FROM rs_build_providers.providers")
            return failed, (await cur.fetchone())[0]
        finally:
            await conn.close()

    failed, rows = asyncio.run(go())
    assert [o for o, _ in failed] == [4] and failed[0][1].startswith("fold error (rebuild): ProgramLimitExceeded(")
    assert rows == len(expected_providers(good)["cards"])


def test_a_data_error_fails_one_dead_letter_of_a_replay_not_the_replay(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from readside.readmodels.registry import REGISTRY
    from readside.shared.db import migrate

    migrate(settings.database_url, list(REGISTRY.values()))
    topic = settings.topic_prefix + "providers.events"
    good = [r for r in provider_stream(providers=1, seed=53) if r.topic == "providers.events"]
    letters = [_long_category_profile(54)] + [(r.key.encode(), orjson.dumps(r.value)) for r in good]
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        for offset, (key, value) in enumerate(letters):
            conn.execute(
                'INSERT INTO dead_letters (projection, topic, partition, "offset", key, value, reason) '
                "VALUES ('providers', %s, 0, %s, %s, %s, 'fold error: as it was')",
                (topic, offset, key, value),
            )
        conn.execute(
            'INSERT INTO dead_letters (projection, topic, partition, "offset", key, value, reason) '
            "VALUES ('providers', %s, 0, 99, 'p-1', NULL, 'tombstone')",
            (topic,),
        )
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    assert cli(["dlq", "replay", "--all"]) == 1
    out = capsys.readouterr().out
    assert f"replayed {len(good)}, still failing 2, duplicates skipped 0" in out
    assert "still failing: fold error: ProgramLimitExceeded" in out and "still failing: not JSON: empty record value (tombstone)" in out
    assert actual_providers(settings.database_url) == expected_providers(good)
