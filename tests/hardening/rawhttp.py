"""A raw-socket HTTP/1.1 client for hostile-input tests: sends exactly the bytes it is given and
parses what comes back strictly enough to tell a complete response from a truncated one."""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass, field

# What a canonical request head, as the proxy forwards it, may look like.
REQUEST_LINE = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+ /[^ \x00-\x20\x7f]* HTTP/1\.1$")
FIELD_NAME = re.compile(rb"^[!#$%&'*+\-.^`|~0-9A-Za-z]+$")  # a token without "_"
FIELD_VALUE = re.compile(rb"^[^\x00-\x08\x0a-\x1f\x7f]*$")  # VCHAR, SP, HTAB, obs-text
HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"upgrade",
    b"proxy-authorization",
    b"http2-settings",
    b"x-linx-token",
}


class Closed(Exception):
    """The peer closed (or reset) the connection before a whole response head arrived."""


@dataclass
class Response:
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    complete: bool = True  # False: the body ended before its framing said it would
    raw: bytes = b""
    chunked: bool = False
    informational: list[int] = field(default_factory=list)

    def header(self, name: str) -> bytes | None:
        lname = name.lower().encode()
        for n, v in self.headers:
            if n.lower() == lname:
                return v
        return None

    def header_all(self, name: str) -> list[bytes]:
        lname = name.lower().encode()
        return [v for n, v in self.headers if n.lower() == lname]


class RawClient:
    """One TCP connection to ``port`` on loopback. ``close()`` always (or use ``with``)."""

    def __init__(self, port: int, timeout: float = 5.0, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.timeout = timeout
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""
        self.eof = False

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float | None = None) -> bool:
        """Read more bytes into ``buf``; False at EOF (or reset)."""
        if self.eof:
            return False
        if deadline is not None:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        finally:
            if deadline is not None:
                self.sock.settimeout(self.timeout)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _take(self, n: int) -> bytes:
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _read_line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise Closed(f"connection closed inside a line: {self.buf[:200]!r}")
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def read_response(self, method: bytes = b"GET") -> Response:
        """The next response (1xx skipped and listed in ``informational``). Raises Closed."""
        informational: list[int] = []
        while True:
            while b"\r\n\r\n" not in self.buf:
                if not self._fill():
                    raise Closed(f"closed before a response head; got {self.buf[:300]!r}")
            head, _, self.buf = self.buf.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            version, _, rest = lines[0].partition(b" ")
            code, _, reason = rest.partition(b" ")
            if not version.startswith(b"HTTP/1.") or not code.isdigit():
                raise AssertionError(f"not an HTTP response: {head[:300]!r}")
            headers = []
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers.append((name, value.strip()))
            resp = Response(int(code), reason, headers, raw=head + b"\r\n\r\n")
            if 100 <= resp.status < 200 and resp.status != 101:
                informational.append(resp.status)
                continue
            break
        resp.informational = informational
        if method == b"HEAD" or resp.status in (101, 204, 304):
            return resp
        te = resp.header("transfer-encoding")
        length = resp.header("content-length")
        if te is not None:
            resp.chunked = True
            self._read_chunked(resp)
        elif length is not None:
            n = int(length)
            while len(self.buf) < n:
                if not self._fill():
                    resp.complete = False
                    break
            resp.body = self._take(n)
        else:
            while self._fill():
                pass
            resp.body = self._take(len(self.buf))
        resp.raw += resp.body
        return resp

    def _read_chunked(self, resp: Response) -> None:
        body = []
        try:
            while True:
                size_line = self._read_line()
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    while self._read_line():
                        pass  # trailer fields
                    break
                while len(self.buf) < size + 2:
                    if not self._fill():
                        raise Closed("closed inside a chunk")
                body.append(self._take(size))
                if self._take(2) != b"\r\n":
                    raise AssertionError("chunk not followed by CRLF")
        except Closed:
            resp.complete = False
            body.append(self._take(len(self.buf)))
        resp.body = b"".join(body)

    def closed_within(self, timeout: float) -> bool:
        """True if the peer closes (FIN or RST) within ``timeout`` with no further bytes."""
        deadline = time.monotonic() + timeout
        start = len(self.buf)
        while time.monotonic() < deadline:
            try:
                if not self._fill(deadline):
                    return len(self.buf) == start
            except TimeoutError:
                return False
        return False

    def read_until_close(self, timeout: float) -> tuple[bytes, str]:
        """Every byte until the peer closes: (bytes, "fin" | "rst" | "timeout")."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return self._take(len(self.buf)), "timeout"
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return self._take(len(self.buf)), "rst"
            except TimeoutError:
                return self._take(len(self.buf)), "timeout"
            finally:
                self.sock.settimeout(self.timeout)
            if not data:
                return self._take(len(self.buf)), "fin"
            self.buf += data


def assert_canonical_head(raw: bytes) -> dict:
    """Check that ``raw`` (a head exactly as a container received it) is one canonical HTTP/1.1
    request head; return ``{"line", "headers"}`` for further checks."""
    assert raw.endswith(b"\r\n\r\n"), raw[-50:]
    body = raw[:-4]
    assert b"\n" not in body.replace(b"\r\n", b""), f"bare LF in {raw!r}"
    assert b"\r" not in body.replace(b"\r\n", b""), f"bare CR in {raw!r}"
    lines = body.split(b"\r\n")
    assert REQUEST_LINE.match(lines[0]), f"request line {lines[0]!r}"
    headers = []
    for line in lines[1:]:
        assert line[:1] not in (b" ", b"\t"), f"obs-fold in {raw!r}"
        name, colon, value = line.partition(b": ")
        assert colon and FIELD_NAME.match(name), f"header line {line!r}"
        assert FIELD_VALUE.match(value), f"header value {line!r}"
        assert value == value.strip(b" \t"), f"untrimmed value {line!r}"
        headers.append((name.lower(), value))
    names = [n for n, _ in headers]
    # a request line never hides inside the head (no second request in one record)
    assert not any(REQUEST_LINE.match(line) for line in lines[1:]), raw
    assert names.count(b"host") == 1, f"Host count in {raw!r}"
    assert names.count(b"content-length") <= 1 and names.count(b"transfer-encoding") <= 1, raw
    assert not (b"content-length" in names and b"transfer-encoding" in names), raw
    for name, value in headers:
        if name == b"content-length":
            assert value.isdigit() and (value == b"0" or not value.startswith(b"0")), raw
        if name == b"transfer-encoding":
            assert value == b"chunked", raw
    websocket = (b"upgrade", b"websocket") in headers
    for name in names:
        if name in (b"connection", b"upgrade") and websocket:
            continue
        assert name not in HOP_BY_HOP, f"hop-by-hop {name!r} forwarded in {raw!r}"
    return {"line": lines[0], "headers": headers}
