"""Redis Sentinel and Cluster topologies on loopback, from the same server binary as the tests."""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from deploy.redis_process import RedisProcess, find_server_binary, free_port


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    while True:
        port = free_port()
        if port >= 55000:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue


def _cli() -> str:
    server = find_server_binary()
    for name in ("valkey-cli", "redis-cli"):
        candidate = Path(server).with_name(name)
        if candidate.exists():
            return str(candidate)
    raise RuntimeError("no valkey-cli/redis-cli next to " + server)


class Cluster:
    """Three masters, slots assigned, ready for clients."""

    def __init__(self, size: int = 3) -> None:
        self.nodes: list[RedisProcess] = []
        for _ in range(size):
            d = tempfile.mkdtemp(prefix="linx-cluster-")
            self.nodes.append(
                RedisProcess(
                    port=cluster_port(),
                    workdir=d,
                    extra_args=("--cluster-enabled", "yes", "--cluster-config-file", d + "/nodes.conf"),
                )
            )

    def start(self) -> Cluster:
        for n in self.nodes:
            n.start()
        out = subprocess.run(
            [
                _cli(),
                "--cluster",
                "create",
                *[f"127.0.0.1:{n.port}" for n in self.nodes],
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if out.returncode != 0:
            self.stop()
            raise RuntimeError("cluster create failed: " + out.stdout + out.stderr)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            info = redis.Redis(port=self.nodes[0].port).execute_command("CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            if "cluster_state:ok" in text:
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("cluster did not reach cluster_state:ok")

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


class SentinelSet:
    """A master, a replica and three sentinels."""

    def __init__(self, master_name: str = "linxmaster") -> None:
        self.name = master_name
        self.master = RedisProcess()
        self.replica = RedisProcess()
        self.sentinels: list[subprocess.Popen] = []
        self.sentinel_ports: list[int] = []
        self.dirs: list[str] = []

    def start(self) -> SentinelSet:
        self.master.start()
        self.replica.extra_args = ("--replicaof", "127.0.0.1", str(self.master.port))
        self.replica.start()
        for _ in range(3):
            port = free_port()
            d = tempfile.mkdtemp(prefix="linx-sentinel-")
            conf = Path(d) / "sentinel.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {d}\n"
                f"sentinel monitor {self.name} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {self.name} 1000\n"
                f"sentinel failover-timeout {self.name} 5000\n"
                f"sentinel parallel-syncs {self.name} 1\n"
            )
            proc = subprocess.Popen(
                [find_server_binary(), str(conf), "--sentinel"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            self.sentinels.append(proc)
            self.sentinel_ports.append(port)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if self._sentinels_agree():
                    return self
            except redis.RedisError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("sentinels did not come up")

    def _sentinels_agree(self) -> bool:
        for port in self.sentinel_ports:
            s = redis.Redis(port=port, decode_responses=True)
            info = s.execute_command("SENTINEL", "MASTER", self.name)
            fields = dict(zip(info[::2], info[1::2], strict=False)) if isinstance(info, list) else info
            if int(fields.get("num-other-sentinels", 0)) < 2 or int(fields.get("num-slaves", 0)) < 1:
                return False
        return True

    def current_master_port(self) -> int:
        s = redis.Redis(port=self.sentinel_ports[0], decode_responses=True)
        host, port = s.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name)
        return int(port)

    @property
    def env(self) -> dict[str, str]:
        return {
            "LINX_REDIS_SENTINELS": ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports),
            "LINX_REDIS_SENTINEL_MASTER": self.name,
        }

    def stop(self) -> None:
        for proc in self.sentinels:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.master.stop()
        self.replica.stop()


__all__ = ["Cluster", "SentinelSet", "cluster_port"]
