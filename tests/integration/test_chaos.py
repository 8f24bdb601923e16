"""Chaos at the goal's scale (issue 9 §5): the line never stops and the tables equal the fold.

One stream over every topic — duplicates (the same ``event_id`` re-sent, a few with other
content), reorders (topics interleaved at random; threads, requests and providers fully shuffled,
their folds being order-independent; payments and workflows in per-key order), every kind of
``tests.poison.POISON`` on every topic and the corpus of ``tests/integration/test_poison.py`` — is
published chunk by chunk while projector *processes* (all four projections each) are

- killed with ``kill -9`` at least ``KILLS`` times, preferably while the victim holds an open write
  transaction (a batch in flight), and restarted;
- rebalanced ``REBALANCES`` times: a process joins or leaves the groups gracefully, the group
  going from one to two to three processes and back;
- cut off from PostgreSQL (``pg_terminate_backend`` of every projector connection) and from Redis
  (the embedded Valkey the cache versions live in is stopped while chunks are projected, then
  started again on the same port).

Then every table of every projection is compared, row by row and on every column
(``readside.projector.verify.compare``, the rules of ``--verify``), with the good events applied once, in
one clean pass, into a schema of its own; and the thread, request, provider and workflow tables
are compared with the pure folds (what the other tests compare). Zero rows may differ; the dedupe
table must hold exactly the good events' ids (none lost, none twice); every poison record must be a
dead letter with its reason, and every unknown type counted once.

Two concessions to the embedded broker, neither to the projector: a process joins, leaves or is
killed only when every consumer group is stable with exactly the live processes as members (see
``_settled``: tansu never expires a member that dies in the middle of a rebalance), and the
processes' consumer sessions last 3 s instead of aiokafka's 10 (see ``LAUNCH``), so that a killed
process's partitions move on within seconds.

The run prints its figures (seed, events, kills, rebalances, rows compared, differences). A
failure is reproduced with ``READSIDE_CHAOS_SEED=<the printed seed>``: the stream, the schedule and
the victims follow the seed, the exact moments follow the machine.
"""

from __future__ import annotations

import asyncio
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import redis
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from readside.embedded import EmbeddedValkey
from readside.load import MAX_MESSAGE_BYTES, TOPICS, Record, mixed_stream
from readside.projector.verify import compare
from readside.readmodels.registry import REGISTRY
from readside.shared.settings import Settings
from tests.integration.test_poison import poison_corpus
from tests.poison import POISON
from tests.support import as_event, checkpoints, merge_keeping_order, wait_caught_up, wait_until

pytestmark = pytest.mark.slow

KILLS = 20
REBALANCES = 10
PG_KILLS = 3
SCALE = 4  # mixed_stream: about 800 events per unit
DUPLICATES = 0.06  # of the good events, re-sent later (a third of them right after)
ALTERED = 0.25  # of those duplicates of message.created: same id, other content (first wins)
POISON_EACH = 2  # records of every poison kind on every topic
SHUFFLED = ("threads.events", "requests.events", "providers.events")  # order-independent folds
MAX_PROCESSES = 3
REF_SCHEMA = "chaos_ref"
VERBOSE = bool(os.environ.get("READSIDE_CHAOS_VERBOSE"))  # the projectors log at DEBUG


def _seed() -> int:
    configured = os.environ.get("READSIDE_CHAOS_SEED", "").strip()
    return int(configured) if configured else random.SystemRandom().randrange(1_000_000)


# -- the stream ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Item:
    """One record to publish, as bytes: a good event (``record``), a copy of one, or poison
    (``bad``: a dead letter whose reason contains ``reason``, or, without one, an unknown type)."""

    topic: str  # the base topic name
    key: bytes | None
    value: bytes | None
    kind: str  # "good", "duplicate", "altered duplicate", or the poison's name
    record: Record | None = None
    bad: bool = False
    reason: str | None = None


