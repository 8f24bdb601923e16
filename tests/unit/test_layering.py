"""The floors of the product, read from the import statements (ast): the API never imports the
projector, the projector never imports the API, ``schemas`` (the event contract) imports none of
the floors above it (API, projector, read models, the composition root ``readside/``), and
``shared`` (the plumbing, the ground floor) imports none of them nor ``schemas``.
tests/unit/test_readmodels_dependencies.py checks the read models' floor."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSITION_ROOT = sorted(
    {f"readside.{p.stem}" for p in (ROOT / "readside").glob("*.py") if p.stem != "__init__"}
    | {f"readside.{p.name}" for p in (ROOT / "readside").iterdir() if (p / "__init__.py").exists()}
)


def _imports(folder: str) -> list[tuple[str, int, str]]:
    """(file, line, imported module) of every import under ``folder``, relative ones resolved."""
    out = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        package = ["readside", folder, *path.relative_to(ROOT / folder).parent.parts]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
                module = ".".join(p for p in (base, node.module or "") if p)
                # ``from readside import api`` imports readside.api
                names = [module] + [f"{module}.{alias.name}" for alias in node.names]
            else:
                continue
            out += [(str(path.relative_to(ROOT)), node.lineno, name) for name in names]
    return out


def _offending(folder: str, forbidden: list[str]) -> list[str]:
    return sorted(
        f"{file}:{line} imports {name}"
        for file, line, name in _imports(folder)
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    )


def test_the_api_never_imports_the_projector() -> None:
    assert _offending("api", ["readside.projector"]) == []


def test_the_projector_never_imports_the_api() -> None:
    assert _offending("projector", ["readside.api"]) == []


@pytest.mark.parametrize("floor", ["readside.api", "readside.projector", "readside.readmodels", *COMPOSITION_ROOT])
@pytest.mark.parametrize("folder", ["shared", "schemas"])
def test_the_lower_floors_import_no_floor_above_them(folder: str, floor: str) -> None:
    assert _offending(folder, [floor]) == []


def test_shared_is_the_ground_floor() -> None:
    assert _offending("shared", ["readside.schemas"]) == []


def test_the_checks_see_imports() -> None:
    """The walk finds what it looks for (a check that sees nothing proves nothing)."""
    assert any(name.startswith("readside.projector") for _, _, name in _imports("readside"))
    assert any(name == "readside.shared.errors" for _, _, name in _imports("api"))
    assert {"readside.serve", "readside.commands", "readside.load"} <= set(COMPOSITION_ROOT)
