"""Dependencies: compatible ranges in the package metadata, exact pins in constraints.txt (CI
installs with PIP_CONSTRAINT=constraints.txt), and the two agree."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).parents[2]
META = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
DECLARED = [Requirement(r) for r in META["dependencies"] + [r for extra in META["optional-dependencies"].values() for r in extra]]
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