def build_stream(rng: random.Random, scale: int) -> list[Item]:
    good = mixed_stream(scale, seed=rng.randrange(1 << 30))
    # The corpus of issue 9 §1, but for its fold-error record on thread pz-1: that one fails only
    # once its thread has started, so under a shuffle the failure could land on a good event.
    corpus = [c for c in poison_corpus(good) if c[1] != b"pz-1"]
    out: list[Item] = []
    for topic in TOPICS:
        records = [r for r in good if r.topic == topic]
        if topic in SHUFFLED:
            rng.shuffle(records)
        # a position per item; sorting on it interleaves duplicates and poison with the good events
        placed: list[tuple[float, Item]] = [
            (i, Item(topic, r.key.encode(), orjson.dumps(r.value), "good", record=r)) for i, r in enumerate(records)
        ]
        n = len(records)
        for i in rng.sample(range(n), k=max(1, int(n * DUPLICATES))):
            r = records[i]
            at = rng.uniform(i, min(n, i + 3)) if rng.random() < 0.33 else rng.uniform(i, n)
            value, kind = r.value, "duplicate"
            if value["type"] == "message.created" and rng.random() < ALTERED:
                value = {**value, "payload": {**value["payload"], "content": "a re-send with other content"}}
                kind = "altered duplicate"
            # same key, same partition, after the original: the original is first, whatever follows
            placed.append((at + 1e-6, Item(topic, r.key.encode(), orjson.dumps(value), kind, record=r)))
        for poison in POISON:
            for _ in range(POISON_EACH):
                template = records[rng.randrange(n)]
                key, value = poison.make(template, f"poison-{rng.getrandbits(64):016x}")
                placed.append((rng.uniform(0, n), Item(topic, key, value, poison.name, bad=True, reason=poison.reason)))
        for corpus_topic, key, value, hint in corpus:
            if corpus_topic == topic:
                placed.append((rng.uniform(0, n), Item(topic, key, value, f"corpus: {hint}", bad=True, reason=hint)))
        out += [item for _, item in sorted(placed, key=lambda p: p[0])]
    # topics interleave at random (a payment before its thread, a reader's mark before messages)
    return merge_keeping_order(out, lambda item: item.topic, rng)  # type: ignore[arg-type, return-value]


def good_events(items: list[Item]) -> list[Record]:
    """The good events in publish order, first copy of each ``event_id`` only."""
    seen: set[str] = set()
    out = []
    for item in items:
        if item.kind == "good" and item.record is not None and item.record.value["event_id"] not in seen:
            seen.add(item.record.value["event_id"])
            out.append(item.record)
    return out


class Feeder:
    """Publishes the stream on a thread of its own, ``feed(n)`` records at a time, in order; keeps
    where each poison record landed (its dead letter's key)."""

    def __init__(self, settings: Settings, items: list[Item]) -> None:
        self.settings, self.items = settings, items
        self.sent = 0
        self.placed: list[tuple[Item, str, int, int]] = []  # (poison item, topic, partition, offset)
        self.error: BaseException | None = None
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()

    def feed(self, count: int) -> None:
        self._queue.put(count)

    def close(self) -> None:
        self._queue.put(None)

    def drain(self) -> None:
        """Publish the rest and wait until the broker has acknowledged everything."""
        self._queue.put(len(self.items))
        self._queue.put(None)
        self._thread.join(120)
        assert not self._thread.is_alive(), "the publisher did not finish within 120 s"
        if self.error is not None:
            raise self.error
        assert self.sent == len(self.items)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # noqa: BLE001 - re-raised in drain()
            self.error = exc

    async def _run(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap, max_request_size=MAX_MESSAGE_BYTES, linger_ms=5
        )
        await producer.start()
        try:
            while (count := await asyncio.to_thread(self._queue.get)) is not None:
                chunk = self.items[self.sent : self.sent + count]
                futures = [
                    await producer.send(self.settings.topic_prefix + i.topic, i.value, key=i.key) for i in chunk
                ]
                for item, meta in zip(chunk, await asyncio.gather(*futures)):
                    if item.bad:
                        self.placed.append((item, meta.topic, meta.partition, meta.offset))
                self.sent += len(chunk)
        finally:
            await producer.stop()


# -- the processes ---------------------------------------------------------------------------

# ``readside projector`` with its consumers' session timeout lowered from aiokafka's 10 s to 3 s:
# the partitions of a process killed with -9 wait for its session to expire (and a process joining
# meanwhile waits for it too), so 20 kills fit in a few minutes. Correctness never depends on it.
LAUNCH = (
    # as the console script does (readside.run): SIGTERM while still importing is a clean stop
    "import signal, sys; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); "
    "import functools, aiokafka, readside.projector.engine as engine; "
    "assert engine.AIOKafkaConsumer is aiokafka.AIOKafkaConsumer, 'the engine no longer names AIOKafkaConsumer'; "
    "engine.AIOKafkaConsumer = functools.partial("
    "aiokafka.AIOKafkaConsumer, session_timeout_ms=3000, heartbeat_interval_ms=1000); "
    "from readside.cli import main; raise SystemExit(main(%r))"
)


