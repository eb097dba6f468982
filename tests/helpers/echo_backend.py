#!/usr/bin/env python3
"""The test backend ("container") that end-to-end tests put behind the Linx proxy.

Standard library only, asyncio, one process::

    python tests/helpers/echo_backend.py --port 0 [--host 127.0.0.1] [--log] [--watch-stdin]

Once listening it prints exactly one line, ``LISTENING <port>``, to stdout. It speaks HTTP/1.1
itself (keep-alive, pipelining in order, Content-Length and chunked request bodies, automatic
``100 Continue`` on the first body read) and records every request head it receives, so a test
can assert what the proxy forwarded. Malformed requests (ambiguous framing, obs-fold, bare LF,
bad chunk sizes) are recorded with an ``error`` and answered 400 with the connection closed.

Endpoints (paths as the backend receives them):

=============================  ==============================================================
``/echo...``, unknown paths    200 JSON: method, target, path, query, version, headers (in
                               received order and case), body_len, body_sha256, port,
                               conn_id, req_no_on_conn
``GET /__requests[?raw=1]``    recorded requests (not ``/__`` ones); raw=1 adds ``raw_head``
                               (base64 of the head bytes exactly as received)
``POST /__reset``              forget recorded requests
``POST /__release/<name>``     let one (``?n=`` several) gated step of ``<name>`` proceed
``GET /__gate/<name>``         ``{"released", "consumed", "waiting"}`` of a gate
``GET /__connections``         open connections other than the asking one
``/bytes/<n>[?chunked=1]``     n bytes of repeating ``0123456789abcdef`` in 64 KiB writes,
                               each drained (back-pressure; 1 GiB never held in memory)
``/upload``                    consumes the body streaming: ``{"received", "sha256"}``
``/sse?count=N&gate=G``        event stream; event 1 at once, each next one after a release
``/sse?count=N&interval=S``    the same, timed
``/status/<code>``             that status; 204/304 without body
``/head-test``                 fixed body with Content-Length; HEAD gets the head only
``/set-cookie``                Set-Cookie app=1, linx_lnx_evil=x, linx_other=y, session=abc
``/expect[?final=417]``        honours ``Expect: 100-continue`` (or answers final at once)
``/close-midway?mode=cl``      announces more body than it sends, then resets (``rst=0``:
``/close-midway?mode=chunked`` FIN instead; ``announced=N&sent=M``: sizes, default 1,000,000
                               and 10,000)
``/no-answer``                 never answers; holds the connection until the peer closes
``/slow-head?secs=S``          waits S seconds before the head of an echo answer
``/garbage``                   non-HTTP bytes, then close
``/huge-headers[?kb=100]``     a response with that many KiB of headers
``/fake-101[?missing=1]``      101 with a wrong (or no) ``Sec-WebSocket-Accept``
``/ws``, any ``Upgrade:        RFC 6455 echo server; ``?reject=1`` (or ``=<code>``) refuses
websocket``                    with 403; ``?hello=T`` sends T first; ``?close_after=N``
``/slow-read[?chunk&delay]``   reads the body slowly (``?gate=G``: not at all until released)
=============================  ==============================================================
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hashlib
import http
import json
import os
import re
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from urllib.parse import parse_qs, urlsplit

PATTERN = b"0123456789abcdef"
WRITE_CHUNK = 64 * 1024
PATTERN_BLOCK = PATTERN * (WRITE_CHUNK // len(PATTERN))
LINE_LIMIT = 256 * 1024
MAX_HEAD = 1024 * 1024
MAX_WS_MESSAGE = 256 * 1024 * 1024
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

TOKEN_RE = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
VERSION_RE = re.compile(rb"^HTTP/[0-9]\.[0-9]$")
CHUNK_SIZE_RE = re.compile(rb"^[0-9A-Fa-f]{1,16}$")


class BadRequest(Exception):
    """The request cannot be parsed; answer ``status`` and close the connection."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class PeerGone(Exception):
    """The client went away while we were waiting or reading."""


def ws_accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode("latin-1") + WS_GUID).digest()).decode()


def ws_frame_header(opcode: int, length: int, fin: bool = True) -> bytes:
    b0 = (0x80 if fin else 0) | opcode
    if length < 126:
        return struct.pack("!BB", b0, length)
    if length < 1 << 16:
        return struct.pack("!BBH", b0, 126, length)
    return struct.pack("!BBQ", b0, 127, length)


