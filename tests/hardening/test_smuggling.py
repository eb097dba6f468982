"""Framing and smuggling corpus: raw bytes into a real proxy in front of the recording backend.

Every case is one connection and one ``sendall`` of the bytes in the table. It passes when:

- the proxy answers the expected statuses, in order;
- after a rejection (a 4xx the proxy makes itself) the connection is closed;
- a rejected request puts **zero bytes** on the wire to the container: the backend records
  nothing but our sentinels, and the upstream connection pooled just before the case is the
  one reused just after it (the proxy did not even borrow it);
- every accepted request reaches the container exactly once, as a canonical HTTP/1.1 request
  (one request line, CRLF only, no obs-fold or control bytes, one ``Host``, at most one of
  ``Content-Length`` / ``Transfer-Encoding: chunked`` in canonical form, no hop-by-hop or
  underscore headers) with exactly the body the client framed.

Placeholders in the table: ``{P}`` is ``/linx/<public service>/<case marker>``, ``{T}`` the
same under a token service (no token given), ``{W}`` under a service with WebSockets
disabled, ``{S}`` the public service's prefix alone, ``{M}`` the marker itself, and ``{CL}``
the length of the body once expanded. The marker is unique per case.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass

import pytest

from tests.hardening.rawhttp import RawClient, assert_canonical_head
from tests.hardening.support import reachable

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning"),
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
    ),
]

HOST = b"Host: h.test\r\n"


@dataclass(frozen=True)
class Fwd:
    """One request the container must receive for a case."""

    method: str = "GET"
    rest: str = ""  # the upstream target is "/<marker>" + rest, unless ``target`` is given
    body: bytes = b""
    framing: str | None = None  # "length", "chunked" or None (no framing header at all)
    has: tuple[tuple[bytes, bytes], ...] = ()  # (lower-case name, value) that must be present
    lacks: tuple[bytes, ...] = ()  # lower-case names that must be absent
    target: str | None = None  # the whole upstream target ("{M}" stands for the marker)


@dataclass(frozen=True)
class Case:
    id: str
    data: bytes
    statuses: tuple[int, ...] = (400,)
    closed: bool = True
    fwd: tuple[Fwd, ...] = ()
    methods: tuple[bytes, ...] = ()  # request methods per response (HEAD has no body)
    proxy_made: tuple[bool, ...] = ()  # which answers carry X-Linx-Error (default: the 4xx/5xx)
    pool_check: bool = True  # a rejected request must leave the pooled upstream connection alone


def head(*lines: bytes | str, body: bytes = b"", host: bool = True) -> bytes:
    """A request: the request line, Host (unless told not to), the lines, CRLF CRLF, body."""
    out = [lines[0] if isinstance(lines[0], bytes) else lines[0].encode()]
    out[0] += b"\r\n"
    if host:
        out.append(HOST)
    for line in lines[1:]:
        out.append((line if isinstance(line, bytes) else line.encode()) + b"\r\n")
    return b"".join(out) + b"\r\n" + body


def reject(case_id: str, data: bytes, status: int = 400, **kw) -> Case:
    return Case(case_id, data, (status,), True, (), **kw)


def accept(case_id: str, data: bytes, *fwd: Fwd, statuses: tuple[int, ...] = (200,), **kw) -> Case:
    return Case(case_id, data, statuses, kw.pop("closed", False), fwd or (Fwd(),), **kw)


GET = "GET {P} HTTP/1.1"
POST = "POST {P} HTTP/1.1"
CHUNKED_HELLO = b"5\r\nhello\r\n0\r\n\r\n"
SMUGGLED = b"GET {P}/smuggled HTTP/1.1\r\nHost: h.test\r\n\r\n"
TE = "Transfer-Encoding: chunked"


def cases() -> list[Case]:
    c: list[Case] = []
    # --- Content-Length and Transfer-Encoding together --------------------------------------
    for i, (te, cl) in enumerate(
        [
            (TE, "Content-Length: 5"),
            (TE, "Content-Length: 0"),
            (TE, "Content-Length: 17"),
            ("Transfer-Encoding:  chunked", "Content-Length: 5"),
            ("Transfer-Encoding:\tchunked", "Content-Length: 5"),
            ("Transfer-Encoding: identity", "Content-Length: 5"),
            ("Transfer-Encoding: chunked, identity", "Content-Length: 5"),
            ("Transfer-Encoding: gzip, chunked", "Content-Length: 5"),
            ("TRANSFER-ENCODING: CHUNKED", "CONTENT-LENGTH: 5"),
            ("transfer-encoding: chunked", "content-length: 5"),
            ("Transfer-Encoding: xchunked", "Content-Length: 5"),
        ]
    ):
        c.append(reject(f"cl-te-{i}", head(POST, te, cl, body=CHUNKED_HELLO)))
        c.append(reject(f"te-cl-{i}", head(POST, cl, te, body=CHUNKED_HELLO)))
    c.append(reject("cl-te-two-te", head(POST, TE, TE, "Content-Length: 5", body=CHUNKED_HELLO)))
    c.append(reject("cl-te-http10", head("POST {P} HTTP/1.0", TE, "Content-Length: 5", body=b"hello")))
    c.append(
        reject(
            "cl-te-smuggle-classic",
            head(POST, "Content-Length: 4", TE, body=b"0\r\n\r\n" + SMUGGLED),
        )
    )

    # --- Content-Length alone ----------------------------------------------------------------
    for i, values in enumerate(
        [
            ("5", "5"),
            ("5", "6"),
            ("0", "5"),
            ("5", " 5"),
        ]
    ):
        c.append(reject(f"cl-dup-{i}", head(POST, *[f"Content-Length: {v}" for v in values], body=b"hello")))
    c.append(reject("cl-dup-case", head(POST, "Content-Length: 5", "content-length: 5", body=b"hello")))
    for i, value in enumerate(
        [b"5, 5", b"5,6", b"+5", b"-1", b"0x5", b"5 5", b"", b"1e3", b"99999999999999999999"]
        + [b"1000000000000000000", "\u0665".encode(), b"5\x00", b"5;", b"five"]
    ):
        c.append(reject(f"cl-bad-{i}", head(POST, b"Content-Length: " + value, body=b"hello")))
    c.append(
        accept(
            "cl-leading-zero",
            head(POST, "Content-Length: 05", body=b"hello"),
            Fwd("POST", "", b"hello", "length"),
        )
    )
    c.append(
        accept(
            "cl-ows", head(POST, "Content-Length:   5 \t", body=b"hello"), Fwd("POST", "", b"hello", "length")
        )
    )
    c.append(accept("cl-zero-get", head(GET, "Content-Length: 0"), Fwd("GET", "", b"", "length")))
    c.append(
        accept(
            "cl-body-holds-a-request",
            head(POST, "Content-Length: {CL}", body=SMUGGLED),
            Fwd("POST", "", SMUGGLED, "length"),
        )
    )
    c.append(
        accept(
            "cl-with-underscore-twin",
            head(POST, "Content-Length: 5", "Content_Length: 99", body=b"hello"),
            Fwd("POST", "", b"hello", "length", lacks=(b"content_length",)),
        )
    )

    # --- Transfer-Encoding variants ----------------------------------------------------------
    for i, value in enumerate(
        ["chunked", "Chunked", "CHUNKED", "cHuNkEd", "  chunked", "chunked  ", "\tchunked"]
    ):
        c.append(
            accept(
                f"te-ok-{i}",
                head(POST, "Transfer-Encoding: " + value, body=CHUNKED_HELLO),
                Fwd("POST", "", b"hello", "chunked"),
            )
        )
    for i, value in enumerate(
        [
            b"chunked, chunked",
            b"chunked,chunked",
            b"identity",
            b"identity, chunked",
            b"chunked, identity",
            b"gzip, chunked",
            b"gzip",
            b"chunked;q=1",
            b"ch unked",
            b"xchunked",
            b"chunkedx",
            b'"chunked"',
            b"chunked\x0b",
            b"\x00chunked",
            b"",
            b"chunk",
            b"chunked\t",
        ]
    ):
        c.append(reject(f"te-bad-{i}", head(POST, b"Transfer-Encoding: " + value, body=CHUNKED_HELLO)))
    c.append(reject("te-twice", head(POST, TE, TE, body=CHUNKED_HELLO)))
    c.append(
        reject("te-chunked-then-identity", head(POST, TE, "Transfer-Encoding: identity", body=CHUNKED_HELLO))
    )
    c.append(reject("te-http10", head("POST {P} HTTP/1.0", TE, body=CHUNKED_HELLO)))
    c.append(reject("te-space-before-colon", head(POST, "Transfer-Encoding : chunked", body=CHUNKED_HELLO)))
    c.append(reject("te-obs-fold", head(POST, "Transfer-Encoding:", " chunked", body=CHUNKED_HELLO)))
    # An underscore twin is dropped, not read: the chunked body is then the next "request".
    c.append(
        Case(
            "te-underscore-is-not-framing",
            head(POST, "Transfer_Encoding: chunked", body=CHUNKED_HELLO),
            (200, 400),
            True,
            (Fwd("POST", lacks=(b"transfer_encoding", b"transfer-encoding", b"content-length")),),
        )
    )
    c.append(
        accept(
            "te-with-underscore-twin",
            head(POST, TE, "Transfer_Encoding: identity", body=CHUNKED_HELLO),
            Fwd("POST", "", b"hello", "chunked", lacks=(b"transfer_encoding",)),
        )
    )
    c.append(accept("te-empty-body", head(POST, TE, body=b"0\r\n\r\n"), Fwd("POST", "", b"", "chunked")))

    # --- chunked bodies ----------------------------------------------------------------------
    for i, body in enumerate(
        [
            b"zz\r\nhello\r\n0\r\n\r\n",
            b"-1\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"\r\nhello\r\n0\r\n\r\n",
            b"0000000000000005\r\nhello\r\n0\r\n\r\n",
            b"fffffffffffffffff\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"3\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhello0\r\n\r\n",
            b"5;\x01\r\nhello\r\n0\r\n\r\n",
            b"5;a\rb\r\nhello\r\n0\r\n\r\n",
            b"5;\x00\r\nhello\r\n0\r\n\r\n",
            b"5;\xe9\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\nbad trailer\r\n\r\n",
            b"5\r\nhello\r\n0\r\nX-T : v\r\n\r\n",
            b"5\r\nhello\r\n0\r\nX-T: v\r\n folded\r\n\r\n",
            b"\t5\r\nhello\r\n0\r\n\r\n",
            b"5;" + b"a" * 5000 + b"\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\r\nZ\r\nworld\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\n" + SMUGGLED,
            b"5\r\nhello\r\n0\n\r\n",
            b"5\r\r\nhello\r\n0\r\n\r\n",
        ]
    ):
        c.append(reject(f"chunk-bad-{i}", head(POST, TE, body=body)))
    for i, (body, payload) in enumerate(
        [
            (b"5;foo=bar\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b'5;foo="b a r"\r\nhello\r\n0\r\n\r\n', b"hello"),
            (b"5 ;foo\r\nhello\r\n0\r\n\r\n", None),
            (b"2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n", b"hello"),
            (b"005\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
            (b"a\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
            (b"5\r\nhello\r\n0\r\nX-Trailer: v\r\n\r\n", b"hello"),
            (b"5\r\nhello\r\n000\r\n\r\n", b"hello"),
        ]
    ):
        if payload is None:
            c.append(reject(f"chunk-bws-ext-{i}", head(POST, TE, body=body)))
        else:
            c.append(accept(f"chunk-ok-{i}", head(POST, TE, body=body), Fwd("POST", "", payload, "chunked")))

    # --- obs-fold, bare LF, bare CR ----------------------------------------------------------
    c.append(reject("fold-space", head(GET, "X-A: a", " b")))
    c.append(reject("fold-tab", head(GET, "X-A: a", "\tb")))
    c.append(reject("fold-host", head(GET, "Host: h.test", " other", host=False)))
    c.append(reject("fold-first-line", head(GET, " X-A: a", host=False)))
    c.append(reject("fold-content-length", head(POST, "Content-Length:", " 5", body=b"hello")))
    c.append(reject("lf-request-line", b"GET {P} HTTP/1.1\nHost: h.test\r\n\r\n"))
    c.append(reject("lf-header-line", b"GET {P} HTTP/1.1\r\nHost: h.test\nX-A: b\r\n\r\n"))
    c.append(reject("lf-only-head", b"GET {P} HTTP/1.1\nHost: h.test\n\n\r\n\r\n"))
    c.append(reject("lf-in-value", b"GET {P} HTTP/1.1\r\nHost: h.test\r\nX-A: a\nb: c\r\n\r\n"))
    c.append(reject("lf-before-request", b"\nGET {P} HTTP/1.1\r\nHost: h.test\r\n\r\n"))
    c.append(reject("lf-last-line", b"GET {P} HTTP/1.1\r\nHost: h.test\n\r\n\r\n"))
    c.append(reject("cr-in-value", head(GET, b"X-A: a\rb")))
    c.append(reject("cr-end-of-request-line", b"GET {P} HTTP/1.1\r\r\nHost: h.test\r\n\r\n"))
    c.append(reject("cr-as-separator", head(GET, b"X-A: a\rX-B: b")))
    c.append(reject("cr-in-name", head(GET, b"X\rA: b")))
    c.append(reject("cr-in-target", b"GET {P}/a\rb HTTP/1.1\r\nHost: h.test\r\n\r\n"))
    c.append(reject("cr-only-head", b"GET {P} HTTP/1.1\rHost: h.test\r\r\r\n\r\n"))

    # --- NUL and control bytes ---------------------------------------------------------------
    for byte in (0x00, 0x01, 0x07, 0x08, 0x0B, 0x0C, 0x0E, 0x1B, 0x1F, 0x7F):
        c.append(reject(f"ctl-{byte:02x}-value", head(GET, b"X-A: a" + bytes([byte]) + b"b")))
    for byte in (0x00, 0x01, 0x09, 0x7F):
        c.append(
            reject(
                f"ctl-{byte:02x}-target", b"GET {P}/a" + bytes([byte]) + b"b HTTP/1.1\r\n" + HOST + b"\r\n"
            )
        )
    c.append(reject("ctl-00-name", head(GET, b"X-A\x00: b")))
    c.append(reject("ctl-00-method", b"G\x00T {P} HTTP/1.1\r\n" + HOST + b"\r\n"))
    c.append(reject("ctl-00-host", head(GET, b"Host: h.test\x00", host=False)))
    c.append(reject("ctl-1b-host", head(GET, b"Host: h\x1b.test", host=False)))
    c.append(
        accept(
            "obs-text-value-passes",
            head(GET, b"X-A: caf\xe9 \xe4\xb8\xad"),
            Fwd(has=((b"x-a", b"caf\xe9 \xe4\xb8\xad"),)),
        )
    )
    c.append(accept("tab-in-value-passes", head(GET, b"X-A: a\tb"), Fwd(has=((b"x-a", b"a\tb"),))))
    c.append(accept("value-ows-trimmed", head(GET, b"X-A: \t  v  \t"), Fwd(has=((b"x-a", b"v"),))))

    # --- header names ------------------------------------------------------------------------
    for i, line in enumerate(
        [b"Host : h.test", b"X-A : b", b"X-A\t: b", b"Content-Length : 5", b"X(A): b", b"X A: b"]
        + [b": b", b"XA", b"X\xe9: b", b"X/A: b", b"X-A\x7f: b", b"[X]: b"]
    ):
        c.append(reject(f"name-bad-{i}", head(POST, line, "Content-Length: 0", host=b"Host" not in line)))

    # --- request targets, methods and versions -----------------------------------------------
    for i, line in enumerate(
        [
            b"GET ftp://h.test{P} HTTP/1.1",
            b"GET http://user@h.test{P} HTTP/1.1",
            b"GET http:///{P} HTTP/1.1",
            b"OPTIONS * HTTP/1.1",
            b"GET * HTTP/1.1",
            b"CONNECT h.test:443 HTTP/1.1",
            b"GET h.test{P} HTTP/1.1",
            b"GET {P}#frag HTTP/1.1",
            b"GET {P}?a=1#frag HTTP/1.1",
            b"GET {P}# HTTP/1.1",
            b"GET  {P} HTTP/1.1",
            b"GET {P}  HTTP/1.1",
            b"GET {P} HTTP/1.1 ",
            b" GET {P} HTTP/1.1",
            b"GET\t{P} HTTP/1.1",
            b"GET {P}\tHTTP/1.1",
            b"GET {P}",
            b"GET {P} HTTP/1.2",
            b"GET {P} HTTP/2.0",
            b"GET {P} HTTP/0.9",
            b"GET {P} http/1.1",
            b"GET {P} HTTP/1.10",
            b"GET {P} HTTP/01.1",
            b"GET {P} HTTPS/1.1",
            b"get {P} HTTP/1.1",
            b"FOO {P} HTTP/1.1",
            b"GETGETGETGET {P} HTTP/1.1",
            b"G(T {P} HTTP/1.1",
            b"GET {P}/a b HTTP/1.1",
            b"GET {P}/caf\xe9 HTTP/1.1",
            b"PRI * HTTP/2.0",
        ]
    ):
        c.append(reject(f"target-bad-{i}", head(line)))
    # absolute-form (RFC 9112 3.2.2: a server MUST accept it): its authority is the Host
    for i, line in enumerate(
        [
            b"GET http://a.test{P} HTTP/1.1",
            b"GET https://a.test{P} HTTP/1.1",
            b"GET HTTP://a.test{P} HTTP/1.1",
        ]
    ):
        c.append(accept(f"target-absolute-{i}", head(line), Fwd(has=((b"host", b"a.test"),))))
    c.append(
        accept(
            "target-encoded-hash",
            head("GET {P}/a%23b?x=%23 HTTP/1.1"),
            Fwd("GET", "/a%23b?x=%23"),
        )
    )
    c.append(accept("target-dot-segments", head("GET {P}/../../x HTTP/1.1"), Fwd("GET", "/../../x")))
    c.append(
        accept("target-query-kept", head("GET {P}?b=2&a=1&b=%2F HTTP/1.1"), Fwd("GET", "?b=2&a=1&b=%2F"))
    )
    c.append(
        Case(
            "target-double-slash-is-not-linx",
            head(b"GET /{P} HTTP/1.1"),
            (404,),
            False,
            (),
            proxy_made=(True,),
        )
    )
    for method in ("DELETE", "OPTIONS", "TRACE", "PURGE", "M-SEARCH"):
        c.append(accept(f"method-{method.lower()}", head(f"{method} {{P}} HTTP/1.1"), Fwd(method)))
    c.append(accept("method-head", head("HEAD {P} HTTP/1.1"), Fwd("HEAD"), methods=(b"HEAD",)))
    c.append(accept("method-post-no-body", head(POST), Fwd("POST", framing=None)))
    c.append(
        accept(
            "method-put-length",
            head("PUT {P} HTTP/1.1", "Content-Length: 5", body=b"hello"),
            Fwd("PUT", "", b"hello", "length"),
        )
    )
    c.append(
        accept(
            "method-patch-chunked",
            head("PATCH {P} HTTP/1.1", TE, body=CHUNKED_HELLO),
            Fwd("PATCH", "", b"hello", "chunked"),
        )
    )
    c.append(accept("http10-request", head("GET {P} HTTP/1.0"), Fwd(), closed=True))
    c.append(accept("leading-empty-lines", b"\r\n\r\n" + head(GET), Fwd()))
    c.append(
        accept(
            "expect-100-continue",
            head(POST, "Expect: 100-continue", "Content-Length: 5", body=b"hello"),
            Fwd("POST", "", b"hello", "length"),
        )
    )

    # --- Host ------------------------------------------------------------------------------
    c.append(reject("host-missing", head(GET, host=False)))
    c.append(reject("host-missing-http10", head("GET {P} HTTP/1.0", host=False)))
    c.append(reject("host-duplicate-same", head(GET, "Host: h.test")))
    c.append(reject("host-duplicate-other", head(GET, "Host: evil.test")))
    c.append(reject("host-duplicate-case", head(GET, "host: h.test")))
    for i, value in enumerate([b"", b"h test", b"h/x", b"u@h.test", b"h.test:abc", b"[::1", b"h.test:80:80"]):
        c.append(reject(f"host-bad-{i}", head(GET, b"Host: " + value, host=False)))
    for i, value in enumerate([b"[::1]:8080", b"h.test:80", b"H.TEST", b"127.0.0.1"]):
        c.append(
            accept(f"host-ok-{i}", head(GET, b"Host: " + value, host=False), Fwd(has=((b"host", value),)))
        )

    # --- sizes (defaults: 32 KiB head, 100 header fields) --------------------------------------
    c.append(reject("long-target", head("GET {P}/" + "a" * 40000 + " HTTP/1.1"), 431))
    c.append(reject("long-method", head("GET" * 14000 + " {P} HTTP/1.1"), 431))
    c.append(reject("long-line-no-end", b"GET {P}/" + b"a" * 40000, 431))
    c.append(reject("long-value", head(GET, "X-A: " + "v" * 40000), 431))
    c.append(reject("too-many-headers", head(GET, *[f"X-H{i}: v" for i in range(100)]), 431))
    c.append(
        Case(
            "pipeline-then-long",
            head(GET) + head("GET {P}/" + "a" * 40000 + " HTTP/1.1"),
            (200, 431),
            True,
            (Fwd(),),
        )
    )

    # --- underscores: dropped, never rejected --------------------------------------------------
    c.append(
        accept(
            "underscore-dropped",
            head(GET, "X_Foo: bar", "X-Foo: kept"),
            Fwd(has=((b"x-foo", b"kept"),), lacks=(b"x_foo",)),
        )
    )
    c.append(
        accept(
            "underscore-xff-dropped",
            head(GET, "X_Forwarded_For: 6.6.6.6"),
            Fwd(has=((b"x-forwarded-for", b"127.0.0.1"),), lacks=(b"x_forwarded_for",)),
        )
    )
    c.append(
        accept(
            "underscore-content-length-no-body",
            head(POST, "Content_Length: 5"),
            Fwd("POST", lacks=(b"content-length",)),
        )
    )
    c.append(accept("underscore-only-name", head(GET, "_: x"), Fwd(lacks=(b"_",))))
    c.append(accept("underscore-host-twin", head(GET, "Host_: evil.test"), Fwd(has=((b"host", b"h.test"),))))

    # --- Connection-named and hop-by-hop headers -----------------------------------------------
    c.append(accept("connection-names-host", head(GET, "Connection: Host"), Fwd(has=((b"host", b"h.test"),))))
    c.append(
        accept(
            "connection-names-content-length",
            head(POST, "Connection: Content-Length", "Content-Length: 5", body=b"hello"),
            Fwd("POST", "", b"hello", "length"),
        )
    )
    c.append(
        accept(
            "connection-names-transfer-encoding",
            head(POST, "Connection: Transfer-Encoding", TE, body=CHUNKED_HELLO),
            Fwd("POST", "", b"hello", "chunked"),
        )
    )
    c.append(
        accept(
            "connection-names-custom",
            head(GET, "Connection: X-Hop", "X-Hop: 1", "X-Stay: 2"),
            Fwd(has=((b"x-stay", b"2"),), lacks=(b"x-hop",)),
        )
    )
    c.append(
        accept(
            "hop-by-hop-dropped",
            head(
                GET, "Keep-Alive: timeout=5", "Proxy-Connection: keep-alive", "TE: trailers", "Trailer: X-T"
            ),
            Fwd(lacks=(b"keep-alive", b"proxy-connection", b"te", b"trailer")),
        )
    )
    c.append(
        accept(
            "xff-replaced",
            head(GET, "X-Forwarded-For: 6.6.6.6", "Forwarded: for=6.6.6.6", "X-Real-IP: 6.6.6.6"),
            Fwd(has=((b"x-forwarded-for", b"127.0.0.1"),), lacks=(b"forwarded", b"x-real-ip")),
        )
    )
    c.append(
        accept(
            # every X-Forwarded-* of an untrusted client goes, not only the four the proxy sets:
            # frameworks read -Port and -Ssl for the scheme and port
            "x-forwarded-any-replaced",
            head(
                GET,
                "X-Forwarded-Port: 1234",
                "X-Forwarded-Ssl: on",
                "X-Forwarded-Server: evil",
                "X-Forwarded-Uri: /admin",
                "X-Forwarded-Proto: https",
            ),
            Fwd(
                has=((b"x-forwarded-proto", b"http"),),
                lacks=(b"x-forwarded-port", b"x-forwarded-ssl", b"x-forwarded-server", b"x-forwarded-uri"),
            ),
        )  # fmt: skip
    )

    # --- pipelining ------------------------------------------------------------------------------
    c.append(
        accept(
            "pipeline-2", head(GET) + head("GET {P}/2 HTTP/1.1"), Fwd(), Fwd(rest="/2"), statuses=(200, 200)
        )
    )
    c.append(
        accept(
            "pipeline-3",
            head(GET) + head("GET {P}/2 HTTP/1.1") + head("GET {P}/3 HTTP/1.1"),
            Fwd(),
            Fwd(rest="/2"),
            Fwd(rest="/3"),
            statuses=(200, 200, 200),
        )
    )
    c.append(
        accept(
            "pipeline-length-body",
            head(POST, "Content-Length: 5", body=b"hello") + head("GET {P}/2 HTTP/1.1"),
            Fwd("POST", "", b"hello", "length"),
            Fwd(rest="/2"),
            statuses=(200, 200),
        )
    )
    c.append(
        accept(
            "pipeline-chunked-body",
            head(POST, TE, body=CHUNKED_HELLO) + head("GET {P}/2 HTTP/1.1"),
            Fwd("POST", "", b"hello", "chunked"),
            Fwd(rest="/2"),
            statuses=(200, 200),
        )
    )
    c.append(
        accept(
            "pipeline-cl0-then-request",
            head(POST, "Content-Length: 0") + SMUGGLED,
            Fwd("POST", "", b"", "length"),
            Fwd(rest="/smuggled"),
            statuses=(200, 200),
        )
    )
    c.append(
        accept(
            "pipeline-blank-lines-between",
            head(GET) + b"\r\n\r\n" + head("GET {P}/2 HTTP/1.1"),
            Fwd(),
            Fwd(rest="/2"),
            statuses=(200, 200),
        )
    )
    c.append(
        Case(
            "pipeline-then-bare-lf",
            head(GET) + b"GET {P}/2 HTTP/1.1\nHost: h.test\r\n\r\n",
            (200, 400),
            True,
            (Fwd(),),
        )
    )
    c.append(
        Case(
            "pipeline-then-cl-te",
            head(GET) + head(POST, TE, "Content-Length: 5", body=CHUNKED_HELLO),
            (200, 400),
            True,
            (Fwd(),),
        )
    )
    c.append(
        Case(
            "pipeline-then-unknown-service",
            head(GET) + head("GET /linx/lnx_" + "a" * 26 + "/x HTTP/1.1") + head("GET {P}/3 HTTP/1.1"),
            (200, 404, 200),
            False,
            (Fwd(), Fwd(rest="/3")),
        )
    )
    c.append(
        Case(
            "pipeline-after-connection-close",
            head(GET, "Connection: close") + head("GET {P}/2 HTTP/1.1"),
            (200,),
            True,
            (Fwd(),),
        )
    )
    c.append(
        Case(
            "pipeline-after-http10",
            head("GET {P} HTTP/1.0") + head("GET {P}/2 HTTP/1.1"),
            (200,),
            True,
            (Fwd(),),
        )
    )
    c.append(
        accept(
            "pipeline-http10-keep-alive",
            head("GET {P} HTTP/1.0", "Connection: keep-alive") + head("GET {P}/2 HTTP/1.1"),
            Fwd(),
            Fwd(rest="/2"),
            statuses=(200, 200),
        )
    )
    c.append(
        accept(
            "pipeline-head-then-get",
            head("HEAD {P} HTTP/1.1") + head(GET),
            Fwd("HEAD"),
            Fwd(),
            statuses=(200, 200),
            methods=(b"HEAD", b"GET"),
        )
    )

    # --- upgrades that do not happen -----------------------------------------------------------
    ws = ("Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13")
    key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="
    c.append(
        Case(
            "upgrade-refused-then-smuggle",
            head("GET {P}?reject=1 HTTP/1.1", *ws, key) + head("GET {T} HTTP/1.1"),
            (403, 401),
            False,
            (Fwd(rest="?reject=1", has=((b"upgrade", b"websocket"),)),),
            proxy_made=(False, True),
            pool_check=False,  # the refused upgrade's fresh upstream connection is pooled
        )
    )
    c.append(
        Case(
            "upgrade-fake-101-then-smuggle",
            head("GET {S}/fake-101?m={M} HTTP/1.1", *ws, key) + head("GET {T} HTTP/1.1"),
            (502, 401),
            False,
            (Fwd(target="/fake-101?m={M}"),),
        )
    )
    c.append(
        Case(
            "upgrade-fake-101-no-accept",
            head("GET {S}/fake-101?missing=1&m={M} HTTP/1.1", *ws, key),
            (502,),
            False,
            (Fwd(target="/fake-101?missing=1&m={M}"),),
        )
    )
    c.append(Case("upgrade-websockets-disabled", head("GET {W} HTTP/1.1", *ws, key), (403,), False, ()))
    c.append(
        accept(
            "upgrade-without-connection",
            head(GET, "Upgrade: websocket", "Sec-WebSocket-Version: 13", key),
            Fwd(lacks=(b"upgrade", b"connection")),
        )
    )
    c.append(
        accept(
            "connection-upgrade-without-upgrade",
            head(GET, "Connection: Upgrade"),
            Fwd(lacks=(b"connection",)),
        )
    )
    c.append(
        accept(
            "upgrade-unknown-protocol",
            head(GET, "Connection: Upgrade", "Upgrade: foo/1"),
            Fwd(lacks=(b"upgrade",)),
        )
    )

    # --- h2c: the Upgrade is hop-by-hop and dropped; the request is plain HTTP/1.1 --------------
    h2c = ("Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA")
    c.append(
        accept("h2c-upgrade", head(GET, *h2c), Fwd(lacks=(b"upgrade", b"connection", b"http2-settings")))
    )
    c.append(
        accept(
            "h2c-upgrade-with-body",
            head(POST, *h2c, "Content-Length: 5", body=b"hello"),
            Fwd("POST", "", b"hello", "length", lacks=(b"upgrade", b"http2-settings")),
        )
    )
    c.append(accept("h2c-without-connection", head(GET, "Upgrade: h2c"), Fwd(lacks=(b"upgrade",))))
    c.append(
        accept(
            "h2c-settings-only",
            head(GET, "Connection: HTTP2-Settings", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"),
            Fwd(lacks=(b"http2-settings",)),
        )
    )
    c.append(
        Case(
            "h2c-then-h2-preface",
            head(GET, *h2c) + b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            (200, 400),
            True,
            (Fwd(lacks=(b"upgrade",)),),
        )
    )
    c.append(reject("h2-prior-knowledge", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
    return c


CASES = cases()
assert len(CASES) >= 150, len(CASES)
assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"


class Env:
    def __init__(self, hstack) -> None:
        self.hstack = hstack
        self.backend = hstack.backend
        self.public = hstack.publish(auth_mode="public", enable_websockets=True)
        self.token_svc = hstack.publish()
        self.no_ws = hstack.publish(auth_mode="public", enable_websockets=False)
        self.proxy = hstack.proxy()
        reachable(self.proxy, self.public)
        reachable(self.proxy, self.no_ws)
        reachable(self.proxy, self.token_svc)

    def sentinel(self) -> int:
        """One request through the proxy; returns the backend connection id it was relayed on."""
        with RawClient(self.proxy.port) as c:
            c.send(f"GET {self.public.path}/sentinel-probe HTTP/1.1\r\nHost: h.test\r\n\r\n".encode())
            resp = c.read_response()
        assert resp.status == 200, resp
        return json.loads(resp.body)["conn_id"]

    def expand(self, data: bytes, marker: str) -> bytes:
        if b"{CL}" in data:  # a Content-Length that counts the body as expanded
            first, _, body = data.partition(b"\r\n\r\n")
            body = self.expand(body, marker)
            return self.expand(first.replace(b"{CL}", b"%d" % len(body)), marker) + b"\r\n\r\n" + body
        return (
            data.replace(b"{P}", f"{self.public.path}/{marker}".encode())
            .replace(b"{T}", f"{self.token_svc.path}/{marker}".encode())
            .replace(b"{W}", f"{self.no_ws.path}/{marker}".encode())
            .replace(b"{S}", self.public.path.encode())
            .replace(b"{M}", marker.encode())
        )


@pytest.fixture(scope="module")
def env(hstack):
    e = Env(hstack)
    yield e
    hstack.stop_proxy(e.proxy)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_framing_case(env, case: Case):
    marker = "mk" + secrets.token_hex(6)
    data = env.expand(case.data, marker)
    env.backend.reset()
    before = env.sentinel()
    with RawClient(env.proxy.port) as client:
        try:
            client.send(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the whole request was sent: the answer is still readable
        responses = []
        for i, status in enumerate(case.statuses):
            method = case.methods[i] if case.methods else b"GET"
            resp = client.read_response(method)
            responses.append(resp)
            assert resp.status == status, (i, resp.status, resp.raw[:500])
            proxy_made = case.proxy_made[i] if case.proxy_made else status >= 400
            if proxy_made:
                assert resp.header("X-Linx-Error") is not None, resp.raw[:500]
        if case.closed:
            assert responses[-1].header("Connection") in (b"close", None)
            assert client.closed_within(3.0), f"connection left open; extra bytes {client.buf[:200]!r}"
    after = env.sentinel()
    records = [r for r in env.backend.requests(raw=True) if not r["path"].endswith("/sentinel-probe")]
    raws = [base64.b64decode(r["raw_head"]) for r in records]
    # nothing reached the container but the requests the table lists, each exactly once
    assert len(records) == len(case.fwd), [r[:300] for r in raws]
    for want, record, raw in zip(case.fwd, records, raws, strict=True):
        assert marker.encode() in raw
        assert record["error"] is None, (record["error"], raw)
        parsed = assert_canonical_head(raw)
        line = parsed["line"].decode("latin-1")
        target = want.target.replace("{M}", marker) if want.target else f"/{marker}{want.rest}"
        assert line == f"{want.method} {target} HTTP/1.1", line
        names = [n for n, _ in parsed["headers"]]
        framing = (
            "length" if b"content-length" in names else "chunked" if b"transfer-encoding" in names else None
        )
        assert framing == want.framing, (framing, raw)
        assert record["body_complete"] is not False
        body = env.expand(want.body, marker)
        assert record["body_len"] == len(body)
        assert record["body_sha256"] == hashlib.sha256(body).hexdigest()
        assert record["trailers"] == []
        for pair in want.has:
            assert pair in parsed["headers"], (pair, raw)
        for name in want.lacks:
            assert name not in names, (name, raw)
    if case.pool_check and all(r.status >= 400 for r in responses[len(case.fwd) :]):
        # a rejected request did not even borrow the pooled upstream connection
        assert after == before, "the proxy touched an upstream connection for a rejected request"
