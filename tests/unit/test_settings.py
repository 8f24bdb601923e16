"""Settings: parsed once, every field survives ``to_env`` (child processes get the same config)."""

from __future__ import annotations

from dataclasses import fields

import pytest

from shared.errors import ConfigError
from shared.settings import Settings


def test_to_env_reproduces_every_setting() -> None:
    custom = Settings.from_env(
        {
            "READSIDE_KAFKA_BOOTSTRAP": "kafka:9092",
            "READSIDE_DATABASE_URL": "postgresql://rs@db/rs",
            "READSIDE_REDIS_URL": "redis://cache:6379/1",
            "READSIDE_JWT_SECRET": "a-secret-of-at-least-thirty-two-bytes!!",
            "READSIDE_TOPIC_PREFIX": "prod.",
            "READSIDE_GROUP_PREFIX": "rs-prod",
            "READSIDE_DEDUPE_DAYS": "3",
            "READSIDE_BATCH_MAX": "700",
            "READSIDE_API_POOL_SIZE": "17",
            "READSIDE_STALL_AFTER": "2.5",
            "READSIDE_PROJECTOR_PORT": "9100",
            "READSIDE_PROJECTOR_HOST": "0.0.0.0",
            "READSIDE_CACHE_TIMEOUT": "0.05",
            "READSIDE_HTTP_MAX_HEADER_BYTES": "8192",
            "READSIDE_HTTP_HEADER_TIMEOUT": "3.5",
            "READSIDE_HTTP_KEEPALIVE": "120",
            "READSIDE_HTTP_MAX_CONCURRENCY": "50",
            "READSIDE_RYW_MAX_WAITERS": "9",
            "READSIDE_METRICS_PORT": "9101",
            "READSIDE_METRICS_HOST": "10.0.0.1",
        }
    )
    again = Settings.from_env(custom.to_env())
    assert again == custom
    # every field differs from its default, so a field that to_env forgets would show above
    default = Settings.from_env({})
    same = [f.name for f in fields(Settings) if getattr(custom, f.name) == getattr(default, f.name)]
    assert same == ["jwt_algorithm", "jwt_public_key"]


@pytest.mark.parametrize(
    ("name", "value", "hint"),
    [
        pytest.param("READSIDE_STALL_AFTER", "soon", "number of seconds", id="stall-not-a-number"),
        pytest.param("READSIDE_STALL_AFTER", "0", "between", id="stall-zero"),
        pytest.param("READSIDE_PROJECTOR_PORT", "70000", "between 0 and 65535", id="port-out-of-range"),
        pytest.param("READSIDE_HTTP_MAX_HEADER_BYTES", "100", "between 1024", id="header-cap-too-small"),
        pytest.param("READSIDE_METRICS_PORT", "-1", "between 0 and 65535", id="metrics-port-out-of-range"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, hint: str) -> None:
    with pytest.raises(ConfigError, match=name) as info:
        Settings.from_env({name: value})
    assert hint in str(info.value)