def unmask(data: bytes, mask: bytes) -> bytes:
    n = len(data)
    if not n:
        return data
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def header_tokens(values: list[str]) -> list[str]:
    return [t.strip().lower() for v in values for t in v.split(",") if t.strip()]


class Request:
    """One parsed request head plus its (lazily read) body."""

    def __init__(self, record: dict, raw_head: bytes) -> None:
        self.record = record
        self.raw_head = raw_head
        self.method: str = record["method"]
        self.target: str = record["target"]
        self.version: str = record["version"]
        self.path: str = record["path"]
        self.query: str = record["query"]
        self.headers: list[tuple[str, str]] = [tuple(h) for h in record["headers"]]
        self.params = parse_qs(self.query, keep_blank_values=True)
        self.body: Body | None = None
        self.keep_alive = True

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.params.get(name)
        return values[0] if values else default


class Body:
    """Streams a request body (Content-Length or chunked) while hashing it into the record."""

    def __init__(self, conn: Connection, req: Request, length: int | None, chunked: bool) -> None:
        self.conn = conn
        self.req = req
        self.remaining = length or 0
        self.chunked = chunked
        self.need_crlf = False
        self.done = not chunked and not length
        self.count = 0
        self.sha = hashlib.sha256()
        self.expect_continue = not self.done and (req.header("Expect") or "").lower() == "100-continue"
        self.continue_sent = False
        if self.done:
            self._finish()

    def _finish(self, complete: bool = True) -> None:
        self.done = True
        self.req.record.update(body_len=self.count, body_sha256=self.sha.hexdigest(), body_complete=complete)

    async def _readline(self) -> bytes:
        try:
            line = await self.conn.reader.readline()
        except (ValueError, asyncio.LimitOverrunError):
            raise BadRequest("chunk line too long")
        if not line.endswith(b"\n"):
            self._finish(complete=False)
            raise PeerGone
        if not line.endswith(b"\r\n"):
            raise BadRequest("bare LF in chunked body")
        return line[:-2]

    async def read(self, n: int = WRITE_CHUNK) -> bytes:
        """Return the next piece of body, b"" at its end; raises BadRequest or PeerGone."""
        try:
            return await self._read(n)
        except BadRequest as e:
            self.req.record["error"] = e.reason
            self._finish(complete=False)
            raise

    async def _read(self, n: int) -> bytes:
        if self.done:
            return b""
        if self.expect_continue and not self.continue_sent and not self.conn.response_started:
            self.continue_sent = True
            self.conn.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await self.conn.writer.drain()
        if self.chunked and self.remaining == 0:
            if self.need_crlf:
                if await self._readline() != b"":
                    raise BadRequest("missing CRLF after chunk data")
                self.need_crlf = False
            size_text = (await self._readline()).split(b";", 1)[0]
            if not CHUNK_SIZE_RE.match(size_text):
                raise BadRequest(f"bad chunk size {size_text!r}")
            size = int(size_text, 16)
            if size == 0:
                trailers = []
                while line := await self._readline():
                    name, _, value = line.partition(b":")
                    trailers.append([name.decode("latin-1"), value.strip().decode("latin-1")])
                self.req.record["trailers"] = trailers
                self._finish()
                return b""
            self.remaining = size
        data = await self.conn.reader.read(min(n, self.remaining))
        if not data:
            self._finish(complete=False)
            raise PeerGone
        self.remaining -= len(data)
        self.count += len(data)
        self.sha.update(data)
        if self.remaining == 0:
            if self.chunked:
                self.need_crlf = True
            else:
                self._finish()
        return data

    async def drain(self) -> None:
        while await self.read():
            pass


class Gate:
    """Counts releases posted by the test; each wait() consumes one."""

    def __init__(self) -> None:
        self.released = 0
        self.consumed = 0
        self.waiting = 0
        self.cond = asyncio.Condition()

    async def wait(self) -> None:
        async with self.cond:
            self.waiting += 1
            try:
                await self.cond.wait_for(lambda: self.released > self.consumed)
            finally:
                self.waiting -= 1
            self.consumed += 1

    async def release(self, n: int) -> None:
        async with self.cond:
            self.released += n
            self.cond.notify_all()

    def state(self) -> dict:
        return {"released": self.released, "consumed": self.consumed, "waiting": self.waiting}


