"""Configuration, parsed once at startup from ``READSIDE_*`` environment variables.

A missing required value names the variable; impossible combinations are rejected before any
work starts. Secrets never appear in ``repr``.

Keys: nothing is open by default. There is no built-in JWT secret: ``READSIDE_JWT_SECRET`` (HS256,
at least 32 bytes) or ``READSIDE_JWT_PUBLIC_KEY`` (RS256) must be configured for the API (and
``readside token``) to start — :meth:`Settings.require_keys`. The cursor and ETag key is
``READSIDE_CURSOR_SECRET``, or derived from a configured HS256 secret; with RS256 (a public key
is no secret) it must be set. Commands that neither serve nor sign (the projector, migrate,
status, dlq, rebuild...) need no key. ``readside demo`` makes random keys of its own per run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from readside.shared.errors import ConfigError

__all__ = ["Settings"]

MIN_SECRET_BYTES = 32
# Secrets that were published as defaults (code, compose file): refused like a missing one.
PUBLIC_SECRETS = frozenset({
    "readside-demo-secret-change-me-in-production",
    "change-me-to-a-long-random-secret-of-32-bytes",
})
_HOW = "a random secret of at least 32 bytes, e.g. `openssl rand -hex 32`"


def _redis_url(url: str | None) -> str | None:
    """``READSIDE_REDIS_URL``; a cluster URL (``redis+cluster://``) must name its nodes as host:port."""
    if url and "+cluster://" in url:
        from readside.shared.cluster import cluster_nodes

        try:
            cluster_nodes(url)
        except ValueError as exc:
            raise ConfigError(f"READSIDE_REDIS_URL: {exc}") from None
    return url


def _secret(env: Mapping[str, str], name: str) -> str:
    """A configured secret, or "" when unset; a short or published one stops the process."""
    value = env.get(name) or ""
    if not value:
        return ""
    if value in PUBLIC_SECRETS:
        raise ConfigError(f"{name} is a published example value, not a secret: set it to {_HOW}")
    if len(value.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(f"{name} is too short ({len(value.encode())} bytes): set it to {_HOW}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low:g} and {high:g} seconds, got {raw}")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name} must be 1 or 0 (true/false, yes/no, on/off), got {raw!r}")


def _check_public_key(pem: str | None) -> None:
    if not pem:
        raise ConfigError("READSIDE_JWT_ALGORITHM=RS256 needs READSIDE_JWT_PUBLIC_KEY (a PEM public key)")
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
    from jwt.algorithms import RSAAlgorithm
    from jwt.exceptions import InvalidKeyError

    try:
        key = RSAAlgorithm(RSAAlgorithm.SHA256).prepare_key(pem)
    except (InvalidKeyError, ValueError, TypeError):
        raise ConfigError("READSIDE_JWT_PUBLIC_KEY is not a PEM RSA public key ('-----BEGIN PUBLIC KEY-----...')") from None
    if not isinstance(key, RSAPublicKey):
        raise ConfigError("READSIDE_JWT_PUBLIC_KEY holds a private key: give the API the public key only")


_URL_START = re.compile(r",\s*(?=postgres(?:ql)?://)")


def _replica_urls(raw: str) -> tuple[str, ...]:
    """``READSIDE_DATABASE_REPLICA_URLS``: libpq URLs, comma-separated. A comma inside one URL
    (a multi-host URL, ``postgresql://a:5432,b:5432/db``) does not split it: only a comma before
    ``postgresql://`` or ``postgres://`` does."""
    urls = tuple(u.strip() for u in _URL_START.split(raw.strip()) if u.strip())
    for number, url in enumerate(urls, 1):
        if not url.startswith(("postgresql://", "postgres://")):
            # not quoted: a key=value connection string may hold a password
            raise ConfigError(
                "READSIDE_DATABASE_REPLICA_URLS must be libpq URLs (postgresql://...), comma-separated; "
                f"item {number} is not"
            )
    if len(set(urls)) != len(urls):
        raise ConfigError("READSIDE_DATABASE_REPLICA_URLS names one replica twice")
    return urls


_ORIGIN = re.compile(r"https?://[^/\s:]+(?::\d{1,5})?")


def _origins(raw: str) -> tuple[str, ...]:
    """``READSIDE_CORS_ORIGINS``: ``*``, or a comma list of origins like ``https://app.example``."""
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    if origins == ("*",):
        return origins
    for origin in origins:
        if not _ORIGIN.fullmatch(origin):
            raise ConfigError(
                f"READSIDE_CORS_ORIGINS must be * or a comma list of origins like https://app.example "
                f"(scheme, host, optional port; no path), got {origin!r}"
            )
    return origins


_USERINFO = re.compile(r"(?<=://)([^/@:?#]*):[^/@?#]*@")
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)")


