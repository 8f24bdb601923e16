"""Helpers the test tiers share: events, publishing, waiting for a projection to catch up.

Tests wait for conditions (a checkpoint reaching the broker's head), never for a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Hashable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import orjson
import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from readside.api.auth import make_token
from readside.load import Record, publish
from readside.schemas import TOPICS, Event, decode, make_event
from readside.schemas.registry import topic_of
from readside.shared.settings import Settings

_counter = itertools.count()
T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def ts(seconds: float) -> str:
    """An RFC 3339 time ``seconds`` after a fixed origin."""
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def envelope(type_: str, payload: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    """A valid envelope through the contract's builder (``make_event``), at the fixed origin."""
    return make_event(type_, payload, event_id=event_id or f"e-{next(_counter)}-{uuid.uuid4().hex[:8]}", occurred_at=T0)


def record(type_: str, payload: dict[str, Any], event_id: str | None = None) -> Record:
    """A valid event as a :class:`Record` on the topic, with the key, the registry gives its type."""
    topic = topic_of(type_)
    return Record(topic, payload[TOPICS[topic][0]], envelope(type_, payload, event_id))


def as_event(rec: Record) -> Event:
    event = decode(rec.topic, rec.key.encode(), orjson.dumps(rec.value))
    assert isinstance(event, Event)
    return event


def started(tid: str, client: str = "u-c", provider: str = "u-p", at: float = 0, **kw: Any) -> Record:
    payload = {
        "thread_id": tid,
        "client": {"id": client, "name": kw.pop("client_name", "Ann Lee"), "avatar_url": kw.pop("client_avatar", None)},
        "provider": {
            "id": provider,
            "name": kw.pop("provider_name", "Bob Khumalo"),
            "business_name": kw.pop("business_name", "DJ Bob"),
            "avatar_url": kw.pop("provider_avatar", None),
        },
        "service_type": kw.pop("service_type", "live_performance"),
        "state": kw.pop("state", "pending_quote"),
        "created_at": ts(at),
    }
    assert not kw, kw
    return record("thread.started", payload)


def message(tid: str, mid: str, at: float, sender: str | None = "u-c", sender_type: str = "client", **kw: Any) -> Record:
    payload = {
        "thread_id": tid,
        "message_id": mid,
        "sender_id": sender,
        "sender_type": sender_type,
        "message_type": "system" if sender_type == "system" else "user",
        "visible_to": kw.pop("visible_to", "both"),
        "content": kw.pop("content", f"hello {mid}"),
        "system_key": kw.pop("system_key", None),
        "system_args": kw.pop("system_args", None),
        "attachment": kw.pop("attachment", None),
        "created_at": ts(at),
    }
    assert not kw, kw
    return record("message.created", payload)


def read(tid: str, reader: str, up_to: float, at: float) -> Record:
    return record("message.read", {"thread_id": tid, "reader_id": reader, "read_up_to": ts(up_to), "read_at": ts(at)})


def deleted(tid: str, mid: str, at: float) -> Record:
    return record("message.deleted", {"thread_id": tid, "message_id": mid, "deleted_at": ts(at)})


def pinned(tid: str, user: str, value: bool, at: float) -> Record:
    return record("thread.pinned", {"thread_id": tid, "user_id": user, "pinned": value, "changed_at": ts(at)})


def state_changed(tid: str, state: str, at: float) -> Record:
    return record("thread.state_changed", {"thread_id": tid, "state": state, "changed_at": ts(at)})


def payment(tid: str, pid: str, at: float) -> Record:
    return record(
        "payment.received",
        {"thread_id": tid, "payment_id": pid, "amount_cents": 5000, "currency": "ZAR", "received_at": ts(at)},
    )


def dedupe(records: Iterable[Record]) -> list[Record]:
    """``records`` without repeated ``event_id``s, the first copy kept, as the projector does."""
    seen: set[str] = set()
    out = []
    for rec in records:
        if rec.value["event_id"] not in seen:
            seen.add(rec.value["event_id"])
            out.append(rec)
    return out


def send(settings: Settings, records: Iterable[Record]) -> None:
    """Publish ``records`` in order to the broker and topic prefix of ``settings``."""
    asyncio.run(publish(list(records), bootstrap=settings.kafka_bootstrap, prefix=settings.topic_prefix))


