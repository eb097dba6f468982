"""Head parsing and body framing: accept/reject tables."""

from __future__ import annotations

import pytest

from dataplane.http_head import (
    ChunkedDecoder,
    Framing,
    HeadError,
    parse_request_head,
    parse_response_head,
)


def head(*lines: bytes) -> bytes:
    return b"\r\n".join(lines) + b"\r\n\r\n"


OK = [
    (head(b"GET / HTTP/1.1", b"Host: a"), Framing.NONE, True),
    (head(b"GET /x?y=1 HTTP/1.0", b"Host: a"), Framing.NONE, False),
    (head(b"GET / HTTP/1.0", b"Host: a", b"Connection: keep-alive"), Framing.NONE, True),
    (head(b"POST /u HTTP/1.1", b"Host: a", b"Content-Length: 5"), Framing.LENGTH, True),
    (head(b"POST /u HTTP/1.1", b"Host: a", b"Transfer-Encoding: chunked"), Framing.CHUNKED, True),
    (head(b"POST /u HTTP/1.1", b"Host: a", b"Transfer-Encoding: Chunked"), Framing.CHUNKED, True),
    (head(b"POST /u HTTP/1.1", b"Host: a", b"Transfer-Encoding:  chunked "), Framing.CHUNKED, True),
    (head(b"GET / HTTP/1.1", b"Host: a", b"Connection: close"), Framing.NONE, False),
    (head(b"GET / HTTP/1.1", b"Host: [::1]:8080"), Framing.NONE, True),
    (head(b"OPTIONS /x HTTP/1.1", b"Host: a:80", b"X_Under: y"), Framing.NONE, True),
]


@pytest.mark.parametrize(("raw", "framing", "keep_alive"), OK)
def test_accepted(raw, framing, keep_alive):
    req = parse_request_head(raw, 100)
    assert req.framing == framing
    assert req.keep_alive is keep_alive


def test_trailing_white_space_is_not_part_of_a_value():
    req = parse_request_head(head(b"GET / HTTP/1.1", b"Host: x \t", b"X-A: b  "), 100)
    assert req.host == b"x" and req.header(b"x-a") == b"b"


def test_headers_keep_order_and_case():
    req = parse_request_head(head(b"GET /p HTTP/1.1", b"Host: h", b"X-B: 2", b"x-a: 1"), 100)
    assert req.headers == [(b"Host", b"h"), (b"X-B", b"2"), (b"x-a", b"1")]
    assert req.target == b"/p" and req.method == b"GET" and req.host == b"h"


def test_websocket_upgrade_is_recognised():
    req = parse_request_head(
        head(b"GET /ws HTTP/1.1", b"Host: h", b"Connection: keep-alive, Upgrade", b"Upgrade: WebSocket"), 100
    )
    assert req.upgrade == b"websocket"


REJECT = {
    "cl_and_te": head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: 3", b"Transfer-Encoding: chunked"),
    "duplicate_cl_equal": head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: 3", b"Content-Length: 3"),
    "duplicate_cl_diff": head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: 3", b"Content-Length: 4"),
    "cl_list": head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: 3, 3"),
    "cl_sign": head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: +3"),
    "cl_hex": head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: 0x3"),
    "te_identity": head(b"POST / HTTP/1.1", b"Host: a", b"Transfer-Encoding: identity"),
    "te_gzip_chunked": head(b"POST / HTTP/1.1", b"Host: a", b"Transfer-Encoding: gzip, chunked"),
    "te_double": head(b"POST / HTTP/1.1", b"Host: a", b"Transfer-Encoding: chunked, chunked"),
    "te_repeated": head(
        b"POST / HTTP/1.1", b"Host: a", b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"
    ),
    "te_xchunked": head(b"POST / HTTP/1.1", b"Host: a", b"Transfer-Encoding: xchunked"),
    "te_http10": head(b"POST / HTTP/1.0", b"Host: a", b"Transfer-Encoding: chunked"),
    "te_vtab": head(b"POST / HTTP/1.1", b"Host: a", b"Transfer-Encoding: \x0bchunked"),
    "obs_fold": head(b"GET / HTTP/1.1", b"Host: a", b"X-A: 1", b" continued"),
    "obs_fold_tab": head(b"GET / HTTP/1.1", b"Host: a", b"X-A: 1", b"\tcontinued"),
    "bare_lf": b"GET / HTTP/1.1\nHost: a\r\n\r\n",
    "bare_cr": b"GET / HTTP/1.1\rHost: a\r\n\r\n",
    "nul_in_value": head(b"GET / HTTP/1.1", b"Host: a", b"X-A: a\x00b"),
    "ctl_in_value": head(b"GET / HTTP/1.1", b"Host: a", b"X-A: a\x01b"),
    "space_before_colon": head(b"GET / HTTP/1.1", b"Host: a", b"X-A : 1"),
    "empty_name": head(b"GET / HTTP/1.1", b"Host: a", b": 1"),
    "absolute_form_other_scheme": head(b"GET ftp://a/ HTTP/1.1", b"Host: a"),
    "absolute_form_userinfo": head(b"GET http://u@a/ HTTP/1.1", b"Host: a"),
    "absolute_form_no_authority": head(b"GET http:///x HTTP/1.1", b"Host: a"),
    "absolute_form_fragment": head(b"GET http://a/x#f HTTP/1.1", b"Host: a"),
    "asterisk": head(b"OPTIONS * HTTP/1.1", b"Host: a"),
    "connect": head(b"CONNECT evil:443 HTTP/1.1", b"Host: evil:443"),
    "missing_host": head(b"GET / HTTP/1.1", b"X-A: 1"),
    "duplicate_host": head(b"GET / HTTP/1.1", b"Host: a", b"Host: b"),
    "bad_host": head(b"GET / HTTP/1.1", b"Host: a b"),
    "no_version": head(b"GET /", b"Host: a"),
    "http2": head(b"GET / HTTP/2.0", b"Host: a"),
    "http12": head(b"GET / HTTP/1.2", b"Host: a"),
    "space_in_target": head(b"GET /a b HTTP/1.1", b"Host: a"),
    "bad_method_char": head(b"G(T / HTTP/1.1", b"Host: a"),
    "unicode_target": head("GET /é HTTP/1.1".encode(), b"Host: a"),
    "fragment_in_target": head(b"GET /a#frag HTTP/1.1", b"Host: a"),
    "rtsp_version": head(b"GET / RTSP/1.0", b"Host: a"),
    "http09": head(b"GET / HTTP/0.9", b"Host: a"),
    "asterisk_get": head(b"GET * HTTP/1.1", b"Host: a"),
}


