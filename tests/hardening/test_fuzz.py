"""Generated request heads against a running proxy (Hypothesis).

Each example is a mutation of a valid request (bytes inserted, deleted or replaced, control
bytes, header lines duplicated, long values, random framing headers, line endings broken,
truncation, pipelining) sent on its own connection. The example does not wait for the answer:
a checker thread watches every connection and records any that is neither answered nor closed
within the deadline (the head timeout, or for a complete head the response timeout, plus a
grace of ``GRACE`` seconds), and any answer that does not start with an HTTP/1.1 status line.

At the end: no late connection, no malformed answer, the process alive, nothing "Unhandled"
and no "Traceback" in its log, and ``/healthz`` still 200.

``LINX_FUZZ_EXAMPLES`` sets the number of examples (default 2000; ``tox -e long`` raises it).
"""

from __future__ import annotations

import os
import queue
import selectors
import socket
import threading
import time

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hardening.support import assert_clean_log, reachable

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning"),
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
    ),
]

EXAMPLES = int(os.environ.get("LINX_FUZZ_EXAMPLES", "2000"))
HEAD_TIMEOUT = 2.0
RESPONSE_TIMEOUT = 2.0
GRACE = 4.0  # generous: a connection that hangs stays open far longer; CI machines stall
DEADLINE = max(HEAD_TIMEOUT, RESPONSE_TIMEOUT) + GRACE
LATE_WATCH = 10.0  # how long a late connection is still watched, to tell how late it is

SEEDS = [
    b"GET {P}/echo HTTP/1.1\r\nHost: h.test\r\n\r\n",
    b"GET {P}/a/b?x=1&y=%2F HTTP/1.1\r\nHost: h.test\r\nAccept: */*\r\nCookie: a=1; b=2\r\n\r\n",
    b"POST {P}/echo HTTP/1.1\r\nHost: h.test\r\nContent-Length: 5\r\n\r\nhello",
    b"POST {P}/upload HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET {P}/x HTTP/1.0\r\nHost: h.test\r\nConnection: keep-alive\r\n\r\n",
    b"HEAD {P}/head-test HTTP/1.1\r\nHost: h.test\r\nUser-Agent: fuzz\r\n\r\n",
    b"OPTIONS {P}/ HTTP/1.1\r\nHost: h.test\r\nOrigin: http://o.test\r\n"
    b"Access-Control-Request-Method: GET\r\n\r\n",
    b"GET {P}/ws HTTP/1.1\r\nHost: h.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"GET {P}/ HTTP/1.1\r\nHost: h.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
    b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
]
CTLS = [bytes([b]) for b in [*range(0, 32), 127]]
FRAMING = [
    b"Content-Length: 0",
    b"Content-Length: 5",
    b"Content-Length: 05",
    b"Content-Length: -1",
    b"Content-Length: 99999999999999999999",
    b"Content-Length: 5, 5",
    b"Content-Length:5",
    b"Content-Length : 5",
    b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: identity",
    b"Transfer-Encoding: chunked, chunked",
    b"Transfer-Encoding: gzip, chunked",
    b"Transfer-Encoding:\tchunked",
    b"Transfer-Encoding: \x0bchunked",
    b"Transfer_Encoding: chunked",
    b"Connection: close",
    b"Connection: Host, Content-Length",
    b"Expect: 100-continue",
    b"Upgrade: websocket",
]


@st.composite
def mutated_requests(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.integers(0, 9))
        pos = draw(st.integers(0, len(data)))
        if op == 0:  # insert random bytes
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == 1:  # delete a range
            data[pos : pos + draw(st.integers(1, 16))] = b""
        elif op == 2:  # replace one byte
            if pos < len(data):
                data[pos] = draw(st.integers(0, 255))
        elif op == 3:  # a control byte
            data[pos:pos] = draw(st.sampled_from(CTLS))
        elif op == 4:  # duplicate a header line
            lines = bytes(data).split(b"\r\n")
            if len(lines) > 2:
                i = draw(st.integers(1, len(lines) - 1))
                lines.insert(i, lines[i])
                data = bytearray(b"\r\n".join(lines))
        elif op == 5:  # a long value
            n = draw(st.sampled_from([100, 4000, 16000, 33000]))
            data = _add_header(data, b"X-Long: " + b"v" * n)
        elif op == 6:  # a framing header
            data = _add_header(data, draw(st.sampled_from(FRAMING)))
        elif op == 7:  # break a line ending
            i = bytes(data).find(b"\r\n", pos)
            if i >= 0:
                data[i : i + 2] = draw(st.sampled_from([b"\n", b"\r", b"\r\r\n", b"\n\r", b"\r\n "]))
        elif op == 8:  # truncate
            del data[pos:]
        else:  # pipeline another request behind this one
            data += draw(st.sampled_from(SEEDS))
    return bytes(data)


