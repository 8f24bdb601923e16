"""Where the ``readside`` distribution's packages are; everything else is in pyproject.toml.

One import name, ``readside``: each of the design's top-level folders is a sub-package of it
(``api/`` is ``readside.api``...), and ``readside/`` itself is the composition root. Sub-packages
are found, not listed: a new read model's folder (``readmodels/<name>/``) ships without a line here.
"""

from __future__ import annotations

from setuptools import find_packages, setup

FOLDERS = {
    "readside": "readside",
    "readside.api": "api",
    "readside.projector": "projector",
    "readside.readmodels": "readmodels",
    "readside.schemas": "schemas",
    "readside.shared": "shared",
}


def packages() -> list[str]:
    found = set(FOLDERS)
    for name, folder in FOLDERS.items():
        found |= {f"{name}.{sub}" for sub in find_packages(folder)}
    return sorted(found)


if __name__ == "__main__":  # as setuptools runs it; tests read FOLDERS without building
    setup(package_dir=FOLDERS, packages=packages())
