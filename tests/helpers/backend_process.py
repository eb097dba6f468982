"""Run ``echo_backend.py`` as a child process and talk to its control endpoints.

    with EchoBackend() as backend:
        requests.get(f"{backend.url}/echo")
        assert backend.requests()[0]["path"] == "/echo"

The child watches its stdin: if the test process dies without calling ``stop()``, the pipe
closes and the backend exits on its own.
"""

from __future__ import annotations

import http.client
import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

SCRIPT = Path(__file__).with_name("echo_backend.py")


class EchoBackend:
    """One echo backend process on a free port (``.port``, ``.url``), reaped by ``stop()``."""

    def __init__(self, host: str = "127.0.0.1", *, log: bool = False, startup_timeout: float = 10.0) -> None:
        self.host = host
        self.log = log
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[len("http") :]

    def start(self) -> EchoBackend:
        """Spawn the backend and wait (bounded) for its ``LISTENING <port>`` line."""
        args = [sys.executable, str(SCRIPT), "--host", self.host, "--port", "0", "--watch-stdin"]
        if self.log:
            args.append("--log")
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            line = self._read_line(self.startup_timeout)
            if not line.startswith("LISTENING "):
                raise RuntimeError(f"echo backend said {line!r} instead of LISTENING <port>")
            self.port = int(line.split()[1])
        except BaseException:
            self.stop()
            raise
        return self

    def _read_line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        buf = b""
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"echo backend did not start within {timeout} s")
                if sel.select(left):
                    chunk = os.read(fd, 4096)
                    if not chunk:
                        code = self.proc.wait(timeout=5)
                        raise RuntimeError(f"echo backend exited with {code} before listening")
                    buf += chunk
        return buf.split(b"\n", 1)[0].decode()

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate (kill after ``timeout``), wait, close pipes; safe to call twice."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        finally:
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    try:
                        pipe.close()
                    except OSError:
                        pass

    def __enter__(self) -> EchoBackend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- control endpoints ----------------------------------------------------------------

    def call(self, method: str, path: str, timeout: float = 10.0) -> object:
        """Send one control request straight to the backend (never through the proxy)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"{method} {path}: {resp.status} {body[:200]!r}")
            return json.loads(body)
        finally:
            conn.close()

    def requests(self, raw: bool = False) -> list[dict]:
        """Every request recorded since the last reset, oldest first (``/__`` ones excluded)."""
        return self.call("GET", "/__requests?raw=1" if raw else "/__requests")

    def reset(self) -> None:
        self.call("POST", "/__reset")

    def release(self, name: str, n: int = 1) -> dict:
        """Let ``n`` more gated steps of ``name`` (an SSE event, a slow read) proceed."""
        return self.call("POST", f"/__release/{name}?n={n}")

    def gate(self, name: str) -> dict:
        """``{"released", "consumed", "waiting"}``: waiting > 0 means a handler is blocked."""
        return self.call("GET", f"/__gate/{name}")

    def connections(self) -> list[dict]:
        """Open client connections (excluding the one asking)."""
        return self.call("GET", "/__connections")

    def wait_for(
        self, predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.02
    ) -> object:
        """Poll ``predicate`` until it returns something truthy; raise after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() >= deadline:
                raise AssertionError(f"condition not met within {timeout} s")
            time.sleep(interval)

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[dict]:
        """Wait until at least ``count`` requests are recorded; return them."""
        return self.wait_for(lambda: r if len(r := self.requests()) >= count else None, timeout)

    def wait_for_gate(self, name: str, timeout: float = 5.0) -> dict:
        """Wait until a handler is blocked on gate ``name``."""
        return self.wait_for(lambda: g if (g := self.gate(name))["waiting"] else None, timeout)
