"""The decoder's fast path (``readside.schemas._fast``, msgspec) gives the verdicts of the pydantic
reference (``readside.schemas.envelope.reference_decode``): the same events (payload models
equal, ``model_fields_set`` included), the same unknown events, and for every invalid record the
same reason. On the poison corpora, on the load streams' records, and on hypothesis' mutations of
them: random values of the right kind, values of any kind, missing and extra fields, raw bytes.
"""

from __future__ import annotations

import functools
import json
import sys
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from readside.load import Record, provider_stream, request_stream, thread_stream, workflow_stream
from readside.schemas import PAYLOAD_TYPES, Event, InvalidEvent, UnknownEvent, _fast, decode
from readside.schemas.envelope import reference_decode
from tests.poison import POISON


def verdict(fn: Any, topic: str, key: bytes | None, value: bytes | None) -> tuple[Any, ...]:
    """What ``fn`` says of a record, as comparable values."""
    try:
        event = fn(topic, key, value)
    except InvalidEvent as exc:
        return ("invalid", exc.reason, exc.event_id, exc.type)
    if isinstance(event, UnknownEvent):
        return ("unknown", event.event_id, event.type)
    assert isinstance(event, Event)
    p = event.payload
    return ("event", event.event_id, event.type, event.occurred_at, event.occurred_at.tzinfo, type(p),
            p, p.__dict__, p.model_fields_set, p.__pydantic_extra__, p.__pydantic_private__, _nested(p))


def _nested(payload: Any) -> list[Any]:
    # nested models compare by value in `p == q`; their state and fields set too
    return [(type(v), v.__dict__, v.model_fields_set) for v in payload.__dict__.values() if hasattr(v, "model_fields_set")]


def assert_same_verdict(topic: str, key: bytes | None, value: bytes | None) -> tuple[Any, ...]:
    expected = verdict(reference_decode, topic, key, value)
    assert verdict(decode, topic, key, value) == expected
    fast = _fast.decode(topic, key, value)
    if fast is not None:  # the fast path answers only for valid events
        assert expected[0] == "event" and fast[:3] == expected[1:4]
    return expected


def test_every_registered_type_but_a_graph_has_a_fast_path() -> None:
    """A model the derivation does not know falls back to the models silently: list it here."""
    assert set(PAYLOAD_TYPES) - _fast.FAST_TYPES == {"workflow.version_saved"}


@functools.cache
def streams() -> list[Record]:
    return (thread_stream(threads=40, seed=7) + request_stream(requests=30, seed=7)
            + provider_stream(providers=30, seed=7) + workflow_stream(workflows=8, seed=7))


def test_the_load_streams_decode_alike_and_by_the_fast_path() -> None:
    for r in streams():
        key, value = r.key.encode(), orjson.dumps(r.value)
        assert assert_same_verdict(r.topic, key, value)[0] == "event"
        assert (_fast.decode(r.topic, key, value) is not None) == (r.value["type"] in _fast.FAST_TYPES)


def test_the_poison_corpus_gets_the_same_reasons() -> None:
    from tests.integration.test_poison import poison_corpus

    good = streams()
    cases = [(t, k, v) for t, k, v, _ in poison_corpus(good)]
    templates = {r.value["type"]: r for r in good}.values()
    cases += [(g.topic, *kind.make(g, "e-poison")) for kind in POISON for g in templates]
    for topic, key, value in cases:
        assert_same_verdict(topic, key, value)


def test_the_unit_corpora_get_the_same_verdicts() -> None:
    from tests.unit.test_schema_export import _cases
    from tests.unit.test_schemas import INVALID

    for param in [*INVALID, *_cases()]:
        topic, key, value = param.values[:3]
        assert_same_verdict(topic, key, value)


# -- hypothesis: mutations of the streams' records ------------------------------------------------

ID_TEXT = st.text(st.characters(codec="utf-8"), max_size=210) | st.sampled_from(
    ["", "a" * 200, "a" * 201, "é" * 200, "x\x7f", "x\x85", "x\n"]
)
JSON_LEAF = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
             | st.text(st.characters(codec="utf-8")) | st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1, 5.0, 1e300]))
JSON = st.recursive(
    JSON_LEAF, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6
)
OFFSETS = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-23, minutes=-59)), None])