@pytest.mark.parametrize(
    "target,path,host",
    [
        (b"http://svc.example/linx/lnx_a/x?q=1", b"/linx/lnx_a/x?q=1", b"svc.example"),
        (b"HTTPS://Svc.Example:8443", b"/", b"Svc.Example:8443"),
        (b"http://[::1]:80?q", b"/?q", b"[::1]:80"),
        (b"http://a/", b"/", b"a"),
    ],
)
def test_absolute_form_is_read_as_origin_form_with_its_authority(target, path, host):
    # RFC 9112 3.2.2: a server MUST accept it; the authority replaces Host (7.2)
    req = parse_request_head(head(b"GET " + target + b" HTTP/1.1", b"Host: a", b"X-A: 1"), 100)
    assert (req.target, req.host, req.header(b"host")) == (path, host, host)
    assert req.headers == [(b"Host", host), (b"X-A", b"1")]


@pytest.mark.parametrize("name", sorted(REJECT))
def test_rejected_with_400(name):
    with pytest.raises(HeadError) as info:
        parse_request_head(REJECT[name], 100)
    assert info.value.status == 400


def test_too_many_headers_is_431():
    raw = head(b"GET / HTTP/1.1", b"Host: a", *[b"X-%d: 1" % i for i in range(10)])
    parse_request_head(raw, 11)
    with pytest.raises(HeadError) as info:
        parse_request_head(raw, 10)
    assert info.value.status == 431


# ------------------------------------------------------------------ responses
def test_response_framings():
    r = parse_response_head(head(b"HTTP/1.1 200 OK", b"Content-Length: 3"), b"GET")
    assert (r.status, r.framing, r.content_length) == (200, Framing.LENGTH, 3)
    r = parse_response_head(head(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked"), b"GET")
    assert r.framing == Framing.CHUNKED
    r = parse_response_head(head(b"HTTP/1.1 200 OK"), b"GET")
    assert r.framing == Framing.CLOSE and not r.keep_alive
    r = parse_response_head(head(b"HTTP/1.1 200 OK", b"Content-Length: 3"), b"HEAD")
    assert r.framing == Framing.NONE and r.content_length == 3
    for code in (b"204", b"304", b"100"):
        r = parse_response_head(head(b"HTTP/1.1 " + code + b" X"), b"GET")
        assert r.framing == Framing.NONE


@pytest.mark.parametrize(
    "raw",
    [
        b"garbage\r\n\r\n",
        head(b"HTTP/1.1 2000 OK"),
        head(b"HTTP/1.1 200 OK", b"Content-Length: 3", b"Transfer-Encoding: chunked"),
        head(b"HTTP/1.1 200 OK", b"Content-Length: 3", b"Content-Length: 4"),
        head(b"HTTP/1.1 200 OK", b"Transfer-Encoding: gzip"),
        b"HTTP/1.1 200 OK\nContent-Length: 3\r\n\r\n",
    ],
)
def test_bad_responses_are_502(raw):
    with pytest.raises(HeadError) as info:
        parse_response_head(raw, b"GET")
    assert info.value.status == 502


# ------------------------------------------------------------------ chunked bodies
def decode_all(chunks: list[bytes]) -> tuple[bytes, bytes | None]:
    dec = ChunkedDecoder()
    out = []
    rest = None
    for c in chunks:
        if rest is not None:
            rest += c  # the body ended: everything after it is the next message
            continue
        pieces, rest = dec.feed(c)
        out += pieces
    return b"".join(out), rest


def test_chunked_decodes_across_any_split():
    body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT"
    for split in range(1, len(body)):
        data, rest = decode_all([body[:split], body[split:]])
        assert data == b"hello world"
        assert rest == b"NEXT"
    data, rest = decode_all([bytes([b]) for b in body])
    assert data == b"hello world"


@pytest.mark.parametrize(
    "body",
    [
        b"x\r\nhello\r\n0\r\n\r\n",  # not hex
        b"-5\r\nhello\r\n0\r\n\r\n",
        b" 5\r\nhello\r\n0\r\n\r\n",  # leading space
        b"5 \r\nhello\r\n0\r\n\r\n",  # trailing space
        b"5\nhello\r\n0\r\n\r\n",  # bare LF
        b"5\r\nhelloX\r\n0\r\n\r\n",  # data longer than its size
        b"10000000000000000\r\n",  # overflow
        b"5\r\nhello\r\n0\r\nbad trailer\r\n\r\n",
        b"5;\x01\r\nhello\r\n0\r\n\r\n",  # control byte in extension
    ],
)
def test_bad_chunked_bodies_are_rejected(body):
    with pytest.raises(HeadError):
        decode_all([body])
