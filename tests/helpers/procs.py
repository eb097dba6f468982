"""The stack as end-to-end tests start it: ``deploy.stack``'s control plane and proxy on a test's
Redis and key prefix, their output captured for failure messages, and the API as tests call it.

Every process is reaped (terminate, kill after a timeout, wait) by its ``stop()``; readiness is
polled with ``wait_for``'s deadline, never slept for.
"""

from __future__ import annotations

import tempfile
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path

import requests

from control.client import Client
from deploy import stack
from deploy.stack import ROOT, ProcessExited, wait_for

__all__ = ["ADMIN_TOKEN", "ROOT", "Api", "ControlPlane", "ProcessExited", "Proxy", "wait_for"]

ADMIN_TOKEN = "test-admin-token-0123456789"


def _log(name: str) -> Path:
    """A fresh file for a process's output, kept after the run (read it when a test fails)."""
    with tempfile.NamedTemporaryFile(prefix=f"linx-{name}-", suffix=".log", delete=False) as f:
        return Path(f.name)


class ControlPlane(stack.ControlPlane):
    """Two gunicorn workers on a free port, with the tests' admin token; ``env`` adds settings."""

    def __init__(self, redis_url: str, prefix: str, **env: str) -> None:
        environ = stack.stack_env(redis_url, prefix, LINX_ADMIN_TOKEN=ADMIN_TOKEN, **env)
        super().__init__(environ, workers=2, log=_log("control"))


class Proxy(stack.Proxy):
    """``python -m dataplane *args`` on free ports; ``env`` adds settings."""

    def __init__(self, redis_url: str, prefix: str, *args: str, **env: str) -> None:
        super().__init__(stack.stack_env(redis_url, prefix, **env), *args, log=_log("proxy"))

    def metrics(self) -> str:
        return requests.get(self.admin_url + "/metrics", timeout=2).text

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")


class Api:
    """The control plane's API as tests call it: ``control.client.Client`` (``.client``, with the
    tests' admin token) for the test data, and ``call`` for a test that needs the raw answer (its
    status, headers or error body) of any request."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = requests.Session()
        # a test's request carries the credential it names, never a cookie a response set
        self.http.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        self.client = Client(base_url, admin_token=ADMIN_TOKEN, session=self.http)

    def call(self, method: str, path: str, key: str | None = None, expect: int | None = None, **kw):
        """``method path`` with ``key`` (the admin token by default); asserts the status when
        ``expect`` is given; returns the ``requests.Response``."""
        headers = dict(kw.pop("headers", {}))
        headers["Authorization"] = f"Bearer {ADMIN_TOKEN if key is None else key}"
        resp = self.http.request(method, self.base_url + path, headers=headers, timeout=10, **kw)
        if expect is not None:
            assert resp.status_code == expect, (method, path, resp.status_code, resp.text)
        return resp

    def tenant(self, name: str = "acme") -> tuple[str, str]:
        """A new tenant: ``(tenant_id, api_key)``."""
        body = self.client.create_tenant(name)
        return body["tenant_id"], body["api_key"]

    def container(self, tenant_id: str, address: str = "127.0.0.1", **fields) -> dict:
        """A container of ``tenant_id``, running and network-ready unless ``fields`` say otherwise."""
        return self.client.register_container(tenant_id, address, **fields)

    def publish(self, key: str, container_id: str, port: int, **fields) -> dict:
        """Publish ``port`` with the tenant's ``key`` (service name ``svc`` by default)."""
        tenant = Client(self.base_url, api_key=key, session=self.http)
        return tenant.publish(container_id, fields.pop("name", "svc"), port, **fields)
