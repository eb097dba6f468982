"""Limits and timeouts against real proxy processes, each at its boundary (limit OK, limit+1
refused), plus a slowloris run with ``slowhttptest`` and a slow reader of a 512 MiB response.

Time-based checks are deadlines from the configuration (the proxy acts no earlier than the
limit and no later than the limit plus ``SLACK``), never throughput figures.
"""

from __future__ import annotations

import base64
import csv
import errno
import json
import os
import secrets
import select
import shutil
import socket
import subprocess
import threading
import time

import pytest
import requests

from tests.hardening.rawhttp import RawClient
from tests.hardening.support import assert_clean_log, reachable
from tests.helpers.procs import wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning"),
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
    ),
]

SLACK = 1.0  # how late after its deadline a timer may fire on a loaded 2-core CI machine
HEAD_TIMEOUT = 2.0
IDLE_TIMEOUT = 1.5
CONNECT_TIMEOUT = 1.0
RESPONSE_TIMEOUT = 1.5


@pytest.fixture(scope="module")
def svc(hstack):
    return hstack.publish(auth_mode="public", enable_websockets=True)


@pytest.fixture(scope="module")
def default_proxy(hstack, svc):
    """The spec's defaults: 32 KiB heads, 100 header fields."""
    proxy = hstack.proxy()
    reachable(proxy, svc)
    yield proxy
    assert_clean_log(proxy)
    hstack.stop_proxy(proxy)


@pytest.fixture(scope="module")
def timed_proxy(hstack, svc):
    proxy = hstack.proxy(
        LINX_HEAD_TIMEOUT_SECS=str(HEAD_TIMEOUT),
        LINX_IDLE_TIMEOUT_SECS=str(IDLE_TIMEOUT),
        LINX_CONNECT_TIMEOUT_SECS=str(CONNECT_TIMEOUT),
        LINX_RESPONSE_TIMEOUT_SECS=str(RESPONSE_TIMEOUT),
    )
    reachable(proxy, svc)
    yield proxy
    assert_clean_log(proxy)
    hstack.stop_proxy(proxy)


def marker_seen(backend, marker: str) -> bool:
    return any(marker.encode() in base64.b64decode(r["raw_head"]) for r in backend.requests(raw=True))


def padded_head(path: str, total: int, marker: str) -> bytes:
    """A GET head of exactly ``total`` bytes (an X-Pad header takes up the slack)."""
    start = f"GET {path}/{marker} HTTP/1.1\r\nHost: h.test\r\nX-Pad: ".encode()
    end = b"\r\n\r\n"
    return start + b"p" * (total - len(start) - len(end)) + end


# --------------------------------------------------------------------------- head size, fields
def test_head_size_limit_boundary(default_proxy, svc, hstack):
    limit = 32768
    ok, over = "mk" + secrets.token_hex(5), "mk" + secrets.token_hex(5)
    with RawClient(default_proxy.port) as c:
        c.send(padded_head(svc.path, limit, ok))
        resp = c.read_response()
        assert resp.status == 200, resp.raw[:300]
        got = json.loads(resp.body)
        assert len(dict(got["headers"])["X-Pad"]) == limit - len(
            f"GET {svc.path}/{ok} HTTP/1.1\r\nHost: h.test\r\nX-Pad: \r\n\r\n"
        )
    with RawClient(default_proxy.port) as c:
        c.send(padded_head(svc.path, limit + 1, over))
        resp = c.read_response()
        assert resp.status == 431 and resp.header("X-Linx-Error") == b"head_too_large"
        assert c.closed_within(2)
    # an unterminated head is refused as soon as it passes the limit, not at the deadline
    with RawClient(default_proxy.port) as c:
        started = time.monotonic()
        c.send(f"GET {svc.path}/{over} HTTP/1.1\r\nX-Pad: ".encode() + b"p" * limit)
        assert c.read_response().status == 431
        assert time.monotonic() - started < 1.0
    assert not marker_seen(hstack.backend, over)