def projection_topics(settings: Settings, projection: str) -> list[str]:
    """The full names of the topics ``projection`` reads (its ``REGISTRY`` entry), under the prefix."""
    from readside.readmodels.registry import REGISTRY

    return [settings.topic_prefix + topic for topic in REGISTRY[projection].topics]


class _HasSettings(Protocol):
    settings: Settings


def auth(stack: _HasSettings, sub: str, roles: list[str] | None = None) -> dict[str, str]:
    """The ``Authorization`` header of a token for ``sub`` (with ``roles``), signed with the
    stack's secret."""
    return {"Authorization": f"Bearer {make_token(stack.settings.jwt_secret, sub, roles)}"}


async def send_raw(bootstrap: str, items: Iterable[tuple[str, bytes | None, bytes]]) -> None:
    """Send ``(topic, key, value)`` records as they are (for poison tests)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        futures = [await producer.send(t, v, key=k) for t, k, v in items]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def high_watermarks(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], int]:
    """Each partition's end, read from Fetch responses (the embedded broker's ListOffsets lags)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or await _partitions(consumer, t))]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, max(ends[tp] - 1, 0))
        heads: dict[tuple[str, int], int] = {}
        deadline = time.monotonic() + 10
        while len(heads) < len(tps) and time.monotonic() < deadline:
            await consumer.getmany(timeout_ms=200)
            for tp in tps:
                hw = consumer.highwater(tp)
                if hw is not None:
                    heads[(tp.topic, tp.partition)] = max(hw, ends[tp])
        return heads
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(topic) or set()


def merge_keeping_order(records: list[Record], group: Callable[[Record], Hashable], rnd: random.Random) -> list[Record]:
    """A random interleaving of ``records`` that keeps the order within each ``group`` (a topic, a
    partition key): what a consumer may see when partitions or topics interleave."""
    queues: dict[Hashable, list[Record]] = {}
    for r in reversed(records):
        queues.setdefault(group(r), []).append(r)
    merged: list[Record] = []
    while queues:
        key = rnd.choice(sorted(queues, key=repr))
        merged.append(queues[key].pop())
        if not queues[key]:
            del queues[key]
    return merged


READ_TYPES = ("message.read", "request.message_read")
_STALE_BACK = (timedelta(milliseconds=1), timedelta(seconds=1), timedelta(minutes=5), timedelta(days=3))


def stale_read(rec: Record, rnd: random.Random) -> Record:
    """What a stale client (an old tab) sends: the same reader's read of ``rec`` with an earlier
    ``read_up_to`` and a later ``read_at``, under a new ``event_id``. It must change nothing."""
    payload = dict(rec.value["payload"])
    up_to, at = datetime.fromisoformat(payload["read_up_to"]), datetime.fromisoformat(payload["read_at"])
    payload["read_up_to"] = _iso(up_to - rnd.choice(_STALE_BACK))
    payload["read_at"] = _iso(at + rnd.choice(_STALE_BACK[1:]))
    return Record(rec.topic, rec.key, envelope(rec.value["type"], payload))


def with_stale_reads(records: list[Record], rnd: random.Random, share: float = 0.5) -> list[Record]:
    """``records`` plus a stale read for about ``share`` of the reads, each put anywhere in the
    stream: after the read it repeats (it arrives later, as it was sent later) or before it."""
    out = list(records)
    for rec in records:
        if rec.value["type"] in READ_TYPES and rnd.random() < share:
            out.insert(rnd.randint(0, len(out)), stale_read(rec, rnd))
    return out


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")



def read_topics(bootstrap: str, topics: list[str], count: int, polls: int = 150) -> list[Any]:
    """The records of ``topics`` from the beginning, until ``count`` have come (or ``polls``
    fetches of 200 ms went by): for checking what a projector wrote to its ``.dlq`` topics."""

    async def go() -> list[Any]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=8 << 20)
        await consumer.start()
        try:
            await consumer._client.force_metadata_update()
            tps = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            out: list[Any] = []
            for _ in range(polls):
                batch = await consumer.getmany(timeout_ms=200)
                out.extend(r for recs in batch.values() for r in recs)
                if len(out) >= count:
                    break
            return out
        finally:
            await consumer.stop()

    return asyncio.run(go())


