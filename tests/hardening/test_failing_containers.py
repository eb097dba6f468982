"""Containers that fail: resets mid-body and mid-WebSocket, silence, garbage, fake upgrades,
oversized heads, addresses outside the allowed networks; then a soak of mixed requests with
about 10% failures of every kind, after which the proxy's descriptors, threads and memory are
back to their baseline."""

from __future__ import annotations

import json
import os
import random
import secrets
import socket
import threading
import time

import pytest
import requests

from tests.hardening.faults import ScriptedContainer, counting_listener, read_head, reset, ws_accept_for
from tests.hardening.rawhttp import Closed, RawClient
from tests.hardening.support import assert_clean_log, proc_status, reachable
from tests.helpers.backend_process import EchoBackend
from tests.helpers.procs import wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning"),
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
    ),
]

RESPONSE_TIMEOUT = 1.0
SOAK_REQUESTS = int(os.environ.get("LINX_SOAK_REQUESTS", "5000"))
SOAK_THREADS = 4
# Python keeps freed memory in its arenas, so RSS does not fall back exactly: after the soak it
# must stay within this margin of the warmed-up baseline (a leak of 1 KiB per request would
# exceed it in the 100,000-request run of `tox -e long`).
RSS_MARGIN_MIB = 24
WS_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def ws_upgrade(path: str, extra: bytes = b"") -> bytes:
    return (
        (
            f"GET {path} HTTP/1.1\r\nHost: h.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "
        ).encode()
        + WS_KEY
        + b"\r\n"
        + extra
        + b"\r\n"
    )


def ws_frame(payload: bytes, opcode: int = 1) -> bytes:
    mask = secrets.token_bytes(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


@pytest.fixture(scope="module")
def env(hstack):
    svc = hstack.publish(auth_mode="public", enable_websockets=True)
    proxy = hstack.proxy(LINX_RESPONSE_TIMEOUT_SECS=str(RESPONSE_TIMEOUT))
    reachable(proxy, svc)
    yield hstack, proxy, svc
    assert_clean_log(proxy)
    hstack.stop_proxy(proxy)


# ----------------------------------------------------------------------- truncated responses
@pytest.mark.parametrize("rst", ["1", "0"], ids=["reset", "fin"])
@pytest.mark.parametrize(
    ("announced", "sent"),
    [(1_000_000, 10_000), (8 << 20, 3 << 20)],
    ids=["relayed", "spliced"],  # past dataplane.splice.MIN_BYTES the body moves by splice(2)
)
def test_reset_midway_through_a_content_length_body(env, rst, announced, sent):
    _, proxy, svc = env
    with RawClient(proxy.port) as c:
        c.send(
            f"GET {svc.path}/close-midway?mode=cl&rst={rst}&announced={announced}&sent={sent} HTTP/1.1\r\n"
            "Host: h.test\r\n\r\n".encode()
        )
        resp = c.read_response()
        assert resp.status == 200 and resp.header("Content-Length") == str(announced).encode()
        assert not resp.complete and 0 < len(resp.body) < announced
        assert c.eof  # the client knows: fewer bytes than announced, and the connection is gone


@pytest.mark.parametrize("rst", ["1", "0"], ids=["reset", "fin"])
def test_reset_midway_through_a_chunked_body(env, rst):
    _, proxy, svc = env
    with RawClient(proxy.port) as c:
        c.send(
            f"GET {svc.path}/close-midway?mode=chunked&rst={rst} HTTP/1.1\r\nHost: h.test\r\n\r\n".encode()
        )
        resp = c.read_response()
        assert resp.status == 200 and resp.chunked
        assert not resp.complete, "a truncated chunked body must never end with the 0-chunk"
        assert b"0\r\n\r\n" not in c.buf and c.eof


def test_truncated_close_delimited_body_ends_with_a_reset(env):
    """An HTTP/1.0 client gets a close-delimited body: only a reset tells it it was cut short."""
    _, proxy, svc = env
    with RawClient(proxy.port) as c:
        c.send(f"GET {svc.path}/close-midway?mode=chunked HTTP/1.0\r\nHost: h.test\r\n\r\n".encode())
        data, how = c.read_until_close(10)
    assert data.startswith(b"HTTP/1.1 200 ")
    assert how == "rst", "a clean FIN would make the truncated body look complete"


def test_reset_during_a_websocket(env):
    hstack, proxy, _ = env

    def script(sock: socket.socket) -> None:
        head = read_head(sock)
        sock.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + ws_accept_for(head) + b"\r\n\r\n\x81\x05hello"
        )
        sock.recv(1024)
        reset(sock)

    container = ScriptedContainer(script)
    try:
        svc = hstack.publish(container.port, auth_mode="public", enable_websockets=True)
        wait_for(
            lambda: (
                requests.get(f"{proxy.url}{svc.path}", allow_redirects=False, timeout=2).status_code == 308
            )
        )
        with RawClient(proxy.port) as c:
            c.send(ws_upgrade(f"{svc.path}/"))
            assert c.read_response().status == 101
            while len(c.buf) < 7:
                assert c._fill()
            assert c.buf[:7] == b"\x81\x05hello"
            c.buf = b""
            c.send(ws_frame(b"ping?"))
            started = time.monotonic()
            data, how = c.read_until_close(5)
            assert how in ("fin", "rst") and data == b""
            assert time.monotonic() - started < 2
        wait_for(lambda: "linx_proxy_open_websockets 0.0" in proxy.metrics(), 5)
        assert not container.errors
    finally:
        container.close()


