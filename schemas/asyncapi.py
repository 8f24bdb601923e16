"""The AsyncAPI 3.0 document of the event topics, generated from the registry (``readside asyncapi``).

One channel per topic of :data:`TOPICS` (address: ``READSIDE_TOPIC_PREFIX`` + the base name), one
message per event type with the envelope of :func:`envelope_json_schema` as its payload (the
payload models in ``components.schemas``) and the record key (the payload's aggregate id) as its
Kafka key; one ``<topic>.dlq`` channel per topic with the dead-letter headers. Readside's own
operations: it receives from each topic and sends to its ``.dlq``. Our own generator, not
FastStream's (docs/decisions.md, "AsyncAPI from the registry").
"""

from __future__ import annotations

import re
from typing import Any

from readside.schemas.envelope import NOT_IN_JSON_SCHEMA, envelope_json_schema
from readside.schemas.registry import PAYLOAD_TYPES, TOPICS

__all__ = ["DLQ_HEADERS", "asyncapi_document"]

KAFKA_BINDING = "0.5.0"

DLQ_HEADERS: dict[str, str] = {
    "readside-error": "why the record was dead-lettered (at most 1,000 characters, control characters escaped)",
    "readside-origin-topic": "the topic the record came from",
    "readside-origin-partition": "its partition (decimal)",
    "readside-origin-offset": "its offset (decimal)",
    "readside-pointer": "`dead-letter` on a pointer record that stands for a record too large for this topic "
                        "(or a tombstone without a key); the whole record is in `dead_letters`",
}


def _rewrite_refs(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: (re.sub(r"^#/\$defs/", "#/components/schemas/", v) if k == "$ref" else _rewrite_refs(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite_refs(v) for v in node]
    return node


def _name(topic: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", topic)


def asyncapi_document(*, prefix: str = "", version: str = "1") -> dict[str, Any]:
    whole = envelope_json_schema()
    variants = {v["properties"]["type"]["const"]: v for v in whole["oneOf"]}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for event_type, variant in variants.items():
        key_field = TOPICS[next(t for t, (_, types) in TOPICS.items() if event_type in types)][0]
        messages[event_type] = {
            "name": event_type,
            "title": event_type,
            "summary": (PAYLOAD_TYPES[event_type].__doc__ or event_type).strip().splitlines()[0].replace("``", "`"),
            "contentType": "application/json",
            "payload": _rewrite_refs({k: v for k, v in variant.items() if k != "title"}),
            "bindings": {"kafka": {
                "key": {"type": "string", "description": f"the payload's `{key_field}`, as UTF-8"},
                "bindingVersion": KAFKA_BINDING,
            }},
        }
    messages["dead_letter"] = {
        "name": "dead_letter",
        "title": "dead letter",
        "summary": "A record that failed validation or its fold: the original key and value, unchanged "
                   "(a value that may not be JSON; a tombstone stays a tombstone), or a pointer record",
        "headers": {"type": "object", "required": [h for h in DLQ_HEADERS if h != "readside-pointer"],
                    "properties": {h: {"type": "string", "description": d} for h, d in DLQ_HEADERS.items()}},
        "payload": {"description": "the original record value, as it came; or, with `readside-pointer`, "
                                   '{"dead_letter_id", "projection", "topic", "partition", "offset", "too_large", '
                                   '"tombstone", "value_bytes", "key_bytes"}'},
        "bindings": {"kafka": {"key": {"type": "string", "description": "the original key"},
                               "bindingVersion": KAFKA_BINDING}},
    }
    for topic, (key_field, carried) in TOPICS.items():
        name = _name(topic)
        types = [t for t in PAYLOAD_TYPES if t in carried]
        channels[name] = {
            "address": prefix + topic,
            "title": topic,
            "description": f"Events keyed by `{key_field}`; full history kept (`retention.ms=-1`). "
                           f"The address is `READSIDE_TOPIC_PREFIX` + `{topic}`.",
            "messages": {t: {"$ref": f"#/components/messages/{t}"} for t in types},
            "bindings": {"kafka": {"topic": prefix + topic, "bindingVersion": KAFKA_BINDING}},
        }
        channels[name + "_dlq"] = {
            "address": prefix + topic + ".dlq",
            "title": topic + ".dlq",
            "description": f"Dead letters of `{topic}`, written by the projector.",
            "messages": {"dead_letter": {"$ref": "#/components/messages/dead_letter"}},
            "bindings": {"kafka": {"topic": prefix + topic + ".dlq", "bindingVersion": KAFKA_BINDING}},
        }
        operations["receive_" + name] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{name}"},
            "summary": f"The projector reads `{topic}`",
            "messages": [{"$ref": f"#/channels/{name}/messages/{t}"} for t in types],
        }
        operations["dead_letter_" + name] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{name}_dlq"},
            "summary": f"The projector dead-letters a poison record of `{topic}`",
            "messages": [{"$ref": f"#/channels/{name}_dlq/messages/dead_letter"}],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Readside events",
            "version": version,
            "description": (
                "The topics the core app publishes and Readside reads. Topic names carry the prefix "
                f"`READSIDE_TOPIC_PREFIX` (here `{prefix}`). Each record value is one envelope "
                "`{event_id, type, schema_version, occurred_at, payload}`; the record key is the payload's "
                "aggregate id. Ordering: per key within a topic, none across topics; rules are stated in "
                "payload time. Dedupe: at most once per `event_id` (re-send the same id to retry). "
                "Checked by the decoder but not expressible in the schemas: "
                + "; ".join(NOT_IN_JSON_SCHEMA.values()) + ". Guide: docs/events.md."
            ),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": _rewrite_refs(whole["$defs"])},
    }
