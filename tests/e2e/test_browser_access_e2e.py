"""SPEC section 6 against real processes: host routing, CORS, share links, WebSocket carriers."""

from __future__ import annotations

import base64
import os
import secrets
import socket
import time

import pytest
import requests
import websocket

from tests.helpers.procs import Api, ControlPlane, Proxy, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning"),
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
    ),
]

DOMAIN = "svc.linx.test"


class HostWorld:
    def __init__(self, redis_url: str, backend) -> None:
        self.prefix = f"h{secrets.token_hex(3)}:"
        self.proxy = Proxy(redis_url, self.prefix, LINX_SERVICE_DOMAIN=DOMAIN)
        self.base = f"http://linx.test:{self.proxy.port}"
        self.control = ControlPlane(
            redis_url, self.prefix, LINX_SERVICE_DOMAIN=DOMAIN, APP_BASE_URL=self.base
        )
        self.control.wait_ready()
        self.proxy.wait_ready()
        self.api = Api(self.control.url)
        self.backend = backend
        tenant_id, self.key = self.api.tenant("host")
        self.ctr = self.api.container(tenant_id)

    def publish(self, **fields) -> dict:
        fields.setdefault("name", "s" + secrets.token_hex(3))
        fields.setdefault("enable_websockets", True)
        return self.api.publish(self.key, self.ctr["container_id"], self.backend.port, **fields)

    def get(self, host: str, path: str = "/", **kw) -> requests.Response:
        headers = dict(kw.pop("headers", {}))
        headers["Host"] = host
        return requests.get(f"http://127.0.0.1:{self.proxy.port}{path}", headers=headers, timeout=5, **kw)

    def stop(self) -> None:
        self.proxy.stop()
        self.control.stop()


@pytest.fixture(scope="module")
def hw(redis_server, stack):
    w = HostWorld(redis_server.url, stack.backend)
    yield w
    w.stop()


def token_of(url: str) -> str:
    return url.split("linx_token=", 1)[1]


def label_host(svc: dict, port: int | None = None) -> str:
    host = svc["service_id"].replace("_", "-") + "." + DOMAIN
    return f"{host}:{port}" if port else host


# ------------------------------------------------------------------ host routing
def test_host_routed_record_urls(hw):
    svc = hw.publish(routing="host")
    label = svc["service_id"].replace("_", "-")
    assert svc["routing"] == "host"
    assert (
        svc["public_url"]
        == f"http://{label}.{DOMAIN}:{hw.proxy.port}/?linx_token={token_of(svc['public_url'])}"
    )
    assert svc["websocket_url"].startswith(f"ws://{label}.{DOMAIN}:{hw.proxy.port}/?linx_token=")


def test_host_routing_keeps_the_path_and_sets_a_host_only_cookie(hw):
    svc = hw.publish(routing="host")
    tok = token_of(svc["public_url"])
    host = label_host(svc, hw.proxy.port)
    resp = wait_for(lambda: (r := hw.get(host, "/app.js?linx_token=" + tok)).status_code == 200 and r, 2)
    got = resp.json()
    assert got["target"] == "/app.js"
    assert not [v for n, v in got["headers"] if n.lower() == "x-forwarded-prefix"]
    cookie = resp.headers["Set-Cookie"]
    assert "Path=/;" in cookie and "Domain" not in cookie
    # case-insensitive host, port ignored
    assert hw.get(host.upper(), "/x", headers={"X-Linx-Token": tok}).status_code == 200
    assert hw.get(label_host(svc), "/x", headers={"X-Linx-Token": tok}).status_code == 200
    # not reachable under /linx/
    assert (
        hw.get(
            f"127.0.0.1:{hw.proxy.port}", f"/linx/{svc['service_id']}/", headers={"X-Linx-Token": tok}
        ).status_code
        == 404
    )


def test_unknown_host_label_is_404_and_path_services_not_reachable_by_host(hw):
    assert hw.get(f"lnx-{'a' * 26}.{DOMAIN}").status_code == 404
    path_svc = hw.publish()
    tok = token_of(path_svc["public_url"])
    wait_for(
        lambda: (
            hw.get("127.0.0.1", f"/linx/{path_svc['service_id']}/", headers={"X-Linx-Token": tok}).status_code
            == 200
        ),
        2,
    )
    assert hw.get(label_host(path_svc), "/", headers={"X-Linx-Token": tok}).status_code == 404