# --------------------------------------------------------------------- bad or absent answers
@pytest.mark.parametrize(
    ("rest", "upgrade", "status", "code"),
    [
        ("/no-answer", False, 504, "upstream_timeout"),
        ("/garbage", False, 502, "bad_upstream_response"),
        ("/huge-headers?kb=100", False, 502, "bad_upstream_response"),
        ("/fake-101", True, 502, "bad_upgrade"),
        ("/fake-101?missing=1", True, 502, "bad_upgrade"),
    ],
)
def test_broken_container_answers(env, rest, upgrade, status, code):
    _, proxy, svc = env
    with RawClient(proxy.port, timeout=10) as c:
        started = time.monotonic()
        c.send(
            ws_upgrade(svc.path + rest)
            if upgrade
            else f"GET {svc.path}{rest} HTTP/1.1\r\nHost: h\r\n\r\n".encode()
        )
        resp = c.read_response()
        assert resp.status == status and resp.header("X-Linx-Error") == code.encode(), resp.raw[:300]
        if status == 504:
            assert RESPONSE_TIMEOUT - 0.1 <= time.monotonic() - started <= RESPONSE_TIMEOUT + 1.5
        # the client connection survives a bad container: the next request is served
        c.send(f"GET {svc.path}/after HTTP/1.1\r\nHost: h\r\n\r\n".encode())
        assert c.read_response().status == 200


def test_target_outside_allowed_networks_is_never_dialled(hstack):
    # A stack of its own: the session's other proxies (which allow all of 127/8) must neither
    # see this service nor probe it.
    listener = counting_listener("127.0.0.2")
    stack = None
    try:
        stack = hstack.isolated()
        proxy = stack.proxy(LINX_ALLOWED_TARGET_NETWORKS="127.0.0.1/32", LINX_PROBE_INTERVAL_SECS="0.1")
        inside = stack.publish(auth_mode="public")
        outside = stack.publish(listener.port, address="127.0.0.2", auth_mode="public")
        reachable(proxy, inside)
        url = f"{proxy.url}{outside.path}/"
        wait_for(lambda: requests.get(url, timeout=2).status_code != 404, 5)
        for _ in range(20):
            resp = requests.get(url, timeout=5)
            assert resp.status_code == 503 and resp.headers["X-Linx-Error"] == "target_not_allowed"
            assert resp.headers["Retry-After"]
        # the prober ran for it (and reported it unreachable) without dialling either
        wait_for(
            lambda: (
                stack.api.call("GET", f"/api/services/{outside.sid}", outside.key).json()["status"]
                == "target_unreachable"
            ),
            5,
        )
        assert listener.accepted == 0
        # the counter works: a direct connection is counted
        socket.create_connection(("127.0.0.2", listener.port), timeout=2).close()
        wait_for(lambda: listener.accepted == 1, 5)
        assert_clean_log(proxy)
    finally:
        if stack is not None:
            stack.close()
        listener.close()


