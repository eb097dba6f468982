"""A proxy that loses Redis, a Redis that comes back (full or empty), TLS, and worker processes."""

from __future__ import annotations

import secrets
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests
import websocket

from deploy.redis_process import RedisProcess
from tests.helpers.procs import Api, ControlPlane, Proxy, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning"),
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
    ),
]


def status(url: str, token: str | None = None, **kw) -> int:
    headers = {"X-Linx-Token": token} if token else {}
    try:
        return requests.get(url, headers=headers, timeout=3, **kw).status_code
    except requests.RequestException:
        return -1


class World:
    """Its own Redis (restartable, with an append-only file), control plane and proxies."""

    def __init__(self, backend, **proxy_env: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="linx-world-")
        self.redis = RedisProcess(workdir=self.dir, extra_args=("--appendonly", "yes")).start()
        self.prefix = f"w{secrets.token_hex(3)}:"
        self.backend = backend
        self.control = ControlPlane(self.redis.url, self.prefix).wait_ready()
        self.api = Api(self.control.url)
        self.proxies: list[Proxy] = []
        self.proxy = self.add_proxy(**proxy_env)

    def add_proxy(self, *args: str, **env: str) -> Proxy:
        proxy = Proxy(self.redis.url, self.prefix, *args, **env)
        self.proxies.append(proxy)
        return proxy.wait_ready()

    def publish(self, **fields) -> tuple[dict, str, str]:
        tenant_id, key = self.api.tenant("w" + secrets.token_hex(2))
        ctr = self.api.container(tenant_id)
        fields.setdefault("name", "svc")
        svc = self.api.publish(key, ctr["container_id"], self.backend.port, **fields)
        token = svc["public_url"].split("linx_token=", 1)[1] if "linx_token=" in svc["public_url"] else None
        return svc, key, token

    def url(self, svc: dict, proxy: Proxy | None = None) -> str:
        return f"{(proxy or self.proxy).url}/linx/{svc['service_id']}/"

    def stop(self) -> None:
        for p in self.proxies:
            p.stop()
        self.control.stop()
        self.redis.stop()


@pytest.fixture
def world_factory(stack):
    worlds = []

    def make(**env):
        w = World(stack.backend, **env)
        worlds.append(w)
        return w

    yield make
    for w in worlds:
        w.stop()


def test_redis_restart_with_delete_right_after_it_returns(world_factory):
    w = world_factory()
    keep, _, keep_token = w.publish(name="keep")
    gone, gone_key, gone_token = w.publish(name="gone")
    for svc, tok in ((keep, keep_token), (gone, gone_token)):
        wait_for(lambda s=svc, t=tok: status(w.url(s), t) == 200, 5)
    w.redis.kill()
    # known services keep working while Redis is away
    for _ in range(5):
        assert status(w.url(keep), keep_token) == 200
    # mutations fail cleanly (never a false 2xx) while Redis is down
    resp = w.api.call("DELETE", f"/api/services/{gone['service_id']}", gone_key)
    assert resp.status_code == 503
    w.redis.start()
    returned = time.monotonic()
    w.api.call("DELETE", f"/api/services/{gone['service_id']}", gone_key, expect=204)
    wait_for(lambda: status(w.url(gone), gone_token) == 404, 5)
    assert time.monotonic() - returned < 5
    assert status(w.url(keep), keep_token) == 200
    fresh, _, fresh_token = w.publish(name="fresh")
    wait_for(lambda: status(w.url(fresh), fresh_token) == 200, 1)


def test_redis_coming_back_empty_drops_every_route(world_factory):
    w = world_factory()
    svc, _, token = w.publish()
    wait_for(lambda: status(w.url(svc), token) == 200, 5)
    w.redis.kill()
    # a Redis that restarts empty (its data lost): the proxy must not keep serving ghosts
    import shutil

    shutil.rmtree(w.redis.workdir)
    w.redis.workdir = tempfile.mkdtemp(prefix="linx-empty-")
    w.redis.start()
    wait_for(lambda: status(w.url(svc), token) == 404, 5)


