"""Settings: parsed once, every field survives ``to_env`` (child processes get the same config)."""

from __future__ import annotations

from dataclasses import fields

import pytest

from readside.shared.errors import ConfigError
from readside.shared.settings import Settings, redacted


def test_to_env_reproduces_every_setting() -> None:
    custom = Settings.from_env(
        {
            "READSIDE_KAFKA_BOOTSTRAP": "kafka:9092",
            "READSIDE_DATABASE_URL": "postgresql://rs@db/rs",
            "READSIDE_DATABASE_REPLICA_URLS": "postgresql://rs@replica-a/rs,postgresql://rs@replica-b/rs",
            "READSIDE_DATABASE_REPLICA_MAX_LAG": "2.5",
            "READSIDE_REDIS_URL": "redis://cache:6379/1",
            "READSIDE_JWT_SECRET": "a-secret-of-at-least-thirty-two-bytes!!",
            "READSIDE_TOPIC_PREFIX": "prod.",
            "READSIDE_GROUP_PREFIX": "rs-prod",
            "READSIDE_DEDUPE_DAYS": "3",
            "READSIDE_BATCH_MAX": "700",
            "READSIDE_FETCH_WAIT_MS": "250",
            "READSIDE_API_POOL_SIZE": "17",
            "READSIDE_ANALYZE_EVERY": "12.5",
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
            "READSIDE_CORS_ORIGINS": "https://app.example,http://localhost:5173",
            "READSIDE_GZIP_MIN_BYTES": "0",
            "READSIDE_ACCESS_LOG": "1",
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
        pytest.param("READSIDE_ANALYZE_EVERY", "-1", "between", id="analyze-negative"),
        pytest.param("READSIDE_PROJECTOR_PORT", "70000", "between 0 and 65535", id="port-out-of-range"),
        pytest.param("READSIDE_FETCH_WAIT_MS", "0", "between 1 and 10000", id="fetch-wait-zero"),
        pytest.param("READSIDE_HTTP_MAX_HEADER_BYTES", "100", "between 1024", id="header-cap-too-small"),
        pytest.param("READSIDE_METRICS_PORT", "-1", "between 0 and 65535", id="metrics-port-out-of-range"),
        pytest.param("READSIDE_ACCESS_LOG", "maybe", "1 or 0", id="access-log-not-a-flag"),
        pytest.param("READSIDE_DATABASE_REPLICA_URLS", "host=replica dbname=rs", "postgresql://", id="replica-not-a-url"),
        pytest.param("READSIDE_DATABASE_REPLICA_URLS", "postgresql://r/rs,postgresql://r/rs", "twice", id="replica-twice"),
        pytest.param("READSIDE_DATABASE_REPLICA_MAX_LAG", "0.1", "between", id="replica-lag-too-small"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, hint: str) -> None:
    with pytest.raises(ConfigError, match=name) as info:
        Settings.from_env({name: value})
    assert hint in str(info.value)


OLD_PUBLIC_SECRET = "readside-demo-secret-change-me-in-production"
STRONG = "s" * 32


def _pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def test_no_key_is_built_in() -> None:
    settings = Settings.from_env({})
    assert settings.jwt_secret == "" and settings.cursor_secret == ""
    assert OLD_PUBLIC_SECRET not in repr(vars(settings))
    with pytest.raises(ConfigError, match="READSIDE_JWT_SECRET is not set") as info:
        settings.require_keys()
    assert "openssl rand" in str(info.value) and "\n" not in str(info.value)


def test_a_configured_hs256_secret_keys_the_cursors_too() -> None:
    settings = Settings.from_env({"READSIDE_JWT_SECRET": STRONG}).require_keys()
    assert settings.cursor_secret == "cursor:" + STRONG
    own = Settings.from_env({"READSIDE_JWT_SECRET": STRONG, "READSIDE_CURSOR_SECRET": "c" * 32}).require_keys()
    assert own.cursor_secret == "c" * 32


def test_with_rs256_the_cursor_key_never_derives_from_a_public_value() -> None:
    pem = _pem()
    settings = Settings.from_env({"READSIDE_JWT_ALGORITHM": "RS256", "READSIDE_JWT_PUBLIC_KEY": pem})
    assert settings.cursor_secret == ""  # was "cursor:" + the public default: forgeable cursors and ETags
    with pytest.raises(ConfigError, match="READSIDE_CURSOR_SECRET"):
        settings.require_keys()
    # nor from a JWT secret left over in the environment: with RS256 it signs nothing
    leftover = Settings.from_env({"READSIDE_JWT_ALGORITHM": "RS256", "READSIDE_JWT_PUBLIC_KEY": pem,
                                  "READSIDE_JWT_SECRET": STRONG})
    assert leftover.cursor_secret == ""
    ok = Settings.from_env({"READSIDE_JWT_ALGORITHM": "RS256", "READSIDE_JWT_PUBLIC_KEY": pem,
                            "READSIDE_CURSOR_SECRET": "c" * 32}).require_keys()
    assert Settings.from_env(ok.to_env()) == ok


@pytest.mark.parametrize(
    ("env", "name", "hint"),
    [
        pytest.param({"READSIDE_JWT_SECRET": "s" * 31}, "READSIDE_JWT_SECRET", "too short", id="short-31-bytes"),
        pytest.param({"READSIDE_JWT_SECRET": OLD_PUBLIC_SECRET}, "READSIDE_JWT_SECRET", "published", id="old-default"),
        pytest.param({"READSIDE_JWT_SECRET": "change-me-to-a-long-random-secret-of-32-bytes"}, "READSIDE_JWT_SECRET",
                     "published", id="old-compose-default"),
        pytest.param({"READSIDE_JWT_SECRET": STRONG, "READSIDE_CURSOR_SECRET": "short"}, "READSIDE_CURSOR_SECRET",
                     "too short", id="short-cursor-secret"),
    ],
)
def test_weak_or_published_secrets_are_refused(env: dict[str, str], name: str, hint: str) -> None:
    with pytest.raises(ConfigError, match=name) as info:
        Settings.from_env(env)
    assert hint in str(info.value)


@pytest.mark.parametrize("pem", ["not a key", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"])
def test_an_unreadable_rs256_key_stops_the_api_before_it_serves(pem: str) -> None:
    settings = Settings.from_env({"READSIDE_JWT_ALGORITHM": "RS256", "READSIDE_JWT_PUBLIC_KEY": pem,
                                  "READSIDE_CURSOR_SECRET": "c" * 32})
    with pytest.raises(ConfigError, match="READSIDE_JWT_PUBLIC_KEY"):
        settings.require_keys()


@pytest.mark.parametrize("raw,parsed", [
    ("", ()),
    ("*", ("*",)),
    ("https://app.example, http://localhost:5173/", ("https://app.example", "http://localhost:5173")),
])
def test_cors_origins(raw: str, parsed: tuple[str, ...]) -> None:
    assert Settings.from_env({"READSIDE_CORS_ORIGINS": raw}).cors_origins == parsed


@pytest.mark.parametrize("raw", ["app.example", "https://app.example/path", "https://a.example,*", "ftp://x.example"])
def test_a_bad_cors_origin_names_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match="READSIDE_CORS_ORIGINS"):
        Settings.from_env({"READSIDE_CORS_ORIGINS": raw})


def test_replica_urls_split_on_commas_between_urls_only() -> None:
    settings = Settings.from_env({"READSIDE_DATABASE_REPLICA_URLS":
                                  " postgresql://rs@a:5432,b:5433/rs?target_session_attrs=any , postgres://rs:pw@c/rs"})
    assert settings.database_replica_urls == ("postgresql://rs@a:5432,b:5433/rs?target_session_attrs=any", "postgres://rs:pw@c/rs")
    assert "pw" not in repr(settings)
    assert Settings.from_env({}).database_replica_urls == ()


def test_passwords_in_urls_never_show_in_repr() -> None:
    settings = Settings.from_env({"READSIDE_DATABASE_URL": "postgresql://rs:s3cret@db:5432/rs",
                                  "READSIDE_REDIS_URL": "redis://:hunter2@cache:6379/0"})
    shown = repr(settings)
    assert "s3cret" not in shown and "hunter2" not in shown
    assert "postgresql://rs:***@db:5432/rs" in shown and "redis://:***@cache:6379/0" in shown
    assert redacted("host=db password='a b' dbname=rs") == "host=db password=*** dbname=rs"
    assert redacted("rediss+cluster://u:pw@a:1,b:2") == "rediss+cluster://u:***@a:1,b:2"
    assert redacted("redis://cache:6379") == "redis://cache:6379"