# ------------------------------------------------- containers that answer during a long upload
# Past dataplane.splice.MIN_BYTES a request body moves by splice(2) while the container is
# silent; its first byte, or either side going, hands the rest back to the ordinary relay.
UPLOAD = 16 << 20


def _upload_pattern(n: int) -> bytes:
    return (bytes(range(251)) * (n // 251 + 1))[:n]


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        data = sock.recv(min(1 << 20, n - len(out)))
        if not data:
            raise ConnectionError(f"closed after {len(out)} of {n} bytes")
        out += data
    return bytes(out)


def _upload_head(path: str, size: int) -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: h.test\r\nContent-Length: {size}\r\n\r\n".encode()


def _scripted_upload_service(hstack, proxy, script):
    container = ScriptedContainer(script)
    svc = hstack.publish(container.port, auth_mode="public")
    wait_for(
        lambda: requests.get(f"{proxy.url}{svc.path}", allow_redirects=False, timeout=2).status_code == 308
    )
    return container, svc


def _send_in_background(sock: socket.socket, data: bytes) -> threading.Thread:
    def run():
        try:
            sock.sendall(data)
        except OSError:
            pass  # refused midway: the answer says why

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_a_container_echoing_an_upload_as_it_reads_it_gets_every_byte_in_order(env):
    hstack, proxy, _ = env
    body = _upload_pattern(UPLOAD)
    heads = []  # the proxy's probes connect too, and send no head

    def script(sock: socket.socket) -> None:
        head = read_head(sock)
        heads.append(head)
        got = head.partition(b"\r\n\r\n")[2]
        while len(got) < 2 << 20:  # silent until well into the body (the splice is running)
            got += sock.recv(1 << 20)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % UPLOAD + got)
        left = UPLOAD - len(got)
        while left:
            data = sock.recv(min(left, 1 << 20))
            if not data:
                return
            sock.sendall(data)
            left -= len(data)

    container, svc = _scripted_upload_service(hstack, proxy, script)
    try:
        with RawClient(proxy.port, timeout=20) as c:
            sender = _send_in_background(c.sock, _upload_head(f"{svc.path}/echo", UPLOAD) + body)
            head = b""
            while b"\r\n\r\n" not in head:
                head += c.sock.recv(65536)
            head, _, echoed = head.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ")
            # answered before the whole body: the connection ends after this answer, and says so
            assert b"\r\nConnection: close\r\n" in head + b"\r\n"
            echoed += _recv_exactly(c.sock, UPLOAD - len(echoed))
            sender.join(20)
            assert echoed == body  # nothing lost, reordered or sent twice
            c.buf = b""
            assert c.closed_within(5)
        assert len(heads) == 1 and not container.errors
        assert_clean_log(proxy)
    finally:
        container.close()


def test_a_container_refusing_an_upload_early_is_answered_and_the_connection_closed(env):
    hstack, proxy, _ = env
    seen = []

    def script(sock: socket.socket) -> None:
        head = read_head(sock)
        got = len(head.partition(b"\r\n\r\n")[2])
        while got < 2 << 20:
            got += len(sock.recv(1 << 20))
        seen.append(got)
        sock.sendall(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big!"
        )
        reset(sock)  # as a server closing with the body unread does

    container, svc = _scripted_upload_service(hstack, proxy, script)
    try:
        with RawClient(proxy.port, timeout=20) as c:
            _send_in_background(c.sock, _upload_head(f"{svc.path}/up", UPLOAD) + _upload_pattern(UPLOAD))
            resp = c.read_response()
            assert resp.status == 413 and resp.body == b"too big!"
            assert resp.header("Connection") == b"close"
            assert c.closed_within(5)  # the rest of the body is never taken for a request
        assert seen and seen[0] < UPLOAD and not container.errors
        reachable(proxy, env[2])
        assert_clean_log(proxy)
    finally:
        container.close()


def test_a_client_abandoning_a_long_upload_cuts_the_containers_connection(env):
    hstack, proxy, _ = env
    started, ended = threading.Event(), threading.Event()
    received = []

    def script(sock: socket.socket) -> None:
        head = read_head(sock)  # a probe's connection ends here: it sends no head
        started.set()
        got = len(head.partition(b"\r\n\r\n")[2])
        try:
            while data := sock.recv(1 << 20):
                got += len(data)
        except OSError:
            pass
        received.append(got)
        ended.set()

    container, svc = _scripted_upload_service(hstack, proxy, script)
    try:
        c = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        c.sendall(_upload_head(f"{svc.path}/up", UPLOAD) + _upload_pattern(4 << 20))
        assert started.wait(5)
        reset(c)  # gone with three quarters of the body still announced
        assert ended.wait(5), "the container's connection outlived its client"
        assert received[0] <= 4 << 20
        reachable(proxy, env[2])
        assert_clean_log(proxy)
    finally:
        container.close()


# ------------------------------------------------------------- ambiguous container responses
FRESH = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh"
SMUGGLED_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nsmuggle"
CANNED = {
    b"/cl-te": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"/cl-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"/cl-neg": b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nok",
    b"/te-gzip": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    b"/te-twice": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\n",
    b"/bare-lf": b"HTTP/1.1 200 OK\nContent-Length: 2\r\n\r\nok",
    b"/bare-cr": b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 2\r\n\r\nok",
    b"/obs-fold": b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
    b"/nul": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok",
    b"/status-2000": b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok",
    b"/http2": b"HTTP/2 200\r\nContent-Length: 2\r\n\r\nok",
    b"/space-colon": b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok",
    b"/101-unasked": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"/cl-cl-equal": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    # accepted: bytes after the body are never taken for the next response
    b"/split": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + SMUGGLED_RESPONSE,
    b"/split-204": b"HTTP/1.1 204 No Content\r\n\r\n" + SMUGGLED_RESPONSE,
    b"/split-chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    + SMUGGLED_RESPONSE,
    b"/split-304": b"HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n" + SMUGGLED_RESPONSE,
}


def canned_container(sock: socket.socket) -> None:
    """Answers each request with the canned response for its path (else ``FRESH``)."""
    buf = b""
    while True:
        while b"\r\n\r\n" not in buf:
            data = sock.recv(65536)
            if not data:
                return
            buf += data
        head, _, buf = buf.partition(b"\r\n\r\n")
        path = head.split(b" ")[1]
        sock.sendall(CANNED.get(path, FRESH))


@pytest.fixture(scope="module")
def canned(env):
    hstack, proxy, _ = env
    container = ScriptedContainer(canned_container)
    svc = hstack.publish(container.port, auth_mode="public", enable_websockets=True)
    reachable(proxy, svc, "/fresh")
    yield proxy, svc
    container.close()
    assert not container.errors, container.errors


@pytest.mark.parametrize(
    "path",
    [p.decode() for p in CANNED if not p.startswith(b"/split")],
)
def test_ambiguous_container_response_is_502(canned, path):
    proxy, svc = canned
    with RawClient(proxy.port) as c:
        c.send(f"GET {svc.path}{path} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
        resp = c.read_response()
        assert resp.status == 502, resp.raw[:300]
        assert resp.header("X-Linx-Error")
        if path == "/101-unasked":
            assert resp.header("X-Linx-Error") == b"bad_upgrade"
        # the next request on the client connection gets a real answer from a fresh upstream
        c.send(f"GET {svc.path}/fresh HTTP/1.1\r\nHost: h\r\n\r\n".encode())
        again = c.read_response()
        assert (again.status, again.body) == (200, b"fresh")


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        ("/split", 200, b"ok"),
        ("/split-204", 204, b""),
        ("/split-chunked", 200, b"ok"),
        ("/split-304", 304, b""),
    ],
)
def test_bytes_after_a_container_response_never_answer_the_next_request(canned, path, status, body):
    proxy, svc = canned
    with RawClient(proxy.port) as c:
        # pipelined: the second request must not be answered by the first response's tail
        c.send(
            f"GET {svc.path}{path} HTTP/1.1\r\nHost: h\r\n\r\n"
            f"GET {svc.path}/fresh HTTP/1.1\r\nHost: h\r\n\r\n".encode()
        )
        first = c.read_response()
        assert (first.status, first.body) == (status, body)
        assert len(first.header_all("Content-Length")) <= 1 and b"smuggle" not in first.raw
        second = c.read_response()
        assert (second.status, second.body) == (200, b"fresh"), second.raw[:300]


