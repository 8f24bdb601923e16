"""The documented publisher (docs/publishing.md) end to end: events published with
``schemas.Publisher`` against the real broker, the token it returns sent as ``X-Readside-After``,
and the API's answer holds the event — read-your-writes without assembling positions by hand.
The README's "Publish your first event" runs here as written."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from readside.schemas import Published, Publisher, read_after
from tests.e2e.conftest import Stack
from tests.support import auth, projection_topics, started, wait_caught_up


def _publish(stack: Stack, *events: tuple[str, dict[str, Any], str | None]) -> list[Published]:
    """Publish ``(type, payload, event_id)`` in order through one ``Publisher.connect``."""
    s = stack.settings

    async def go() -> list[Published]:
        async with Publisher.connect(s.kafka_bootstrap, prefix=s.topic_prefix) as publisher:
            return [await publisher.publish(t, payload, event_id=eid) for t, payload, eid in events]

    return asyncio.run(go())


def _thread(stack: Stack, tid: str, client: str) -> None:
    rec = started(tid, client=client, provider="u-pub-pro", at=0)
    _publish(stack, (rec.value["type"], rec.value["payload"], None))
    s = stack.settings
    # the projector has joined its group and applied the start: what follows is about the token
    wait_caught_up(s.database_url, s.kafka_bootstrap, "threads", projection_topics(s, "threads"))


def _message(tid: str, mid: str, content: str) -> dict[str, Any]:
    return {"thread_id": tid, "message_id": mid, "sender_id": "u-pub-pro", "sender_type": "provider",
            "message_type": "user", "visible_to": "both", "content": content, "system_key": None,
            "system_args": None, "attachment": None, "created_at": "2026-11-22T10:05:00Z"}


def test_the_returned_token_reads_the_published_event(stack: Stack) -> None:
    _thread(stack, "t-pub-1", "u-pub-1")
    [published] = _publish(stack, ("message.created", _message("t-pub-1", "m-1", "published via Publisher"), None))
    assert published.topic == stack.settings.topic_prefix + "threads.events"
    with stack.client() as http:
        r = http.get("/v1/threads/preview", headers=auth(stack, "u-pub-1") | {"X-Readside-After": published.token})
    assert r.status_code == 200, r.text
    assert r.headers["x-readside-consistency"] == "caught-up"
    [item] = r.json()["items"]
    assert item["last_message_preview"] == "published via Publisher"


def test_a_retry_with_the_same_event_id_is_applied_once(stack: Stack) -> None:
    _thread(stack, "t-pub-2", "u-pub-2")
    event_id = str(uuid.uuid4())
    # The first send's outcome was "unknown" (say, a timeout): the caller sends again, same id.
    first, retry = _publish(
        stack,
        ("message.created", _message("t-pub-2", "m-1", "sent twice"), event_id),
        ("message.created", _message("t-pub-2", "m-1", "sent twice"), event_id),
    )
    assert first.event_id == retry.event_id == event_id and retry.offset > first.offset
    with stack.client() as http:
        r = http.get("/v1/threads/preview", headers=auth(stack, "u-pub-2") | {"X-Readside-After": retry.token})
    assert r.status_code == 200 and r.headers["x-readside-consistency"] == "caught-up", r.text
    [item] = r.json()["items"]
    assert item["last_message_preview"] == "sent twice" and item["meta"]["message_count"] == 1


def test_read_after_covers_events_on_several_topics(stack: Stack) -> None:
    _thread(stack, "t-pub-3", "u-pub-3")
    published = _publish(
        stack,
        ("message.created", _message("t-pub-3", "m-1", "first"), None),
        ("message.created", _message("t-pub-3", "m-2", "second") | {"created_at": "2026-11-22T10:06:00Z"}, None),
        ("payment.received", {"thread_id": "t-pub-3", "payment_id": "pay-1", "amount_cents": 5000,
                              "currency": "ZAR", "received_at": "2026-11-22T10:07:00Z"}, None),
    )
    token = read_after(*published)
    assert token.count(",") == 1  # one position per (topic, partition): the two messages share one
    with stack.client() as http:
        r = http.get("/v1/threads/preview", headers=auth(stack, "u-pub-3") | {"X-Readside-After": token})
    assert r.status_code == 200 and r.headers["x-readside-consistency"] == "caught-up", r.text
    [item] = r.json()["items"]
    assert item["last_message_preview"] == "second" and item["meta"]["paid"] is True


def _readme_first_event() -> str:
    """The Python block of the README's "Publish your first event"."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Publish your first event", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readmes_first_event_reads_back_with_its_token(stack: Stack, tmp_path: Path) -> None:
    _thread(stack, "t-pub-4", "u-pub-4")  # the projector is running (as beside the demo)
    script = tmp_path / "first_event.py"
    script.write_text(_readme_first_event())
    done = subprocess.run([sys.executable, str(script)], env={**os.environ, **stack.settings.to_env()},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    after = done.stdout.strip()
    assert after.startswith(stack.settings.topic_prefix + "threads.events:")
    with stack.client() as http:
        r = http.get("/v1/threads/preview", headers=auth(stack, "u-first") | {"X-Readside-After": after})
    assert r.status_code == 200 and r.headers["x-readside-consistency"] == "caught-up", r.text
    [item] = r.json()["items"]
    assert item["last_message_preview"] == "Hello from my first event" and item["unread_count"] == 1


def test_read_your_writes_says_when_the_awaited_event_was_dead_lettered(stack: Stack) -> None:
    """A write the projector refused (here: a record that is not JSON, as a broken producer would
    send) is not 'caught-up': the client learns its write failed, and which position."""
    from aiokafka import AIOKafkaProducer

    _thread(stack, "t-pub-dl", "u-pub-dl")
    s = stack.settings

    async def send_bad() -> str:
        producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap)
        await producer.start()
        try:
            meta = await producer.send_and_wait(s.topic_prefix + "threads.events", b"{not json", key=b"t-pub-dl")
        finally:
            await producer.stop()
        return f"{meta.topic}:{meta.partition}:{meta.offset}"

    bad = asyncio.run(send_bad())
    [good] = _publish(stack, ("message.created", _message("t-pub-dl", "m-ok", "this one applies"), None))
    with stack.client() as http:
        r = http.get("/v1/threads/preview", headers=auth(stack, "u-pub-dl") | {"X-Readside-After": f"{bad},{good.token}"})
        assert r.status_code == 200, r.text
        assert r.headers["x-readside-consistency"] == "dead-lettered"
        assert r.headers["x-readside-dead-letters"] == bad
        only_good = http.get("/v1/threads/preview", headers=auth(stack, "u-pub-dl") | {"X-Readside-After": good.token})
        assert only_good.headers["x-readside-consistency"] == "caught-up"
        assert "x-readside-dead-letters" not in only_good.headers