@st.composite
def times(draw: st.DrawFn) -> str:
    at = draw(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)))
    tz = draw(OFFSETS)
    text = at.replace(tzinfo=tz).isoformat(timespec=draw(st.sampled_from(["seconds", "milliseconds", "microseconds"])))
    if tz is UTC and draw(st.booleans()):
        text = text.replace("+00:00", "Z")
    if draw(st.booleans()):
        text = text + draw(st.sampled_from(["", "0", "123"]))  # longer fractions, or garbage after an offset
    return text.lower() if draw(st.integers(0, 9)) == 0 else text


def same_kind(value: Any) -> st.SearchStrategy[Any]:
    """A random value of the kind ``value`` is (a time for a time), sometimes of another kind."""
    if isinstance(value, bool):
        kind: st.SearchStrategy[Any] = st.booleans()
    elif isinstance(value, int):
        kind = st.integers() | st.sampled_from([0, 1, 5, 6, -1, 2**63 - 1, 2**63, 2**64, 2**64 - 1])
    elif isinstance(value, str) and len(value) >= 20 and value[4] == "-" and value[10] == "T":
        kind = times()
    elif isinstance(value, str):
        kind = ID_TEXT
    else:
        kind = JSON
    return st.one_of(kind, kind, kind, JSON)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            found += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value[:3]):
            found += _paths(v, (*prefix, i))
    return found


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        doc = doc[part]
    return doc


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes | None, bytes | None]:
    good = draw(st.sampled_from(streams()))
    doc = orjson.loads(orjson.dumps(good.value))
    key: bytes | None = good.key.encode()
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        parent, last = _parent(doc, path), path[-1]
        action = draw(st.sampled_from(["value", "value", "value", "drop", "extra", "type"]))
        if action == "value":
            parent[last] = draw(same_kind(parent[last]))
            if last in ("thread_id", "request_id", "provider_id", "workflow_id") and draw(st.booleans()):
                key = parent[last].encode(errors="surrogatepass") if isinstance(parent[last], str) else key
        elif action == "drop" and isinstance(parent, dict):
            del parent[last]
        elif action == "extra" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["extra", "status", "type", "payload", "x" * 50]))] = draw(JSON)
        elif action == "type":
            doc["type"] = draw(st.sampled_from([*PAYLOAD_TYPES, "thread.unknown", ""]))
    try:
        value = orjson.dumps(doc)
    except orjson.JSONEncodeError:  # an int beyond 64 bits
        value = json.dumps(doc).encode()
    if draw(st.integers(0, 9)) == 0:  # raw bytes: cut, or a byte changed
        at = draw(st.integers(0, len(value) - 1))
        value = value[:at] if draw(st.booleans()) else value[:at] + bytes([draw(st.integers(0, 255))]) + value[at + 1:]
    if draw(st.integers(0, 19)) == 0:
        key = draw(st.none() | st.binary(max_size=8))
    return good.topic, key, value


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_records_get_the_same_verdict(record: tuple[str, bytes | None, bytes | None]) -> None:
    assert_same_verdict(*record)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(range(len(streams()))).flatmap(lambda i: st.tuples(st.just(i), st.data())))
def test_valid_records_with_random_values_decode_alike(drawn: tuple[int, st.DataObject]) -> None:
    """Leaves replaced by valid values of their kind: the fast path takes the record."""
    i, data = drawn
    good = streams()[i]
    doc = orjson.loads(orjson.dumps(good.value))
    for path in _paths(doc["payload"], ("payload",)):
        parent, last = _parent(doc, path), path[-1]
        value = parent[last]
        if isinstance(value, str) and last not in ("thread_id", "request_id", "provider_id", "workflow_id"):
            if len(value) >= 20 and value[10] == "T":
                at = data.draw(st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 1, 1), timezones=st.just(UTC)))
                parent[last] = at.isoformat().replace("+00:00", "Z")
            elif last in ("content", "name", "title", "url", "category", "location"):
                parent[last] = data.draw(st.text(st.characters(codec="utf-8"), max_size=40))
        elif type(value) is int and last not in ("rating",):
            parent[last] = data.draw(st.integers(-(2**63), 2**63 - 1))
    key, value = good.key.encode(), orjson.dumps(doc)
    assert assert_same_verdict(good.topic, key, value)[0] == "event"
    assert (_fast.decode(good.topic, key, value) is not None) == (good.value["type"] in _fast.FAST_TYPES)


