"""Real processes for end-to-end tests: the control plane under gunicorn and proxy daemons.

Every process is reaped: terminate, kill after a timeout, wait. Readiness is polled with a
deadline, never slept for.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests

from deploy.redis_process import free_port

ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "test-admin-token-0123456789"


class ProcessExited(AssertionError):
    """A process a test waits for has exited: waiting longer cannot help."""


def wait_for(check: Callable[[], object], timeout: float = 10.0, interval: float = 0.02, what: str = ""):
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds, or at
    once when it raises ``ProcessExited``."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except ProcessExited:
            raise
        except Exception as exc:  # the thing may not be up yet
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}: {last_exc!r}")


class Proc:
    """A child process with its output captured to a file (read it on failure)."""

    def __init__(self, args: list[str], env: dict[str, str], name: str) -> None:
        self.name = name
        self.log = tempfile.NamedTemporaryFile(prefix=f"linx-{name}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            args,
            env=env,
            cwd=str(ROOT),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.log.close()  # the child holds its own descriptor; we read the file by name

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def wait_up(self, check: Callable[[], object], timeout: float, what: str) -> None:
        """``wait_for(check)``, failing at once if this process exits, and with its output."""

        def up():
            if not self.alive():
                raise ProcessExited(f"{self.name} exited ({self.proc.returncode}):\n{self.output()}")
            return check()

        try:
            wait_for(up, timeout, what=what)
        except ProcessExited:
            raise
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- {self.name} output ---\n{self.output()[-6000:]}") from None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def base_env(redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINX_")}
    env.update(REDIS_URL=redis_url, LINX_KEY_PREFIX=prefix, PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


class ControlPlane:
    def __init__(self, redis_url: str, prefix: str, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environ = base_env(redis_url, prefix, LINX_ADMIN_TOKEN=ADMIN_TOKEN, **env)
        self.proc = Proc(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "deploy/gunicorn.conf.py",
                "-b",
                f"127.0.0.1:{self.port}",
                "--workers",
                "2",
                "control:create_app()",
            ],
            environ,
            "control",
        )

    def wait_ready(self, timeout: float = 20.0) -> ControlPlane:
        self.proc.wait_up(
            lambda: requests.get(self.url + "/api/openapi.json", timeout=1).status_code == 200,
            timeout,
            "control plane",
        )
        return self

    def stop(self) -> None:
        self.proc.stop()


class Proxy:
    def __init__(self, redis_url: str, prefix: str, *args: str, **env: str) -> None:
        self.port = free_port()
        self.admin_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        environ = base_env(
            redis_url,
            prefix,
            LINX_PROXY_LISTEN=f"127.0.0.1:{self.port}",
            LINX_PROXY_ADMIN_LISTEN=f"127.0.0.1:{self.admin_port}",
            **env,
        )
        self.proc = Proc([sys.executable, "-m", "dataplane", *args], environ, "proxy")

    def ready(self) -> bool:
        return requests.get(self.admin_url + "/readyz", timeout=1).status_code == 200

    def wait_ready(self, timeout: float = 20.0) -> Proxy:
        self.proc.wait_up(self.ready, timeout, "proxy readiness")
        return self

    def metrics(self) -> str:
        return requests.get(self.admin_url + "/metrics", timeout=2).text

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def stop(self) -> int | None:
        return self.proc.stop()


class Api:
    """The control plane's API as tests use it."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def call(self, method: str, path: str, key: str | None = None, expect: int | None = None, **kw):
        headers = dict(kw.pop("headers", {}))
        headers.update(self.admin if key is None else {"Authorization": f"Bearer {key}"})
        resp = requests.request(method, self.base + path, headers=headers, timeout=10, **kw)
        if expect is not None:
            assert resp.status_code == expect, (method, path, resp.status_code, resp.text)
        return resp

    def tenant(self, name: str = "acme") -> tuple[str, str]:
        body = self.call("POST", "/api/admin/tenants", json={"name": name}, expect=201).json()
        return body["tenant_id"], body["api_key"]

    def container(self, tenant_id: str, address: str = "127.0.0.1", **fields) -> dict:
        body = {
            "tenant_id": tenant_id,
            "address": address,
            "networking_enabled": True,
            "state": "running",
            "exec_ready": True,
            "network_ready": True,
            **fields,
        }
        return self.call("POST", "/api/admin/containers", json=body, expect=201).json()

    def publish(self, key: str, container_id: str, port: int, **fields) -> dict:
        body = {"name": fields.pop("name", "svc"), "target_port": port, **fields}
        return self.call(
            "POST", f"/api/containers/{container_id}/services", key, json=body, expect=201
        ).json()
