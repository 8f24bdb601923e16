"""Nothing open by default (issue 9 §3): no built-in key, cursors and ETags keyed by a secret,
access checked before a 304, odd cursors and tokens are 4xx, never a 500 nor an open door.

The attacker here knows every key the stack was started with (the test does): that is the
situation the old public default created, and what a 304 or a cursor must survive.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from readside.api.auth import make_token
from readside.api.cursors import CursorCodec
from readside.embedded import EmbeddedValkey, free_port
from tests.e2e.conftest import Stack, running_stack
from tests.support import api_server, auth, message, send, started, wait_caught_up
from tests.unit.test_workflows_fold import created

# The secret every checkout used to trust when READSIDE_JWT_SECRET was unset.
OLD_PUBLIC_SECRET = "readside-demo-secret-change-me-in-production"
STRONG = "x" * 40

RECORDS = [
    started("t-ab", client="u-ann", provider="u-bob", at=1),
    message("t-ab", "m-ab", 2, sender="u-ann", content="hello bob"),
    started("t-cb", client="u-cat", provider="u-bob", at=3),
    message("t-cb", "m-cb", 4, sender="u-cat", content="private to cat and bob"),
]
WORKFLOWS = [created("w-1", "u-ann", 1, "Mine"), created("w-2", "u-bob", 2, "Template", template=True)]


def _load(stack: Stack) -> Stack:
    s = stack.settings
    send(s, RECORDS + WORKFLOWS)
    wait_caught_up(s.database_url, s.kafka_bootstrap, "threads", [s.topic_prefix + "threads.events"])
    wait_caught_up(s.database_url, s.kafka_bootstrap, "workflows", [s.topic_prefix + "workflows.events"])
    return stack


@pytest.fixture(scope="module")
def plain(stack: Stack) -> Stack:
    return _load(stack)


@pytest.fixture(scope="module")
def cached(bootstrap: str, pg_admin_url: str, valkey: EmbeddedValkey,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(bootstrap, pg_admin_url, tmp_path_factory.mktemp("api"), redis_url=valkey.url,
                       cache_timeout=2.0) as s:
        yield _load(s)



def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("READSIDE_")}
    return env | extra


def _refuses(argv: list[str], env: dict[str, str], timeout: float = 30.0) -> str:
    """Run ``readside <argv>``; it must exit non-zero within ``timeout`` and say why in one line."""
    proc = subprocess.Popen([sys.executable, "-m", "readside.cli", *argv], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"`readside {' '.join(argv)}` kept running: it started without a configured key")
    assert proc.returncode != 0, (out, err)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def _pem_pair() -> tuple[rsa.RSAPrivateKey, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return key, pem


# -- no key, no start ------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("extra", "names"),
    [
        pytest.param({}, "READSIDE_JWT_SECRET", id="unset"),
        pytest.param({"READSIDE_JWT_SECRET": "short-secret"}, "READSIDE_JWT_SECRET", id="short"),
        pytest.param({"READSIDE_JWT_SECRET": OLD_PUBLIC_SECRET}, "READSIDE_JWT_SECRET", id="old-public-default"),
        pytest.param({"READSIDE_JWT_SECRET": STRONG, "READSIDE_CURSOR_SECRET": "short"}, "READSIDE_CURSOR_SECRET",
                     id="short-cursor-secret"),
        pytest.param({"READSIDE_JWT_ALGORITHM": "RS256", "READSIDE_JWT_PUBLIC_KEY": "not a key",
                      "READSIDE_CURSOR_SECRET": STRONG}, "READSIDE_JWT_PUBLIC_KEY", id="rs256-bad-pem"),
    ],
)
def test_the_api_refuses_to_start_without_a_configured_key(extra: dict[str, str], names: str) -> None:
    line = _refuses(["api", "--port", str(free_port())], _clean_env(**extra))
    assert line.startswith("readside: configuration error:") and names in line, line


def test_with_rs256_the_api_refuses_to_start_without_a_cursor_secret() -> None:
    _, pem = _pem_pair()
    env = _clean_env(READSIDE_JWT_ALGORITHM="RS256", READSIDE_JWT_PUBLIC_KEY=pem)
    line = _refuses(["api", "--port", str(free_port())], env)
    assert "READSIDE_CURSOR_SECRET" in line, line


def test_readside_token_needs_the_secret_it_signs_with() -> None:
    line = _refuses(["token", "u-1"], _clean_env())
    assert "READSIDE_JWT_SECRET" in line, line
    ok = subprocess.run([sys.executable, "-m", "readside.cli", "token", "u-1", "--role", "admin"],
                        env=_clean_env(READSIDE_JWT_SECRET=STRONG), capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    claims = jwt.decode(ok.stdout.strip(), STRONG, algorithms=["HS256"])
    assert claims["sub"] == "u-1" and claims["roles"] == ["admin"]


@pytest.fixture(scope="module")
def rs256(plain: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, rsa.RSAPrivateKey]]:
    """A second API on the same database, verifying RS256 tokens, with a cursor secret."""
    key, pem = _pem_pair()
    settings = replace(plain.settings, jwt_algorithm="RS256", jwt_public_key=pem, jwt_secret="",
                       cursor_secret="rs256-cursor-secret-0123456789-abcdef")
    with api_server(_clean_env(**settings.to_env()), tmp_path_factory.mktemp("rs256"), ready="/readyz", timeout=30,
                    inherit=False) as (base, _):
        yield base, key


def test_with_rs256_a_cursor_forged_with_the_old_public_derivation_is_a_400(rs256) -> None:
    base, key = rs256
    token = jwt.encode({"sub": "u-ann", "exp": int(time.time()) + 600}, key, algorithm="RS256")
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(base + "/v1/threads/preview", headers=headers).status_code == 200
    forged = CursorCodec("cursor:" + OLD_PUBLIC_SECRET).encode("preview\x1fu-ann\x1fNone\x1f20",
                                                               ["2999-01-01T00:00:00Z", "zzz"])
    r = httpx.get(base + "/v1/threads/preview", params={"cursor": forged}, headers=headers)
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json", r.text
    # the HS256 token of the old default, and one signed with the public key as an HMAC secret: 401
    for bad in (make_token(OLD_PUBLIC_SECRET, "u-ann", ["admin"]),
                _hs256_with_raw_key(_public_pem(key), {"sub": "u-ann", "exp": int(time.time()) + 600})):
        r = httpx.get(base + "/v1/threads/preview", headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401, r.text


def _public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _b64(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def _hs256_with_raw_key(secret: bytes, payload_json: dict | bytes, header: bytes = b'{"alg":"HS256","typ":"JWT"}',
                        digest: str = "sha256") -> str:
    """A JWT signed by hand, so claims PyJWT would refuse to write (or a 10**400 exp) can be sent."""
    import orjson

    body = payload_json if isinstance(payload_json, bytes) else orjson.dumps(payload_json)
    signing = _b64(header) + b"." + _b64(body)
    return (signing + b"." + _b64(hmac.new(secret, signing, digest).digest())).decode()


# -- 304 only after the access check ---------------------------------------------------------

def _forge_etag(stack: Stack, seen: str, scope: str) -> str:
    """The ETag the API would give for ``scope``, at the generation and version of ``seen``."""
    kind, generation, version = re.fullmatch(r'W/"([rp])(\d+)\.(\d+)\.[0-9a-f]+"', seen).groups()  # type: ignore[union-attr]
    key = hashlib.sha256(("etag:" + stack.settings.cursor_secret).encode()).digest()
    raw = f"{kind}{generation}.{version}\x1f{scope}".encode()
    return f'W/"{kind}{generation}.{version}.{hmac.new(key, raw, hashlib.blake2b).hexdigest()[:20]}"'


@pytest.mark.parametrize("which", ["plain", "cached"])
def test_a_non_participant_with_a_valid_etag_gets_404_not_304(which: str, request: pytest.FixtureRequest) -> None:
    stack: Stack = request.getfixturevalue(which)
    with stack.client() as http:
        own = http.get("/v1/threads/t-cb/messages", headers=auth(stack, "u-cat"))
        assert own.status_code == 200 and own.json()["messages"], own.text
        again = http.get("/v1/threads/t-cb/messages", headers=auth(stack, "u-cat") | {"If-None-Match": own.headers["etag"]})
        assert again.status_code == 304  # the participant's own revalidation still works
        for thread in ("t-cb", "t-none"):  # another user's thread, and one that does not exist
            tag = _forge_etag(stack, own.headers["etag"], f"messages\x1fu-ann\x1f{thread}\x1f50\x1f")
            for _ in range(2):  # the second time, whatever the first one put in the cache
                r = http.get(f"/v1/threads/{thread}/messages", headers=auth(stack, "u-ann") | {"If-None-Match": tag})
                assert r.status_code == 404, (thread, r.status_code, r.headers)
                assert r.headers["content-type"] == "application/problem+json"


# -- cursors: anything odd is a 400 ----------------------------------------------------------

def _cursor(secret: str, scope: str, body: bytes) -> str:
    """A correctly signed cursor around any JSON text (even one the encoder refuses to write)."""
    codec = CursorCodec(secret)
    return base64.urlsafe_b64encode(codec._mac(scope, body) + body).rstrip(b"=").decode()


T = b'"2026-01-01T00:00:00Z"'
ODD_TIME_AND_ID = [
    b'[' + T + b',"a\\u0000b"]', b'["2026-01-01T00:00:00\\u0000Z","x"]', b'[' + T + b',"a\\u0001b"]',
    b'[' + T + b',""]', b'[' + T + b',"' + b"y" * 10_000 + b'"]', b'["' + b"9" * 10_000 + b'","x"]',
    b'[' + T + b',18446744073709551615]', b'[18446744073709551615,"x"]', b'[' + T + b',-9223372036854775809]',
    b'[1e308,"x"]', b'[' + T + b',1.5]', b'[true,"x"]', b'[null,null]', b'[' + T + b',["nested"]]',
    b'[[[[[[[[]]]]]]],"x"]', b'[' + T + b',{"a":1}]', b'[]', b'[' + T + b']', b'[' + T + b',"x","y"]',
    b'{"a":1}', b'"x"', b'1', b'null', b'[' + b'[' * 5000 + b']' * 5000 + b',"x"]',
    b'["0001-01-01T00:00:00+01:00","x"]', b'["9999-12-31T23:59:59-01:00","x"]', b'["2026-01-01","x"]',
    b'["2026-01-01T00:00:00","x"]', b'["not a time","x"]', b'["2026-13-01T00:00:00Z","x"]',
]
ODD_PROVIDER = [
    b'[18446744073709551615,"p"]', b'[9223372036854775808,"p"]', b'[-9223372036854775809,"p"]',
    b'[1,"p\\u0000"]', b'[1,"' + b"p" * 10_000 + b'"]', b'[1.5,"p"]', b'[true,"p"]', b'["1","p"]',
    b'[1,2]', b'[[1],"p"]', b'[1]', b'[1,"p","q"]', b'[null,"p"]',
]
ODD_RATED = [
    b'["1e1000000",1,"p"]', b'["' + b"9" * 10_000 + b'",1,"p"]', b'["NaN",1,"p"]', b'["Infinity",1,"p"]',
    b'["sNaN",1,"p"]', b'["4.5",18446744073709551615,"p"]', b'["4.5",1,"p\\u0000"]', b'[4.5,1,"p"]',
    b'["4.5","1","p"]', b'["1e-1000000",1,"p"]',
]


def _endpoints() -> list[tuple[str, dict[str, str], str, bytes, list[bytes]]]:
    """(path, params, cursor scope, a valid position, odd positions) for every cursor-taking endpoint."""
    providers = "\x1f".join(("providers", "all", "{sort}", "12", "*"))
    return [
        ("/v1/threads/preview", {}, "preview\x1fu-ann\x1fNone\x1f20", b'[' + T + b',"t-zz"]', ODD_TIME_AND_ID),
        ("/v1/threads/t-ab/messages", {}, "messages\x1fu-ann\x1ft-ab\x1f50", b'[' + T + b',"m-zz"]', ODD_TIME_AND_ID),
        ("/v1/workflows", {}, "workflows\x1fu-ann\x1f20", b'[' + T + b',"w-zz"]', ODD_TIME_AND_ID),
        ("/v1/templates", {}, "templates\x1fu-ann\x1f20", b'[' + T + b',"w-zz"]', ODD_TIME_AND_ID),
        ("/v1/providers", {"sort": "most_booked"}, providers.format(sort="most_booked"), b'[1,"p-a"]', ODD_PROVIDER),
        ("/v1/providers", {"sort": "newest"}, providers.format(sort="newest"), b'[1,"p-a"]', ODD_PROVIDER),
        ("/v1/providers", {"sort": "top_rated"}, providers.format(sort="top_rated"), b'["4.5",1,"p-a"]', ODD_RATED),
    ]


@pytest.mark.parametrize("endpoint", _endpoints(), ids=lambda e: e[0] + "?" + e[1].get("sort", ""))
def test_a_signed_cursor_with_an_odd_position_is_a_400_never_a_500(plain: Stack, endpoint) -> None:
    path, params, scope, valid, odd = endpoint
    secret = plain.settings.cursor_secret
    with plain.client() as http:
        headers = auth(plain, "u-ann")
        # the forged scope is the real one: a well-formed position signed this way is accepted
        ok = http.get(path, params=params | {"cursor": _cursor(secret, scope, valid)}, headers=headers)
        assert ok.status_code == 200, ok.text
        failures = []
        for body in odd:
            r = http.get(path, params=params | {"cursor": _cursor(secret, scope, body)}, headers=headers)
            # (a server-level cap on the request line may answer a huge cursor with its own plain 400)
            if r.status_code != 400 or (len(body) < 2000 and r.headers["content-type"] != "application/problem+json"):
                failures.append((body[:60], r.status_code, r.text[:200]))
        assert failures == []


# -- tokens ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "exp",
    [
        pytest.param(b"1" + b"0" * 400, id="10**400"),
        pytest.param(b"1e308", id="1e308"),
        pytest.param(b'"99999999999"', id="string"),
        pytest.param(b"true", id="bool"),
        pytest.param(b"[9999999999]", id="array"),
        pytest.param(b"253402300800", id="year-10000"),
        pytest.param(b"null", id="null"),
    ],
)
def test_exp_must_be_a_number_in_range(plain: Stack, exp: bytes) -> None:
    token = _hs256_with_raw_key(plain.settings.jwt_secret.encode(), b'{"sub":"u-ann","roles":[],"exp":' + exp + b"}")
    with plain.client() as http:
        r = http.get("/v1/threads/summary", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401, r.text
    assert r.json()["type"] == "/problems/unauthorized"


def test_exp_at_the_end_of_year_9999_is_accepted(plain: Stack) -> None:
    token = _hs256_with_raw_key(plain.settings.jwt_secret.encode(), b'{"sub":"u-ann","exp":253402300799}')
    with plain.client() as http:
        assert http.get("/v1/threads/summary", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_other_algorithms_are_401(plain: Stack) -> None:
    secret = plain.settings.jwt_secret.encode()
    claims = b'{"sub":"u-ann","roles":["admin"],"exp":9999999999}'
    none = (_b64(b'{"alg":"none","typ":"JWT"}') + b"." + _b64(claims) + b".").decode()
    hs512 = _hs256_with_raw_key(secret, claims, header=b'{"alg":"HS512","typ":"JWT"}', digest="sha512")
    lying = _hs256_with_raw_key(secret, claims, header=b'{"alg":"none","typ":"JWT"}')
    with plain.client() as http:
        for token in (none, hs512, lying, make_token(OLD_PUBLIC_SECRET, "u-ann", ["admin"])):
            r = http.get("/v1/admin/projections", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 401, (token, r.text)


def test_two_authorization_headers_are_a_400(plain: Stack) -> None:
    ann, cat = auth(plain, "u-ann")["Authorization"], auth(plain, "u-cat")["Authorization"]
    with plain.client() as http:
        for pair in ((ann, cat), (ann, ann), ("Bearer garbage", ann)):
            r = http.get("/v1/threads/summary", headers=[("Authorization", pair[0]), ("Authorization", pair[1])])
            assert r.status_code == 400, r.text
            assert r.json()["type"] == "/problems/invalid-parameter"
        assert http.get("/v1/threads/summary", headers={"Authorization": ann}).status_code == 200
