"""End-to-end fixtures: Redis, the control plane under gunicorn, proxy processes, a backend."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import pytest

from tests.helpers.backend_process import EchoBackend
from tests.helpers.procs import Api, ControlPlane, Proxy


@dataclass
class Stack:
    redis_url: str
    prefix: str
    control: ControlPlane
    proxy: Proxy
    backend: EchoBackend
    api: Api

    def new_proxy(self, *args: str, **env: str) -> Proxy:
        return Proxy(self.redis_url, self.prefix, *args, **env)


@pytest.fixture(scope="session")
def stack(redis_server):
    prefix = f"e2e{secrets.token_hex(3)}:"
    backend = EchoBackend().start()
    control = ControlPlane(redis_server.url, prefix, APP_BASE_URL="https://linx.example.test")
    proxy = Proxy(redis_server.url, prefix)
    try:
        control.wait_ready()
        proxy.wait_ready()
        yield Stack(redis_server.url, prefix, control, proxy, backend, Api(control.url))
    finally:
        proxy.stop()
        control.stop()
        backend.stop()


@dataclass
class Published:
    tenant_id: str
    key: str
    container: dict
    service: dict
    proxy_url: str

    @property
    def sid(self) -> str:
        return self.service["service_id"]

    @property
    def token(self) -> str:
        return self.service["public_url"].split("linx_token=", 1)[1]

    def url(self, rest: str = "/", proxy: Proxy | None = None) -> str:
        base = proxy.url if proxy is not None else self.proxy_url
        return f"{base}/linx/{self.sid}{rest}"


@pytest.fixture
def publish(stack):
    """Publish a service of the echo backend for a fresh tenant; returns a ``Published``."""

    def make(**fields) -> Published:
        tenant_id, key = stack.api.tenant("t" + secrets.token_hex(3))
        ctr = stack.api.container(tenant_id)
        fields.setdefault("name", "echo")
        fields.setdefault("enable_websockets", True)
        svc = stack.api.publish(key, ctr["container_id"], stack.backend.port, **fields)
        return Published(tenant_id, key, ctr, svc, stack.proxy.url)

    return make
