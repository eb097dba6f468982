"""SPEC section 5 against real processes: Redis, gunicorn, the proxy daemon, an echo backend."""

from __future__ import annotations

import hashlib
import json
import secrets
import socket
import threading
import time

import pytest
import requests
import websocket

from tests.helpers.procs import wait_for

pytestmark = [
    pytest.mark.e2e,
    # requests/urllib3 may leave a pooled client socket to the garbage collector; that is the
    # test client's housekeeping, not the proxy's, so only that warning is relaxed here.
    pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning"),
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
    ),
]


def reachable(url: str, **kw) -> requests.Response | None:
    resp = requests.get(url, timeout=5, **kw)
    return resp if resp.status_code == 200 else None


def until_status(url: str, status: int, timeout: float, **kw) -> requests.Response:
    """Poll ``url`` until it answers ``status``; return that response."""
    box = []

    def check():
        resp = requests.get(url, timeout=5, **kw)
        if resp.status_code == status:
            box.append(resp)
            return True
        return False

    wait_for(check, timeout, interval=0.005, what=f"{url} -> {status}")
    return box[0]


def echo(pub, rest="/echo", **kw) -> dict:
    resp = wait_for(lambda: reachable(pub.url(rest), headers={"X-Linx-Token": pub.token}, **kw), 5)
    return resp.json()


def hdr(record: dict, name: str) -> list[str]:
    return [v for n, v in record["headers"] if n.lower() == name.lower()]


# ------------------------------------------------------------------ what the container gets
def test_container_receives_path_query_and_headers_as_specified(publish, stack):
    pub = publish()
    wait_for(lambda: reachable(pub.url("/"), headers={"X-Linx-Token": pub.token}), 5)
    url = pub.url("/a/b%20c?x=1&linx_token=" + pub.token + "&y=%2F&z")
    resp = requests.get(
        url,
        headers={
            "Authorization": "Bearer app-secret",
            "Cookie": f"app=1; linx_{pub.sid}={pub.token}; linx_other=2; theme=dark",
            "X-Forwarded-For": "6.6.6.6",
            "X-Forwarded-Host": "evil.test",
            "X-Forwarded-Prefix": "/evil",
            "X-Custom": "kept",
            "Connection": "keep-alive, X-Custom-Hop",
            "X-Custom-Hop": "dropped",
        },
        timeout=5,
    )
    assert resp.status_code == 200
    got = resp.json()
    assert got["target"] == "/a/b%20c?x=1&y=%2F&z"
    assert hdr(got, "Authorization") == ["Bearer app-secret"]
    assert hdr(got, "Cookie") == ["app=1; theme=dark"]
    assert hdr(got, "X-Forwarded-For") == ["127.0.0.1"]
    assert hdr(got, "X-Forwarded-Proto") == ["http"]
    assert hdr(got, "X-Forwarded-Host") == [f"127.0.0.1:{stack.proxy.port}"]
    assert hdr(got, "X-Forwarded-Prefix") == [f"/linx/{pub.sid}"]
    assert hdr(got, "Host") == [f"127.0.0.1:{stack.proxy.port}"]
    assert hdr(got, "X-Custom") == ["kept"]
    assert hdr(got, "X-Custom-Hop") == [] and hdr(got, "X-Linx-Token") == []
    assert pub.token not in json.dumps(got)


def test_slash_redirect_keeps_query(publish):
    pub = publish()
    wait_for(lambda: reachable(pub.url("/"), headers={"X-Linx-Token": pub.token}), 5)
    resp = requests.get(pub.url("") + "?a=1&b=2", allow_redirects=False, timeout=5)
    assert resp.status_code == 308
    assert resp.headers["Location"] == f"/linx/{pub.sid}/?a=1&b=2"


def test_access_table_statuses_and_error_headers(publish, stack):
    pub = publish()
    other = publish()
    echo(pub)
    cases = [
        (f"{stack.proxy.url}/linx/lnx_{'a' * 26}/", {}, 404, "service_not_found"),
        (pub.url("/"), {}, 401, "token_required"),
        (pub.url("/"), {"X-Linx-Token": pub.token[:-2] + "zz"}, 403, "token_invalid"),
        (pub.url("/"), {"X-Linx-Token": other.token}, 403, "token_invalid"),
    ]
    for url, headers, status, code in cases:
        resp = requests.get(url, headers=headers, timeout=5)
        assert resp.status_code == status, (url, resp.text)
        assert resp.headers["X-Linx-Error"] == code
        assert resp.json()["error"]["code"] == code