class Connection:
    def __init__(
        self,
        backend: Backend,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conn_id: int,
    ) -> None:
        self.backend = backend
        self.reader = reader
        self.writer = writer
        self.conn_id = conn_id
        self.req_no = 0
        self.response_started = False
        self.websocket = False
        self.last_path: str | None = None
        self.task: asyncio.Task | None = asyncio.current_task()
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else None

    # -- the request loop -------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while True:
                req = await self.read_request()
                if req is None:
                    return
                keep = await self.backend.dispatch(self, req)
                if not keep or not req.keep_alive:
                    return
                body = req.body
                if body is not None and not body.done:
                    if body.expect_continue and not body.continue_sent:
                        return  # the client may never send it: close rather than wait
                    await body.drain()
        except BadRequest as e:
            if not self.response_started:
                await self.send_simple(None, e.status, f"bad request: {e.reason}\n", close=True)
        except (PeerGone, ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except Exception as e:  # a bug or a bad query parameter: say so, keep serving others
            traceback.print_exc(file=sys.stderr)
            if not self.response_started and not self.writer.is_closing():
                await self.send_simple(None, 500, f"backend error: {e!r}\n", close=True)
        finally:
            if not self.writer.is_closing():
                self.writer.close()
            try:
                await self.writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    async def read_request(self) -> Request | None:
        self.response_started = False
        raw = bytearray()
        lines: list[bytes] = []
        while True:
            try:
                line = await self.reader.readline()
            except (ValueError, asyncio.LimitOverrunError):
                raise BadRequest("header line too long", 431)
            if not line.endswith(b"\n"):
                if raw or line:
                    raise PeerGone
                return None
            if not raw and line in (b"\r\n", b"\n"):
                continue  # RFC 9112 2.2: ignore empty lines before the request-line
            raw += line
            if len(raw) > MAX_HEAD:
                raise BadRequest("request head too large", 431)
            if line in (b"\r\n", b"\n"):
                break
            lines.append(line)
        self.req_no += 1
        raw_head = bytes(raw)
        record: dict = {
            "id": None,
            "conn_id": self.conn_id,
            "req_no_on_conn": self.req_no,
            "peer": self.peer,
            "time": time.time(),
            "method": None,
            "target": None,
            "path": None,
            "query": "",
            "version": None,
            "headers": [],
            "body_len": None,
            "body_sha256": None,
            "body_complete": None,
            "trailers": [],
            "error": None,
        }
        try:
            req = self.parse_head(record, raw_head, lines)
        except BadRequest as e:
            record["error"] = e.reason
            self.backend.record(record, raw_head)
            raise
        self.last_path = req.path
        if not req.path.startswith("/__"):
            self.backend.record(record, raw_head)
        return req

    def parse_head(self, record: dict, raw_head: bytes, lines: list[bytes]) -> Request:
        if any(not line.endswith(b"\r\n") for line in [*lines, raw_head[-2:]]):
            raise BadRequest("bare LF in request head")
        parts = lines[0][:-2].split(b" ")
        if len(parts) != 3 or not TOKEN_RE.match(parts[0]) or not VERSION_RE.match(parts[2]):
            raise BadRequest(f"bad request line {lines[0][:200]!r}")
        method, target, version = (p.decode("latin-1") for p in parts)
        record.update(method=method, target=target, version=version)
        if target.startswith("/") or target == "*":
            path, _, query = target.partition("?")
        else:
            split = urlsplit(target)
            path, query = split.path or "/", split.query
        record.update(path=path, query=query)
        headers = []
        for line in lines[1:]:
            if line[:1] in (b" ", b"\t"):
                raise BadRequest("obs-fold in request head")
            name, sep, value = line[:-2].partition(b":")
            if not sep or not TOKEN_RE.match(name):
                raise BadRequest(f"bad header line {line[:200]!r}")
            headers.append([name.decode("latin-1"), value.strip(b" \t").decode("latin-1")])
        record["headers"] = headers
        req = Request(record, raw_head)
        conn_tokens = header_tokens(req.header_all("Connection"))
        if version == "HTTP/1.0":
            req.keep_alive = "keep-alive" in conn_tokens
        else:
            req.keep_alive = "close" not in conn_tokens
        te = req.header_all("Transfer-Encoding")
        cl = req.header_all("Content-Length")
        if te and cl:
            raise BadRequest("both Content-Length and Transfer-Encoding")
        if len(cl) > 1:
            raise BadRequest("duplicate Content-Length")
        if te:
            codings = header_tokens(te)
            if not codings or codings[-1] != "chunked" or codings.count("chunked") != 1:
                raise BadRequest(f"unsupported Transfer-Encoding {te!r}")
            req.body = Body(self, req, None, chunked=True)
        elif cl:
            if not cl[0].isdigit() or not cl[0].isascii():
                raise BadRequest(f"bad Content-Length {cl[0]!r}")
            req.body = Body(self, req, int(cl[0]), chunked=False)
        else:
            req.body = Body(self, req, 0, chunked=False)
        return req

    # -- writing answers --------------------------------------------------------------------

    async def send_head(
        self,
        req: Request | None,
        status: int,
        headers: list[tuple[str, str]],
        *,
        close: bool = False,
        reason: str | None = None,
    ) -> None:
        if close and req is not None:
            req.keep_alive = False
        keep = req is not None and req.keep_alive and not close
        lines = [f"HTTP/1.1 {status} {reason or phrase(status)}"]
        lines += [f"{k}: {v}" for k, v in headers]
        lines.append(f"X-Echo-Conn-Id: {self.conn_id}")
        lines.append(f"X-Echo-Req-No: {self.req_no}")
        if status == 101:
            pass  # the handler's own Connection: Upgrade stands
        elif not keep:
            lines.append("Connection: close")
        elif req is not None and req.version == "HTTP/1.0":
            lines.append("Connection: keep-alive")
        self.response_started = True
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await self.writer.drain()
        self.backend.log(self, req, status)

    async def send_simple(
        self,
        req: Request | None,
        status: int,
        body: bytes | str = b"",
        *,
        ctype: str = "text/plain; charset=utf-8",
        headers: list[tuple[str, str]] | None = None,
        close: bool = False,
    ) -> None:
        if isinstance(body, str):
            body = body.encode()
        hdrs = list(headers or [])
        no_body = status in (204, 304) or 100 <= status < 200
        if not no_body:
            hdrs += [("Content-Type", ctype), ("Content-Length", str(len(body)))]
        await self.send_head(req, status, hdrs, close=close)
        if not no_body and body and (req is None or req.method != "HEAD"):
            self.writer.write(body)
            await self.writer.drain()

    async def send_json(self, req: Request, obj: object, status: int = 200, **kw) -> None:
        await self.send_simple(req, status, json.dumps(obj) + "\n", ctype="application/json", **kw)

    async def start_stream(
        self, req: Request, status: int, headers: list[tuple[str, str]], length: int | None
    ) -> Stream:
        """Send a head for a streamed body: Content-Length, chunked, or close-delimited (1.0)."""
        hdrs = list(headers)
        chunked = False
        if length is not None:
            hdrs.append(("Content-Length", str(length)))
        elif req.version == "HTTP/1.0":
            req.keep_alive = False
        else:
            hdrs.append(("Transfer-Encoding", "chunked"))
            chunked = True
        await self.send_head(req, status, hdrs)
        return Stream(self.writer, chunked, req.method == "HEAD")

    async def until(self, awaitable, poll: float = 0.05):
        """Await something, giving up (PeerGone) if the client disconnects meanwhile."""
        task = asyncio.ensure_future(awaitable)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=poll)
                if done:
                    return task.result()
                if self.reader.at_eof() or self.writer.is_closing():
                    raise PeerGone
        finally:
            task.cancel()

    def reset(self) -> None:
        """Close with RST (SO_LINGER 0) instead of FIN."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


class Stream:
    def __init__(self, writer: asyncio.StreamWriter, chunked: bool, head_only: bool) -> None:
        self.writer = writer
        self.chunked = chunked
        self.head_only = head_only

    async def write(self, data: bytes) -> None:
        if self.head_only or not data:
            return
        if self.chunked:
            self.writer.write(b"%x\r\n" % len(data))
            self.writer.write(data)
            self.writer.write(b"\r\n")
        else:
            self.writer.write(data)
        await self.writer.drain()

    async def end(self) -> None:
        if self.chunked and not self.head_only:
            self.writer.write(b"0\r\n\r\n")
            await self.writer.drain()


def phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class Backend:
    """Process-wide state: recorded requests, gates, open connections."""

    def __init__(self, log: bool = False) -> None:
        self.port = 0
        self.verbose = log
        self.records: list[tuple[dict, bytes]] = []
        self.next_record_id = 1
        self.next_conn_id = 1
        self.gates: dict[str, Gate] = {}
        self.conns: dict[int, Connection] = {}

    def gate(self, name: str) -> Gate:
        if name not in self.gates:
            self.gates[name] = Gate()
        return self.gates[name]

    def record(self, record: dict, raw_head: bytes) -> None:
        record["id"] = self.next_record_id
        self.next_record_id += 1
        self.records.append((record, raw_head))

    def log(self, conn: Connection, req: Request | None, status: int) -> None:
        if self.verbose:
            what = f"{req.method} {req.target}" if req else "-"
            print(f"conn={conn.conn_id}#{conn.req_no} {what} -> {status}", file=sys.stderr)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(self, reader, writer, self.next_conn_id)
        self.next_conn_id += 1
        self.conns[conn.conn_id] = conn
        try:
            await conn.run()
        finally:
            del self.conns[conn.conn_id]

    async def dispatch(self, conn: Connection, req: Request) -> bool:
        """Answer one request; False means the connection must not be reused."""
        path = req.path
        if path.startswith("/linx/") and path.count("/") >= 3:
            # an app run with the base URL /linx/<id>/ (strip_prefix: false) routes the rest
            path = "/" + path.split("/", 3)[3]
        if path.startswith("/__"):
            return await self.control(conn, req)
        if path == "/fake-101":
            return await self.fake_101(conn, req)
        upgrade = "websocket" in header_tokens(req.header_all("Upgrade"))
        if upgrade or path == "/ws":
            return await self.websocket(conn, req)
        if path.startswith("/bytes/"):
            return await self.send_bytes(conn, req)
        handler = {
            "/upload": self.upload,
            "/sse": self.sse,
            "/head-test": self.head_test,
            "/set-cookie": self.set_cookie,
            "/expect": self.expect,
            "/close-midway": self.close_midway,
            "/no-answer": self.no_answer,
            "/hang-up": self.hang_up,
            "/respond": self.respond,
            "/slow-head": self.slow_head,
            "/garbage": self.garbage,
            "/huge-headers": self.huge_headers,
            "/slow-read": self.slow_read,
        }.get(path)
        if handler is not None:
            return await handler(conn, req)
        if path.startswith("/status/"):
            return await self.status(conn, req)
        return await self.echo(conn, req)

    # -- control ----------------------------------------------------------------------------

    async def control(self, conn: Connection, req: Request) -> bool:
        await req.body.drain()
        path = req.path
        if path == "/__requests":
            raw = req.param("raw") == "1"
            out = []
            for record, raw_head in self.records:
                item = dict(record)
                if raw:
                    item["raw_head"] = base64.b64encode(raw_head).decode()
                out.append(item)
            await conn.send_json(req, out)
        elif path == "/__reset":
            self.records.clear()
            await conn.send_json(req, {"reset": True})
        elif path.startswith("/__release/"):
            gate = self.gate(path[len("/__release/") :])
            await gate.release(int(req.param("n", "1")))
            await conn.send_json(req, gate.state())
        elif path.startswith("/__gate/"):
            await conn.send_json(req, self.gate(path[len("/__gate/") :]).state())
        elif path == "/__connections":
            conns = [
                {
                    "conn_id": c.conn_id,
                    "requests": c.req_no,
                    "last_path": c.last_path,
                    "websocket": c.websocket,
                    "peer": c.peer,
                }
                for c in self.conns.values()
                if c is not conn
            ]
            await conn.send_json(req, conns)
        else:
            await conn.send_json(req, {"error": "unknown control endpoint"}, 404)
        return True

    # -- plain HTTP endpoints ---------------------------------------------------------------

    async def echo(self, conn: Connection, req: Request) -> bool:
        await req.body.drain()
        r = req.record
        await conn.send_json(
            req,
            {
                "method": req.method,
                "target": req.target,
                "path": req.path,
                "query": req.query,
                "version": req.version,
                "headers": r["headers"],
                "body_len": r["body_len"],
                "body_sha256": r["body_sha256"],
                "trailers": r["trailers"],
                "port": self.port,
                "conn_id": conn.conn_id,
                "req_no_on_conn": conn.req_no,
                "peer": conn.peer,
            },
        )
        return True

    async def send_bytes(self, conn: Connection, req: Request) -> bool:
        try:
            n = int(req.path[len("/bytes/") :])
        except ValueError:
            await conn.send_simple(req, 400, "bad length\n")
            return True
        chunked = req.param("chunked") == "1"
        await req.body.drain()
        stream = await conn.start_stream(
            req, 200, [("Content-Type", "application/octet-stream")], None if chunked else n
        )
        sent = 0 if req.method != "HEAD" else n
        while sent < n:
            k = min(WRITE_CHUNK, n - sent)
            await stream.write(PATTERN_BLOCK if k == WRITE_CHUNK else PATTERN_BLOCK[:k])
            sent += k
        await stream.end()
        return True

    async def upload(self, conn: Connection, req: Request) -> bool:
        await req.body.drain()
        r = req.record
        await conn.send_json(
            req,
            {"received": r["body_len"], "sha256": r["body_sha256"], "chunked": req.body.chunked},
        )
        return True

    async def slow_read(self, conn: Connection, req: Request) -> bool:
        started = time.monotonic()
        gate = req.param("gate")
        if gate:
            await conn.until(self.gate(gate).wait())
            await req.body.drain()
        else:
            chunk = int(req.param("chunk", "1024"))
            delay = float(req.param("delay", "0.01"))
            while await req.body.read(chunk):
                await asyncio.sleep(delay)
        r = req.record
        await conn.send_json(
            req,
            {
                "received": r["body_len"],
                "sha256": r["body_sha256"],
                "elapsed": time.monotonic() - started,
            },
        )
        return True

    async def sse(self, conn: Connection, req: Request) -> bool:
        count = int(req.param("count", "3"))
        gate = req.param("gate")
        interval = float(req.param("interval", "0"))
        await req.body.drain()
        stream = await conn.start_stream(
            req,
            200,
            [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")],
            None,
        )
        for i in range(1, count + 1):
            if i > 1 and gate:
                await conn.until(self.gate(gate).wait())
            elif i > 1 and interval:
                await conn.until(asyncio.sleep(interval))
            await stream.write(f"id: {i}\ndata: event {i}\n\n".encode())
        await stream.end()
        return True

    async def status(self, conn: Connection, req: Request) -> bool:
        try:
            code = int(req.path[len("/status/") :])
        except ValueError:
            code = 0
        await req.body.drain()
        if not 200 <= code <= 599:
            await conn.send_simple(req, 400, "status must be 200..599\n")
        else:
            await conn.send_simple(req, code, f"status {code}\n")
        return True

    async def head_test(self, conn: Connection, req: Request) -> bool:
        await req.body.drain()
        await conn.send_simple(req, 200, b"head-test body line\n" * 50)
        return True

    async def set_cookie(self, conn: Connection, req: Request) -> bool:
        await req.body.drain()
        cookies = [
            "app=1; Path=/",
            "linx_lnx_evil=x; Path=/",
            "linx_other=y",
            "session=abc; HttpOnly",
        ]
        await conn.send_simple(req, 200, "cookies set\n", headers=[("Set-Cookie", c) for c in cookies])
        return True

    async def expect(self, conn: Connection, req: Request) -> bool:
        expect = req.header("Expect")
        final = req.param("final")
        if final and not req.body.done:
            await conn.send_simple(req, int(final), f"refused with {final}\n", close=True)
            return False
        await req.body.drain()
        r = req.record
        await conn.send_json(
            req,
            {
                "expect": expect,
                "continue_sent": req.body.continue_sent,
                "received": r["body_len"],
                "sha256": r["body_sha256"],
            },
        )
        return True

    async def close_midway(self, conn: Connection, req: Request) -> bool:
        mode = req.param("mode", "cl")
        await req.body.drain()
        announced, sent = int(req.param("announced", "1000000")), int(req.param("sent", "10000"))
        stream = await conn.start_stream(
            req,
            200,
            [("Content-Type", "application/octet-stream")],
            announced if mode == "cl" else None,
        )
        while sent > 0:
            await stream.write(PATTERN_BLOCK[: min(sent, len(PATTERN_BLOCK))])
            sent -= len(PATTERN_BLOCK)
        # let the partial body leave our buffer before the reset discards what is queued
        deadline = time.monotonic() + 2
        while conn.writer.transport.get_write_buffer_size() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        await asyncio.sleep(float(req.param("delay", "0.05")))
        if req.param("rst", "1") == "0":
            conn.writer.close()
        else:
            conn.reset()
        return False

    async def no_answer(self, conn: Connection, req: Request) -> bool:
        while await conn.reader.read(WRITE_CHUNK):
            pass
        return False

    async def respond(self, conn: Connection, req: Request) -> bool:
        """``?status=302&h=Location: /lab?&h=Set-Cookie: a=1``: any status, any headers."""
        await req.body.drain()
        status = int(req.param("status", "200"))
        headers = [tuple(part.strip() for part in h.split(":", 1)) for h in req.params.get("h", [])]
        await conn.send_simple(req, status, f"status {status}\n", headers=headers)
        return True

    async def hang_up(self, conn: Connection, req: Request) -> bool:
        """Read the whole request, then close (FIN, or RST with ``rst=1``) without a byte."""
        await req.body.drain()
        if req.param("rst") == "1":
            conn.reset()
        return False

    async def slow_head(self, conn: Connection, req: Request) -> bool:
        await conn.until(asyncio.sleep(float(req.param("secs", "1"))))
        return await self.echo(conn, req)

    async def garbage(self, conn: Connection, req: Request) -> bool:
        conn.response_started = True
        conn.writer.write(b"SSH-2.0-garbage this is not HTTP\r\n\x00\xff\xfe\x01 nonsense\r\n\r\n")
        await conn.writer.drain()
        return False

    async def huge_headers(self, conn: Connection, req: Request) -> bool:
        await req.body.drain()
        total = int(req.param("kb", "100")) * 1024
        value = "h" * 1000
        headers = [(f"X-Huge-{i:04d}", value) for i in range(total // 1000 + 1)]
        await conn.send_simple(req, 200, "huge headers\n", headers=headers)
        return True

    # -- upgrades ---------------------------------------------------------------------------

    async def fake_101(self, conn: Connection, req: Request) -> bool:
        headers = [("Upgrade", "websocket"), ("Connection", "Upgrade")]
        if req.param("missing") != "1":
            headers.append(("Sec-WebSocket-Accept", ws_accept("not-the-key")))
        await conn.send_head(req, 101, headers)
        conn.websocket = True
        while await conn.reader.read(WRITE_CHUNK):
            pass
        return False

    async def websocket(self, conn: Connection, req: Request) -> bool:
        reject = req.param("reject")
        if reject:
            await req.body.drain()
            code = int(reject) if reject.isdigit() and len(reject) == 3 else 403
            await conn.send_simple(req, code, "websocket refused\n")
            return True
        problem = None
        key = req.header_all("Sec-WebSocket-Key")
        if req.method != "GET" or req.version != "HTTP/1.1":
            problem = "websocket needs GET and HTTP/1.1"
        elif "websocket" not in header_tokens(req.header_all("Upgrade")):
            problem = "missing Upgrade: websocket"
        elif "upgrade" not in header_tokens(req.header_all("Connection")):
            problem = "missing Connection: upgrade"
        elif len(key) != 1 or not valid_ws_key(key[0]):
            problem = "bad Sec-WebSocket-Key"
        elif req.header_all("Sec-WebSocket-Version") != ["13"]:
            await req.body.drain()
            await conn.send_simple(
                req, 426, "websocket version 13 only\n", headers=[("Sec-WebSocket-Version", "13")]
            )
            return True
        if problem:
            await req.body.drain()
            await conn.send_simple(req, 400, problem + "\n")
            return True
        headers = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", ws_accept(key[0])),
        ]
        offered = header_tokens(req.header_all("Sec-WebSocket-Protocol"))
        if offered:
            # header_tokens lower-cases; echo the first entry with its original spelling
            first = ",".join(req.header_all("Sec-WebSocket-Protocol")).split(",")[0].strip()
            headers.append(("Sec-WebSocket-Protocol", first))
        await conn.send_head(req, 101, headers)
        conn.websocket = True
        session = WebSocketSession(conn, req)
        await session.run()
        return False


def valid_ws_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


class WebSocketSession:
    """Echo every message; answer pings; complete the close handshake (RFC 6455)."""

    def __init__(self, conn: Connection, req: Request) -> None:
        self.conn = conn
        self.req = req
        self.stats = {"messages": 0, "close_code": None, "closed_by": None}
        req.record["ws"] = self.stats
        self.close_after = int(req.param("close_after", "0"))
        self.hello = req.param("hello")

    async def send(self, opcode: int, payload: bytes) -> None:
        w = self.conn.writer
        w.write(ws_frame_header(opcode, len(payload)))
        if payload:
            w.write(payload)
        await w.drain()

    async def close(self, code: int, by: str = "server") -> None:
        self.stats["close_code"] = code
        self.stats["closed_by"] = by
        await self.send(0x8, struct.pack("!H", code))

    async def run(self) -> None:
        reader = self.conn.reader
        if self.hello is not None:
            await self.send(0x1, self.hello.encode())
        frag_op: int | None = None
        parts: list[bytes] = []
        size = 0
        while True:
            try:
                b0, b1 = await reader.readexactly(2)
            except asyncio.IncompleteReadError:
                self.stats["closed_by"] = self.stats["closed_by"] or "client-tcp"
                return
            fin, rsv, opcode = b0 & 0x80, b0 & 0x70, b0 & 0x0F
            masked, length = b1 & 0x80, b1 & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await reader.readexactly(8))
            if rsv or not masked:
                return await self.close(1002)
            if opcode >= 8 and (not fin or length > 125):
                return await self.close(1002)
            if size + length > MAX_WS_MESSAGE:
                return await self.close(1009)
            mask = await reader.readexactly(4)
            payload = unmask(await reader.readexactly(length), mask)
            if opcode == 0x8:
                if len(payload) == 1:
                    return await self.close(1002)
                code = struct.unpack("!H", payload[:2])[0] if payload else None
                self.stats["close_code"] = code
                self.stats["closed_by"] = self.stats["closed_by"] or "client"
                await self.send(0x8, payload[:2])
                return
            if opcode == 0x9:
                await self.send(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            if opcode == 0x0:
                if frag_op is None:
                    return await self.close(1002)
            elif opcode in (0x1, 0x2):
                if frag_op is not None:
                    return await self.close(1002)
                frag_op = opcode
            else:
                return await self.close(1002)
            parts.append(payload)
            size += length
            if not fin:
                continue
            message = b"".join(parts)
            op, frag_op, parts, size = frag_op, None, [], 0
            if op == 0x1:
                try:
                    message.decode("utf-8")
                except UnicodeDecodeError:
                    return await self.close(1007)
            await self.send(op, message)
            self.stats["messages"] += 1
            if self.close_after and self.stats["messages"] >= self.close_after:
                await self.close(1000)
                # wait (bounded) for the client's close frame, then drop the TCP connection
                try:
                    await asyncio.wait_for(self._discard_until_close(), 5)
                except (TimeoutError, asyncio.IncompleteReadError):
                    pass
                return

    async def _discard_until_close(self) -> None:
        reader = self.conn.reader
        while True:
            b0, b1 = await reader.readexactly(2)
            length = b1 & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await reader.readexactly(8))
            await reader.readexactly(length + (4 if b1 & 0x80 else 0))
            if b0 & 0x0F == 0x8:
                return


async def serve(args: argparse.Namespace) -> None:
    backend = Backend(log=args.log)
    server = await asyncio.start_server(backend.handle, args.host, args.port, limit=LINE_LIMIT)
    backend.port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.watch_stdin:
        # the parent holds our stdin: its EOF means the test process is gone
        def watch() -> None:
            # os.read, not sys.stdin: a daemon thread must not hold the buffered reader's lock
            while os.read(0, 4096):
                pass
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=watch, daemon=True).start()
    print(f"LISTENING {backend.port}", flush=True)
    await stop.wait()
    server.close()
    for conn in list(backend.conns.values()):
        conn.writer.transport.abort()
    # let handlers see the abort and finish, rather than being cancelled mid-read
    tasks = [c.task for c in backend.conns.values() if c.task is not None]
    if tasks:
        await asyncio.wait(tasks, timeout=2)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--log", action="store_true", help="one line per request on stderr")
    ap.add_argument("--watch-stdin", action="store_true", help="exit when stdin reaches EOF")
    asyncio.run(serve(ap.parse_args(argv)))


if __name__ == "__main__":
    main()
