"""The direction of dependencies: the read models (``readmodels/``, ``readside.readmodels``) are
used by the projector and the API, and use neither. A read model imports only the schemas, the
shared helpers, the standard library and third-party packages, and other read models (threads
and providers use avatars). Checked on the source with ``ast``, imports inside functions and
``TYPE_CHECKING`` blocks included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
READMODELS = ROOT / "readmodels"
FORBIDDEN = ("readside.api", "readside.projector", "readside.cli", "readside.load", "readside.demo", "readside.embedded")
ALLOWED = ("readside.readmodels", "readside.schemas", "readside.shared")


def _package_of(path: Path, root: Path) -> str:
    """The package a module of ``root`` (the folder of ``readside.readmodels``) belongs to."""
    return ".".join(("readside", "readmodels", *path.relative_to(root).parts[:-1]))


def _imports(path: Path, root: Path = READMODELS) -> list[tuple[int, str]]:
    """Every module ``path`` imports, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package_of(path, root).split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names if module == "readside"]
    return found


FILES = sorted(READMODELS.rglob("*.py"))


def test_the_read_models_are_found() -> None:
    names = {p.relative_to(READMODELS).as_posix() for p in FILES}
    for model in ("threads", "requests", "providers", "workflows", "avatars"):
        assert f"{model}/__init__.py" in names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_a_read_model_imports_neither_the_api_nor_the_projector(path: Path) -> None:
    for line, module in _imports(path):
        if module == "readside" or module.startswith("readside."):
            assert not module.startswith(FORBIDDEN), f"{path.relative_to(ROOT)}:{line} imports {module}"
            assert module.startswith(ALLOWED) or module == "readside", f"{path.relative_to(ROOT)}:{line} imports {module}"
        assert not module.startswith(("api", "projector")), f"{path.relative_to(ROOT)}:{line} imports {module}"


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The checker itself: each form of import is seen (a check that sees nothing passes always)."""
    sample = tmp_path / "readmodels" / "threads" / "sample.py"
    sample.parent.mkdir(parents=True)
    sample.write_text(
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "import readside.api.auth\n"
        "from readside.projector import engine\n"
        "from readside import api\n"
        "if TYPE_CHECKING:\n"
        "    from readside.api.http import Context\n"
        "def f():\n"
        "    from ...projector.engine import x\n"
        "from . import fold\n"
    )
    modules = [m for _, m in _imports(sample, tmp_path / "readmodels")]
    assert [m for m in modules if m.startswith(FORBIDDEN)] == [
        "readside.api.auth", "readside.projector", "readside.api", "readside.api.http", "readside.projector.engine",
    ]
    assert "readside.readmodels.threads" in modules