@contextlib.contextmanager
def api_server(env: dict[str, str], logs: Path, *args: str, ready: str = "/healthz", timeout: float = 60.0,
               inherit: bool = True) -> Iterator[tuple[str, subprocess.Popen]]:
    """``readside api *args`` on a free port with ``env`` (on top of this process's environment,
    unless ``inherit`` is False); waits until ``ready`` answers 200, yields the base URL and the
    process, and stops it (SIGTERM) afterwards. Its output goes to ``logs/api-<port>.log``."""
    import httpx

    from readside.embedded import free_port

    port = free_port()
    log = open(logs / f"api-{port}.log", "wb")
    api = subprocess.Popen([sys.executable, "-m", "readside.cli", "api", "--port", str(port), *args],
                           env={**(os.environ if inherit else {}), **env}, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert api.poll() is None, f"the API exited with {api.returncode}; see {logs}/api-{port}.log"
        try:
            return httpx.get(base + ready, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(answers, timeout, f"the API to answer {ready}")
        yield base, api
    finally:
        api.terminate()
        api.wait(20)
        log.close()

def wait_until(condition: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def checkpoints(db_url: str, projection: str) -> dict[tuple[str, int], int]:
    with psycopg.connect(db_url) as conn:
        try:
            rows = conn.execute(
                "SELECT topic, partition, next_offset FROM checkpoints WHERE projection = %s", (projection,)
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            return {}  # the projector has not migrated yet
    return {(t, p): o for t, p, o in rows}


def wait_caught_up(db_url: str, bootstrap: str, projection: str, topics: list[str], timeout: float = 90.0) -> None:
    """Wait until the projection's checkpoints reach every partition's head."""
    heads = asyncio.run(high_watermarks(bootstrap, topics))

    def done() -> bool:
        cps = checkpoints(db_url, projection)
        return all(cps.get(tp, 0) >= hw for tp, hw in heads.items())

    wait_until(done, timeout, f"{projection} to reach {heads} (at {checkpoints(db_url, projection)})")


# -- comparing the tables with the reference fold -------------------------------------------------

def expected_threads(records: Iterable[Record]) -> dict[str, Any]:
    """What the thread tables must hold after ``records``, computed by the pure fold.

    Dedupe is by ``event_id`` (first wins), as the projector does.
    """
    from readside.readmodels.threads.fold import fold_all, render
    from readside.shared.jsonbytes import dumps

    states = fold_all(as_event(rec) for rec in dedupe(records))
    previews = {}
    summaries: dict[tuple[str, str], list[int]] = {}
    for state in states.values():
        for row in render(state):
            previews[(row.user_id, row.thread_id)] = (row.role, row.listed, row.unread_count, orjson.loads(dumps(row.item)))
            if row.listed:
                s = summaries.setdefault((row.user_id, row.role), [0, 0])
                s[0] += row.unread_count
                s[1] += 1
    messages = {
        (tid, mid): m.deleted for tid, st in states.items() for mid, m in st.messages.items()
    }
    return {"previews": previews, "summaries": {k: tuple(v) for k, v in summaries.items()}, "messages": messages}


def actual_threads(db_url: str) -> dict[str, Any]:
    with psycopg.connect(db_url) as conn:
        previews = {
            (u, t): (role, listed, unread, orjson.loads(item))
            for u, t, role, listed, unread, item in conn.execute(
                "SELECT user_id, thread_id, role, listed, unread_count, item FROM thread_previews"
            )
        }
        summaries = {
            (u, r): (unread, count)
            for u, r, unread, count in conn.execute("SELECT user_id, role, unread_total, thread_count FROM thread_summaries")
            if (unread, count) != (0, 0)
        }
        messages = {(t, m): d for t, m, d in conn.execute("SELECT thread_id, message_id, deleted FROM thread_messages")}
    return {"previews": previews, "summaries": summaries, "messages": messages}


def assert_tables_equal_fold(db_url: str, records: list[Record]) -> None:
    expected, actual = expected_threads(records), actual_threads(db_url)
    for part in ("messages", "summaries", "previews"):
        exp, act = expected[part], actual[part]
        missing = [k for k in exp if k not in act][:5]
        extra = [k for k in act if k not in exp][:5]
        wrong = [(k, exp[k], act[k]) for k in exp if k in act and exp[k] != act[k]][:3]
        assert not (missing or extra or wrong), f"{part}: missing={missing} extra={extra} wrong={wrong}"
