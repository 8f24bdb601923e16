"""What installing Readside puts into an environment: one import name, ``readside``.

A core app installs Readside for its publisher (``readside.schemas``); its own ``api``, ``shared``,
``schemas`` or ``projector`` packages must not be shadowed. The design's top-level folders are
mapped under ``readside`` by ``setup.py`` (``FOLDERS``), which finds their sub-packages: the wheel
built from this tree is checked here, as pip would install it.
"""

from __future__ import annotations

import runpy
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS: dict[str, str] = runpy.run_path(str(ROOT / "setup.py"), run_name="readside_setup")["FOLDERS"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    source = out / "source"  # a copy: setuptools leaves a build/ folder in the tree it builds
    for name in ("pyproject.toml", "setup.py", "README.md"):
        source.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, source / name)
    for folder in set(FOLDERS.values()):
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
    """Sub-packages are found, not listed: a new read model's folder ships without a line anywhere."""
    names = set(wheel.namelist())
    for package, folder in FOLDERS.items():
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