class Projector:
    """``readside projector`` (all projections) as a process; its PostgreSQL sessions carry its
    name as ``application_name``, so the chaos can see its transactions and end its sessions."""

    def __init__(self, name: str, settings: Settings, logs: Path) -> None:
        self.name, self.log = name, logs / f"{name}.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", LAUNCH % (["-v"] * VERBOSE + ["projector"])],
                env={**os.environ, **settings.to_env(), "PGAPPNAME": name},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def assert_alive(self) -> None:
        assert self.proc.poll() is None, f"{self.name} exited by itself ({self.proc.returncode}):\n{self.tail()}"

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no log: {exc})"

    def joined(self) -> bool:
        """Whether it has been given partitions of every projection (it logs its seeks)."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return False
        return all(f"{name}: seeked to checkpoints" in text for name in REGISTRY)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not stop within 60 s of SIGTERM:\n{self.tail()}") from None
        assert code == 0, f"{self.name}: graceful stop failed ({code}):\n{self.tail()}"


def _in_transaction(conn: psycopg.Connection, name: str) -> bool:
    """Whether process ``name`` holds a transaction that has written (a batch in flight)."""
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = %s AND backend_xid IS NOT NULL",
        (name,),
    ).fetchone()
    return bool(row and row[0])


def _wait_for_transaction(conn: psycopg.Connection, name: str, within: float) -> bool:
    """Poll (briefly) for the moment ``name`` is mid-batch; False if it never was within ``within``."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if _in_transaction(conn, name):
            return True
        time.sleep(0.005)
    return False


def _groups(settings: Settings) -> list[tuple[str, str, int]]:
    """(group, state, members) of every projection's consumer group, as the broker describes them."""

    async def describe() -> list:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        await admin.start()
        try:
            # one group per request: the embedded broker mis-encodes an answer about several
            return [
                r for name in REGISTRY for r in await admin.describe_consumer_groups([f"{settings.group_prefix}.{name}"])
            ]
        finally:
            await admin.close()

    return [(g[1], g[2], len(g[5])) for response in asyncio.run(describe()) for g in response.groups]


def _settled(settings: Settings, procs: list[Projector]) -> bool:
    """Every process has partitions of every projection and every group is stable with exactly
    these processes as members: no rebalance under way, no member of a killed process left.

    The chaos waits for this before a process joins, leaves or is killed. A process killed in the
    middle of a rebalance is ordinary for Kafka (the coordinator expires it), but the embedded
    broker may then keep a dead leader's generation forever; the kills target batches anyway."""
    if not all(p.joined() for p in procs):
        return False
    groups = _groups(settings)
    return len(groups) == len(REGISTRY) and all(state == "Stable" and n == len(procs) for _, state, n in groups)


def _progress(db_url: str) -> int:
    return sum(sum(checkpoints(db_url, name).values()) for name in REGISTRY)


# -- the schedule ----------------------------------------------------------------------------