def test_stale_sync_fails_closed_for_token_services_only(world_factory):
    w = world_factory(LINX_MAX_STALENESS_SECS="2")
    tok_svc, _, token = w.publish(name="tok")
    pub_svc, _, _ = w.publish(name="pub", auth_mode="public")
    wait_for(lambda: status(w.url(tok_svc), token) == 200 and status(w.url(pub_svc)) == 200, 5)
    w.redis.kill()
    t0 = time.monotonic()
    resp_holder = []

    def stale():
        resp = requests.get(w.url(tok_svc), headers={"X-Linx-Token": token}, timeout=3)
        resp_holder.append(resp)
        return resp.status_code == 503

    wait_for(stale, 6)
    assert time.monotonic() - t0 >= 1.0  # served what it knew for a while first
    assert resp_holder[-1].headers["X-Linx-Error"] == "sync_stale"
    assert status(w.url(pub_svc)) == 200
    assert requests.get(w.proxy.admin_url + "/readyz", timeout=3).status_code == 503
    w.redis.start()
    wait_for(lambda: status(w.url(tok_svc), token) == 200, 5)
    wait_for(lambda: requests.get(w.proxy.admin_url + "/readyz", timeout=3).status_code == 200, 5)


def test_tls_listener_https_and_wss(world_factory, tmp_path):
    trustme = pytest.importorskip("trustme")  # a declared test dependency; never absent in tox
    ca = trustme.CA()
    cert = ca.issue_cert("proxy.linx.test", "127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_pem.write_to_path(str(key_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    from deploy.redis_process import free_port

    tls_port = free_port()
    w = world_factory(
        LINX_PROXY_TLS_LISTEN=f"127.0.0.1:{tls_port}",
        LINX_TLS_CERT=str(cert_file),
        LINX_TLS_KEY=str(key_file),
    )
    svc, _, token = w.publish(enable_websockets=True)
    url = f"https://127.0.0.1:{tls_port}/linx/{svc['service_id']}/echo?linx_token={token}"
    resp = wait_for(
        lambda: (r := requests.get(url, verify=str(ca_file), timeout=5)).status_code == 200 and r.json(), 5
    )
    assert ["X-Forwarded-Proto", "https"] in resp["headers"]
    cookie = requests.get(url, verify=str(ca_file), timeout=5).headers["Set-Cookie"]
    assert "; Secure" in cookie
    ctx = ssl.create_default_context(cafile=str(ca_file))
    ws = websocket.create_connection(
        f"wss://127.0.0.1:{tls_port}/linx/{svc['service_id']}/ws",
        header=[f"X-Linx-Token: {token}"],
        sslopt={"context": ctx},
        timeout=5,
    )
    try:
        ws.send("over tls")
        assert ws.recv() == "over tls"
    finally:
        ws.close()
    # TLS is the standard library's: pyOpenSSL and cryptography (~12 MiB a process) are loaded
    # by neither a TLS proxy nor a plain one.
    tls_proxy, plain_proxy = w.proxy, w.add_proxy()
    assert not _maps_openssl(tls_proxy) and not _maps_openssl(plain_proxy)


def _maps_openssl(proxy) -> bool:
    maps = Path(f"/proc/{proxy.proc.proc.pid}/maps").read_text()
    return "/OpenSSL/" in maps or "/cryptography/" in maps


def test_workers_share_the_listener_and_each_syncs(world_factory):
    w = world_factory()
    proxy = w.add_proxy("--workers", "2")
    children = subprocess.run(
        ["pgrep", "-P", str(proxy.proc.proc.pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    assert len(children) == 2
    svc, key, token = w.publish()
    url = w.url(svc, proxy)
    # many fresh connections land on both workers; every one must already know the route
    wait_for(lambda: status(url, token) == 200, 2)
    statuses = [status(url, token) for _ in range(40)]
    assert statuses == [200] * 40, str(statuses)
    w.api.call("DELETE", f"/api/services/{svc['service_id']}", key, expect=204)
    wait_for(lambda: all(status(url, token) == 404 for _ in range(20)), 2)
    assert proxy.stop() == 0
