"""What installing Readside puts into an environment: one import name, ``readside``.

A core app installs Readside for its publisher (``readside.schemas``); its own ``api``, ``shared``,
``schemas`` or ``projector`` packages must not be shadowed. The design's top-level folders are
mapped under ``readside`` by pyproject's ``package-dir``: the wheel built from this tree is checked
here, as pip would install it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _folders_with_init() -> set[Path]:
    found = set()
    for folder in set(SETUPTOOLS["package-dir"].values()):
        for init in (ROOT / folder).rglob("__init__.py"):
            found.add(init.parent.relative_to(ROOT))
    return found


def test_every_package_folder_is_listed() -> None:
    """A new sub-package (a read model's folder, say) that is not listed would be missing from an
    installed Readside while the tests, run from the checkout, still pass."""
    mapping = SETUPTOOLS["package-dir"]
    listed = set()
    for package in SETUPTOOLS["packages"]:
        parts = package.split(".")
        for n in range(len(parts), 0, -1):
            if ".".join(parts[:n]) in mapping:
                listed.add(Path(mapping[".".join(parts[:n])], *parts[n:]))
                break
    assert _folders_with_init() == listed


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    source = out / "source"  # a copy: setuptools leaves a build/ folder in the tree it builds
    for name in ("pyproject.toml", "README.md"):
        source.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, source / name)
    for folder in set(SETUPTOOLS["package-dir"].values()):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(source)],
        check=True,
        cwd=out,
    )
    (path,) = out.glob("readside-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_has_one_top_level_name(wheel: zipfile.ZipFile) -> None:
    tops = {name.split("/")[0] for name in wheel.namelist() if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"readside"}
    top_level = [n for n in wheel.namelist() if n.endswith("top_level.txt")]
    if top_level:
        assert wheel.read(top_level[0]).decode().split() == ["readside"]


def test_the_wheel_holds_every_module_of_the_checkout(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    for package, folder in SETUPTOOLS["package-dir"].items():
        for module in (ROOT / folder).rglob("*.py"):
            inside = module.relative_to(ROOT / folder).as_posix()
            assert f"{package.replace('.', '/')}/{inside}" in names, module


def test_installed_readside_leaves_an_apps_own_packages_alone(tmp_path: Path) -> None:
    """An application with its own ``api`` and ``shared`` packages imports them, and Readside's
    publisher, side by side (run from a directory outside the checkout)."""
    for name in ("api", "shared", "schemas", "projector"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"MINE = {name!r}\n")
    code = (
        "import api, shared, schemas, projector\n"
        "assert (api.MINE, shared.MINE, schemas.MINE, projector.MINE) == ('api', 'shared', 'schemas', 'projector')\n"
        "from readside.schemas import make_event\n"
        "print(make_event('message.read', {'thread_id': 't-1', 'reader_id': 'u-1', "
        "'read_up_to': '2026-01-01T00:00:00Z', 'read_at': '2026-01-01T00:00:01Z'})['type'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "message.read"