def test_host_routing_unavailable_without_domain(stack):
    tenant_id, key = stack.api.tenant("nohost")
    ctr = stack.api.container(tenant_id)
    resp = stack.api.call(
        "POST",
        f"/api/containers/{ctr['container_id']}/services",
        key,
        json={"name": "h", "target_port": 80, "routing": "host"},
    )
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "host_routing_unavailable"


# ------------------------------------------------------------------ CORS
def test_cors_passthrough_relays_only_real_preflights(hw):
    svc = hw.publish(cors_preflight="passthrough")
    sid = svc["service_id"]
    url = f"http://127.0.0.1:{hw.proxy.port}/linx/{sid}/api"
    tok = token_of(svc["public_url"])
    wait_for(lambda: requests.get(url, headers={"X-Linx-Token": tok}, timeout=5).status_code == 200, 2)
    pre = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    resp = requests.options(url, headers=pre, timeout=5)
    assert resp.status_code == 200 and resp.json()["method"] == "OPTIONS"
    # OPTIONS without the preflight headers is not a preflight
    no_acrm = requests.options(url, headers={"Origin": "https://app.example"}, timeout=5)
    assert no_acrm.status_code == 401
    # nothing else skips the check
    assert requests.get(url, headers={"Origin": "https://app.example"}, timeout=5).status_code == 401
    deny = hw.publish()
    deny_url = f"http://127.0.0.1:{hw.proxy.port}/linx/{deny['service_id']}/api"
    wait_for(
        lambda: (
            requests.get(
                deny_url, headers={"X-Linx-Token": token_of(deny["public_url"])}, timeout=5
            ).status_code
            == 200
        ),
        2,
    )
    assert requests.options(deny_url, headers=pre, timeout=5).status_code == 401


def test_proxy_errors_are_readable_by_the_requesting_origin(hw):
    svc = hw.publish()
    url = f"http://127.0.0.1:{hw.proxy.port}/linx/{svc['service_id']}/"
    box = []
    wait_for(
        lambda: (
            box.append(requests.get(url, headers={"Origin": "https://a.example"}, timeout=5))
            or box[-1].status_code == 401
        ),
        2,
    )
    resp = box[-1]
    assert resp.headers["Access-Control-Allow-Origin"] == "https://a.example"
    assert "Origin" in resp.headers["Vary"]
    plain = requests.get(url, timeout=5)
    assert "Access-Control-Allow-Origin" not in plain.headers


# ------------------------------------------------------------------ share links
def test_share_link_lifecycle(hw):
    svc = hw.publish()
    sid = svc["service_id"]
    base = f"/api/services/{sid}/share-links"
    link = hw.api.call("POST", base, hw.key, json={"ttl_secs": 600, "label": "demo"}, expect=201).json()
    assert link["last_used_at"] is None and link["label"] == "demo"
    url = link["url"].replace(hw.base, f"http://127.0.0.1:{hw.proxy.port}")
    ltok = token_of(link["url"])
    assert ltok != token_of(svc["public_url"])
    wait_for(lambda: requests.get(url, timeout=5).status_code == 200, 2)
    # a browser navigation exchanges it for the service cookie holding the link's token
    nav = requests.get(url, headers={"Sec-Fetch-Mode": "navigate"}, allow_redirects=False, timeout=5)
    assert nav.status_code == 303 and f"linx_{sid}={ltok}" in nav.headers["Set-Cookie"]
    listing = hw.api.call("GET", base, hw.key, expect=200).json()
    entry = next(x for x in listing["share_links"] if x["link_id"] == link["link_id"])
    assert "url" not in entry and ltok not in str(listing)
    wait_for(
        lambda: next(
            x
            for x in hw.api.call("GET", base, hw.key).json()["share_links"]
            if x["link_id"] == link["link_id"]
        )["last_used_at"],
        3,
    )
    # an open WebSocket on the link is closed when the link is revoked
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{hw.proxy.port}/linx/{sid}/ws", header=[f"X-Linx-Token: {ltok}"], timeout=5
    )
    ws.send("x")
    assert ws.recv() == "x"
    hw.api.call("DELETE", f"{base}/{link['link_id']}", hw.key, expect=204)
    t0 = time.monotonic()
    try:
        with pytest.raises((websocket.WebSocketConnectionClosedException, OSError)):
            while True:
                ws.recv()
    finally:
        ws.close()
        ws.shutdown()
    assert time.monotonic() - t0 < 2
    assert requests.get(url, timeout=5).status_code == 403
    # revoking the link revoked nothing else
    svc_url = f"http://127.0.0.1:{hw.proxy.port}/linx/{sid}/"
    assert (
        requests.get(svc_url, headers={"X-Linx-Token": token_of(svc["public_url"])}, timeout=5).status_code
        == 200
    )