def _add_header(data: bytearray, line: bytes) -> bytearray:
    i = bytes(data).find(b"\r\n")
    if i < 0:
        return data + line
    return data[: i + 2] + line + b"\r\n" + data[i + 2 :]


class Checker(threading.Thread):
    """Watches submitted connections until each is answered or closed; notes the late ones."""

    def __init__(self) -> None:
        super().__init__(name="fuzz-checker", daemon=True)
        self.incoming: queue.Queue = queue.Queue()
        self.sel = selectors.DefaultSelector()
        self.open: dict[socket.socket, tuple[float, bytes, bytearray]] = {}
        self.late: list[tuple[bytes, str]] = []  # (what was sent, what happened and when)
        self.malformed: list[tuple[bytes, bytes]] = []
        self.statuses: dict[int, int] = {}
        self.closed_silently = 0
        self.submitted = 0
        self.done = threading.Event()
        self.stopping = False

    def submit(self, sock: socket.socket, sent: bytes) -> None:
        self.submitted += 1
        self.incoming.put((sock, time.monotonic() + DEADLINE, sent))

    def run(self) -> None:
        while True:
            while True:
                try:
                    sock, deadline, sent = self.incoming.get_nowait()
                except queue.Empty:
                    break
                self.open[sock] = (deadline, sent, bytearray())
                self.sel.register(sock, selectors.EVENT_READ)
            for key, _ in self.sel.select(0.05):
                self._readable(key.fileobj)
            now = time.monotonic()
            for sock, (deadline, sent, got) in list(self.open.items()):
                if now > deadline + LATE_WATCH:
                    self.late.append((sent, f"still open {LATE_WATCH + DEADLINE:.0f}s after sending"))
                    self._finish(sock)
            if self.stopping and not self.open and self.incoming.empty():
                self.done.set()
                return

    def _readable(self, sock: socket.socket) -> None:
        deadline, sent, got = self.open[sock]
        late = time.monotonic() - deadline
        try:
            data = sock.recv(4096)
        except OSError:
            data = b""
        if data:
            got += data
            if len(got) < 12:
                return
        if got:
            if not (got.startswith(b"HTTP/1.1 ") and got[9:12].isdigit()):
                self.malformed.append((sent, bytes(got[:200])))
            else:
                status = int(got[9:12])
                self.statuses[status] = self.statuses.get(status, 0) + 1
        else:
            self.closed_silently += 1
        if late > 0:
            self.late.append((sent, f"answered {late + DEADLINE:.2f}s after sending: {bytes(got[:40])!r}"))
        self._finish(sock)

    def _finish(self, sock: socket.socket) -> None:
        self.sel.unregister(sock)
        del self.open[sock]
        sock.close()

    def drain(self, timeout: float) -> None:
        self.stopping = True
        assert self.done.wait(timeout), f"{len(self.open)} connections still open"


@pytest.fixture(scope="module")
def fuzz_env(hstack):
    svc = hstack.publish(auth_mode="public", enable_websockets=True)
    proxy = hstack.proxy(
        LINX_HEAD_TIMEOUT_SECS=str(HEAD_TIMEOUT),
        LINX_RESPONSE_TIMEOUT_SECS=str(RESPONSE_TIMEOUT),
        LINX_IDLE_TIMEOUT_SECS=str(HEAD_TIMEOUT),
    )
    reachable(proxy, svc)
    yield proxy, svc
    hstack.stop_proxy(proxy)


@pytest.mark.timeout(max(300, EXAMPLES // 50))
def test_fuzzed_heads_never_hurt_the_proxy(fuzz_env, capsys):
    proxy, svc = fuzz_env
    prefix = svc.path.encode()
    checker = Checker()
    checker.start()
    started = time.monotonic()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(mutated_requests())
    def fire(data: bytes) -> None:
        data = data.replace(b"{P}", prefix)
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        try:
            sock.sendall(data)
        except OSError:
            pass  # refused half-way (431 and close): the checker still reads the answer
        sock.setblocking(False)
        checker.submit(sock, data)

    try:
        fire()
    finally:
        checker.drain(DEADLINE + LATE_WATCH + 10)
    elapsed = time.monotonic() - started
    with capsys.disabled():
        print(
            f"\nfuzz: {checker.submitted} connections in {elapsed:.1f}s; "
            f"statuses {sorted(checker.statuses.items())}; closed without answer {checker.closed_silently}"
        )
    assert checker.submitted >= min(EXAMPLES, 100)
    assert not checker.late, (
        f"{len(checker.late)} connections outlived the deadline, e.g. {checker.late[:3]!r}"
    )
    assert not checker.malformed, checker.malformed[:3]
    # the generator reaches both sides: relayed answers and refusals
    assert checker.statuses.get(200, 0) > 0 and checker.statuses.get(400, 0) > 0, checker.statuses
    assert proxy.proc.alive(), proxy.proc.output()[-4000:]
    assert requests.get(proxy.admin_url + "/healthz", timeout=5).status_code == 200
    reachable(proxy, svc)
    assert_clean_log(proxy)
