"""A corpus of hostile and valid HTTP/1.x request heads, each with the verdict RFC 9112 / RFC 9110
and SPEC section 5 expect: test data for ``test_parser_corpus.py``.

It was first written for a parser comparison (httptools/llhttp vs ``twisted.web.http``), whose
figures the README quotes; that timing harness is gone, the corpus stays here.
"""

from __future__ import annotations

REJECT = "reject"  # RFC 9112/9110 MUST-reject, or SPEC section 5 requires 400
ACCEPT = "accept"  # valid; rejecting it is a false positive
POLICY = "policy"  # syntactically valid, but the proxy's validation layer must decide

CHUNKED_HELLO = b"5\r\nhello\r\n0\r\n\r\n"
HOST = b"Host: x\r\n"


def post(headers: bytes, body: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    return b"POST / " + version + b"\r\n" + HOST + headers + b"\r\n" + body


def get(line: bytes = b"GET / HTTP/1.1", headers: bytes = HOST) -> bytes:
    return line + b"\r\n" + headers + b"\r\n"


def te_chunk(body: bytes) -> bytes:
    return post(b"Transfer-Encoding: chunked\r\n", body)


# (name, raw bytes, expected, why, fields to show in the matrix)
CORPUS = [
    # --- message framing: Content-Length / Transfer-Encoding -------------------------
    (
        "cl_and_te",
        post(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", CHUNKED_HELLO),
        REJECT,
        "SPEC 5: both CL and TE -> 400 (RFC 9112 6.3 allows reject)",
        (),
    ),
    (
        "te_and_cl",
        post(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", CHUNKED_HELLO),
        REJECT,
        "same, TE first",
        (),
    ),
    (
        "cl_dup_equal",
        post(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"),
        REJECT,
        "SPEC 5: duplicate CL rejected even when equal",
        (),
    ),
    (
        "cl_dup_differ",
        post(b"Content-Length: 5\r\nContent-Length: 10\r\n", b"helloWORLD"),
        REJECT,
        "RFC 9112 6.3: differing CL is unrecoverable",
        (),
    ),
    (
        "cl_comma_list",
        post(b"Content-Length: 5, 5\r\n", b"hello"),
        REJECT,
        "SPEC 5: duplicate lengths (list form)",
        (),
    ),
    ("cl_plus_sign", post(b"Content-Length: +5\r\n", b"hello"), REJECT, "CL = 1*DIGIT (RFC 9110 8.6)", ()),
    ("cl_negative", post(b"Content-Length: -5\r\n", b"hello"), REJECT, "CL = 1*DIGIT", ()),
    (
        "cl_ows",
        post(b"Content-Length:   5  \r\n", b"hello"),
        ACCEPT,
        "OWS around a field value is not part of it (RFC 9112 5.1)",
        (),
    ),
    ("cl_inner_space", post(b"Content-Length: 1 0\r\n", b"helloWORLD"), REJECT, "CL = 1*DIGIT", ()),
    ("cl_hex", post(b"Content-Length: 0x5\r\n", b"hello"), REJECT, "CL = 1*DIGIT", ()),
    (
        "cl_overflow",
        post(b"Content-Length: 99999999999999999999999\r\n", b"hello"),
        REJECT,
        "length beyond 64 bits: invalid framing",
        (),
    ),
    (
        "te_trailing_sp",
        post(b"Transfer-Encoding: chunked \r\n", CHUNKED_HELLO),
        ACCEPT,
        "trailing OWS (SP) is not part of the value -> chunked",
        (),
    ),
    (
        "te_trailing_tab",
        post(b"Transfer-Encoding: chunked\t\r\n", CHUNKED_HELLO),
        ACCEPT,
        "trailing OWS (HTAB) is not part of the value -> chunked",
        (),
    ),
    (
        "te_leading_ws",
        post(b"Transfer-Encoding:\t  chunked\r\n", CHUNKED_HELLO),
        ACCEPT,
        "leading OWS stripped -> chunked",
        (),
    ),
    (
        "te_Chunked_case",
        post(b"Transfer-Encoding: Chunked\r\n", CHUNKED_HELLO),
        ACCEPT,
        "coding names are case-insensitive (RFC 9112 7)",
        (),
    ),
    (
        "te_chunked_chunked",
        post(b"Transfer-Encoding: chunked, chunked\r\n", CHUNKED_HELLO),
        REJECT,
        "chunked applied twice (RFC 9112 6.1 MUST NOT); SPEC ambiguous framing",
        (),
    ),
    (
        "te_dup_header",
        post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", CHUNKED_HELLO),
        REJECT,
        "= 'chunked, chunked'",
        (),
    ),
    (
        "te_identity",
        post(b"Transfer-Encoding: identity\r\n", b"hello"),
        REJECT,
        "TE present, chunked not final -> 400 MUST (RFC 9112 6.3)",
        (),
    ),
    (
        "te_gzip_chunked",
        post(b"Transfer-Encoding: gzip, chunked\r\n", CHUNKED_HELLO),
        POLICY,
        "valid; proxy must keep gzip coding or 501",
        (),
    ),
    (
        "te_chunked_gzip",
        post(b"Transfer-Encoding: chunked, gzip\r\n", b"hello"),
        REJECT,
        "chunked not final -> 400 MUST",
        (),
    ),
    (
        "te_xchunked",
        post(b"Transfer-Encoding: xchunked\r\n", CHUNKED_HELLO),
        REJECT,
        "chunked not final -> 400 MUST",
        (),
    ),
    (
        "te_http10",
        post(b"Transfer-Encoding: chunked\r\n", CHUNKED_HELLO, b"HTTP/1.0"),
        REJECT,
        "RFC 9112 6.1: TE in HTTP/1.0 -> framing faulty",
        ("version",),
    ),
    (
        "obs_fold_te",
        post(b"Transfer-Encoding:\r\n chunked\r\n", CHUNKED_HELLO),
        REJECT,
        "obs-fold (SPEC 5) hiding the TE value",
        (),
    ),
    # --- chunked body ----------------------------------------------------------------
    ("chunk_ext", te_chunk(b"5;name=val\r\nhello\r\n0\r\n\r\n"), ACCEPT, "chunk-ext is valid", ()),
    ("chunk_leading_sp", te_chunk(b" 5\r\nhello\r\n0\r\n\r\n"), REJECT, "SPEC 5: bad chunk size", ()),
    (
        "chunk_trailing_sp",
        te_chunk(b"5 \r\nhello\r\n0\r\n\r\n"),
        REJECT,
        "SPEC 5: bad chunk size (no BWS unless ';' follows)",
        (),
    ),
    (
        "chunk_hex_overflow",
        te_chunk(b"1ffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
        REJECT,
        "SPEC 5: bad chunk size (> 2^64)",
        (),
    ),
    ("chunk_negative", te_chunk(b"-5\r\nhello\r\n0\r\n\r\n"), REJECT, "SPEC 5: bad chunk size", ()),
    ("chunk_0x", te_chunk(b"0x5\r\nhello\r\n0\r\n\r\n"), REJECT, "SPEC 5: bad chunk size", ()),
    ("chunk_no_crlf", te_chunk(b"5\r\nhello0\r\n\r\n"), REJECT, "chunk-data not followed by CRLF", ()),
    # --- header syntax ----------------------------------------------------------------
    ("obs_fold", get(headers=HOST + b"X-A: a\r\n b\r\n"), REJECT, "SPEC 5: obs-fold -> 400", ("x-a",)),
    (
        "ws_first_header",
        get(headers=b" Host: x\r\nX-A: b\r\n"),
        REJECT,
        "RFC 9112 2.2: whitespace before first field line",
        ("host",),
    ),
    (
        "bare_lf_all",
        b"GET / HTTP/1.1\nHost: x\nX-A: b\n\n",
        REJECT,
        "SPEC 5: bare LF in head -> 400",
        ("x-a",),
    ),
    (
        "bare_lf_header",
        b"GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n",
        REJECT,
        "SPEC 5: bare LF in head",
        ("host", "x-a"),
    ),
    ("bare_lf_reqline", b"GET / HTTP/1.1\nHost: x\r\n\r\n", REJECT, "SPEC 5: bare LF in head", ("host",)),
    (
        "bare_cr_value",
        get(headers=HOST + b"X-A: a\rb\r\n"),
        REJECT,
        "RFC 9112 2.2: bare CR invalid",
        ("x-a",),
    ),
    (
        "bare_cr_reqline",
        b"GET / HTTP/1.1\rHost: x\r\n\r\n",
        REJECT,
        "RFC 9112 2.2: bare CR invalid",
        ("host",),
    ),
    (
        "nul_value",
        get(headers=HOST + b"X-A: a\x00b\r\n"),
        REJECT,
        "RFC 9110 5.5: NUL MUST be rejected/replaced",
        ("x-a",),
    ),
    (
        "ctl_value",
        get(headers=HOST + b"X-A: a\x01b\r\n"),
        REJECT,
        "RFC 9110 5.5: CTL invalid (MAY retain); unsafe to relay",
        ("x-a",),
    ),
    (
        "del_value",
        get(headers=HOST + b"X-A: a\x7fb\r\n"),
        REJECT,
        "RFC 9110 5.5: DEL invalid (MAY retain)",
        ("x-a",),
    ),
    (
        "sp_before_colon",
        post(b"Content-Length : 5\r\n", b"hello"),
        REJECT,
        "RFC 9112 5.1: MUST reject with 400",
        (),
    ),
    (
        "value_trailing_ows",
        get(headers=b"Host: x \t\r\nX-A: b  \r\n"),
        POLICY,
        "valid; trailing OWS is not part of the value (RFC 9112 5.1): strip it",
        ("host", "x-a"),
    ),
    (
        "underscore_name",
        get(headers=HOST + b"X_Forwarded_For: 1.2.3.4\r\n"),
        POLICY,
        "legal token; aliases X-Forwarded-For in CGI/WSGI-style backends",
        ("x_forwarded_for",),
    ),
    ("empty_name", get(headers=HOST + b": v\r\n"), REJECT, "field-name = token (1+ chars)", ()),
    # --- request line / target ---------------------------------------------------------
    ("nul_target", get(b"GET /a\x00b HTTP/1.1"), REJECT, "NUL in target", ("target",)),
    ("ctl_target", get(b"GET /a\x01b HTTP/1.1"), REJECT, "CTL in target", ("target",)),
    ("target_space", get(b"GET /a b HTTP/1.1"), REJECT, "SP in target", ("target",)),
    ("target_del", get(b"GET /a\x7fb HTTP/1.1"), REJECT, "DEL in target", ("target",)),
    ("target_utf8", get(b"GET /caf\xc3\xa9 HTTP/1.1"), REJECT, "non-ASCII in target", ("target",)),
    ("target_0x85", get(b"GET /a\x85 HTTP/1.1"), REJECT, "non-ASCII in target", ("target",)),
    (
        "target_fragment",
        get(b"GET /a#frag HTTP/1.1"),
        POLICY,
        "'#' not allowed in request-target (RFC 9112 3.2 SHOULD 400)",
        ("target",),
    ),
    (
        "target_unsafe",
        get(b'GET /a"<>\\ HTTP/1.1'),
        POLICY,
        "'\"<>\\' not pchar (RFC 3986); encode or 400",
        ("target",),
    ),
    (
        "target_dotdot",
        get(b"GET /linx/a/../b/x HTTP/1.1"),
        POLICY,
        "dot-segments: normalise/refuse before matching /linx/<id>/",
        ("target",),
    ),
    (
        "absolute_form",
        get(b"GET http://evil/ HTTP/1.1"),
        POLICY,
        "RFC 9112 3.2.2: valid, authority overrides Host; proxy must validate",
        ("target", "host"),
    ),
    (
        "asterisk_get",
        get(b"GET * HTTP/1.1"),
        REJECT,
        "asterisk-form only for OPTIONS (RFC 9112 3.2.4)",
        ("target",),
    ),
    (
        "connect",
        get(b"CONNECT evil:443 HTTP/1.1", b"Host: evil:443\r\n"),
        POLICY,
        "valid authority-form; Linx is not a forward proxy",
        ("method", "target"),
    ),
    ("missing_host", get(headers=b""), REJECT, "RFC 9112 3.2: HTTP/1.1 without Host -> 400 MUST", ()),
    (
        "duplicate_host",
        get(headers=b"Host: a\r\nHost: b\r\n"),
        REJECT,
        "RFC 9112 3.2: >1 Host -> 400 MUST",
        ("host",),
    ),
    (
        "host_bad_value",
        get(headers=b"Host: a b/c@d\r\n"),
        REJECT,
        "RFC 9112 3.2: invalid Host value -> 400 MUST",
        ("host",),
    ),
    (
        "no_version",
        b"GET /\r\nHost: x\r\n\r\n",
        REJECT,
        "HTTP/0.9 simple-request followed by fields",
        ("version",),
    ),
    ("http_2_0", get(b"GET / HTTP/2.0"), REJECT, "505/400: not HTTP/1.x", ("version",)),
    (
        "http_1_2",
        get(b"GET / HTTP/1.2"),
        ACCEPT,
        "RFC 9110 2.5: SHOULD treat as HTTP/1.1 (505 is defensible)",
        ("version",),
    ),
    ("http_0_9", get(b"GET / HTTP/0.9"), REJECT, "0.9 has no version/fields", ("version",)),
    ("rtsp_version", get(b"GET / RTSP/1.0"), REJECT, "HTTP-name must be 'HTTP'", ("version",)),
    (
        "lowercase_method",
        get(b"get / HTTP/1.1"),
        POLICY,
        "legal token, case-sensitive, != GET (relay or 501)",
        ("method",),
    ),
    (
        "long_method",
        get(b"X" * 1024 + b" / HTTP/1.1"),
        POLICY,
        "legal token; 501 for unknown method",
        ("method",),
    ),
    ("method_bad_char", get(b"G@T / HTTP/1.1"), REJECT, "'@' not a tchar", ("method",)),
    (
        "upgrade_h2c",
        get(
            headers=HOST + b"Connection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
        ),
        POLICY,
        "h2c smuggling vector: proxy must strip/refuse",
        ("upgrade",),
    ),
    (
        "data_after_close",
        get(headers=HOST + b"Connection: close\r\n") + get(b"GET /2 HTTP/1.1"),
        POLICY,
        "RFC 9112 9.6: ignore requests after 'close'",
        (),
    ),
]