def redacted(url: str | None) -> str | None:
    """``url`` with its password replaced by ``***`` (``scheme://user:***@host``, or libpq's
    ``password=***``): for logs, errors and ``repr``, which must never show a secret."""
    if url is None:
        return None
    return _KEYWORD_PASSWORD.sub(r"\1***", _USERINFO.sub(r"\1:***@", url))


@dataclass(frozen=True, repr=False)
class Settings:
    kafka_bootstrap: str = "127.0.0.1:9092"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/readside"
    # streaming replicas the API may read from (api/replicas.py); the projector writes the primary
    database_replica_urls: tuple[str, ...] = field(default=(), repr=False)
    # a replica whose replay is further behind the primary than this serves no plain read
    replica_max_lag: float = 5.0
    # redis://, rediss://, unix://: one server; redis+cluster://host:port[,host:port...] (or
    # rediss+cluster://): a Redis/Valkey Cluster (readside.shared.cluster), the nodes to start from
    redis_url: str | None = None
    jwt_secret: str = field(default="", repr=False)  # "": not configured
    jwt_algorithm: str = "HS256"
    jwt_public_key: str | None = field(default=None, repr=False)
    cursor_secret: str = field(default="", repr=False)  # "": not configured (nor derivable)
    topic_prefix: str = ""
    group_prefix: str = "readside"
    dedupe_days: int = 7
    batch_max: int = 5000
    # the longest a projector fetch may wait at the broker for new records (fetch_max_wait_ms):
    # a Kafka broker answers as soon as a record arrives, so this only paces idle polling; a
    # broker that holds every fetch for it (tansu, the embedded one) adds it to every event's latency
    # (behind by a batch or more, the projector asks for engine.CATCH_UP_WAIT_MS instead)
    fetch_wait_ms: int = 10
    api_pool_size: int = 10
    # each projector runner analyzes its tables that changed past autovacuum's threshold since their
    # last analyze, this often (readside.projector.statistics); 0 = never
    analyze_every: float = 5.0
    # a projection with lag whose checkpoints have not moved for this long is "stalled"
    stall_after: float = 60.0
    # the projector's own /healthz, /readyz, /metrics; 0 = not served
    projector_port: int = 0
    projector_host: str = "127.0.0.1"
    # a cache call slower than this (x2 for a whole call) counts as "Redis down" for a second
    cache_timeout: float = 0.25
    # -- limits of `readside api` (api/server.py, api/ryw.py) --------------------------------
    # largest request head (request line and headers) in bytes; past it: 431, connection closed
    http_max_header_bytes: int = 32 * 1024
    # a connection must deliver a whole request head this long after it opened or after the
    # head's first byte; otherwise it is closed (silent and trickling clients)
    http_header_timeout: float = 10.0
    # an idle keep-alive connection is closed after this long; above common proxies' 60 s
    http_keepalive: int = 75
    # connections plus running requests per worker past which new requests get a quick 503
    http_max_concurrency: int = 1000
    # requests of one API process waiting on X-Readside-After at once; past it: answered at once
    ryw_max_waiters: int = 1000
    # the API's /metrics on a port of its own (then not on the public port); 0 = public port
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    # browser origins allowed to call the API (CORS); empty: none, ("*",): any
    cors_origins: tuple[str, ...] = ()
    # response bodies at least this large are gzipped for clients that accept it; 0 = never
    gzip_min_bytes: int = 1024
    # one log line per request of `readside api` (api/access_log.py)
    access_log: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        algorithm = env.get("READSIDE_JWT_ALGORITHM", "HS256").strip().upper() or "HS256"
        if algorithm not in ("HS256", "RS256"):
            raise ConfigError(f"READSIDE_JWT_ALGORITHM must be HS256 or RS256, got {algorithm!r}")
        public_key = env.get("READSIDE_JWT_PUBLIC_KEY") or None
        if algorithm == "RS256" and not public_key:
            raise ConfigError("READSIDE_JWT_ALGORITHM=RS256 needs READSIDE_JWT_PUBLIC_KEY (a PEM public key)")
        secret = _secret(env, "READSIDE_JWT_SECRET")
        # The cursor and ETag key may come from the JWT secret only when that is a secret:
        # an RS256 public key is public, and there is no default.
        derived = "cursor:" + secret if secret and algorithm == "HS256" else ""
        return cls(
            kafka_bootstrap=env.get("READSIDE_KAFKA_BOOTSTRAP") or cls.kafka_bootstrap,
            database_url=env.get("READSIDE_DATABASE_URL") or cls.database_url,
            database_replica_urls=_replica_urls(env.get("READSIDE_DATABASE_REPLICA_URLS", "")),
            replica_max_lag=_seconds(env, "READSIDE_DATABASE_REPLICA_MAX_LAG", 5.0, 0.5, 3600.0),
            redis_url=_redis_url(env.get("READSIDE_REDIS_URL") or None),
            jwt_secret=secret,
            jwt_algorithm=algorithm,
            jwt_public_key=public_key,
            cursor_secret=_secret(env, "READSIDE_CURSOR_SECRET") or derived,
            topic_prefix=env.get("READSIDE_TOPIC_PREFIX", ""),
            group_prefix=env.get("READSIDE_GROUP_PREFIX") or "readside",
            dedupe_days=_int(env, "READSIDE_DEDUPE_DAYS", 7, 1, 3650),
            batch_max=_int(env, "READSIDE_BATCH_MAX", 5000, 1, 100_000),
            fetch_wait_ms=_int(env, "READSIDE_FETCH_WAIT_MS", 10, 1, 10_000),
            api_pool_size=_int(env, "READSIDE_API_POOL_SIZE", 10, 1, 200),
            analyze_every=_seconds(env, "READSIDE_ANALYZE_EVERY", 5.0, 0.0, 86400.0),
            stall_after=_seconds(env, "READSIDE_STALL_AFTER", 60.0, 0.1, 7 * 86400),
            projector_port=_int(env, "READSIDE_PROJECTOR_PORT", 0, 0, 65535),
            projector_host=env.get("READSIDE_PROJECTOR_HOST") or cls.projector_host,
            cache_timeout=_seconds(env, "READSIDE_CACHE_TIMEOUT", 0.25, 0.005, 10.0),
            http_max_header_bytes=_int(env, "READSIDE_HTTP_MAX_HEADER_BYTES", 32 * 1024, 1024, 1024 * 1024),
            http_header_timeout=_seconds(env, "READSIDE_HTTP_HEADER_TIMEOUT", 10.0, 0.5, 300.0),
            http_keepalive=_int(env, "READSIDE_HTTP_KEEPALIVE", 75, 1, 3600),
            http_max_concurrency=_int(env, "READSIDE_HTTP_MAX_CONCURRENCY", 1000, 1, 1_000_000),
            ryw_max_waiters=_int(env, "READSIDE_RYW_MAX_WAITERS", 1000, 0, 1_000_000),
            metrics_port=_int(env, "READSIDE_METRICS_PORT", 0, 0, 65535),
            metrics_host=env.get("READSIDE_METRICS_HOST") or cls.metrics_host,
            cors_origins=_origins(env.get("READSIDE_CORS_ORIGINS", "")),
            gzip_min_bytes=_int(env, "READSIDE_GZIP_MIN_BYTES", 1024, 0, 100 * 1024 * 1024),
            access_log=_flag(env, "READSIDE_ACCESS_LOG"),
        )

    def require_keys(self) -> Settings:
        """These settings, if they hold the keys needed to verify or sign tokens and to key
        cursors and ETags; else a :class:`ConfigError` that names the variable to set."""
        if self.jwt_algorithm == "HS256" and not self.jwt_secret:
            raise ConfigError(
                f"READSIDE_JWT_SECRET is not set: set it to {_HOW} (the key that signs your tokens), "
                "or use READSIDE_JWT_ALGORITHM=RS256 with READSIDE_JWT_PUBLIC_KEY; only `readside demo` makes its own"
            )
        if self.jwt_algorithm == "RS256":
            _check_public_key(self.jwt_public_key)
        if not self.cursor_secret:
            raise ConfigError(
                f"READSIDE_CURSOR_SECRET is not set: with RS256 the cursor and ETag key cannot come from the "
                f"(public) JWT key; set it to {_HOW}"
            )
        return self

    def __repr__(self) -> str:
        """The settings without secrets: the URLs' passwords redacted, the keys left out."""
        shown = (f"{f.name}={(redacted(v) if f.name.endswith('_url') else v)!r}"
                 for f in fields(self) if f.repr for v in [getattr(self, f.name)])
        return f"Settings({', '.join(shown)})"

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a child process."""
        env = {
            "READSIDE_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "READSIDE_DATABASE_URL": self.database_url,
            "READSIDE_DATABASE_REPLICA_URLS": ",".join(self.database_replica_urls),
            "READSIDE_DATABASE_REPLICA_MAX_LAG": repr(self.replica_max_lag),
            "READSIDE_JWT_SECRET": self.jwt_secret,
            "READSIDE_JWT_ALGORITHM": self.jwt_algorithm,
            "READSIDE_CURSOR_SECRET": self.cursor_secret,
            "READSIDE_TOPIC_PREFIX": self.topic_prefix,
            "READSIDE_GROUP_PREFIX": self.group_prefix,
            "READSIDE_DEDUPE_DAYS": str(self.dedupe_days),
            "READSIDE_BATCH_MAX": str(self.batch_max),
            "READSIDE_FETCH_WAIT_MS": str(self.fetch_wait_ms),
            "READSIDE_API_POOL_SIZE": str(self.api_pool_size),
            "READSIDE_ANALYZE_EVERY": repr(self.analyze_every),
            "READSIDE_STALL_AFTER": repr(self.stall_after),
            "READSIDE_PROJECTOR_PORT": str(self.projector_port),
            "READSIDE_PROJECTOR_HOST": self.projector_host,
            "READSIDE_CACHE_TIMEOUT": repr(self.cache_timeout),
            "READSIDE_HTTP_MAX_HEADER_BYTES": str(self.http_max_header_bytes),
            "READSIDE_HTTP_HEADER_TIMEOUT": repr(self.http_header_timeout),
            "READSIDE_HTTP_KEEPALIVE": str(self.http_keepalive),
            "READSIDE_HTTP_MAX_CONCURRENCY": str(self.http_max_concurrency),
            "READSIDE_RYW_MAX_WAITERS": str(self.ryw_max_waiters),
            "READSIDE_METRICS_PORT": str(self.metrics_port),
            "READSIDE_METRICS_HOST": self.metrics_host,
            "READSIDE_CORS_ORIGINS": ",".join(self.cors_origins),
            "READSIDE_GZIP_MIN_BYTES": str(self.gzip_min_bytes),
            "READSIDE_ACCESS_LOG": "1" if self.access_log else "0",
        }
        if self.redis_url:
            env["READSIDE_REDIS_URL"] = self.redis_url
        if self.jwt_public_key:
            env["READSIDE_JWT_PUBLIC_KEY"] = self.jwt_public_key
        return env