def test_header_count_limit_boundary(default_proxy, svc, hstack):
    def request(fields: int, marker: str) -> bytes:
        lines = [f"GET {svc.path}/{marker} HTTP/1.1", "Host: h.test"]
        lines += [f"X-Fld{i}: v" for i in range(fields - 1)]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    ok, over = "mk" + secrets.token_hex(5), "mk" + secrets.token_hex(5)
    with RawClient(default_proxy.port) as c:
        c.send(request(100, ok))
        resp = c.read_response()
        assert resp.status == 200
        assert sum(1 for n, _ in json.loads(resp.body)["headers"] if n.startswith("X-Fld")) == 99
    with RawClient(default_proxy.port) as c:
        c.send(request(101, over))
        resp = c.read_response()
        assert resp.status == 431 and resp.header("X-Linx-Error") == b"too_many_headers"
        assert c.closed_within(2)
    assert not marker_seen(hstack.backend, over)


# ------------------------------------------------------------------------------ head deadline
def dribble(client: RawClient, data: bytes, every: float, stop: threading.Event) -> None:
    for i in range(len(data)):
        if stop.wait(every if i else 0):
            return
        try:
            client.send(data[i : i + 1])
        except OSError:
            return


def test_slowloris_is_cut_at_the_absolute_head_deadline(timed_proxy, svc, hstack):
    marker = "mk" + secrets.token_hex(5)
    data = f"GET {svc.path}/{marker} HTTP/1.1\r\nHost: h.test\r\n\r\n".encode()
    stop = threading.Event()
    with RawClient(timed_proxy.port, timeout=10) as c:
        started = time.monotonic()
        t = threading.Thread(target=dribble, args=(c, data, 0.5, stop))
        t.start()
        try:
            resp = c.read_response()
            elapsed = time.monotonic() - started
            assert resp.status == 408 and resp.header("X-Linx-Error") == b"head_timeout"
            # a byte every 0.5 s never resets the deadline: cut at HEAD_TIMEOUT from connecting
            assert HEAD_TIMEOUT - 0.1 <= elapsed <= HEAD_TIMEOUT + SLACK, elapsed
            assert c.closed_within(2)
        finally:
            stop.set()
            t.join()
    assert not marker_seen(hstack.backend, marker)


def test_silent_connection_closed_at_head_deadline_without_answer(timed_proxy):
    with RawClient(timed_proxy.port, timeout=10) as c:
        started = time.monotonic()
        data, how = c.read_until_close(HEAD_TIMEOUT + SLACK + 2)
        elapsed = time.monotonic() - started
    assert data == b"" and how in ("fin", "rst")
    assert HEAD_TIMEOUT - 0.1 <= elapsed <= HEAD_TIMEOUT + SLACK, elapsed


def test_head_completed_inside_the_deadline_is_served(timed_proxy, svc):
    parts = [f"GET {svc.path}/in-time HTTP/1.1\r\n".encode(), b"Host: h.test\r\n", b"\r\n"]
    with RawClient(timed_proxy.port) as c:
        for i, part in enumerate(parts):
            if i:
                time.sleep(0.6)  # the client's pace, not synchronisation: 1.2 s < HEAD_TIMEOUT
            c.send(part)
        assert c.read_response().status == 200