def test_rotated_token_is_refused_and_new_one_accepted(publish, stack):
    pub = publish()
    echo(pub)
    rotated = stack.api.call("POST", f"/api/services/{pub.sid}/rotate-token", pub.key, expect=200).json()
    new_token = rotated["public_url"].split("linx_token=", 1)[1]
    assert new_token != pub.token
    wait_for(
        lambda: requests.get(pub.url("/"), headers={"X-Linx-Token": pub.token}, timeout=5).status_code == 403,
        1.5,
    )
    assert requests.get(pub.url("/"), headers={"X-Linx-Token": new_token}, timeout=5).status_code == 200


def test_expired_service_answers_410(publish):
    pub = publish(ttl_secs=1)
    wait_for(
        lambda: requests.get(pub.url("/"), headers={"X-Linx-Token": pub.token}, timeout=5).status_code == 410,
        4,
    )
    resp = requests.get(pub.url("/"), headers={"X-Linx-Token": pub.token}, timeout=5)
    assert resp.headers["X-Linx-Error"] == "service_expired"


def test_stopped_container_is_503_with_retry_after(publish, stack):
    pub = publish()
    echo(pub)
    stack.api.call(
        "PATCH",
        f"/api/admin/containers/{pub.container['container_id']}",
        json={"state": "stopped"},
        expect=200,
    )
    resp = until_status(pub.url("/"), 503, 1.5, headers={"X-Linx-Token": pub.token})
    assert "Retry-After" in resp.headers
    assert resp.headers["X-Linx-Error"] == "target_unavailable"


def test_refused_port_is_503(stack):
    from deploy.redis_process import free_port

    tenant_id, key = stack.api.tenant("refused")
    ctr = stack.api.container(tenant_id)
    svc = stack.api.publish(key, ctr["container_id"], free_port(), name="nothing")
    token = svc["public_url"].split("linx_token=", 1)[1]
    url = f"{stack.proxy.url}/linx/{svc['service_id']}/"
    resp = until_status(url, 503, 2, headers={"X-Linx-Token": token})
    assert resp.headers["X-Linx-Error"] == "target_connect_failed"
    assert "Retry-After" in resp.headers
    status = wait_for(
        lambda: (
            (s := stack.api.call("GET", f"/api/services/{svc['service_id']}", key).json()["status"])
            == "target_unreachable"
            and s
        ),
        5,
    )
    assert status == "target_unreachable"


def test_status_becomes_ready_once_probed(publish, stack):
    pub = publish()
    wait_for(
        lambda: stack.api.call("GET", f"/api/services/{pub.sid}", pub.key).json()["status"] == "ready", 5
    )


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [("/garbage", 502, "bad_upstream_response"), ("/huge-headers", 502, "bad_upstream_response")],
)
def test_broken_upstream_responses_are_502(publish, path, status, code):
    pub = publish()
    echo(pub)
    resp = requests.get(pub.url(path), headers={"X-Linx-Token": pub.token}, timeout=10)
    assert resp.status_code == status
    assert resp.headers["X-Linx-Error"] == code


def test_upstream_that_never_answers_is_504(publish, stack):
    proxy = stack.new_proxy(LINX_RESPONSE_TIMEOUT_SECS="1")
    try:
        proxy.wait_ready()
        pub = publish()
        wait_for(lambda: reachable(pub.url("/", proxy), headers={"X-Linx-Token": pub.token}), 5)
        t0 = time.monotonic()
        resp = requests.get(pub.url("/no-answer", proxy), headers={"X-Linx-Token": pub.token}, timeout=10)
        assert resp.status_code == 504
        assert resp.headers["X-Linx-Error"] == "upstream_timeout"
        assert 0.9 <= time.monotonic() - t0 < 5
    finally:
        proxy.stop()


