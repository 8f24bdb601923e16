"""The fast path of :func:`readside.schemas.envelope.decode`: msgspec types derived from the
pydantic payload models at import time.

The pydantic models stay the one source of truth (verdicts, reason texts, the exported JSON
Schema). From each model this module derives a ``msgspec.Struct`` that accepts *at most* what
the model accepts, and a builder that turns a decoded struct into the model's own instance, in
the state ``model_validate`` leaves it (``__dict__``, ``model_fields_set``). One msgspec decoder
per topic reads the whole envelope in one pass: a tagged union on ``type`` of the types the
topic carries, each with ``schema_version`` 1 and its payload struct.

:func:`decode` returns ``None`` whenever it is not sure — any msgspec error, a type or version
it does not cover, a record key that differs, anything the builders doubt — and the caller then
runs the pydantic reference path, which gives the verdict and the reason. So the fast path
only ever answers for valid events, with the values the reference gives:

- ints are bounded to int64, within the range orjson reads as ints (beyond it orjson gives a
  float, which a strict model rejects); floats, ``true`` and ``"5"`` are no ints to either;
- ids: msgspec's ``min_length``/``max_length`` (code points, as ``len``) and :data:`ID_PATTERN`;
  a record whose bytes cannot hold a control character (no escape, no DEL, no U+0080..U+00BF:
  :func:`_may_hold_controls`) is read by a twin decoder whose ids skip the pattern (the cost of
  a regex call per id);
- times: :data:`RFC3339_PATTERN`, then ``datetime.fromisoformat`` and UTC as ``_base._parse``
  (a lower-case ``t``/``z`` or an out-of-range instant is left to the reference);
- a record with a field no model names (allowed, ignored) takes the reference path: msgspec would
  skip such a field unchecked, where orjson refuses invalid UTF-8 or a number beyond a double in it;
- ``type`` is always a union's tag, so it is required (one type on a topic: a sentinel tag);
- ``dict[str, Any]`` values are taken raw and read by orjson itself, inside as many brackets as
  they are deep in the record, so numbers and the depth limit are orjson's. A model with a
  ``list[Any]`` (``workflow.version_saved``: a graph, most of the record) gets no fast path: it
  measured no faster that way, as orjson reads the graph in both (``python -m bench.decode``);
- a model's ``before`` field validators run on each value sent and its ``after`` model
  validators on the built instance; an error or a changed value is a doubt.

A model using anything else (another validator mode, an alias, a config this module does not
know) gets no fast path: its type always takes the reference path (tests/unit/test_decode_fast.py
lists the types without one).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Union

import msgspec
import orjson
from pydantic import BaseModel

from readside.schemas._base import ID_MAX, ID_PATTERN, RFC3339_PATTERN, Id, Payload, Timestamp
from readside.schemas.registry import PAYLOAD_TYPES, SUPPORTED_SCHEMA_VERSION, TOPICS

__all__ = ["FAST_TYPES", "decode"]

# orjson reads -2**63..2**64-1 as ints (beyond: a float, which no strict model takes); msgspec
# bounds only int64: 2**63..2**64-1 is left to the reference path.
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
_ID = Annotated[str, msgspec.Meta(min_length=1, max_length=ID_MAX, pattern=ID_PATTERN)]
_ID_CLEAN = Annotated[str, msgspec.Meta(min_length=1, max_length=ID_MAX)]  # see _may_hold_controls
_TIME = Annotated[str, msgspec.Meta(pattern=RFC3339_PATTERN)]
_KNOWN_CONFIG = {"strict", "extra", "frozen", "json_schema_extra", "title"}

Convert = Callable[[Any], Any] | None


class _Doubt(Exception):
    """The fast path cannot vouch for this record: the reference path decides."""


class _Unsupported(Exception):
    """A model uses something the derivation does not know."""


def _time(text: str) -> datetime:
    # ValueError (a lower-case "t" or "z") or OverflowError (out of range): a doubt, as any error
    return datetime.fromisoformat(text).astimezone(UTC)


def _raw_json(kinds: tuple[type, ...], depth: int) -> Callable[[msgspec.Raw], Any]:
    """Read a raw ``Any`` value with orjson, nested in ``depth`` arrays as it is in the record
    (so orjson's depth limit applies as to the whole record); its type must be one of ``kinds``."""
    opening, closing = b"[" * depth, b"]" * depth
    nullable = type(None) in kinds

    def load(raw: msgspec.Raw) -> Any:
        if nullable and len(raw) == 4 and bytes(raw) == b"null":
            return None
        try:
            value = orjson.loads(opening + bytes(raw) + closing)
        except orjson.JSONDecodeError:
            raise _Doubt from None
        for _ in range(depth):
            value = value[0]
        if type(value) not in kinds:
            raise _Doubt
        return value

    return load


def _optional(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else convert(value)


def _is_any_container(hint: Any) -> tuple[type, ...] | None:
    if hint == list[Any]:
        return (list,)
    if hint == dict[str, Any]:
        return (dict,)
    return None


def _int_type(metadata: tuple[Any, ...]) -> Any:
    low, high = _INT_MIN, _INT_MAX
    for bound in metadata:  # annotated_types' Ge, Le, Gt, Lt (what Field(ge=...) leaves)
        kind = type(bound).__name__
        if kind == "Ge" and type(bound.ge) is int:
            low = max(low, bound.ge)
        elif kind == "Le" and type(bound.le) is int:
            high = min(high, bound.le)
        elif kind == "Gt" and type(bound.gt) is int:
            low = max(low, bound.gt + 1)
        elif kind == "Lt" and type(bound.lt) is int:
            high = min(high, bound.lt - 1)
        else:
            raise _Unsupported(f"int constraint {bound!r}")
    return Annotated[int, msgspec.Meta(ge=low, le=high)]


def _field_type(hint: Any, depth: int, clean: bool) -> tuple[Any, Convert]:
    """The msgspec type for a pydantic field type, and how to turn its value into the model's
    (``clean``: for records without control characters, ids need no pattern)."""
    if hint == Id:
        return _ID_CLEAN if clean else _ID, None
    if hint == Timestamp:
        return _TIME, _time
    if hint is str or hint is bool:
        return hint, None
    if hint is int:
        return _int_type(()), None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated and args[0] is int:
        metadata = tuple(m for a in hint.__metadata__ for m in (getattr(a, "metadata", None) or [a]))
        return _int_type(metadata), None
    if origin is Literal and all(type(a) is str for a in args):
        return hint, None
    kinds = _is_any_container(hint)
    if kinds == (list,):  # a graph's nodes: most of the record, read by orjson either way
        raise _Unsupported("list[Any]: measured no faster than the models")
    if kinds is not None:
        return msgspec.Raw, _raw_json(kinds, depth)
    if origin in (Union, types.UnionType) and len(args) == 2 and type(None) in args:
        (inner,) = (a for a in args if a is not type(None))
        kinds = _is_any_container(inner)
        if kinds is not None:
            return msgspec.Raw, _raw_json((*kinds, type(None)), depth)
        spec, convert = _field_type(inner, depth, clean)
        return spec | None, None if convert is None else _optional(convert)
    if origin is list and len(args) == 1:
        spec, convert = _field_type(args[0], depth + 1, clean)
        if convert is None:  # msgspec's list is a new one, as the model's
            return list[spec], None  # type: ignore[valid-type]
        return list[spec], lambda items: [convert(i) for i in items]  # type: ignore[valid-type]
    if isinstance(hint, type) and issubclass(hint, Payload):
        struct, build = derive(hint, depth, clean)
        return struct, build
    raise _Unsupported(f"field type {hint!r}")


_DERIVED: dict[tuple[type[BaseModel], int, bool], tuple[type[msgspec.Struct], Callable[[Any], BaseModel]]] = {}


def derive(model: type[BaseModel], depth: int = 2, clean: bool = False) -> tuple[type[msgspec.Struct], Callable[[Any], BaseModel]]:
    """The struct for ``model`` (an object ``depth`` containers deep in the record) and the
    builder of a ``model`` instance from it. Raises ``_Unsupported`` for what it does not know."""
    cached = _DERIVED.get((model, depth, clean))
    if cached is not None:
        return cached
    config = model.model_config
    if set(config) - _KNOWN_CONFIG or config.get("strict") is not True or config.get("extra") not in ("ignore", "forbid"):
        raise _Unsupported(f"{model.__name__}: config {dict(config)!r}")
    decorators = model.__pydantic_decorators__
    if any((decorators.validators, decorators.root_validators, decorators.computed_fields)):
        raise _Unsupported(f"{model.__name__}: validators")
    before: dict[str, list[Callable[[Any], Any]]] = {}
    for dec in decorators.field_validators.values():
        if dec.info.mode != "before":
            raise _Unsupported(f"{model.__name__}: a {dec.info.mode} field validator")
        for name in dec.info.fields:
            before.setdefault(name, []).append(dec.func)
    after = []
    for model_dec in decorators.model_validators.values():
        if model_dec.info.mode != "after":
            raise _Unsupported(f"{model.__name__}: a {model_dec.info.mode} model validator")
        after.append(model_dec.func)

    hints = typing.get_type_hints(model, include_extras=True)
    specs: list[tuple[str, Any, Any]] = []
    plan: list[tuple[str, Convert, list[Callable[[Any], Any]], bool]] = []
    for name, info in model.model_fields.items():
        if info.alias or info.validation_alias or info.default_factory is not None:
            raise _Unsupported(f"{model.__name__}.{name}: alias or default factory")
        spec, convert = _field_type(hints[name], depth + 1, clean)
        required = info.is_required()
        if not required and info.default is not None:
            raise _Unsupported(f"{model.__name__}.{name}: a default other than None")
        if required:
            specs.append((name, spec, msgspec.NODEFAULT))
        else:  # absent is UNSET: the value None, not in model_fields_set
            specs.append((name, spec | msgspec.UnsetType, msgspec.UNSET))
        plan.append((name, convert, before.pop(name, []), required))
    if before:
        raise _Unsupported(f"{model.__name__}: validators of unknown fields {sorted(before)}")

    struct = msgspec.defstruct(
        f"Fast{model.__name__}",
        [(name, spec) if default is msgspec.NODEFAULT else (name, spec, default) for name, spec, default in specs],
        forbid_unknown_fields=True,  # see the module docstring: extra fields take the reference path
    )
    build = _builder(model, plan, after)
    _DERIVED[(model, depth, clean)] = (struct, build)
    return struct, build


def _check_before(value: Any, validators: list[Callable[[Any], Any]]) -> None:
    for check in validators:
        if check(value) is not value:  # a validator that changes the value: not followed here
            raise _Doubt


def _check_after(instance: BaseModel, validators: list[Callable[[BaseModel], Any]]) -> None:
    for check in validators:
        if check(instance) is not instance:
            raise _Doubt


def _builder(model: type[BaseModel], plan: list[tuple[str, Convert, list[Callable[[Any], Any]], bool]],
             after: list[Callable[[BaseModel], Any]]) -> Callable[[Any], BaseModel]:
    """``build(decoded)``: the ``model`` instance, generated as straight-line code (a loop over
    the fields costs as much as the decoding). Any exception it raises is a doubt."""
    scope: dict[str, Any] = {"_new": model.__new__, "_set": object.__setattr__, "_model": model,
                             "_UNSET": msgspec.UNSET, "_before": _check_before, "_after": _check_after,
                             "_fields": tuple(model.model_fields), "_after_validators": after,
                             "_fromisoformat": datetime.fromisoformat, "_UTC": UTC}
    lines = ["def build(decoded):"]
    optional = any(not required for *_, required in plan)
    if optional:
        lines.append("    sent = set(_fields)")
    for i, (name, convert, validators, required) in enumerate(plan):
        lines.append(f"    v{i} = decoded.{name}")
        indent = "    "
        if not required:
            lines += [f"    if v{i} is _UNSET:", f"        v{i} = None", f"        sent.discard({name!r})", "    else:"]
            indent = "        "
        if validators:
            scope[f"_validators{i}"] = validators
            lines.append(f"{indent}_before(v{i}, _validators{i})")
        if convert is _time:  # inlined: two of them in most payloads
            lines.append(f"{indent}v{i} = _fromisoformat(v{i}).astimezone(_UTC)")
        elif convert is not None:
            scope[f"_convert{i}"] = convert
            lines.append(f"{indent}v{i} = _convert{i}(v{i})")
        elif not required:
            lines.append(f"{indent}pass")
    values = ", ".join(f"{name!r}: v{i}" for i, (name, *_) in enumerate(plan))
    lines += [
        "    instance = _new(_model)",
        f"    _set(instance, '__dict__', {{{values}}})",
        f"    _set(instance, '__pydantic_fields_set__', {'sent' if optional else 'set(_fields)'})",
        "    _set(instance, '__pydantic_extra__', None)",
        "    _set(instance, '__pydantic_private__', None)",
    ]
    if after:
        lines.append("    _after(instance, _after_validators)")
    lines.append("    return instance")
    exec("\n".join(lines), scope)  # code generated from the model's own fields
    build: Callable[[Any], BaseModel] = scope["build"]
    return build


def _envelopes(clean: bool) -> tuple[dict[str, msgspec.json.Decoder[Any]], dict[type, tuple[str, Callable[[Any], BaseModel]]]]:
    by_struct: dict[type, tuple[str, Callable[[Any], BaseModel]]] = {}
    by_topic: dict[str, list[type]] = {topic: [] for topic in TOPICS}
    for topic, (_, carried) in TOPICS.items():
        for event_type in sorted(carried):
            try:
                payload, build = derive(PAYLOAD_TYPES[event_type], clean=clean)
            except _Unsupported:
                continue
            envelope = msgspec.defstruct(
                f"Envelope[{event_type}]",
                [
                    ("event_id", _ID_CLEAN if clean else _ID),
                    ("schema_version", Literal[SUPPORTED_SCHEMA_VERSION]),
                    ("occurred_at", _TIME),
                    ("payload", payload),
                ],
                tag_field="type",
                tag=event_type,
                forbid_unknown_fields=True,
            )
            by_struct[envelope] = (event_type, build)
            by_topic[topic].append(envelope)
    # A union of one tagged struct is that struct, whose tag msgspec then does not require: the
    # sentinel (a tag no record names validly, not in by_struct) keeps every topic's a union.
    sentinel = msgspec.defstruct("NoEvent", [], tag_field="type", tag="\x00", forbid_unknown_fields=True)
    decoders = {
        topic: msgspec.json.Decoder(Union[(*structs, sentinel)])  # a runtime union of classes
        for topic, structs in by_topic.items()
        if structs
    }
    return decoders, by_struct


_DECODERS, _BY_STRUCT = _envelopes(clean=False)
_CLEAN_DECODERS, _CLEAN_BY_STRUCT = _envelopes(clean=True)
_BY_STRUCT.update(_CLEAN_BY_STRUCT)
_KEY_FIELD = {topic: key_field for topic, (key_field, _) in TOPICS.items()}
FAST_TYPES = frozenset(event_type for event_type, _ in _BY_STRUCT.values())
"""The event types the fast path covers."""

# A string holds a control character (C0, DEL, C1) only if the record has an escape (``\\n``,
# ``\\u0000``), DEL itself, or the first byte of U+0080..U+00BF in UTF-8 (raw C0 bytes are not
# JSON). Without them, ids need no pattern check. Three byte searches: cheaper than the pattern.


def _may_hold_controls(value: bytes) -> bool:
    # int needles: a byte search by memchr, a third of the cost of one-byte ``bytes`` needles (measured)
    return 0x5C in value or 0x7F in value or 0xC2 in value  # backslash, DEL, 0xC2


def decode(topic: str, key: bytes | None, value: bytes | None) -> tuple[str, str, datetime, BaseModel] | None:
    """``(event_id, type, occurred_at, payload)`` of a valid event of a covered type, as the
    reference path would decode it; ``None`` for anything else (then the reference decides)."""
    if value is None or key is None:
        return None
    try:
        decoder = (_DECODERS if _may_hold_controls(value) else _CLEAN_DECODERS).get(topic)
        if decoder is None:
            return None
        envelope = decoder.decode(value)
        event_type, build = _BY_STRUCT[type(envelope)]
        payload = build(envelope.payload)
        occurred_at = _time(envelope.occurred_at)
        if key != getattr(payload, _KEY_FIELD[topic]).encode():
            return None
    except Exception:  # noqa: BLE001 - a doubt or a msgspec error: the reference path decides
        return None
    return envelope.event_id, event_type, occurred_at, payload