def schedule(rng: random.Random) -> list[str]:
    """The chaos actions in order: ``kill``, ``join``, ``leave``, ``pg``, ``redis-down``,
    ``redis-up``. Membership (one process at the start) walks within 1..3: two, then three
    processes joining and leaving."""
    moves = ["join", "join"]  # 1 -> 2 -> 3
    members = 3
    while len(moves) < REBALANCES:
        move = rng.choice(["join", "leave"]) if 1 < members < MAX_PROCESSES else "leave" if members == MAX_PROCESSES else "join"
        members += 1 if move == "join" else -1
        moves.append(move)
    others = ["kill"] * KILLS + ["pg"] * PG_KILLS
    rng.shuffle(others)
    actions: list[str] = []
    while moves or others:  # rebalances in order, spread among the rest
        if moves and (not others or rng.random() < len(moves) / (len(moves) + len(others))):
            actions.append(moves.pop(0))
        else:
            actions.append(others.pop())
    # Redis is down over a stretch of about a quarter of the run, starting in its first half
    down = rng.randrange(len(actions) // 6, len(actions) // 2)
    up = down + len(actions) // 4
    actions.insert(up, "redis-up")
    actions.insert(down, "redis-down")
    return actions


@dataclass
class Figures:
    seed: int
    records: int = 0
    good: int = 0
    duplicates: int = 0
    poison: int = 0
    kills: int = 0
    kills_mid_batch: int = 0
    joins: int = 0
    leaves: int = 0
    max_processes: int = 1
    pg_kills: int = 0
    pg_sessions_ended: int = 0
    redis_restarts: int = 0
    progress_while_redis_down: int = 0
    rows_compared: int = 0
    fold_entries_compared: int = 0
    differences: int = 0
    dead_letters: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        return (
            f"chaos seed={self.seed}: {self.records} records ({self.good} good events, {self.duplicates} duplicates, "
            f"{self.poison} poison); {self.kills} kill -9 ({self.kills_mid_batch} mid-batch), "
            f"{self.joins + self.leaves} rebalances ({self.joins} joins, {self.leaves} leaves, up to "
            f"{self.max_processes} processes), {self.pg_kills} PostgreSQL kills ({self.pg_sessions_ended} sessions), "
            f"{self.redis_restarts} Redis restart ({self.progress_while_redis_down} offsets projected while down); "
            f"{self.rows_compared} rows compared with the clean pass and {self.fold_entries_compared} with the "
            f"pure folds, {self.differences} differences; {self.dead_letters} dead letters; {self.seconds:.0f} s"
        )


# -- the reference and the comparisons ----------------------------------------------------------

async def _reference(db_url: str, good: list[Record]) -> None:
    """The good events applied once, in one clean pass, into ``REF_SCHEMA`` (the projections' own
    DDL and ``apply`` with ``search_path`` set there, as a rebuild does)."""
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True, options="-c TimeZone=UTC") as conn:
        await conn.execute(f"DROP SCHEMA IF EXISTS {REF_SCHEMA} CASCADE")
        await conn.execute(f"CREATE SCHEMA {REF_SCHEMA}")
        await conn.execute(f"SET search_path = {REF_SCHEMA}")
        for projection in REGISTRY.values():
            await conn.execute(projection.ddl)
            events = [as_event(r) for r in good if r.topic in projection.topics and projection.handles(r.value["type"])]
            async with conn.transaction():
                for i in range(0, len(events), 1000):
                    await projection.apply(conn, events[i : i + 1000])


async def _compare_with_reference(db_url: str) -> tuple[dict[str, int], list[str]]:
    """(rows compared per table, a line per differing table)."""
    rows: dict[str, int] = {}
    differing = []
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True, options="-c TimeZone=UTC") as conn:
        for projection in REGISTRY.values():
            for diff in await compare(conn, projection, "public", REF_SCHEMA):
                where = projection.check(diff.table).where  # the rows --verify compares
                cur = await conn.execute(f'SELECT count(*) FROM {REF_SCHEMA}."{diff.table}"' + (f" WHERE {where}" if where else ""))
                rows[f"{projection.name}.{diff.table}"] = (await cur.fetchone())[0]  # type: ignore[index]
                if diff.differs or diff.columns_only_live or diff.columns_only_new:
                    differing.append(
                        f"{projection.name}.{diff.table}: {diff.missing} missing, {diff.extra} extra, "
                        f"{diff.changed} changed, e.g. {diff.examples}"
                    )
    return rows, differing


def _compare_with_folds(db_url: str, good: list[Record]) -> tuple[int, list[str]]:
    """The checks the projection tests make against the pure folds, on this stream."""
    from tests.integration import test_providers_workflows_projection as pw
    from tests.integration import test_requests_projection as rq
    from tests.support import actual_threads, expected_threads

    pairs: list[tuple[str, Any, Any]] = []
    expected, actual = expected_threads(r for r in good if r.topic in ("threads.events", "payments.events")), actual_threads(db_url)
    pairs += [(f"threads.{part}", expected[part], actual[part]) for part in expected]
    expected, actual = rq.expected_tables([r for r in good if r.topic == "requests.events"]), rq.actual_tables(db_url)
    pairs += [(f"requests.{part}", expected[part], actual[part]) for part in expected]
    expected, actual = pw.expected_providers(good), pw.actual_providers(db_url)
    pairs += [(f"providers.{part}", expected[part], actual[part]) for part in expected]
    pairs.append(("workflows", pw.expected_workflows(good), pw.actual_workflows(db_url)))
    entries, differing = 0, []
    for name, exp, act in pairs:
        exp, act = dict(exp), dict(act)
        entries += len(exp)
        wrong = [k for k in exp.keys() | act.keys() if exp.get(k, "<missing>") != act.get(k, "<missing>")]
        if wrong:
            differing.append(f"{name}: {len(wrong)} differ, e.g. {[(k, exp.get(k), act.get(k)) for k in wrong[:2]]}")
    return entries, differing