# ------------------------------------------------------------------ cookies and navigation
def test_query_token_sets_cookie_and_navigation_is_redirected(publish):
    pub = publish(ttl_secs=3600)
    echo(pub)
    resp = requests.get(
        pub.service["public_url"].replace("https://linx.example.test", pub.proxy_url),
        headers={"Accept": "text/html,*/*"},
        allow_redirects=False,
        timeout=5,
    )
    assert resp.status_code == 303
    assert resp.headers["Location"] == f"/linx/{pub.sid}/"
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith(f"linx_{pub.sid}={pub.token};")
    assert f"Path=/linx/{pub.sid}/" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    max_age = int(cookie.split("Max-Age=")[1].split(";")[0])
    assert 3590 <= max_age <= 3600
    assert "Secure" not in cookie  # plain HTTP listener
    # the browser's next request carries only the cookie
    follow = requests.get(pub.url("/echo"), cookies={f"linx_{pub.sid}": pub.token}, timeout=5)
    assert follow.status_code == 200
    assert hdr(follow.json(), "Cookie") == []


def test_non_browser_with_query_token_is_relayed_directly(publish):
    pub = publish()
    echo(pub)
    resp = requests.get(pub.url("/echo?q=1&linx_token=" + pub.token), allow_redirects=False, timeout=5)
    assert resp.status_code == 200
    assert resp.json()["target"] == "/echo?q=1"
    assert resp.headers["Set-Cookie"].startswith(f"linx_{pub.sid}=")


def test_container_cannot_set_linx_cookies(publish):
    pub = publish()
    echo(pub)
    resp = requests.get(pub.url("/set-cookie"), headers={"X-Linx-Token": pub.token}, timeout=5)
    cookies = resp.raw.headers.getlist("Set-Cookie")
    assert any(c.startswith("app=1") for c in cookies)
    assert not any(c.lower().startswith("linx_") for c in cookies)


# ------------------------------------------------------------------ framing
def test_head_204_304_and_100_continue(publish):
    pub = publish()
    echo(pub)
    h = {"X-Linx-Token": pub.token}
    head = requests.head(pub.url("/head-test"), headers=h, timeout=5)
    get = requests.get(pub.url("/head-test"), headers=h, timeout=5)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == str(len(get.content))
    assert requests.get(pub.url("/status/204"), headers=h, timeout=5).status_code == 204
    assert requests.get(pub.url("/status/304"), headers=h, timeout=5).status_code == 304
    with socket.create_connection(("127.0.0.1", int(pub.proxy_url.rsplit(":", 1)[1])), timeout=5) as s:
        s.sendall(
            f"POST /linx/{pub.sid}/expect HTTP/1.1\r\nHost: x\r\nX-Linx-Token: {pub.token}\r\n"
            "Content-Length: 5\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        first = s.recv(4096)
        assert first.startswith(b"HTTP/1.1 100")
        s.sendall(b"hello")
        rest = b""
        while b"\r\n\r\n" not in rest:
            rest += s.recv(4096)
        assert b" 200 " in rest.split(b"\r\n", 1)[0] or b" 200 " in first + rest


def test_chunked_upload_and_chunked_download(publish):
    pub = publish()
    echo(pub)
    h = {"X-Linx-Token": pub.token}
    parts = [b"a" * 1000, b"b" * 70000, b"c"]
    resp = requests.post(pub.url("/upload"), data=iter(parts), headers=h, timeout=10)
    assert resp.json()["received"] == 71001
    assert resp.json()["sha256"] == hashlib.sha256(b"".join(parts)).hexdigest()
    down = requests.get(pub.url("/bytes/300000?chunked=1"), headers=h, timeout=10)
    assert len(down.content) == 300000


def test_sse_first_event_arrives_before_the_second_is_sent(publish, stack):
    pub = publish()
    echo(pub)
    gate = "sse" + pub.sid[-6:]
    with requests.get(
        pub.url(f"/sse?count=2&gate={gate}"), headers={"X-Linx-Token": pub.token}, stream=True, timeout=10
    ) as resp:
        lines = resp.iter_lines()
        first = next(line for line in lines if line.startswith(b"data:"))
        assert first
        # the backend is still holding the second event: it has not been released yet
        assert stack.backend.gate(gate)["released"] == 0
        stack.backend.release(gate)
        second = next(line for line in lines if line.startswith(b"data:"))
        assert second != first


def test_large_download_and_upload_stream_with_bounded_memory(publish, stack):
    pub = publish()
    echo(pub)
    h = {"X-Linx-Token": pub.token}
    size = 1 << 30
    rss_before = stack.proxy.rss_kib()
    peak = [rss_before]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], stack.proxy.rss_kib())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        got = 0
        with requests.get(pub.url(f"/bytes/{size}"), headers=h, stream=True, timeout=60) as resp:
            for chunk in resp.iter_content(1 << 20):
                got += len(chunk)
        assert got == size

        def body():
            block = b"x" * (1 << 20)
            for _ in range(size >> 20):
                yield block

        up = requests.post(pub.url("/upload"), data=body(), headers=h, timeout=120)
        assert up.json()["received"] == size
    finally:
        stop.set()
        sampler.join()
    # 1 GiB each way went through; the proxy grew by far less than one body.
    assert peak[0] - rss_before < 64 * 1024, (rss_before, peak[0])


