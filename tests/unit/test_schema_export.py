"""The exported JSON Schema and the decoder give the same verdict on every record we know of.

``readside schema`` publishes the contract for producers (``envelope_json_schema``). Run with a
real validator (``jsonschema``) over the poison corpora (``tests/poison.py``, the integration
corpus of ``tests/integration/test_poison.py``, the invalid records of ``test_schemas.py``) and
over valid streams from ``readside.load`` and random field values (hypothesis), its verdict equals ``decode``'s — except for the rules
``readside.schemas.envelope.NOT_IN_JSON_SCHEMA`` names, each case of which is listed here with its rule
(and must really differ: the list cannot rot).
"""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from readside.load import Record, mixed_stream
from readside.schemas import TOPICS, InvalidEvent, UnknownEvent, decode, envelope_json_schema
from readside.schemas._base import RFC3339_PATTERN, parse_rfc3339
from readside.schemas.envelope import NOT_IN_JSON_SCHEMA
from tests.integration.test_poison import poison_corpus
from tests.poison import POISON
from tests.unit.test_schemas import EXAMPLES, INVALID, _json, rec

VALIDATORS: dict[str, Draft202012Validator] = {}


def _validator(topic: str) -> Draft202012Validator:
    if topic not in VALIDATORS:
        schema = envelope_json_schema(topic)
        Draft202012Validator.check_schema(schema)
        VALIDATORS[topic] = Draft202012Validator(schema)
    return VALIDATORS[topic]


def decoder_verdict(topic: str, key: bytes | None, value: bytes | None) -> str:
    try:
        return "skip" if isinstance(decode(topic, key, value), UnknownEvent) else "valid"
    except InvalidEvent:
        return "invalid"


def schema_verdict(topic: str, value: bytes | None) -> str:
    try:
        document = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        return "invalid"
    if value is None:
        return "invalid"
    return "valid" if _validator(topic).is_valid(document) else "invalid"


# case id -> the NOT_IN_JSON_SCHEMA rule that makes the verdicts differ
DIFFERENCES = {
    # test_schemas.INVALID
    "occurred-at-before-year-1": "utc-range",
    "occurred-at-after-9999": "utc-range",
    "created-at-after-9999": "utc-range",
    "read-up-to-before-year-1": "utc-range",
    "impossible-date": "calendar",
    "key-mismatch": "record-key",
    "key-none": "record-key",
    "key-empty": "record-key",
    "key-not-utf8": "record-key",
    "key-is-requester": "record-key",
    "schema-version-float": "integral-float",
    "float-amount": "integral-float",
    # tests.poison.POISON, on every topic
    "poison:record key mismatch": "record-key",
    "poison:unknown type": "unknown-type",
    # the integration corpus, by event id
    "integration:px-2": "utc-range",
    "integration:px-3": "utc-range",
    "integration:px-4": "utc-range",
    "integration:px-5": "utc-range",
    "integration:px-22": "record-key",
}


def _cases() -> list[Any]:
    cases = [pytest.param(topic, key, value, id=param_id) for param_id, (topic, key, value, _) in
             ((p.id, p.values) for p in INVALID)]
    good = mixed_stream(1, seed=5)
    for kind in POISON:
        for topic in {r.topic for r in good}:
            template = next(r for r in good if r.topic == topic)
            key, value = kind.make(template, f"poison-{topic}")
            cases.append(pytest.param(topic, key, value, id=f"poison:{kind.name}:{topic}"))
    for i, (topic, key, value, _) in enumerate(poison_corpus(good)):
        cases.append(pytest.param(topic, key, value, id=f"integration:{_event_id(value) or i}"))
    for event_type, (topic, key, _, _) in EXAMPLES.items():
        cases.append(pytest.param(topic, key, rec(event_type), id=f"example:{event_type}"))
    return cases