def test_share_link_never_outlives_its_service(hw):
    svc = hw.publish(ttl_secs=60)
    link = hw.api.call(
        "POST", f"/api/services/{svc['service_id']}/share-links", hw.key, json={"ttl_secs": 3600}, expect=201
    ).json()
    assert link["expires_at"] <= svc["expires_at"]


# ------------------------------------------------------------------ WebSocket carriers
def raw_upgrade(port: int, path: str, *headers: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *headers,
    ]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data


def test_subprotocol_token_carrier_is_removed_before_forwarding(hw, stack):
    svc = hw.publish()
    sid, tok = svc["service_id"], token_of(svc["public_url"])
    wait_for(
        lambda: (
            requests.get(
                f"http://127.0.0.1:{hw.proxy.port}/linx/{sid}/", headers={"X-Linx-Token": tok}, timeout=5
            ).status_code
            == 200
        ),
        2,
    )
    stack.backend.reset()
    head = raw_upgrade(hw.proxy.port, f"/linx/{sid}/ws", f"Sec-WebSocket-Protocol: linx.token.{tok}, chat")
    assert head.startswith(b"HTTP/1.1 101")
    head = raw_upgrade(hw.proxy.port, f"/linx/{sid}/ws", f"Sec-WebSocket-Protocol: linx.token.{tok}")
    assert head.startswith(b"HTTP/1.1 101")
    reqs = [r for r in stack.backend.requests() if r["path"] == "/ws"]
    protos = [[v for n, v in r["headers"] if n.lower() == "sec-websocket-protocol"] for r in reqs]
    assert protos == [["chat"], []]
    assert tok not in str(reqs)


def test_cookie_only_upgrade_needs_matching_origin(hw):
    svc = hw.publish()
    sid, tok = svc["service_id"], token_of(svc["public_url"])
    port = hw.proxy.port
    wait_for(
        lambda: (
            requests.get(
                f"http://127.0.0.1:{port}/linx/{sid}/", headers={"X-Linx-Token": tok}, timeout=5
            ).status_code
            == 200
        ),
        2,
    )
    cookie = f"Cookie: linx_{sid}={tok}"
    bad = raw_upgrade(port, f"/linx/{sid}/ws", cookie, "Origin: https://evil.example")
    assert bad.startswith(b"HTTP/1.1 403") and b"origin_mismatch" in bad
    none = raw_upgrade(port, f"/linx/{sid}/ws", cookie)
    assert none.startswith(b"HTTP/1.1 403")
    good = raw_upgrade(port, f"/linx/{sid}/ws", cookie, f"Origin: http://127.0.0.1:{port}")
    assert good.startswith(b"HTTP/1.1 101")
    # a token carried explicitly does not need the origin check
    explicit = raw_upgrade(port, f"/linx/{sid}/ws", f"X-Linx-Token: {tok}", "Origin: https://evil.example")
    assert explicit.startswith(b"HTTP/1.1 101")