def test_second_request_on_a_connection_gets_its_own_head_deadline(timed_proxy, svc):
    with RawClient(timed_proxy.port, timeout=10) as c:
        c.send(f"GET {svc.path}/first HTTP/1.1\r\nHost: h.test\r\n\r\n".encode())
        assert c.read_response().status == 200
        stop = threading.Event()
        started = time.monotonic()
        t = threading.Thread(target=dribble, args=(c, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", 0.4, stop))
        t.start()
        try:
            resp = c.read_response()
            elapsed = time.monotonic() - started
        finally:
            stop.set()
            t.join()
    assert resp.status == 408
    assert HEAD_TIMEOUT - 0.1 <= elapsed <= HEAD_TIMEOUT + SLACK, elapsed


def python_slowloris(port: int, path: str, total: int, rate: float, seconds: float) -> dict:
    """A slowloris in plain Python (for machines without slowhttptest): open ``total``
    connections at ``rate`` per second, each sending one more header line every second and never
    ending its head; count how many the server closed. Returns the peak and closed counts."""
    import selectors

    sel = selectors.DefaultSelector()
    conns: dict[socket.socket, float] = {}
    opened = closed = peak = 0
    started = time.monotonic()
    next_open = started
    try:
        while time.monotonic() - started < seconds:
            now = time.monotonic()
            while opened < total and now >= next_open:
                s = socket.create_connection(("127.0.0.1", port), timeout=2)
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: slow\r\n".encode())
                s.setblocking(False)
                sel.register(s, selectors.EVENT_READ)
                conns[s] = now
                opened += 1
                next_open += 1 / rate
            peak = max(peak, len(conns))
            for key, _ in sel.select(timeout=0.05):
                s = key.fileobj
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if not data or data.startswith(b"HTTP/1.1 408"):
                    sel.unregister(s)
                    s.close()
                    del conns[s]
                    closed += 1
            for s, last in list(conns.items()):
                if now - last >= 1:
                    try:
                        s.send(b"X-a: b\r\n")
                    except OSError:
                        pass
                    conns[s] = now
    finally:
        for s in conns:
            sel.unregister(s)
            s.close()
        sel.close()
    return {"opened": opened, "peak": peak, "closed": closed}


def test_slowloris_while_a_probe_keeps_getting_200(hstack, svc, tmp_path):
    """slowhttptest when installed (.ci/run installs it; CI requires it), else the same attack
    from ``python_slowloris``, so a machine with only Python still runs this test."""
    binary = shutil.which("slowhttptest")
    if os.environ.get("CI"):
        assert binary, "slowhttptest is missing: .ci/run installs it (apt-get install -y slowhttptest)"
    proxy = hstack.proxy(LINX_HEAD_TIMEOUT_SECS=str(HEAD_TIMEOUT))
    try:
        reachable(proxy, svc)
        url = f"{proxy.url}{svc.path}/"
        statuses: list[int] = []
        stop = threading.Event()

        def probe() -> None:
            while not stop.is_set():
                try:
                    statuses.append(requests.get(url + "probe", timeout=5).status_code)
                except requests.RequestException as exc:
                    statuses.append(-1)
                    print("probe failed:", exc)
                stop.wait(0.05)

        prober = threading.Thread(target=probe)
        if binary is None:
            prober.start()
            try:
                result = python_slowloris(proxy.port, svc.path + "/", total=1000, rate=125, seconds=8)
            finally:
                stop.set()
                prober.join()
            print(f"slowloris (python): {result}; probe statuses: {len(statuses)} x {sorted(set(statuses))}")
            assert result["peak"] >= 150, result  # the attack was real
            assert result["closed"] >= 500, result  # cut at the deadline, again and again
            assert len(statuses) >= 20 and set(statuses) == {200}, statuses
            assert proxy.proc.alive()
            assert_clean_log(proxy)
            return
        out = tmp_path / "slowloris"
        # slowhttptest never reopens a connection the server closed: 1000 connections opened at
        # 125 per second keep about 250 attackers dribbling headers for the whole 8 seconds.
        args = [binary, "-H", "-c", "1000", "-r", "125", "-i", "1", "-l", "8", "-x", "10", "-p", "3"]
        args += ["-g", "-o", str(out), "-u", url]
        prober.start()
        try:
            run = subprocess.run(args, capture_output=True, timeout=60, cwd=tmp_path, check=False)
        finally:
            stop.set()
            prober.join()
        assert run.returncode == 0, run.stderr[-2000:]
        with open(f"{out}.csv") as f:
            rows = list(csv.DictReader(f))
        print(f"slowloris: {rows[-1]}; probe statuses: {len(statuses)} x {sorted(set(statuses))}")
        assert len(rows) >= 8, rows
        assert max(int(r["Connected"]) for r in rows) >= 150, rows  # the attack was real
        # the proxy cut the attack's connections at the deadline, again and again
        assert int(rows[-1]["Closed"]) >= 500, rows
        assert len(statuses) >= 20 and set(statuses) == {200}, statuses
        assert proxy.proc.alive()
        assert_clean_log(proxy)
    finally:
        hstack.stop_proxy(proxy)


# ------------------------------------------------------------------------------- keep-alive idle
def test_idle_keep_alive_boundary(timed_proxy, svc):
    with RawClient(timed_proxy.port, timeout=10) as c:
        c.send(f"GET {svc.path}/1 HTTP/1.1\r\nHost: h.test\r\n\r\n".encode())
        assert c.read_response().status == 200
        time.sleep(IDLE_TIMEOUT / 2)  # an idle client's pace: half the idle limit
        c.send(f"GET {svc.path}/2 HTTP/1.1\r\nHost: h.test\r\n\r\n".encode())
        assert c.read_response().status == 200
        idle_from = time.monotonic()
        data, how = c.read_until_close(IDLE_TIMEOUT + SLACK + 2)
        elapsed = time.monotonic() - idle_from
    assert data == b"" and how in ("fin", "rst")
    assert IDLE_TIMEOUT - 0.1 <= elapsed <= IDLE_TIMEOUT + SLACK, elapsed


# ----------------------------------------------------------------------------- backend timeouts
class FullBacklog:
    """A loopback listener that never accepts, its accept queue filled: connects to it hang."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.port = self.listener.getsockname()[1]
        self.fillers: list[socket.socket] = []
        for _ in range(64):
            s = socket.socket()
            s.setblocking(False)
            self.fillers.append(s)
            assert s.connect_ex(("127.0.0.1", self.port)) in (0, errno.EINPROGRESS)
            _, writable, _ = select.select([], [s], [], 0.3)
            if not writable:
                break  # this SYN was dropped: the queue is full
        else:
            raise AssertionError("the accept queue never filled")

    def close(self) -> None:
        for s in self.fillers:
            s.close()
        self.listener.close()


def test_backend_connect_timeout_is_503(hstack, timed_proxy, svc):
    hang = FullBacklog()
    try:
        stuck = hstack.publish(hang.port, auth_mode="public")
        url = f"{timed_proxy.url}{stuck.path}/"
        wait_for(lambda: requests.get(url, timeout=5).status_code != 404, 5)
        started = time.monotonic()
        resp = requests.get(url, timeout=10)
        elapsed = time.monotonic() - started
        assert resp.status_code == 503, resp.text
        assert resp.headers["X-Linx-Error"] == "target_connect_timeout"
        assert resp.headers["Retry-After"]
        assert CONNECT_TIMEOUT - 0.1 <= elapsed <= CONNECT_TIMEOUT + SLACK, elapsed
        # the same proxy connects to a listening container at once (the limit is not in the way)
        assert requests.get(f"{timed_proxy.url}{svc.path}/", timeout=5).status_code == 200
    finally:
        hang.close()


def test_response_head_timeout_boundary(timed_proxy, svc):
    base = f"{timed_proxy.url}{svc.path}"
    assert requests.get(base + f"/slow-head?secs={RESPONSE_TIMEOUT / 3}", timeout=10).status_code == 200
    for rest in (f"/slow-head?secs={RESPONSE_TIMEOUT * 3}", "/no-answer"):
        started = time.monotonic()
        resp = requests.get(base + rest, timeout=10)
        elapsed = time.monotonic() - started
        assert resp.status_code == 504 and resp.headers["X-Linx-Error"] == "upstream_timeout"
        assert RESPONSE_TIMEOUT - 0.1 <= elapsed <= RESPONSE_TIMEOUT + SLACK, elapsed


# -------------------------------------------------------------------------- open connections
def test_connection_limit_refuses_extra_and_spares_the_open_ones(hstack, svc):
    proxy = hstack.proxy(LINX_MAX_CONNECTIONS="4")
    backend = hstack.backend
    gate = "g" + secrets.token_hex(4)
    held: list[RawClient] = []
    try:
        reachable(proxy, svc)
        wait_for(lambda: "linx_proxy_open_connections 0.0" in proxy.metrics(), 5)
        stream = RawClient(proxy.port)
        held.append(stream)
        stream.send(f"GET {svc.path}/sse?count=2&gate={gate} HTTP/1.1\r\nHost: h.test\r\n\r\n".encode())
        while b"data: event 1" not in stream.buf:
            assert stream._fill()
        for i in range(3):
            c = RawClient(proxy.port)
            held.append(c)
            c.send(f"GET {svc.path}/held{i} HTTP/1.1\r\nHost: h.test\r\n\r\n".encode())
            assert c.read_response().status == 200
        wait_for(lambda: "linx_proxy_open_connections 4.0" in proxy.metrics(), 5)
        for _ in range(3):
            with RawClient(proxy.port) as extra:
                started = time.monotonic()
                data, how = extra.read_until_close(3)
                # SPEC section 7: a 503 too_many_connections with Retry-After, then a FIN
                assert data.startswith(b"HTTP/1.1 503 ") and how == "fin"
                assert b"\r\nX-Linx-Error: too_many_connections\r\n" in data
                assert b"\r\nRetry-After: " in data
                assert time.monotonic() - started < 1.0
        # the open ones are unaffected: the stream goes on, the idle ones serve again
        backend.wait_for_gate(gate)
        backend.release(gate)
        while b"0\r\n\r\n" not in stream.buf:
            assert stream._fill()
        assert b"data: event 2" in stream.buf
        for c in held[1:]:
            c.send(f"GET {svc.path}/again HTTP/1.1\r\nHost: h.test\r\n\r\n".encode())
            assert c.read_response().status == 200
        # limit - 1 open: a new connection is served again
        held.pop(0).close()
        wait_for(lambda: "linx_proxy_open_connections 3.0" in proxy.metrics(), 5)
        with RawClient(proxy.port) as c:
            c.send(f"GET {svc.path}/new HTTP/1.1\r\nHost: h.test\r\n\r\n".encode())
            assert c.read_response().status == 200
        assert_clean_log(proxy)
    finally:
        for c in held:
            c.close()
        hstack.stop_proxy(proxy)


# --------------------------------------------------------------------------------- slow reader
def test_slow_reader_of_a_huge_response_does_not_grow_the_proxy(default_proxy, svc):
    base = f"{default_proxy.url}{svc.path}"
    for _ in range(3):  # warm up: buffers, pools and allocator arenas as in steady state
        assert len(requests.get(base + "/bytes/4194304", timeout=30).content) == 4194304
    baseline = default_proxy.rss_kib()
    peak = baseline
    received = 0
    with RawClient(default_proxy.port, rcvbuf=4096) as c:
        c.send(f"GET {svc.path}/bytes/536870912 HTTP/1.1\r\nHost: h.test\r\n\r\n".encode())
        until = time.monotonic() + 5
        while time.monotonic() < until:
            data = c.sock.recv(4096)
            assert data
            received += len(data)
            peak = max(peak, default_proxy.rss_kib())
            time.sleep(0.05)  # the slow reader's pace
    grown_mib = (peak - baseline) / 1024
    print(f"slow reader: {received} bytes read in 5 s, proxy RSS {baseline} KiB -> peak {peak} KiB")
    assert received < 16 * 1024 * 1024  # it really was slow
    assert grown_mib < 32, f"proxy RSS grew by {grown_mib:.1f} MiB while a slow client read"
    # the proxy drops the upstream exchange when the client goes away, and keeps serving
    assert requests.get(base + "/after", timeout=5).status_code == 200
