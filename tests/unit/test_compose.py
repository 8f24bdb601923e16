"""compose.yaml and the Dockerfile, checked without Docker (none on this machine or in CI).

What `docker compose up` would trip over first is checked here: every Readside service runs the
image built once from ./Dockerfile (nothing installs at start), its command is one the CLI
accepts, the projector and the API wait for a one-shot migration, long-running services restart,
the API and the projector have health checks on their own /readyz, and the broker keeps full
history with room for 1 MB workflow payloads.
"""

from __future__ import annotations

import re
import runpy
from pathlib import Path
from typing import Any

import pytest
import yaml

from readside.cli import build_parser

ROOT = Path(__file__).parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
OURS = sorted(name for name, s in SERVICES.items() if s.get("image") == "readside:local")


def test_our_services_are_the_expected_ones() -> None:
    assert OURS == ["api", "load", "migrate", "projector"]


@pytest.mark.parametrize("name", OURS)
def test_built_once_from_the_dockerfile_and_nothing_installs_at_start(name: str) -> None:
    service = SERVICES[name]
    assert service["build"] == "."
    assert "volumes" not in service, "the code comes from the image, not a bind mount"
    assert not any("pip" in part for part in service["command"])


@pytest.mark.parametrize("name", OURS)
def test_each_command_is_one_the_cli_accepts(name: str) -> None:
    build_parser().parse_args(SERVICES[name]["command"])  # SystemExit on an unknown option


def test_the_dockerfile_copies_what_exists_and_installs_the_package() -> None:
    text = (ROOT / "Dockerfile").read_text()
    copied = set()
    for sources in re.findall(r"^COPY (.+) \S+$", text, flags=re.M):
        for source in sources.split():
            assert (ROOT / source).exists(), source
            copied.add(source)
    # every folder the package is made of (setup.py's FOLDERS) reaches the image, and setup.py too
    folders = set(runpy.run_path(str(ROOT / "setup.py"), run_name="readside_setup")["FOLDERS"].values()) | {"setup.py"}
    assert folders <= copied, folders - copied
    assert re.search(r"^RUN PIP_CONSTRAINT=\S+ pip install /src && rm -rf /src", text, flags=re.M)
    assert re.search(r'^ENTRYPOINT \["readside"\]', text, flags=re.M)
    assert re.search(r"^USER (?!root)", text, flags=re.M), "the image does not run as root"
    # what the image needs must not be ignored by the build context
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert not {"readside", "api", "projector", "schemas", "shared", "pyproject.toml", "README.md", "constraints.txt"} & ignored


@pytest.mark.parametrize("name", ["projector", "api"])
def test_servers_wait_for_the_migration_and_their_dependencies(name: str) -> None:
    needs = SERVICES[name]["depends_on"]
    assert needs["migrate"] == {"condition": "service_completed_successfully"}
    for dependency in ("kafka", "postgres", "redis"):
        assert needs[dependency] == {"condition": "service_healthy"}
        assert "healthcheck" in SERVICES[dependency]


def test_the_migration_is_one_shot_and_the_rest_restart() -> None:
    assert SERVICES["migrate"]["command"] == ["migrate"]
    assert SERVICES["migrate"]["restart"] == "no"
    for name, service in SERVICES.items():
        if name != "migrate":
            assert service.get("restart") == "unless-stopped", name


@pytest.mark.parametrize("name,port", [("projector", 9100), ("api", 8000)])
def test_health_checks_probe_the_servers_own_readyz(name: str, port: int) -> None:
    service = SERVICES[name]
    command = service["command"]
    assert command[command.index("--port") + 1] == str(port)
    assert f"http://127.0.0.1:{port}/readyz" in " ".join(service["healthcheck"]["test"])


def test_the_api_refuses_to_start_without_a_secret_and_the_demo_stream_is_opt_in() -> None:
    secret = SERVICES["api"]["environment"]["READSIDE_JWT_SECRET"]
    assert secret.startswith("${READSIDE_JWT_SECRET:?")
    assert "READSIDE_JWT_SECRET" not in SERVICES["projector"]["environment"]
    assert SERVICES["load"]["profiles"] == ["demo"]


def test_the_broker_keeps_full_history_and_takes_large_records() -> None:
    env = SERVICES["kafka"]["environment"]
    assert env["KAFKA_LOG_RETENTION_MS"] == -1
    assert env["KAFKA_MESSAGE_MAX_BYTES"] >= 2 * 1024 * 1024
