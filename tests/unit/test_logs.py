"""READSIDE_LOG_LEVEL and READSIDE_LOG_FORMAT: what a log pipeline reads."""

from __future__ import annotations

import logging

import orjson
import pytest

from readside.shared import logs
from readside.shared.errors import ConfigError


@pytest.fixture(autouse=True)
def _restore_root() -> object:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_level_logger_message_and_structured_fields() -> None:
    record = logging.makeLogRecord({
        "name": "readside.projector.engine", "levelno": logging.WARNING, "levelname": "WARNING",
        "msg": "dead-lettered %d record(s)", "args": (3,), "topic": "threads.events", "partition": 2,
    })
    entry = orjson.loads(logs.JsonFormatter().format(record))
    assert entry["level"] == "WARNING" and entry["logger"] == "readside.projector.engine"
    assert entry["message"] == "dead-lettered 3 record(s)"
    assert entry["topic"] == "threads.events" and entry["partition"] == 2
    assert entry["ts"].endswith("Z")


def test_a_traceback_stays_inside_its_json_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.makeLogRecord({"msg": "failed", "levelname": "ERROR", "exc_info": sys.exc_info()})
    line = logs.JsonFormatter().format(record)
    assert "\n" not in line
    assert "ValueError: boom" in orjson.loads(line)["exc"]


def test_level_and_format_come_from_the_environment() -> None:
    logs.configure({"READSIDE_LOG_LEVEL": "warning", "READSIDE_LOG_FORMAT": "json"})
    root = logging.getLogger()
    assert root.level == logging.WARNING
    assert isinstance(root.handlers[0].formatter, logs.JsonFormatter)
    logs.configure({"READSIDE_LOG_LEVEL": "WARNING"}, verbose=True)
    assert root.level == logging.DEBUG  # -v wins
    assert not isinstance(root.handlers[0].formatter, logs.JsonFormatter)


@pytest.mark.parametrize("env,name", [
    ({"READSIDE_LOG_LEVEL": "LOUD"}, "READSIDE_LOG_LEVEL"),
    ({"READSIDE_LOG_FORMAT": "xml"}, "READSIDE_LOG_FORMAT"),
])
def test_a_bad_value_names_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        logs.configure(env)