def test_a_long_content_length_body_arrives_intact_and_both_connections_go_on(publish):
    # past dataplane.splice.MIN_BYTES the body moves by splice(2); the client and the pooled
    # container connection are handed back to the relay afterwards
    pub = publish()
    echo(pub)
    h = {"X-Linx-Token": pub.token}
    size = (5 << 20) + 123
    pattern = b"0123456789abcdef"
    with requests.Session() as s:
        first = s.get(pub.url("/echo"), headers=h, timeout=5).json()
        body = s.get(pub.url(f"/bytes/{size}"), headers=h, timeout=30).content
        assert len(body) == size and body == (pattern * (size // len(pattern) + 1))[:size]
        after = s.get(pub.url("/echo"), headers=h, timeout=5).json()
    assert after["conn_id"] == first["conn_id"]  # the same container connection, from the pool
    assert after["req_no_on_conn"] == first["req_no_on_conn"] + 2


def test_a_long_upload_arrives_intact_and_both_connections_go_on(publish):
    # a request body past dataplane.splice.MIN_BYTES moves by splice(2) too, handed back after
    pub = publish()
    echo(pub)
    h = {"X-Linx-Token": pub.token}
    size = (6 << 20) + 77
    body = (bytes(range(251)) * (size // 251 + 1))[:size]
    with requests.Session() as s:
        first = s.get(pub.url("/echo"), headers=h, timeout=5).json()
        up = s.post(pub.url("/upload"), data=body, headers=h, timeout=30).json()
        assert up["received"] == size and up["sha256"] == hashlib.sha256(body).hexdigest()
        after = s.get(pub.url("/echo"), headers=h, timeout=5).json()
    assert after["conn_id"] == first["conn_id"]
    assert after["req_no_on_conn"] == first["req_no_on_conn"] + 2


# ------------------------------------------------------------------ WebSockets
def ws_connect(pub, proxy_url=None, **kw) -> websocket.WebSocket:
    base = (proxy_url or pub.proxy_url).replace("http://", "ws://")
    return websocket.create_connection(f"{base}/linx/{pub.sid}/ws", timeout=5, **kw)


def test_websocket_text_binary_and_1mib(publish):
    pub = publish()
    echo(pub)
    ws = ws_connect(pub, header=[f"X-Linx-Token: {pub.token}"])
    try:
        ws.send("hello")
        assert ws.recv() == "hello"
        ws.send_binary(b"\x00\x01\xff")
        assert ws.recv() == b"\x00\x01\xff"
        big = bytes(range(256)) * 4096
        ws.send_binary(big)
        assert ws.recv() == big
    finally:
        ws.close()


def test_websocket_refused_when_disabled(publish):
    pub = publish(enable_websockets=False)
    echo(pub)
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        ws_connect(pub, header=[f"X-Linx-Token: {pub.token}"])
    assert info.value.status_code == 403


def test_websocket_of_deleted_service_closed_within_2s(publish, stack):
    pub = publish()
    echo(pub)
    ws = ws_connect(pub, header=[f"X-Linx-Token: {pub.token}"])
    ws.send("before")
    assert ws.recv() == "before"
    stack.api.call("DELETE", f"/api/services/{pub.sid}", pub.key, expect=204)
    t0 = time.monotonic()
    ws.settimeout(3)
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, OSError)):
        while True:
            ws.recv()
    assert time.monotonic() - t0 < 2.0
    resp = requests.get(pub.url("/"), headers={"X-Linx-Token": pub.token}, timeout=5)
    assert resp.status_code == 404


# ------------------------------------------------------------------ propagation
def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def test_publish_and_revoke_propagation_over_50_trials(stack, capsys):
    tenant_id, key = stack.api.tenant("prop")
    ctr = stack.api.container(tenant_id)
    publish_delays, revoke_delays = [], []
    session = requests.Session()
    for i in range(50):
        svc = stack.api.publish(key, ctr["container_id"], stack.backend.port, name=f"p{i}")
        t0 = time.monotonic()
        token = svc["public_url"].split("linx_token=", 1)[1]
        url = f"{stack.proxy.url}/linx/{svc['service_id']}/"
        wait_for(
            lambda: session.get(url, headers={"X-Linx-Token": token}, timeout=5).status_code == 200,
            1.0,
            interval=0.002,
        )
        publish_delays.append(time.monotonic() - t0)
        stack.api.call("DELETE", f"/api/services/{svc['service_id']}", key, expect=204)
        t0 = time.monotonic()
        wait_for(
            lambda: session.get(url, headers={"X-Linx-Token": token}, timeout=5).status_code == 404,
            1.0,
            interval=0.002,
        )
        revoke_delays.append(time.monotonic() - t0)
    with capsys.disabled():
        print(
            f"\npropagation over 50 trials: publish->reachable p50 {_pct(publish_delays, 0.5) * 1000:.1f} ms"
            f" p99 {_pct(publish_delays, 0.99) * 1000:.1f} ms; revoke->refused p50 "
            f"{_pct(revoke_delays, 0.5) * 1000:.1f} ms p99 {_pct(revoke_delays, 0.99) * 1000:.1f} ms"
        )
    assert max(publish_delays) < 1.0 and max(revoke_delays) < 1.0


def test_two_proxies_both_see_every_change(publish, stack):
    second = stack.new_proxy().wait_ready()
    try:
        pubs = [publish() for _ in range(3)]
        for pub in pubs:
            for proxy in (stack.proxy, second):
                wait_for(
                    lambda p=proxy, pub=pub: reachable(pub.url("/", p), headers={"X-Linx-Token": pub.token}),
                    1,
                )
        stack.api.call("DELETE", f"/api/services/{pubs[1].sid}", pubs[1].key, expect=204)
        for proxy in (stack.proxy, second):
            wait_for(
                lambda p=proxy: (
                    requests.get(
                        pubs[1].url("/", p), headers={"X-Linx-Token": pubs[1].token}, timeout=5
                    ).status_code
                    == 404
                ),
                1,
            )
            assert reachable(pubs[0].url("/", proxy), headers={"X-Linx-Token": pubs[0].token})
    finally:
        second.stop()


# ------------------------------------------------------------------ operations
def test_admin_endpoints(stack, publish):
    pub = publish()
    echo(pub)
    assert requests.get(stack.proxy.admin_url + "/healthz", timeout=5).status_code == 200
    assert requests.get(stack.proxy.admin_url + "/readyz", timeout=5).status_code == 200
    metrics = stack.proxy.metrics()
    for name in (
        "linx_proxy_requests_total",
        "linx_proxy_request_duration_seconds_bucket",
        "linx_proxy_open_connections",
        "linx_proxy_routes",
        "linx_proxy_sync_lag_seconds",
        "linx_proxy_response_bytes",
        "linx_proxy_probe_lag_seconds",
    ):
        assert name in metrics, name
    targets = next(line for line in metrics.splitlines() if line.startswith("linx_proxy_probe_targets "))
    assert float(targets.split()[1]) >= 1
    assert f'service="{pub.sid}",status_class="2xx"' in metrics
    assert pub.token not in metrics


def test_sigterm_drains_in_flight_request_and_exits_0(stack, publish):
    proxy = stack.new_proxy(LINX_DRAIN_SECS="10").wait_ready()
    pub = publish()
    wait_for(lambda: reachable(pub.url("/", proxy), headers={"X-Linx-Token": pub.token}), 5)
    gate = "drain" + pub.sid[-6:]
    result = {}

    def slow():
        r = requests.get(
            pub.url(f"/sse?count=2&gate={gate}", proxy), headers={"X-Linx-Token": pub.token}, timeout=20
        )
        result["status"] = r.status_code
        result["body"] = r.text

    t = threading.Thread(target=slow)
    t.start()
    stack.backend.wait_for_gate(gate)
    proxy.proc.signal(15)
    # new connections are refused while the in-flight one finishes
    wait_for(lambda: _refused(proxy.port), 5)
    stack.backend.release(gate)
    t.join(10)
    assert result["status"] == 200 and result["body"].count("data:") == 2
    assert proxy.proc.proc.wait(10) == 0


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return False
    except OSError:
        return True


def test_access_log_lines_and_request_id_hold_no_secret(stack, publish, tmp_path):
    log_file = tmp_path / "access.log"
    proxy = stack.new_proxy(LINX_ACCESS_LOG=str(log_file)).wait_ready()
    try:
        pub = publish()
        h = {"X-Linx-Token": pub.token}
        wait_for(lambda: reachable(pub.url("/", proxy), headers=h), 5)
        got = requests.get(
            pub.url("/echo?x=1&linx_token=" + pub.token, proxy),
            headers={"X-Request-Id": "req-123"},
            timeout=5,
        ).json()
        assert hdr(got, "X-Request-Id") == ["req-123"]
        generated = requests.get(pub.url("/echo", proxy), headers=h, timeout=5).json()
        assert len(hdr(generated, "X-Request-Id")[0]) == 24
        requests.get(pub.url("/", proxy), cookies={f"linx_{pub.sid}": pub.token}, timeout=5)
        requests.get(pub.url("/", proxy), headers={"X-Linx-Token": pub.token + "x"}, timeout=5)
        ws = ws_connect(pub, proxy.url, subprotocols=[f"linx.token.{pub.token}"])
        ws.close()

        def lines():
            return [json.loads(x) for x in log_file.read_text().splitlines()] if log_file.exists() else []

        wait_for(lambda: len(lines()) >= 6, 5)
        records = lines()
        mine = [r for r in records if r["request_id"] == "req-123"]
        assert len(mine) == 1
        rec = mine[0]
        assert rec["service"] == pub.sid and rec["method"] == "GET" and rec["status"] == 200
        assert rec["path"] == f"/linx/{pub.sid}/echo"
        assert rec["bytes_out"] > 0 and rec["duration_ms"] >= 0 and rec["client"] == "127.0.0.1"
        assert any(r["status"] == 403 and r["error"] == "token_invalid" for r in records)
        assert any(r["status"] == 101 for r in records)
        text = log_file.read_text() + proxy.proc.output() + proxy.metrics()
        assert pub.token not in text
        assert pub.token.split(".")[2] not in text
    finally:
        proxy.stop()


def test_keep_alive_connection_of_a_rotated_service_is_closed_within_2s(publish, stack):
    pub = publish()
    echo(pub)
    port = int(pub.proxy_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(
            f"GET /linx/{pub.sid}/echo HTTP/1.1\r\nHost: x\r\nX-Linx-Token: {pub.token}\r\n\r\n".encode()
        )
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(
            next(h.split(b":")[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
        )
        while len(body) < length:
            body += s.recv(65536)
        stack.api.call("POST", f"/api/services/{pub.sid}/rotate-token", pub.key, expect=200)
        t0 = time.monotonic()
        s.settimeout(3)
        try:
            closed = s.recv(1) == b""
        except ConnectionResetError:
            closed = True
        assert closed and time.monotonic() - t0 < 2


def test_api_relayed_on_the_proxys_origin_when_configured(stack):
    proxy = stack.new_proxy(LINX_PROXY_API_UPSTREAM=stack.control.url.removeprefix("http://")).wait_ready()
    try:
        spec = requests.get(proxy.url + "/api/openapi.json", timeout=5)
        assert spec.status_code == 200 and spec.json()["openapi"].startswith("3.")
        tenant_id, key = stack.api.tenant("api" + secrets.token_hex(3))
        ctr = stack.api.container(tenant_id)
        created = requests.post(
            f"{proxy.url}/api/containers/{ctr['container_id']}/services",
            json={"name": "via-proxy", "target_port": stack.backend.port},
            headers={"Authorization": f"Bearer {key}"},
            timeout=5,
        )
        assert created.status_code == 201, created.text
        svc = created.json()
        token = svc["public_url"].split("linx_token=", 1)[1]
        url = f"{proxy.url}/linx/{svc['service_id']}/via"
        wait_for(lambda: reachable(url, headers={"X-Linx-Token": token}), 5)
        unauthenticated = requests.get(f"{proxy.url}/api/containers", timeout=5)
        assert unauthenticated.status_code == 401  # the control plane's own answer, relayed
        assert requests.get(stack.proxy.url + "/api/openapi.json", timeout=5).status_code == 404
    finally:
        proxy.stop()