def _event_id(value: bytes | None) -> str | None:
    try:
        found = orjson.loads(value or b"").get("event_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return found if isinstance(found, str) and found.startswith("px-") else None


def _rule(case_id: str) -> str | None:
    if case_id.startswith("poison:"):
        case_id = case_id.rsplit(":", 1)[0]
    return DIFFERENCES.get(case_id)


def test_every_listed_difference_names_a_documented_rule() -> None:
    assert set(DIFFERENCES.values()) <= set(NOT_IN_JSON_SCHEMA)


@pytest.mark.parametrize(("topic", "key", "value"), _cases())
def test_schema_and_decoder_agree(request: pytest.FixtureRequest, topic: str, key: bytes | None,
                                  value: bytes | None) -> None:
    case_id = request.node.callspec.id
    decoded, validated = decoder_verdict(topic, key, value), schema_verdict(topic, value)
    rule = _rule(case_id)
    if rule is None:
        assert decoded == validated, f"decoder: {decoded}, schema: {validated}"
    else:  # the decoder is the stricter one, for the reason the rule documents
        assert (decoded, validated) != ("valid", "invalid")
        assert decoded != validated, f"listed under {rule!r} but both say {decoded}"


@pytest.mark.parametrize("seed", range(4))
def test_generated_streams_are_valid_to_both(seed: int) -> None:
    stream: list[Record] = mixed_stream(1, seed=seed)
    assert len({r.value["type"] for r in stream}) >= 15
    for record in stream:
        value = orjson.dumps(record.value)
        assert decoder_verdict(record.topic, record.key.encode(), value) == "valid"
        assert list(_validator(record.topic).iter_errors(orjson.loads(value))) == [], record.value["type"]


def _integral_floats(value: Any) -> bool:
    if isinstance(value, float):
        return value.is_integer()
    if isinstance(value, dict):
        return any(_integral_floats(v) for v in value.values())
    if isinstance(value, list):
        return any(_integral_floats(v) for v in value)
    return False


@settings(database=None, max_examples=300)
@given(data=st.data(), junk=_json)
def test_any_field_value_gets_the_same_verdict(data: st.DataObject, junk: Any) -> None:
    event_type = data.draw(st.sampled_from(sorted(EXAMPLES)))
    topic, key, _, payload = EXAMPLES[event_type]
    field = data.draw(st.sampled_from([*sorted(payload), "event_id", "occurred_at", "schema_version"]))
    assume(not _integral_floats(junk))  # "integral-float": 5.0 is 5 to JSON Schema
    if field in payload:
        value = rec(event_type, {field: junk})
        if field == TOPICS[topic][0] and isinstance(junk, str):
            key = junk.encode()  # the key follows the aggregate id ("record-key" is not the point here)
    else:
        value = rec(event_type, **{field: junk})
    assert decoder_verdict(topic, key, value) == schema_verdict(topic, value)


_near_times = st.from_regex(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})?",
    fullmatch=True,
) | st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-00:01", "2027-02-29T00:00:00Z",
                     "2028-02-29T00:00:00Z", "2026-04-31T00:00:00Z", "0000-01-01T00:00:00Z"])


@settings(database=None, max_examples=300)
@given(data=st.data(), text=_near_times)
def test_times_get_the_same_verdict_but_for_calendar_and_utc_range(data: st.DataObject, text: str) -> None:
    event_type = data.draw(st.sampled_from(sorted(EXAMPLES)))
    topic, key, _, payload = EXAMPLES[event_type]
    times = [f for f, v in payload.items() if isinstance(v, str) and v.startswith("2026-")]
    field = data.draw(st.sampled_from([*times, "occurred_at"]))
    value = rec(event_type, {field: text}) if field in payload else rec(event_type, occurred_at=text)
    decoded, validated = decoder_verdict(topic, key, value), schema_verdict(topic, value)
    if re.search(RFC3339_PATTERN, text) and parse_rfc3339(text) is None:
        assert (decoded, validated) == ("invalid", "valid")  # "calendar" or "utc-range"
    else:
        assert decoded == validated, text


def test_a_client_message_without_sender_is_invalid_to_the_schema_too() -> None:
    # issue 11: it passed the exported schema and was dead-lettered
    schema = Draft202012Validator(envelope_json_schema())
    for sender_type, ok in (("client", False), ("provider", False), ("system", True)):
        value = rec(changes={"sender_id": None, "sender_type": sender_type})
        assert schema.is_valid(orjson.loads(value)) is ok, sender_type
        assert decoder_verdict("threads.events", b"t-1", value) == ("valid" if ok else "invalid")
    assert schema.is_valid(orjson.loads(rec(changes={"sender_type": "system"})))


def test_the_schema_is_per_topic_when_asked() -> None:
    whole = envelope_json_schema()
    payments = envelope_json_schema("payments.events")
    assert [v["properties"]["type"]["const"] for v in payments["oneOf"]] == ["payment.received"]
    assert len(whole["oneOf"]) == 19
    with pytest.raises(ValueError, match="unknown topic"):
        envelope_json_schema("nope.events")
