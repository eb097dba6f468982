"""SPEC sections 5 and 7 corners found by trying Linx as a user would (issue 11)."""

from __future__ import annotations

import json
import secrets
import time

import pytest
import requests

from tests.hardening.rawhttp import RawClient
from tests.helpers.procs import Api, ControlPlane, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning"),
]


def _ready(pub) -> None:
    wait_for(
        lambda: requests.get(pub.url("/"), headers={"X-Linx-Token": pub.token}, timeout=5).status_code == 200,
        5,
    )


@pytest.mark.parametrize("rst", ["0", "1"])
def test_container_hanging_up_on_a_reused_connection_is_always_a_502(publish, rst):
    pub = publish()
    _ready(pub)
    headers = {"X-Linx-Token": pub.token}
    with requests.Session() as session:
        for _ in range(20):
            ok = session.get(pub.url("/echo"), headers=headers, timeout=5)
            assert ok.status_code == 200
            resp = session.get(pub.url(f"/hang-up?rst={rst}"), headers=headers, timeout=5)
            assert resp.status_code == 502, resp.text
            assert resp.headers["X-Linx-Error"] == "upstream_closed"


def test_slash_redirect_is_first_even_for_an_unknown_id(stack):
    resp = requests.get(f"{stack.proxy.url}/linx/lnx_doesnotexist000?q=1", allow_redirects=False, timeout=5)
    assert resp.status_code == 308
    assert resp.headers["Location"] == "/linx/lnx_doesnotexist000/?q=1"


@pytest.mark.parametrize("line_end", [b"\n", b"\r"])
def test_bare_line_ends_get_400_json_then_close_and_nothing_reaches_the_container(publish, stack, line_end):
    pub = publish()
    _ready(pub)
    stack.backend.reset()
    head = line_end.join(
        [f"GET /linx/{pub.sid}/echo HTTP/1.1".encode(), b"Host: x", f"X-Linx-Token: {pub.token}".encode()]
    )
    with RawClient(stack.proxy.port) as client:
        client.send(head + line_end + line_end)
        resp = client.read_response()
        assert resp.status == 400
        assert resp.header("X-Linx-Error") in (b"bare_lf", b"bare_cr")
        assert json.loads(resp.body)["error"]["code"] == resp.header("X-Linx-Error").decode()
        assert client.closed_within(2)
    assert stack.backend.requests() == []


def test_at_the_connection_limit_a_new_client_gets_503_and_open_ones_go_on(stack, publish):
    pub = publish()
    _ready(pub)
    proxy = stack.new_proxy(LINX_MAX_CONNECTIONS="3").wait_ready()
    try:
        request = (
            f"GET /linx/{pub.sid}/echo HTTP/1.1\r\nHost: x\r\nX-Linx-Token: {pub.token}\r\n\r\n".encode()
        )
        held = [RawClient(proxy.port) for _ in range(3)]
        for client in held:
            client.send(request)
            assert client.read_response().status == 200
        for _ in range(5):
            with RawClient(proxy.port) as extra:
                extra.send(request)
                resp = extra.read_response()
                assert resp.status == 503 and resp.header("X-Linx-Error") == b"too_many_connections"
                assert resp.header("Retry-After") is not None
                assert json.loads(resp.body)["error"]["code"] == "too_many_connections"
                assert extra.closed_within(3)
        for client in held:  # the open ones were not disturbed
            client.send(request)
            assert client.read_response().status == 200
            client.close()
        wait_for(lambda: "linx_proxy_refused_connections_total 5.0" in proxy.metrics(), 5)
    finally:
        proxy.stop()


def test_expired_service_is_removed_after_retention_without_api_traffic(stack, publish):
    control = ControlPlane(stack.redis_url, stack.prefix, LINX_EXPIRED_RETENTION_SECS="2").wait_ready()
    try:
        api = Api(control.url)
        tenant_id, key = api.tenant("ret" + secrets.token_hex(3))
        ctr = api.container(tenant_id)
        svc = api.publish(key, ctr["container_id"], stack.backend.port, name="short", ttl_secs=1)
        sid, token = svc["service_id"], svc["public_url"].split("linx_token=", 1)[1]
        url = f"{stack.proxy.url}/linx/{sid}/"
        removal = svc["expires_at"] + 2
        seen = {}

        def removed():
            status = requests.get(url, headers={"X-Linx-Token": token}, timeout=5).status_code
            seen.setdefault(status, time.time())
            return status == 404

        wait_for(removed, 10, interval=0.02, what="404 after retention")
        assert 410 in seen and seen[410] < removal  # expired, readable, then removed
        assert removal - 0.05 <= seen[404] < removal + 1.5
        api.call("GET", f"/api/services/{sid}", key, expect=404)
        listed = api.call("GET", f"/api/containers/{ctr['container_id']}/services", key, expect=200)
        assert listed.json()["services"] == []
    finally:
        control.stop()


def test_every_proxy_keeps_a_heartbeat_and_leaves_the_list_when_it_stops(stack, publish):
    publish()
    extra = stack.new_proxy().wait_ready()
    try:

        def listed():
            proxies = stack.api.call("GET", "/api/admin/proxies", expect=200).json()["proxies"]
            # a beat follows each full sync, then one every HEARTBEAT_SECS with the route count
            return proxies if len(proxies) >= 2 and all(p["routes"] for p in proxies) else None

        proxies = wait_for(listed, 15, interval=0.1, what="two heartbeats")
        for p in proxies:
            assert set(p) >= {"proxy_id", "host", "version", "routes", "open_connections"}
            assert p["routes"] >= 1 and p["sync_lag_secs"] is not None and p["sync_lag_secs"] < 5
            assert p["started_at"] <= p["last_seen_at"] <= time.time() + 1
        before = {p["proxy_id"] for p in proxies}
    finally:
        assert extra.stop() == 0
    after = wait_for(
        lambda: (
            ids
            if len(
                ids := {p["proxy_id"] for p in stack.api.call("GET", "/api/admin/proxies").json()["proxies"]}
            )
            < len(before)
            else None
        ),
        5,
        interval=0.1,
        what="the stopped proxy leaves the list",
    )
    assert after < before
