"""The cache scopes each read model declares (``Projection.scopes``) are what ``/v1/events``' hub
routes by: every registered read model declares its scopes, each scope string a read model builds
parses back to its own declaration and key (whatever the key holds), and the hub has a route for
every declared audience. tests/integration/test_scopes.py checks the scopes ``apply`` returns."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from readside.api.changes import roles_of
from readside.readmodels.base import NOBODY, ScopeKind
from readside.readmodels.payments import scopes as payments
from readside.readmodels.providers import scopes as providers
from readside.readmodels.registry import REGISTRY, SCOPE_KINDS, route
from readside.readmodels.requests import scopes as requests
from readside.readmodels.threads import scopes as threads
from readside.readmodels.workflows import scopes as workflows

keys = st.text(max_size=30)  # ids may hold ':', newlines, anything


def test_every_read_model_declares_scopes_the_hub_can_route() -> None:
    for projection in REGISTRY.values():
        assert projection.scopes, f"{projection.name} declares no cache scopes"
    assert roles_of(SCOPE_KINDS.values()) == {"technician"}
    assert {k.name for p in REGISTRY.values() for k in p.scopes} == set(SCOPE_KINDS)


def test_an_unknown_audience_is_refused() -> None:
    try:
        roles_of([ScopeKind("odd", "somebody")])
    except ValueError as exc:
        assert "odd" in str(exc)
    else:
        raise AssertionError("an audience the hub cannot route was accepted")


@given(keys)
def test_every_declared_keyed_scope_parses_back_to_its_kind_and_key(key: str) -> None:
    for kind in SCOPE_KINDS.values():
        if kind.keyed:
            assert route(kind.scope(key)) == (kind, key)
        if kind.bare:
            assert route(kind.scope()) == (kind, None)


@given(keys, st.integers(0, 10**12))
def test_each_read_models_scope_builders_route_to_its_own_declarations(key: str, unit: int) -> None:
    built = {
        "threads": [threads.viewer(key), threads.thread(key)],
        "requests": [requests.requests(key), requests.version_key(None), requests.version_key(unit)],
        "providers": [providers.listing_key(None), providers.listing_key(key), providers.ALL_KEY],
        "workflows": [workflows.owner_key(key), workflows.TEMPLATES_KEY],
        "payments": [payments.thread_key(key)],
    }
    assert set(built) == set(REGISTRY)
    for name, scopes in built.items():
        for scope in scopes:
            found = route(scope)
            assert found is not None and found[0] in REGISTRY[name].scopes, scope


def test_scope_strings_are_unchanged() -> None:
    """The ETags' and the change feed's scope strings stay what clients and Redis already hold."""
    assert threads.viewer("u-1") == "viewer:u-1" and threads.thread("t-1") == "thread:t-1"
    assert requests.version_key(None) == "requests:*" and requests.version_key(7) == "requests:7"
    assert providers.listing_key(None) == "providers" and providers.listing_key("dj") == "providers:dj"
    assert workflows.owner_key("u-1") == "workflows:u-1" and workflows.TEMPLATES_KEY == "templates"
    assert route("providers:dj")[0].audience == NOBODY  # type: ignore[index]


def test_undeclared_scopes_and_forms_do_not_route() -> None:
    for scope in ("nope:1", "viewer", "thread", "templates:x", "workflows", "requests", ""):
        assert route(scope) is None, scope
