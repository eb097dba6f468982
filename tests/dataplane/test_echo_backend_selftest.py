"""The echo backend used by the end-to-end tests, exercised directly (no proxy in between)."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import socket
import uuid

import pytest
import requests
import websocket

from tests.helpers.backend_process import EchoBackend

PATTERN = b"0123456789abcdef"


@pytest.fixture(scope="module")
def backend():
    with EchoBackend() as b:
        yield b


@pytest.fixture(autouse=True)
def _fresh(backend):
    backend.reset()


def post_json(url: str, **kwargs) -> object:
    """POST and decode; the response (which pins its socket open) dies on return."""
    with requests.Session() as session:
        return session.post(url, **kwargs).json()


class RawClient:
    """A bare HTTP/1.1 client over one socket, so tests control every byte and read in order."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.f = self.sock.makefile("rb")

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_head(self) -> tuple[int, list[tuple[str, str]]]:
        status_line = self.f.readline()
        assert status_line.startswith(b"HTTP/1.1 "), status_line
        headers = []
        while (line := self.f.readline()) != b"\r\n":
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name, value.strip()))
        return int(status_line.split()[1]), headers

    def read_chunk(self) -> bytes:
        size = int(self.f.readline().strip(), 16)
        data = self.f.read(size)
        assert self.f.read(2) == b"\r\n"
        return data

    def read_response(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        status, header_list = self.read_head()
        headers = {k.lower(): v for k, v in header_list}
        if head_only or status in (204, 304):
            body = b""
        elif headers.get("transfer-encoding") == "chunked":
            parts = []
            while chunk := self.read_chunk():
                parts.append(chunk)
            assert self.f.readline() == b"\r\n"
            body = b"".join(parts)
        else:
            body = self.f.read(int(headers["content-length"]))
        return status, headers, body


def test_echo_reports_request_with_header_order_and_case(backend):
    head = (
        b"GET /echo/x?b=2&a=1&b=3 HTTP/1.1\r\n"
        b"Host: example.test\r\n"
        b"X-Zeta: 1\r\n"
        b"x-alpha:  2 \r\n"
        b"X-MiXeD-CaSe: v\r\n"
        b"X-Zeta: 3\r\n"
        b"\r\n"
    )
    with RawClient(backend.port) as c:
        c.send(head)
        status, headers, body = c.read_response()
    assert status == 200
    echo = json.loads(body)
    assert echo["method"] == "GET"
    assert echo["target"] == "/echo/x?b=2&a=1&b=3"
    assert (echo["path"], echo["query"], echo["version"]) == ("/echo/x", "b=2&a=1&b=3", "HTTP/1.1")
    assert echo["headers"] == [
        ["Host", "example.test"],
        ["X-Zeta", "1"],
        ["x-alpha", "2"],
        ["X-MiXeD-CaSe", "v"],
        ["X-Zeta", "3"],
    ]
    assert echo["port"] == backend.port
    assert echo["body_len"] == 0
    assert echo["req_no_on_conn"] == 1
    assert headers["x-echo-conn-id"] == str(echo["conn_id"])

    [recorded] = backend.requests(raw=True)
    assert base64.b64decode(recorded["raw_head"]) == head
    assert recorded["headers"] == echo["headers"]
    assert recorded["error"] is None


def test_keep_alive_reuses_the_connection(backend):
    with requests.Session() as s:
        first = s.get(f"{backend.url}/echo/1").json()
        second = s.get(f"{backend.url}/anything/else").json()
    assert first["conn_id"] == second["conn_id"]
    assert (first["req_no_on_conn"], second["req_no_on_conn"]) == (1, 2)
    assert second["path"] == "/anything/else"
    assert [r["path"] for r in backend.requests()] == ["/echo/1", "/anything/else"]


def test_pipelined_requests_are_answered_in_order(backend):
    with RawClient(backend.port) as c:
        c.send(
            b"GET /echo/a HTTP/1.1\r\nHost: h\r\n\r\n"
            b"POST /echo/b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
            b"PUT /echo/c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n"
        )
        answers = [json.loads(c.read_response()[2]) for _ in range(3)]
    assert [a["path"] for a in answers] == ["/echo/a", "/echo/b", "/echo/c"]
    assert [a["req_no_on_conn"] for a in answers] == [1, 2, 3]
    assert len({a["conn_id"] for a in answers}) == 1
    assert answers[1]["body_sha256"] == hashlib.sha256(b"hello").hexdigest()
    assert answers[2]["body_len"] == 3
    assert answers[2]["trailers"] == [["X-Trailer", "t"]]


def test_chunked_upload_is_hashed(backend):
    parts = [os.urandom(100_000) for _ in range(5)]
    resp = requests.post(f"{backend.url}/upload", data=iter(parts))
    assert resp.json() == {
        "received": 500_000,
        "sha256": hashlib.sha256(b"".join(parts)).hexdigest(),
        "chunked": True,
    }
    [recorded] = backend.requests()
    assert ["Transfer-Encoding", "chunked"] in recorded["headers"]
    assert recorded["body_len"] == 500_000
    assert recorded["body_complete"] is True


@pytest.mark.parametrize("chunked", [False, True])
def test_bytes_streams_the_pattern(backend, chunked):
    n = 300_007
    url = f"{backend.url}/bytes/{n}" + ("?chunked=1" if chunked else "")
    resp = requests.get(url)
    expected = (PATTERN * (n // 16 + 1))[:n]
    assert resp.content == expected
    if chunked:
        assert resp.headers["Transfer-Encoding"] == "chunked"
    else:
        assert resp.headers["Content-Length"] == str(n)


def test_status_head_and_bodiless_answers_keep_framing(backend):
    with RawClient(backend.port) as c:
        c.send(
            b"HEAD /head-test HTTP/1.1\r\nHost: h\r\n\r\n"
            b"GET /status/204 HTTP/1.1\r\nHost: h\r\n\r\n"
            b"GET /status/304 HTTP/1.1\r\nHost: h\r\n\r\n"
            b"GET /status/418 HTTP/1.1\r\nHost: h\r\n\r\n"
            b"GET /head-test HTTP/1.1\r\nHost: h\r\n\r\n"
        )
        status, headers, _ = c.read_response(head_only=True)
        assert status == 200
        head_length = int(headers["content-length"])
        status, headers, _ = c.read_response()
        assert status == 204 and "content-length" not in headers
        assert c.read_response()[0] == 304
        assert c.read_response()[:3:2] == (418, b"status 418\n")
        status, _, body = c.read_response()
        assert status == 200 and len(body) == head_length > 0


def test_sse_event_waits_for_release(backend):
    gate = f"g{uuid.uuid4().hex[:8]}"
    with RawClient(backend.port) as c:
        c.send(f"GET /sse?count=2&gate={gate} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
        status, headers = c.read_head()
        assert status == 200
        assert ("Content-Type", "text/event-stream") in headers
        assert c.read_chunk() == b"id: 1\ndata: event 1\n\n"
        # the handler is parked on the gate, so event 2 has not been written yet
        assert backend.wait_for_gate(gate)["consumed"] == 0
        backend.release(gate)
        assert c.read_chunk() == b"id: 2\ndata: event 2\n\n"
        assert c.read_chunk() == b""


def test_websocket_echoes_text_binary_and_large_messages(backend):
    ws = websocket.create_connection(f"{backend.ws_url}/ws", subprotocols=["chat.v2", "other"], timeout=10)
    try:
        assert ws.getstatus() == 101
        assert ws.subprotocol == "chat.v2"
        ws.send("hello linx")
        assert ws.recv() == "hello linx"
        ws.send_binary(b"\x00\x01\xff")
        assert ws.recv() == b"\x00\x01\xff"
        big = os.urandom(1024 * 1024 + 17)
        ws.send_binary(big)
        assert ws.recv() == big
        ws.send_frame(websocket.ABNF.create_frame("hel", websocket.ABNF.OPCODE_TEXT, fin=0))
        ws.ping(b"p")
        ws.send_frame(websocket.ABNF.create_frame("lo", websocket.ABNF.OPCODE_CONT, fin=1))
        pong = ws.recv_data_frame(control_frame=True)
        assert (pong[0], pong[1].data) == (websocket.ABNF.OPCODE_PONG, b"p")
        assert ws.recv() == "hello"
    finally:
        ws.close()
        ws.shutdown()  # close() skips the socket once the peer has closed first
    [recorded] = backend.wait_for(lambda: [r for r in backend.requests() if r["ws"]["close_code"] == 1000])
    offered = [v for k, v in recorded["headers"] if k.lower() == "sec-websocket-protocol"]
    assert [p.strip() for p in ",".join(offered).split(",")] == ["chat.v2", "other"]
    assert recorded["ws"]["messages"] == 4


def test_websocket_reject_and_fake_101(backend):
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(f"{backend.ws_url}/ws?reject=1", timeout=10)
    assert info.value.status_code == 403
    with pytest.raises(websocket.WebSocketException, match="(?i)invalid|accept"):
        websocket.create_connection(f"{backend.ws_url}/fake-101", timeout=10)


def test_set_cookie_sends_app_and_linx_cookies(backend):
    conn = http.client.HTTPConnection("127.0.0.1", backend.port, timeout=10)
    try:
        conn.request("GET", "/set-cookie")
        resp = conn.getresponse()
        resp.read()
        cookies = resp.headers.get_all("Set-Cookie")
    finally:
        conn.close()
    names = [c.split("=", 1)[0] for c in cookies]
    assert {"app", "linx_lnx_evil", "linx_other"} <= set(names)


def test_expect_100_continue_before_body(backend):
    with RawClient(backend.port) as c:
        c.send(b"POST /expect HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        assert c.f.readline() == b"HTTP/1.1 100 Continue\r\n"
        assert c.f.readline() == b"\r\n"
        c.send(b"hello")
        status, _, body = c.read_response()
    assert status == 200
    answer = json.loads(body)
    assert answer["continue_sent"] is True
    assert answer["received"] == 5
    assert answer["sha256"] == hashlib.sha256(b"hello").hexdigest()


@pytest.mark.parametrize(
    ("framing", "error"),
    [
        (b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", "both"),
        (b"Content-Length: 3\r\nContent-Length: 3\r\n", "duplicate"),
        (b"X-Folded: a\r\n b\r\n", "obs-fold"),
    ],
)
def test_ambiguous_requests_are_recorded_and_refused(backend, framing, error):
    with RawClient(backend.port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: h\r\n" + framing + b"\r\nabc")
        status, headers, _ = c.read_response()
        assert status == 400
        assert headers["connection"] == "close"
        assert c.f.read() == b""
    [recorded] = backend.requests()
    assert error in recorded["error"]


def test_close_midway_sends_less_than_announced(backend):
    with RawClient(backend.port) as c:
        c.send(b"GET /close-midway?mode=cl HTTP/1.1\r\nHost: h\r\n\r\n")
        status, headers = c.read_head()
        announced = int(dict(headers)["Content-Length"])
        got = 0
        try:
            while data := c.f.read1(65536):
                got += len(data)
        except ConnectionResetError:
            pass
    assert status == 200
    assert got < announced


def test_slow_read_and_connections(backend):
    body = os.urandom(4096)
    answer = post_json(f"{backend.url}/slow-read?chunk=1024&delay=0.001", data=body)
    assert answer["received"] == len(body)
    with RawClient(backend.port) as c:
        c.send(b"GET /no-answer HTTP/1.1\r\nHost: h\r\n\r\n")
        backend.wait_for_requests(1)
        backend.wait_for(lambda: [c for c in backend.connections() if c["last_path"] == "/no-answer"])
    backend.wait_for(lambda: backend.connections() == [] or None)