# -------------------------------------------------------------------------------------- soak
class SoakClient:
    """One keep-alive client thread running its share of the mix."""

    def __init__(self, port: int, paths: dict[str, str], token: str, seed: int, count: int) -> None:
        self.port = port
        self.p = paths
        self.token = token
        self.rnd = random.Random(seed)
        self.count = count
        self.client: RawClient | None = None
        self.kinds: dict[str, int] = {}
        self.problems: list[str] = []

    def conn(self) -> RawClient:
        if self.client is None or self.client.eof:
            if self.client is not None:
                self.client.close()
            self.client = RawClient(self.port, timeout=10)
        return self.client

    def drop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def exchange(self, data: bytes, method: bytes = b"GET"):
        c = self.conn()
        c.send(data)
        return c.read_response(method)

    def expect(self, kind: str, data: bytes, status: int, method: bytes = b"GET", closed: bool = False):
        resp = self.exchange(data, method)
        if resp.status != status or (closed and not self.client.closed_within(3)):
            self.problems.append(f"{kind}: {resp.status} {resp.raw[:200]!r}")
        if closed or resp.header("Connection") == b"close":
            self.drop()
        return resp

    def run(self) -> None:
        try:
            for i in range(self.count):
                kind = self.pick()
                self.kinds[kind] = self.kinds.get(kind, 0) + 1
                try:
                    getattr(self, "do_" + kind)(i)
                except (Closed, OSError) as exc:
                    self.problems.append(f"{kind}: {exc!r}")
                    self.drop()
        finally:
            self.drop()

    GOOD = ["get", "post", "chunked", "download", "head", "token", "websocket"]
    BAD = ["midway_cl", "midway_chunked", "garbage", "huge", "fake101", "silent", "refused"]
    BAD += ["malformed", "bad_token", "unknown", "client_abort"]

    def pick(self) -> str:
        if self.rnd.random() < 0.10:
            return self.rnd.choice(self.BAD)
        return self.rnd.choice(self.GOOD)

    def h(self, line: str, *headers: str, body: bytes = b"") -> bytes:
        return ("\r\n".join([line + " HTTP/1.1", "Host: h.test", *headers]) + "\r\n\r\n").encode() + body

    # good
    def do_get(self, i: int) -> None:
        resp = self.expect("get", self.h(f"GET {self.p['P']}/echo?i={i}"), 200)
        if resp.status == 200 and json.loads(resp.body)["target"] != f"/echo?i={i}":
            self.problems.append(f"get: wrong answer {resp.body[:200]!r}")

    def do_post(self, i: int) -> None:
        body = secrets.token_bytes(self.rnd.randint(1, 4000))
        resp = self.expect(
            "post", self.h(f"POST {self.p['P']}/upload", f"Content-Length: {len(body)}", body=body), 200
        )
        if resp.status == 200 and json.loads(resp.body)["received"] != len(body):
            self.problems.append("post: body length")

    def do_chunked(self, i: int) -> None:
        body = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        resp = self.expect(
            "chunked", self.h(f"POST {self.p['P']}/upload", "Transfer-Encoding: chunked", body=body), 200
        )
        if resp.status == 200 and json.loads(resp.body)["received"] != 11:
            self.problems.append("chunked: body length")

    def do_download(self, i: int) -> None:
        chunked = "?chunked=1" if i % 2 else ""
        resp = self.expect("download", self.h(f"GET {self.p['P']}/bytes/65536{chunked}"), 200)
        if len(resp.body) != 65536 or not resp.complete:
            self.problems.append("download: length")

    def do_head(self, i: int) -> None:
        self.expect("head", self.h(f"HEAD {self.p['P']}/head-test"), 200, method=b"HEAD")

    def do_token(self, i: int) -> None:
        self.expect("token", self.h(f"GET {self.p['T']}/echo", f"X-Linx-Token: {self.token}"), 200)

    def do_websocket(self, i: int) -> None:
        self.drop()
        c = self.conn()
        c.send(ws_upgrade(f"{self.p['P']}/ws"))
        resp = c.read_response()
        if resp.status != 101:
            self.problems.append(f"websocket: {resp.status}")
            self.drop()
            return
        c.send(ws_frame(b"soak %d" % i))
        want = b"\x81" + bytes([len(b"soak %d" % i)]) + b"soak %d" % i
        while len(c.buf) < len(want):
            if not c._fill():
                break
        if c.buf[: len(want)] != want:
            self.problems.append(f"websocket: echo {c.buf[:40]!r}")
        c.buf = b""
        c.send(ws_frame(b"\x03\xe8", opcode=8))
        data, how = c.read_until_close(5)
        if how == "timeout":
            self.problems.append("websocket: not closed")
        self.drop()

    # bad
    def midway(self, mode: str) -> None:
        # The reset may reach the proxy before it has flushed the head it started: the client
        # then sees its connection reset with nothing (or part of a response). Either way it
        # must never see a complete-looking response.
        try:
            resp = self.exchange(self.h(f"GET {self.p['P']}/close-midway?mode={mode}&delay=0"))
        except Closed:
            self.drop()
            return
        if resp.status != 200 or resp.complete or not self.client.eof:
            self.problems.append(f"midway_{mode}: looked complete")
        self.drop()

    def do_midway_cl(self, i: int) -> None:
        self.midway("cl")

    def do_midway_chunked(self, i: int) -> None:
        self.midway("chunked")

    def do_garbage(self, i: int) -> None:
        self.expect("garbage", self.h(f"GET {self.p['P']}/garbage"), 502)

    def do_huge(self, i: int) -> None:
        self.expect("huge", self.h(f"GET {self.p['P']}/huge-headers?kb=100"), 502)

    def do_fake101(self, i: int) -> None:
        self.expect("fake101", ws_upgrade(f"{self.p['P']}/fake-101"), 502)

    def do_silent(self, i: int) -> None:
        self.expect("silent", self.h(f"GET {self.p['P']}/no-answer"), 504)

    def do_refused(self, i: int) -> None:
        self.expect("refused", self.h(f"GET {self.p['D']}/x"), 503)

    def do_malformed(self, i: int) -> None:
        self.expect("malformed", f"GET {self.p['P']}/x HTTP/1.1\nHost: h\r\n\r\n".encode(), 400, closed=True)

    def do_bad_token(self, i: int) -> None:
        self.expect("bad_token", self.h(f"GET {self.p['T']}/echo", "X-Linx-Token: v1.nope.nope"), 403)

    def do_unknown(self, i: int) -> None:
        self.expect("unknown", self.h(f"GET /linx/lnx_{'z' * 26}/x"), 404)

    def do_client_abort(self, i: int) -> None:
        c = self.conn()
        c.send(self.h(f"GET {self.p['P']}/bytes/4194304"))
        while b"\r\n\r\n" not in c.buf:
            if not c._fill():
                break
        self.drop()


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled(read, polls: int = 10, interval: float = 0.05, timeout: float = 20):
    """Poll ``read()`` until it returns the same value ``polls`` times in a row; return it."""
    deadline = time.monotonic() + timeout
    last, same = read(), 0
    while same < polls:
        assert time.monotonic() < deadline, f"never settled (last {last})"
        time.sleep(interval)
        value = read()
        same = same + 1 if value == last else 0
        last = value
    return last