# -- the test --------------------------------------------------------------------------------

def test_chaos_kills_rebalances_and_outages_over_one_poisoned_stream_leave_the_tables_equal_to_the_fold(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    began = time.monotonic()
    seed = _seed()
    fig = Figures(seed)
    print(f"\nchaos seed={seed} (reproduce: READSIDE_CHAOS_SEED={seed})", flush=True)
    rng = random.Random(seed)
    items = build_stream(rng, SCALE)
    good = good_events(items)
    fig.records, fig.good = len(items), len(good)
    fig.duplicates = sum(1 for i in items if "duplicate" in i.kind)
    fig.poison = sum(1 for i in items if i.bad)
    actions = schedule(rng)

    valkey = EmbeddedValkey(data_dir=tmp_path / "valkey")
    settings = replace(settings, redis_url=valkey.start(), batch_max=200)
    logs = tmp_path / "logs"
    logs.mkdir()
    names = iter(f"chaos-p{n}" for n in range(1000))
    procs: list[Projector] = [Projector(next(names), settings, logs)]
    feeder = Feeder(settings, items)
    chunk = len(items) // (len(actions) + 4) + 1
    watcher = psycopg.connect(settings.database_url, autocommit=True, application_name="chaos-driver")
    redis_down_at: list[int] = []

    def join() -> str:
        joiner = Projector(next(names), settings, logs)
        procs.append(joiner)
        fig.joins += 1
        return f"{joiner.name} joined"

    def leave() -> str:
        leaving = rng.choice(procs)
        procs.remove(leaving)
        leaving.stop()
        fig.leaves += 1
        return f"{leaving.name} left"

    def pg() -> str:
        _wait_for_transaction(watcher, rng.choice(procs).name, 3.0)
        (ended,) = watcher.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name LIKE 'chaos-p%%'"
        ).fetchone()  # type: ignore[misc]
        fig.pg_kills += 1
        fig.pg_sessions_ended += ended
        return f"{ended} PostgreSQL sessions ended"

    def redis_down() -> str:
        valkey.stop()
        redis_down_at.append(_progress(settings.database_url))
        return "Redis stopped"

    def redis_up() -> str:
        # the projector goes on while Redis is down
        wait_until(lambda: _progress(settings.database_url) > redis_down_at[0], 60, "progress while Redis is down")
        fig.progress_while_redis_down = _progress(settings.database_url) - redis_down_at[0]
        valkey.start()
        fig.redis_restarts += 1
        return "Redis started"

    chaos: dict[str, Callable[[], str]] = {
        "join": join, "leave": leave, "pg": pg, "redis-down": redis_down, "redis-up": redis_up,
    }
    try:
        feeder.feed(chunk * 2)
        for action in actions:
            for p in procs:
                p.assert_alive()
            if action in ("kill", "join", "leave"):
                wait_until(lambda: _settled(settings, procs), 90, f"the groups to settle ({_groups(settings)})")
            feeder.feed(chunk)
            if action == "kill":
                # a process that has partitions, mostly caught in a batch (a write transaction open),
                # sometimes at any moment (polling, committing to Kafka, bumping the cache)
                victim = rng.choice(procs)
                procs.remove(victim)
                if rng.random() < 0.75 and _wait_for_transaction(watcher, victim.name, 8.0):
                    threading.Event().wait(rng.uniform(0.0, 0.02))  # somewhere inside it
                    fig.kills_mid_batch += 1
                else:
                    threading.Event().wait(rng.uniform(0.0, 1.0))  # a random moment, by design
                victim.kill()
                fig.kills += 1
                procs.append(Projector(next(names), settings, logs))
                what = f"killed {victim.name}"
            else:
                before = _progress(settings.database_url)
                # pacing, not correctness: some of the chunk is being projected, or a moment passed
                try:
                    wait_until(lambda: _progress(settings.database_url) > before, 10, "progress")  # noqa: B023 - called here
                except AssertionError:
                    pass
                threading.Event().wait(rng.uniform(0.0, 0.8))  # a random moment, by design
                what = chaos[action]()
            fig.max_processes = max(fig.max_processes, len(procs))
            print(f"{time.monotonic() - began:6.1f}s {what:<24} processes {' '.join(p.name for p in procs):<30} "
                  f"published {feeder.sent}, projected {_progress(settings.database_url)}", flush=True)
        feeder.drain()
        for name, projection in REGISTRY.items():
            topics = [settings.topic_prefix + t for t in projection.topics]
            wait_caught_up(settings.database_url, settings.kafka_bootstrap, name, topics, timeout=180)
        for p in procs:
            p.assert_alive()
        # version bumps resumed after the restart (the restarted Redis started empty)
        client = redis.Redis.from_url(valkey.url)
        wait_until(lambda: any(client.scan_iter("rs:{*}:v", count=1000)), 30, "cache version bumps after the Redis restart")
        client.close()
        while procs:
            procs.pop().stop()
    finally:
        feeder.close()
        watcher.close()
        for p in procs:
            if p.proc.poll() is None:
                p.kill()
        valkey.stop()

    # -- the outcome ---------------------------------------------------------------------------
    asyncio.run(_reference(settings.database_url, good))
    tables, reference_diffs = asyncio.run(_compare_with_reference(settings.database_url))
    fig.rows_compared = sum(tables.values())
    fig.fold_entries_compared, fold_diffs = _compare_with_folds(settings.database_url, good)
    fig.differences = len(reference_diffs) + len(fold_diffs)

    problems: list[str] = reference_diffs + fold_diffs
    with psycopg.connect(settings.database_url) as conn:
        for name, projection in REGISTRY.items():
            want = {
                r.value["event_id"] for r in good if r.topic in projection.topics and projection.handles(r.value["type"])
            }
            have = {e for (e,) in conn.execute("SELECT event_id FROM dedupe WHERE projection = %s", (name,))}
            if have != want:
                problems.append(f"{name}: dedupe lost {len(want - have)} good event(s), holds {len(have - want)} other(s)")
            (skipped,) = conn.execute("SELECT skipped_unknown FROM projections WHERE name = %s", (name,)).fetchone()  # type: ignore[misc]
            unknown = sum(
                1 for i, *_ in feeder.placed if i.reason is None and i.topic in projection.topics
            )
            if skipped != unknown:
                problems.append(f"{name}: {skipped} unknown types counted, {unknown} sent")
        letters = {
            (p, t, part, off): reason
            for p, t, part, off, reason in conn.execute('SELECT projection, topic, partition, "offset", reason FROM dead_letters')
        }
    fig.dead_letters = len(letters)
    # a bad record is dead-lettered by every projection that reads its topic
    readers = {settings.topic_prefix + t: [n for n, p in REGISTRY.items() if t in p.topics]
               for p in REGISTRY.values() for t in p.topics}
    expected_letters = {
        (name, topic, part, off): item
        for item, topic, part, off in feeder.placed
        if item.reason is not None
        for name in readers[topic]
    }
    if letters.keys() != expected_letters.keys():
        problems.append(
            f"dead letters: {len(expected_letters.keys() - letters.keys())} poison record(s) missing, "
            f"{len(letters.keys() - expected_letters.keys())} unexpected"
        )
    for key, item in expected_letters.items():
        if key in letters and item.reason not in letters[key]:  # type: ignore[operator]
            problems.append(f"dead letter {key} ({item.kind}): reason {letters[key]!r}")
    fig.differences += len(problems) - len(reference_diffs) - len(fold_diffs)
    fig.seconds = time.monotonic() - began
    print(fig.line(), flush=True)
    print("rows compared per table: " + ", ".join(f"{t} {n}" for t, n in tables.items()), flush=True)
    with capsys.disabled():  # the figures in the plain `pytest` output too, for the record
        print(f"\n{fig.line()}", flush=True)
    assert not problems, f"seed {seed}:\n" + "\n".join(problems)
    assert fig.kills >= KILLS and fig.joins + fig.leaves >= REBALANCES and fig.max_processes == MAX_PROCESSES
    # the harness still sees batches in flight (typically 8 to 14 kills of 20 land inside one)
    assert fig.kills_mid_batch >= KILLS // 5, "the kills no longer catch batches in flight"
    assert fig.pg_sessions_ended > 0 and fig.redis_restarts == 1 and fig.progress_while_redis_down > 0
    assert fig.rows_compared > 0 and fig.differences == 0