@pytest.mark.parametrize("depth", [3, 100, 1024, 1025])
def test_deep_any_values_get_the_same_verdict(depth: int) -> None:
    """orjson reads at most 1024 levels: a deeper record is not JSON to the reference."""
    good = next(r for r in streams() if r.value["type"] == "message.created")
    doc = {**good.value, "payload": {**good.value["payload"], "system_args": "ARGS"}}
    args = b'{"a":' + b"[" * (depth - 3) + b"]" * (depth - 3) + b"}" if depth > 3 else b"{}"
    value = orjson.dumps(doc).replace(b'"ARGS"', args)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(5000)  # comparing the decoded lists recurses once per level
    try:
        kind = assert_same_verdict(good.topic, good.key.encode(), value)[0]
    finally:
        sys.setrecursionlimit(limit)
    assert kind == ("event" if depth <= 1024 else "invalid")


def test_raw_values_are_read_at_their_depth_in_the_record() -> None:
    load = _fast._raw_json((dict, type(None)), 2)  # `system_args`: in the envelope, in the payload
    assert load(msgspec.Raw(b'{"a":' + b"[" * 1021 + b"]" * 1021 + b"}")) is not None
    with pytest.raises(_fast._Doubt):  # 1025 levels in the whole record: orjson refuses it
        load(msgspec.Raw(b'{"a":' + b"[" * 1022 + b"]" * 1022 + b"}"))
    with pytest.raises(_fast._Doubt):
        load(msgspec.Raw(b"[]"))
    assert load(msgspec.Raw(b"null")) is None


@pytest.mark.parametrize(
    "changes",
    [{"amount_cents": 2**63 - 1}, {"amount_cents": 2**63}, {"amount_cents": 2**64 - 1}, {"amount_cents": -(2**63)}],
)
def test_ints_at_orjsons_bounds(changes: dict[str, Any]) -> None:
    good = next(r for r in streams() if r.value["type"] == "payment.received")
    value = orjson.dumps({**good.value, "payload": {**good.value["payload"], **changes}})
    assert assert_same_verdict(good.topic, good.key.encode(), value)[0] == "event"


@pytest.mark.parametrize("text", ["a\\u0000b", "a\\u007fb", "a\\u0085b", "a\x7fb", "a\xc2\x85b", "a\\nb"])
def test_ids_with_control_characters_are_left_to_the_reference(text: str) -> None:
    good = next(r for r in streams() if r.value["type"] == "thread.pinned")
    value = orjson.dumps(good.value).replace(b'"user_id":"', b'"user_id":"' + text.encode("latin-1"), 1)
    assert assert_same_verdict(good.topic, good.key.encode(), value)[0] == "invalid"
    assert _fast.decode(good.topic, good.key.encode(), value) is None


@pytest.mark.parametrize(
    "extra",
    [b'"\xff"', b'"\xed\xa0\x80"', b"1e400", b"-1e400", b"1" * 400, b'"\\ud83d\\ude00"', b"[[[]]]", b'{"a":null}'],
)
@pytest.mark.parametrize("where", [b"{", b'"payload":{'])
def test_fields_no_model_names_get_the_same_verdict(extra: bytes, where: bytes) -> None:
    """msgspec skips an unknown field unchecked; orjson refuses invalid UTF-8 or a number beyond
    a double in it. Such records take the reference path."""
    good = next(r for r in streams() if r.value["type"] == "payment.received")
    value = orjson.dumps(good.value).replace(where, where + b'"extra":' + extra + b",", 1)
    assert b'"extra":' in value
    assert assert_same_verdict(good.topic, good.key.encode(), value)[0] in ("event", "invalid")


@pytest.mark.parametrize("topic_type", ["payment.received", "message.created"])
def test_a_record_without_type_gets_the_same_reason(topic_type: str) -> None:
    """``payments.events`` carries one type: msgspec does not require the tag of a lone struct."""
    good = next(r for r in streams() if r.value["type"] == topic_type)
    value = orjson.dumps({k: v for k, v in good.value.items() if k != "type"})
    assert assert_same_verdict(good.topic, good.key.encode(), value)[0] == "invalid"