def run_mix(
    port: int, paths: dict[str, str], token: str, total: int, threads: int, seed: int
) -> list[SoakClient]:
    clients = [SoakClient(port, paths, token, seed + n, total // threads) for n in range(threads)]
    workers = [threading.Thread(target=c.run) for c in clients]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return clients


@pytest.mark.timeout(max(300, SOAK_REQUESTS // 100))  # 100,000 requests: up to ~17 min
def test_soak_mixed_requests_with_failures_leaves_no_residue(hstack, capsys):
    warm_backend, soak_backend = EchoBackend().start(), EchoBackend().start()
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, never listening: connections to it are refused
    stack = None
    try:
        # a stack of its own, so that the proxy knows (and probes) the soak's services only
        stack = hstack.isolated()
        # 1 s for a response head: short enough that the silent container's share stays cheap,
        # long enough that a loaded CI machine never turns a healthy answer into a 504
        proxy = stack.proxy(LINX_RESPONSE_TIMEOUT_SECS="1", LINX_IDLE_TIMEOUT_SECS="5")
        tenant = stack.tenant()
        sets = {}
        for name, backend in (("warm", warm_backend), ("soak", soak_backend)):
            p = stack.publish(backend.port, tenant=tenant, auth_mode="public", enable_websockets=True)
            t = stack.publish(backend.port, tenant=tenant)
            d = stack.publish(dead.getsockname()[1], tenant=tenant, auth_mode="public")
            sets[name] = ({"P": p.path, "T": t.path, "D": d.path}, t.token)
            for s in (p, t, d):  # known to the proxy (a 308 needs no upstream connection)
                wait_for(
                    lambda s=s: (
                        requests.get(f"{proxy.url}{s.path}", allow_redirects=False, timeout=2).status_code
                        == 308
                    ),
                    5,
                )
        pid = proxy.proc.proc.pid
        # warm up on the throw-away backend, then stop it: its pooled connections go with it
        warm = run_mix(proxy.port, *sets["warm"], total=400, threads=SOAK_THREADS, seed=1)
        assert not [p for c in warm for p in c.problems], [p for c in warm for p in c.problems][:10]
        warm_backend.stop()
        wait_for(lambda: "linx_proxy_open_connections 0.0" in proxy.metrics(), 10)
        base_fds = settled(lambda: fd_count(pid))
        base_threads = proc_status(pid, "Threads")
        base_rss = proxy.rss_kib()

        started = time.monotonic()
        clients = run_mix(proxy.port, *sets["soak"], total=SOAK_REQUESTS, threads=SOAK_THREADS, seed=100)
        elapsed = time.monotonic() - started
        problems = [p for c in clients for p in c.problems]
        kinds: dict[str, int] = {}
        for c in clients:
            for k, v in c.kinds.items():
                kinds[k] = kinds.get(k, 0) + v
        failures = sum(v for k, v in kinds.items() if k in SoakClient.BAD)
        peak_fds = fd_count(pid)

        soak_backend.stop()  # its pooled upstream connections close with it
        wait_for(lambda: "linx_proxy_open_connections 0.0" in proxy.metrics(), 10)
        wait_for(lambda: "linx_proxy_open_websockets 0.0" in proxy.metrics(), 10)
        end_fds = settled(lambda: fd_count(pid))
        end_threads = proc_status(pid, "Threads")
        end_rss = proxy.rss_kib()
        with capsys.disabled():
            print(
                f"\nsoak: {sum(kinds.values())} requests ({failures} failing) in {elapsed:.1f}s "
                f"by {SOAK_THREADS} clients; fds {base_fds} -> {peak_fds} -> {end_fds}; "
                f"threads {base_threads} -> {end_threads}; RSS {base_rss} -> {end_rss} KiB; "
                f"kinds {sorted(kinds.items())}"
            )
        assert not problems, problems[:20]
        assert sum(kinds.values()) == SOAK_REQUESTS // SOAK_THREADS * SOAK_THREADS
        assert set(kinds) == set(SoakClient.GOOD) | set(SoakClient.BAD)  # every kind happened
        assert 0.07 <= failures / sum(kinds.values()) <= 0.13
        assert end_fds == base_fds
        assert end_threads == base_threads
        assert (end_rss - base_rss) / 1024 < RSS_MARGIN_MIB
        assert proxy.proc.alive()
        assert_clean_log(proxy)
    finally:
        if stack is not None:
            stack.close()
        warm_backend.stop()
        soak_backend.stop()
        dead.close()