# ------------------------------------------------------------------ PATCH
def test_patch_ttl_and_auth_mode_reach_the_proxy_within_1s(hw):
    svc = hw.publish()
    sid, tok = svc["service_id"], token_of(svc["public_url"])
    url = f"http://127.0.0.1:{hw.proxy.port}/linx/{sid}/"
    wait_for(lambda: requests.get(url, headers={"X-Linx-Token": tok}, timeout=5).status_code == 200, 2)
    hw.api.call("PATCH", f"/api/services/{sid}", hw.key, json={"auth_mode": "public"}, expect=200)
    wait_for(lambda: requests.get(url, timeout=5).status_code == 200, 1)
    hw.api.call(
        "PATCH",
        f"/api/services/{sid}",
        hw.key,
        json={"auth_mode": "service_token", "ttl_secs": 1},
        expect=200,
    )
    wait_for(lambda: requests.get(url, timeout=5).status_code == 401, 1)
    wait_for(lambda: requests.get(url, headers={"X-Linx-Token": tok}, timeout=5).status_code == 410, 3)
    hw.api.call("PATCH", f"/api/services/{sid}", hw.key, json={"ttl_secs": 3600}, expect=200)
    wait_for(lambda: requests.get(url, headers={"X-Linx-Token": tok}, timeout=5).status_code == 200, 1)


def test_cookie_only_write_from_another_origin_is_refused(hw):
    svc = hw.publish(routing="host")
    tok = token_of(svc["public_url"])
    host = label_host(svc, hw.proxy.port)
    wait_for(lambda: hw.get(host, "/", headers={"X-Linx-Token": tok}).status_code == 200, 2)
    url = f"http://127.0.0.1:{hw.proxy.port}/form"
    cookie = {"Cookie": f"linx_{svc['service_id']}={tok}", "Host": host}
    evil = requests.post(
        url, headers={**cookie, "Origin": "http://lnx-evil.svc.linx.test"}, data=b"x", timeout=5
    )
    assert evil.status_code == 403 and evil.headers["X-Linx-Error"] == "origin_mismatch"
    same = requests.post(url, headers={**cookie, "Origin": f"http://{host}"}, data=b"x", timeout=5)
    assert same.status_code == 200
    no_origin = requests.post(url, headers=cookie, data=b"x", timeout=5)  # curl, not a browser page
    assert no_origin.status_code == 200


def test_host_routing_over_tls_with_a_wildcard_certificate(redis_server, stack, tmp_path):
    import ssl

    import trustme

    from deploy.redis_process import free_port

    ca = trustme.CA()
    cert = ca.issue_cert(f"*.{DOMAIN}")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    tls_port = free_port()
    prefix = f"tls{secrets.token_hex(3)}:"
    proxy = Proxy(
        redis_server.url,
        prefix,
        LINX_SERVICE_DOMAIN=DOMAIN,
        LINX_PROXY_TLS_LISTEN=f"127.0.0.1:{tls_port}",
        LINX_TLS_CERT=str(tmp_path / "cert.pem"),
        LINX_TLS_KEY=str(tmp_path / "key.pem"),
    )
    control = ControlPlane(
        redis_server.url, prefix, LINX_SERVICE_DOMAIN=DOMAIN, APP_BASE_URL=f"https://linx.test:{tls_port}"
    )
    try:
        control.wait_ready()
        proxy.wait_ready()
        api = Api(control.url)
        tenant_id, key = api.tenant("tls")
        ctr = api.container(tenant_id)
        svc = api.publish(key, ctr["container_id"], stack.backend.port, name="tls", routing="host")
        host = label_host(svc)
        assert svc["public_url"].startswith(f"https://{host}:{tls_port}/?linx_token=")
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)

        def get_over_tls() -> bytes:
            # SNI and certificate checks use the service's own host name; TCP goes to loopback.
            with socket.create_connection(("127.0.0.1", tls_port), timeout=5) as raw:
                with ctx.wrap_socket(raw, server_hostname=host) as s:
                    s.sendall(
                        f"GET /echo HTTP/1.1\r\nHost: {host}:{tls_port}\r\n"
                        f"X-Linx-Token: {token_of(svc['public_url'])}\r\nConnection: close\r\n\r\n".encode()
                    )
                    data = b""
                    while chunk := s.recv(65536):
                        data += chunk
                    return data

        data = wait_for(lambda: (d := get_over_tls()).startswith(b"HTTP/1.1 200") and d, 3)
        assert b'["X-Forwarded-Proto", "https"]' in data
    finally:
        proxy.stop()
        control.stop()
