"""Helpers of the hardening suite (the fixtures that use them are in ``conftest.py``)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import requests

from tests.helpers.backend_process import EchoBackend
from tests.helpers.procs import Api, ControlPlane, Proxy, wait_for


@dataclass
class Svc:
    """A published service and who owns it."""

    tenant_id: str
    key: str
    container_id: str
    record: dict

    @property
    def sid(self) -> str:
        return self.record["service_id"]

    @property
    def token(self) -> str | None:
        url = self.record["public_url"]
        return url.split("linx_token=", 1)[1] if "linx_token=" in url else None

    @property
    def path(self) -> str:
        return f"/linx/{self.sid}"


@dataclass
class Hardening:
    redis_url: str
    prefix: str
    control: ControlPlane
    api: Api
    backend: EchoBackend
    proxies: list[Proxy] = field(default_factory=list)

    def tenant(self) -> tuple[str, str]:
        return self.api.tenant("h" + secrets.token_hex(3))

    def publish(
        self,
        port: int | None = None,
        *,
        address: str = "127.0.0.1",
        tenant: tuple[str, str] | None = None,
        **fields,
    ) -> Svc:
        tenant_id, key = tenant or self.tenant()
        ctr = self.api.container(tenant_id, address=address)
        fields.setdefault("name", "s" + secrets.token_hex(3))
        rec = self.api.publish(key, ctr["container_id"], port or self.backend.port, **fields)
        return Svc(tenant_id, key, ctr["container_id"], rec)

    def proxy(self, **env: str) -> Proxy:
        """A proxy process on this stack's prefix, ready; stopped by ``stop_proxy`` or at the end."""
        proxy = Proxy(self.redis_url, self.prefix, **env)
        self.proxies.append(proxy)
        return proxy.wait_ready()

    def stop_proxy(self, proxy: Proxy) -> None:
        proxy.stop()
        if proxy in self.proxies:
            self.proxies.remove(proxy)

    def isolated(self) -> Hardening:
        """A stack of its own (key prefix and control plane) on the same Redis and backend:
        no other proxy of the session sees its services. Stop it with ``close()``."""
        prefix = f"hi{secrets.token_hex(3)}:"
        control = ControlPlane(self.redis_url, prefix, APP_BASE_URL="https://linx.example.test")
        stack = Hardening(self.redis_url, prefix, control, Api(control.url), self.backend)
        try:
            control.wait_ready()
        except BaseException:
            stack.close()
            raise
        return stack

    def close(self) -> None:
        for proxy in self.proxies:
            proxy.stop()
        self.proxies = []
        self.control.stop()


def reachable(proxy: Proxy, svc: Svc, rest: str = "/", timeout: float = 5.0) -> None:
    """Wait until ``proxy`` relays ``svc`` (a 200 from the container)."""
    headers = {"X-Linx-Token": svc.token} if svc.token else {}
    url = f"{proxy.url}{svc.path}{rest}"
    wait_for(
        lambda: requests.get(url, headers=headers, timeout=2).status_code == 200,
        timeout,
        what=f"{url} -> 200",
    )


def assert_clean_log(proxy: Proxy) -> None:
    out = proxy.proc.output()
    assert "Traceback" not in out and "Unhandled" not in out, out[-4000:]


def proc_status(pid: int, field_name: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field_name} in /proc/{pid}/status")
