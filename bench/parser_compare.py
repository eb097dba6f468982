"""Compare request-head parsers for the Linx proxy: httptools (llhttp) vs twisted.web.http.

Run:  /tmp/dev/bin/python bench/parser_compare.py [--quick] [--rounds N] [--ht-iters N]

Three parts, all printed as tables and written to bench/results/parser_compare.json:

1. Speed: ns/us per request head for three realistic heads.
   httptools: fresh parser per request, one reused parser fed one request per feed_data()
   call (keep-alive), and one reused parser fed 100 pipelined requests per call.
   Twisted: HTTPChannel over StringTransport, fresh channel per request and one channel over
   a keep-alive stream, with three request factories (stock Request, minimal Request
   subclass, and a duck-typed non-Request recorder) so the cost can be split into parsing
   versus Request-object construction.
2. Strictness: a corpus of malformed/ambiguous heads run through both parsers, with the
   verdict expected by RFC 9112 / RFC 9110 and SPEC section 5.
3. httptools leniency flags: speed and corpus verdicts with defaults vs explicit strict vs
   each dangerous leniency switched on.

Timing: time.perf_counter_ns around a loop of N iterations, gc disabled during the loop
(like timeit), best and median of R rounds (default 5).  httptools uses N=200k (100k for
the leniency speed runs); Twisted is ~10-30x slower, so its N is calibrated to ~0.2 s per
round (10k..100k) to keep the whole script under ~3 minutes.  The iteration counts used are
printed and stored in the JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from time import perf_counter_ns

import httptools
import twisted
from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser
from twisted.internet.testing import StringTransport
from twisted.web import http
from twisted.web.http_headers import Headers

RESULTS = Path(__file__).resolve().parent / "results" / "parser_compare.json"

# --------------------------------------------------------------------------------------
# Benchmark heads
# --------------------------------------------------------------------------------------

TOKEN = b"lx1.c2VydmljZS1hYmMxMjM.MTcwMDAwMDAwMA.q8Zp0f3kQ9w2m1n7Hc5b4Ra6Ty"

SMALL_GET = (
    b"GET /linx/svc-7f3a9c/api/items?limit=10 HTTP/1.1\r\n"
    b"Host: linx.example.com\r\n"
    b"User-Agent: curl/8.5.0\r\n"
    b"Accept: */*\r\n"
    b"X-Linx-Token: " + TOKEN + b"\r\n"
    b"Connection: keep-alive\r\n"
    b"\r\n"
)

BROWSER_GET = (
    b"GET /linx/svc-7f3a9c/static/js/app.4f9c2b.js?v=20240611 HTTP/1.1\r\n"
    b"Host: linx.example.com\r\n"
    b"Connection: keep-alive\r\n"
    b'sec-ch-ua: "Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99"\r\n'
    b"sec-ch-ua-mobile: ?0\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"
    b" Chrome/124.0.0.0 Safari/537.36\r\n"
    b'sec-ch-ua-platform: "Linux"\r\n'
    b"Accept: */*\r\n"
    b"Sec-Fetch-Site: same-origin\r\n"
    b"Sec-Fetch-Mode: no-cors\r\n"
    b"Sec-Fetch-Dest: script\r\n"
    b"Referer: https://linx.example.com/linx/svc-7f3a9c/dashboard?tab=overview\r\n"
    b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
    b"Accept-Language: en-US,en;q=0.9,de;q=0.8\r\n"
    b'If-None-Match: W/"5e2f-18f0a3c2d10"\r\n'
    b"Cookie: linx_svc-7f3a9c=" + TOKEN + b"; _ga=GA1.1.1234567890.1712345678;"
    b" session=eyJ1c2VyIjoiYWxpY2UiLCJyb2xlIjoiYWRtaW4ifQ.ZmF0LXNpZ25hdHVyZQ;"
    b" theme=dark; csrftoken=Zq3w9XkL2mN8pR4tV6yB1cD5fG7hJ0aS; _gid=GA1.1.987654321.1712345678"
    b"\r\n"
    b"\r\n"
)

POST_BODY = b'{"name":"item-42","qty":3,"tags":["a","b"]}'
POST = (
    b"POST /linx/svc-7f3a9c/api/items HTTP/1.1\r\n"
    b"Host: linx.example.com\r\n"
    b"User-Agent: python-requests/2.32.3\r\n"
    b"Accept-Encoding: gzip, deflate\r\n"
    b"Accept: application/json\r\n"
    b"Connection: keep-alive\r\n"
    b"Content-Type: application/json\r\n"
    b"Authorization: Bearer app-own-token-0123456789abcdef\r\n"
    b"X-Request-Id: 4f1c2a9e-1b7d-4c3e-9a5f-2d8e6b0c7a11\r\n"
    b"X-Linx-Token: " + TOKEN + b"\r\n"
    b"Content-Length: " + str(len(POST_BODY)).encode() + b"\r\n"
    b"\r\n"
) + POST_BODY

HEADS = {
    "small_get": SMALL_GET,
    "browser_get": BROWSER_GET,
    "post_cl": POST,  # includes its 44-byte body: both parsers must frame it
}
HEAD_NHEADERS = {"small_get": 5, "browser_get": 15, "post_cl": 10}

# --------------------------------------------------------------------------------------
# httptools side
# --------------------------------------------------------------------------------------


class HtHead:
    """httptools protocol object that records a request head (and a small body)."""

    __slots__ = ("parser", "url", "headers", "method", "version", "body", "done")

    def __init__(self):
        self.parser = None
        self.url = b""
        self.headers = []
        self.body = []
        self.done = 0

    def on_message_begin(self):
        self.url = b""
        self.headers = []
        self.body = []

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        self.headers.append((name, value))

    def on_headers_complete(self):
        p = self.parser
        self.method = p.get_method()
        self.version = p.get_http_version()

    def on_body(self, data):
        self.body.append(data)

    def on_message_complete(self):
        self.done += 1


LENIENCY_FLAGS = (
    "lenient_headers",
    "lenient_chunked_length",
    "lenient_keep_alive",
    "lenient_transfer_encoding",
    "lenient_version",
    "lenient_data_after_close",
    "lenient_optional_lf_after_cr",
    "lenient_optional_cr_before_lf",
    "lenient_optional_crlf_after_chunk",
    "lenient_spaces_after_chunk_size",
)
ALL_STRICT = dict.fromkeys(LENIENCY_FLAGS, False)
ALL_LENIENT = dict.fromkeys(LENIENCY_FLAGS, True)


# Fresh-per-request loops end each iteration with a "teardown" that breaks the per-connection
# reference cycle (collector <-> parser here; channel <-> transport for Twisted), as closing a
# connection does.  Without it, gc-disabled rounds pile up cyclic garbage and the numbers
# measure cold-memory churn instead of parsing (+60% for httptools on browser_get).


def ht_fresh_loop(head, n, leniencies=None):
    HP = HttpRequestParser
    Coll = HtHead
    if leniencies is None:
        t0 = perf_counter_ns()
        for _ in range(n):
            c = Coll()
            p = c.parser = HP(c)
            p.feed_data(head)
            c.parser = None
        return perf_counter_ns() - t0
    t0 = perf_counter_ns()
    for _ in range(n):
        c = Coll()
        p = c.parser = HP(c)
        p.set_dangerous_leniencies(**leniencies)
        p.feed_data(head)
        c.parser = None
    return perf_counter_ns() - t0


def ht_keepalive_loop(head, n, leniencies=None):
    c = HtHead()
    p = c.parser = HttpRequestParser(c)
    if leniencies is not None:
        p.set_dangerous_leniencies(**leniencies)
    feed = p.feed_data
    t0 = perf_counter_ns()
    for _ in range(n):
        feed(head)
    dt = perf_counter_ns() - t0
    assert c.done == n, (c.done, n)
    return dt


PIPELINE_DEPTH = 100


def ht_pipelined_loop(head, n):
    c = HtHead()
    p = c.parser = HttpRequestParser(c)
    buf = head * PIPELINE_DEPTH
    calls = max(1, n // PIPELINE_DEPTH)
    feed = p.feed_data
    t0 = perf_counter_ns()
    for _ in range(calls):
        feed(buf)
    dt = perf_counter_ns() - t0
    assert c.done == calls * PIPELINE_DEPTH
    # normalise to n requests
    return dt * n // (calls * PIPELINE_DEPTH)


def ht_construct_loop(_head, n):
    HP = HttpRequestParser
    Coll = HtHead
    t0 = perf_counter_ns()
    for _ in range(n):
        c = Coll()
        c.parser = HP(c)
        c.parser = None
    return perf_counter_ns() - t0


# --------------------------------------------------------------------------------------
# Twisted side
# --------------------------------------------------------------------------------------


class StockRequest(http.Request):
    """twisted.web.http.Request as-is; only process() overridden (no response written).

    Everything Twisted does by default still runs: cookie parsing, BytesIO body file,
    query-string parse_qs, POST form parsing check.  process() marks the request done so
    the channel reads the next keep-alive request (what finish() would do, minus writing).
    """

    def process(self):
        self.channel.requestDone(self)


class MinimalRequest(http.Request):
    """Request subclass that records the head and does nothing else."""

    head_length = None
    body = None

    def parseCookies(self):
        pass

    def gotLength(self, length):
        self.head_length = length
        self.body = []

    def handleContentChunk(self, data):
        self.body.append(data)

    def requestReceived(self, command, path, version):
        self.method = command
        self.uri = path
        self.clientproto = version
        self.channel.requestDone(self)


class BareRecorder:
    """Duck-typed request object (not a twisted Request): the cheapest thing HTTPChannel
    accepts as requestFactory output.  Keeps the Headers store that HTTPChannel writes
    header lines into, so what remains is Twisted's line splitting + request-line parse +
    header-name canonicalisation/validation + Headers insert + framing decisions."""

    __slots__ = ("channel", "requestHeaders", "_resp", "length", "body", "head")

    def __init__(self, channel, queued=None):
        self.channel = channel
        self.requestHeaders = Headers()
        self._resp = None

    @property
    def responseHeaders(self):  # only touched for "Connection: close"
        if self._resp is None:
            self._resp = Headers()
        return self._resp

    def parseCookies(self):
        pass

    def gotLength(self, length):
        self.length = length
        self.body = []

    def handleContentChunk(self, data):
        self.body.append(data)

    def requestReceived(self, command, path, version):
        self.head = (command, path, version)
        self.channel.requestDone(self)

    def connectionLost(self, reason):
        pass


TW_FACTORIES = {
    "stock": StockRequest,
    "minimal": MinimalRequest,
    "bare": BareRecorder,
}


def tw_new_channel(factory):
    ch = http.HTTPChannel()
    ch.requestFactory = factory
    ch.makeConnection(StringTransport())
    return ch


def tw_fresh_loop(factory):
    def loop(head, n):
        HC = http.HTTPChannel
        ST = StringTransport
        t0 = perf_counter_ns()
        for _ in range(n):
            ch = HC()
            ch.requestFactory = factory
            t = ST()
            ch.makeConnection(t)
            ch.dataReceived(head)
            t.producer = None  # teardown: break channel <-> transport cycle
        return perf_counter_ns() - t0

    return loop


def tw_setup_loop(head, n):
    HC = http.HTTPChannel
    ST = StringTransport
    t0 = perf_counter_ns()
    for _ in range(n):
        ch = HC()
        ch.requestFactory = MinimalRequest
        t = ST()
        ch.makeConnection(t)
        t.producer = None
    return perf_counter_ns() - t0


def tw_keepalive_loop(factory):
    def loop(head, n):
        ch = tw_new_channel(factory)
        feed = ch.dataReceived
        t0 = perf_counter_ns()
        for _ in range(n):
            feed(head)
        dt = perf_counter_ns() - t0
        assert not ch.requests and not ch.transport.value(), "twisted did not finish requests"
        return dt

    return loop


def tw_request_construct_loop(factory):
    def loop(head, n):
        ch = tw_new_channel(factory)
        t0 = perf_counter_ns()
        for i in range(n):
            factory(ch, i)
        return perf_counter_ns() - t0

    return loop


# --------------------------------------------------------------------------------------
# Timing harness
# --------------------------------------------------------------------------------------


GC_LEFTOVERS = {}


def time_rounds(loop, head, n, rounds, key=None):
    """Return per-iteration ns for each round (gc disabled inside a round).

    Records how many unreachable objects gc found after a round: ~0 means the loop left no
    cyclic garbage behind (so gc-disabled timing is not distorted by it)."""
    per = []
    for _ in range(rounds):
        gc.collect()
        gc.disable()
        try:
            dt = loop(head, n)
        finally:
            gc.enable()
        per.append(dt / n)
        found = gc.collect()
        if key:
            GC_LEFTOVERS[key] = max(GC_LEFTOVERS.get(key, 0), found / n)
    return per


def calibrate(loop, head, target_s, lo, hi):
    probe = 2000
    gc.disable()
    try:
        dt = loop(head, probe)
    finally:
        gc.enable()
    gc.collect()
    n = int(target_s * 1e9 / max(dt / probe, 1))
    return max(lo, min(hi, n))


def sanity_checks():
    """Both parsers must actually see every header of every benchmark head."""
    out = {}
    for name, head in HEADS.items():
        c = HtHead()
        c.parser = HttpRequestParser(c)
        c.parser.feed_data(head)
        assert c.done == 1, name
        ht_n = len(c.headers)
        ch = tw_new_channel(MinimalRequest)
        recs = []
        orig = MinimalRequest.requestReceived

        def rr(self, command, path, version, _recs=recs, _orig=orig):
            _recs.append(self)
            _orig(self, command, path, version)

        MinimalRequest.requestReceived = rr
        try:
            ch.dataReceived(head)
        finally:
            MinimalRequest.requestReceived = orig
        assert len(recs) == 1 and not ch.transport.value(), name
        tw_n = sum(len(v) for _k, v in recs[0].requestHeaders.getAllRawHeaders())
        assert ht_n == tw_n == HEAD_NHEADERS[name], (name, ht_n, tw_n)
        if name == "post_cl":
            assert b"".join(c.body) == b"".join(recs[0].body) == POST_BODY
        out[name] = {"bytes": len(head), "headers": ht_n}
    return out


def run_speed(args):
    rounds = args.rounds
    ht_n = args.ht_iters
    variants = [
        # (key, label, loop, kind)
        ("ht_fresh", "httptools fresh parser/request", ht_fresh_loop, "ht"),
        ("ht_keepalive", "httptools reused parser, 1 req/feed", ht_keepalive_loop, "ht"),
        ("ht_pipelined", f"httptools reused, {PIPELINE_DEPTH} req/feed", ht_pipelined_loop, "ht"),
        ("ht_construct", "  (httptools parser+collector ctor only)", ht_construct_loop, "ht"),
        ("tw_fresh_stock", "twisted fresh channel, stock Request", tw_fresh_loop(StockRequest), "tw"),
        ("tw_fresh_min", "twisted fresh channel, minimal Request", tw_fresh_loop(MinimalRequest), "tw"),
        ("tw_fresh_bare", "twisted fresh channel, bare recorder", tw_fresh_loop(BareRecorder), "tw"),
        ("tw_setup", "  (twisted channel+transport setup only)", tw_setup_loop, "tw"),
        ("tw_ka_stock", "twisted keep-alive, stock Request", tw_keepalive_loop(StockRequest), "tw"),
        ("tw_ka_min", "twisted keep-alive, minimal Request", tw_keepalive_loop(MinimalRequest), "tw"),
        ("tw_ka_bare", "twisted keep-alive, bare recorder", tw_keepalive_loop(BareRecorder), "tw"),
        (
            "tw_req_ctor_min",
            "  (MinimalRequest(channel) ctor only)",
            tw_request_construct_loop(MinimalRequest),
            "tw",
        ),
        (
            "tw_req_ctor_bare",
            "  (BareRecorder(channel) ctor only)",
            tw_request_construct_loop(BareRecorder),
            "tw",
        ),
    ]
    results = {}
    for key, label, loop, kind in variants:
        results[key] = {"label": label}
        for hname, head in HEADS.items():
            if kind == "ht":
                n = ht_n
            else:
                n = calibrate(loop, head, args.tw_target_s, args.tw_min_iters, args.tw_max_iters)
            per = time_rounds(loop, head, n, rounds, key=f"{key}/{hname}")
            results[key][hname] = {
                "iterations": n,
                "rounds": rounds,
                "best_us": min(per) / 1000,
                "median_us": statistics.median(per) / 1000,
                "all_us": [p / 1000 for p in per],
                "cyclic_garbage_objs_per_iter": GC_LEFTOVERS.get(f"{key}/{hname}"),
            }
            print(
                f"  .. {key:18s} {hname:12s} n={n:7d} best={min(per) / 1000:7.3f} us",
                file=sys.stderr,
                flush=True,
            )
    return results


def run_leniency_speed(args):
    """Default vs explicit all-False vs all-True leniencies.  The differences are small, so the
    modes are interleaved round by round (a transient load spike hits all modes alike)."""
    modes = [("default", None), ("explicit_all_false", ALL_STRICT), ("all_lenient", ALL_LENIENT)]
    n = args.lenient_iters
    out = {mode: {} for mode, _ in modes}
    for hname, head in HEADS.items():
        per = {(mode, kind): [] for mode, _ in modes for kind in ("ka", "fresh")}
        for _ in range(args.rounds):
            for mode, kw in modes:
                per[(mode, "ka")] += time_rounds(lambda h, n, kw=kw: ht_keepalive_loop(h, n, kw), head, n, 1)
                per[(mode, "fresh")] += time_rounds(lambda h, n, kw=kw: ht_fresh_loop(h, n, kw), head, n, 1)
        for mode, _ in modes:
            ka, fr = per[(mode, "ka")], per[(mode, "fresh")]
            out[mode][hname] = {
                "keepalive_best_us": min(ka) / 1000,
                "keepalive_median_us": statistics.median(ka) / 1000,
                "fresh_best_us": min(fr) / 1000,
                "fresh_median_us": statistics.median(fr) / 1000,
                "iterations": n,
                "rounds": args.rounds,
            }
        print(f"  .. leniency speed {hname} done", file=sys.stderr, flush=True)
    return out


# --------------------------------------------------------------------------------------
# Strictness corpus
# --------------------------------------------------------------------------------------

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


def _short(b, limit=18):
    s = repr(b)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _fmt_fields(m, show):
    parts = []
    hdrs = m.get("headers", [])
    for f in show:
        if f in ("target", "method", "version"):
            parts.append(f"{f}={_short(m.get(f))}")
        else:
            vals = [v for k, v in hdrs if k.lower() == f.encode()]
            parts.append(f"{f}={'|'.join(_short(v, 14) for v in vals) if vals else '-'}")
    return " ".join(parts)


def describe(verdict, m, nxt, err, show, stage=None):
    """One-line human description of what a parser made of a case.

    "REJECT late" = the error came after the parser had already reported a complete head
    (httptools: on_headers_complete fired; twisted: gotLength called).
    """
    if verdict == "REJECT":
        word = "REJECT late" if stage == "body" else "REJECT"
        if err:
            err = err.replace("HttpParserError: ", "").replace("HttpParser", "")
        return f"{word} ({err})" if err else word
    if verdict == "STALL":
        return "STALL (no request, no error: waits for more bytes)"
    bits = ["ACCEPT"]
    if m.get("upgrade"):
        bits[0] = "ACCEPT+UPGRADE"
    bits.append(m["framing"])
    if m["body"]:
        bits.append(f"body={_short(m['body'], 16)}")
    if not m["complete"]:
        bits.append("awaiting body")
    f = _fmt_fields(m, show)
    if f:
        bits.append(f)
    if nxt:
        bits.append(f"next: {nxt}")
    return " ".join(bits)


class HtRecorder:
    def __init__(self):
        self.parser = None
        self.msgs = []
        self.cur = None

    def on_message_begin(self):
        self.cur = {
            "target": b"",
            "headers": [],
            "body": b"",
            "chunks": 0,
            "head_done": False,
            "complete": False,
        }
        self.msgs.append(self.cur)

    def on_url(self, url):
        self.cur["target"] += url

    def on_header(self, name, value):
        self.cur["headers"].append((name, value))

    def on_headers_complete(self):
        p = self.parser
        self.cur.update(
            head_done=True,
            method=p.get_method(),
            version=p.get_http_version(),
            keep_alive=p.should_keep_alive(),
            upgrade=p.should_upgrade(),
        )

    def on_body(self, body):
        self.cur["body"] += body

    def on_chunk_header(self):
        self.cur["chunks"] += 1

    def on_message_complete(self):
        self.cur["complete"] = True


def run_httptools_case(data, leniencies=None):
    rec = HtRecorder()
    p = rec.parser = HttpRequestParser(rec)
    if leniencies:
        p.set_dangerous_leniencies(**leniencies)
    err = None
    upgrade_at = None
    try:
        p.feed_data(data)
    except HttpParserUpgrade as e:
        upgrade_at = e.args[0] if e.args else None
    except HttpParserError as e:
        err = f"{type(e).__name__}: {e}"
    msgs = rec.msgs
    if not msgs or not msgs[0]["head_done"]:
        verdict = "REJECT" if err else "STALL"
        return {"verdict": verdict, "error": err, "messages": _jsonable(msgs)}, None, None
    m = msgs[0]
    if err and not m["complete"] and len(msgs) == 1:
        return {"verdict": "REJECT", "error": err, "stage": "body", "messages": _jsonable(msgs)}, m, None
    if m["chunks"]:
        m["framing"] = "chunked"
    elif m["body"]:
        m["framing"] = f"CL={len(m['body'])}" if m["complete"] else "length-framed"
    else:
        m["framing"] = "no body"
    nxt = None
    if upgrade_at is not None:
        nxt = f"tunnel from byte {upgrade_at}"
    elif len(msgs) > 1:
        m2 = msgs[1]
        if err and not m2["head_done"]:
            nxt = f"leftover {_short(data[-12:], 14)} -> error"
        else:
            nxt = f"2nd request {m2.get('method')} {_short(m2['target'], 14)}"
    elif err:
        nxt = f"leftover -> error ({err.split(': ', 1)[-1]})"
    res = {
        "verdict": "ACCEPT",
        "error": err,
        "upgrade_offset": upgrade_at,
        "messages": _jsonable(msgs),
        "next": nxt,
    }
    return res, m, nxt


class TwRecorder(http.Request):
    """Strictness-run request: records what Twisted handed to the application."""

    def parseCookies(self):
        pass

    def gotLength(self, length):
        self.rec = {
            "head_done": True,
            "complete": False,
            "length": length,
            "body": b"",
            "headers": [(k, v) for k, vs in self.requestHeaders.getAllRawHeaders() for v in vs],
        }
        self.channel._linx_recs.append(self.rec)

    def handleContentChunk(self, data):
        self.rec["body"] += data

    def requestReceived(self, command, path, version):
        self.rec.update(complete=True, method=command, target=path, version=version)
        self.channel.requestDone(self)


def run_twisted_case(data):
    ch = http.HTTPChannel()
    ch.requestFactory = TwRecorder
    ch._linx_recs = []
    t = StringTransport()
    ch.makeConnection(t)
    exc = None
    try:
        ch.dataReceived(data)
    except Exception as e:  # noqa: BLE001 - any crash is a result here
        exc = f"{type(e).__name__}: {e}"
    out = t.value()
    bad = b" 400 " in out
    recs = ch._linx_recs
    if exc:
        return {"verdict": "REJECT", "error": f"exception {exc}", "messages": _jsonable(recs)}, None, None
    if not recs:
        verdict = "REJECT" if bad else "STALL"
        return {"verdict": verdict, "error": "400 Bad Request" if bad else None, "messages": []}, None, None
    m = recs[0]
    if bad and not m["complete"]:
        return (
            {"verdict": "REJECT", "error": "400 Bad Request", "stage": "body", "messages": _jsonable(recs)},
            m,
            None,
        )
    if not m["complete"]:
        # head accepted; fill in the request line from the channel (not yet dispatched)
        m.update(
            method=getattr(ch, "_command", None),
            target=getattr(ch, "_path", None),
            version=getattr(ch, "_version", None),
        )
        dec = ch._transferDecoder
        if isinstance(dec, http._ChunkedTransferDecoder) and dec.state == "BODY":
            m["awaiting"] = f"chunk of {dec.length} bytes"
    m["framing"] = "chunked" if m["length"] is None else (f"CL={m['length']}" if m["length"] else "no body")
    nxt = None
    if len(recs) > 1:
        m2 = recs[1]
        nxt = f"2nd request {m2.get('method')} {_short(m2.get('target'), 14)}"
    elif bad:
        nxt = "leftover -> 400"
    elif ch._buffer:
        nxt = f"{len(ch._buffer)} leftover bytes buffered as next request"
    if m.get("awaiting"):
        nxt = (nxt + "; " if nxt else "") + "waiting for " + m["awaiting"]
    return {"verdict": "ACCEPT", "error": None, "messages": _jsonable(recs), "next": nxt}, m, nxt


def _jsonable(x):
    if isinstance(x, bytes):
        return x.decode("latin-1")
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    return x


def run_corpus(ht_leniencies=None, with_twisted=True):
    rows = []
    for name, data, expect, why, show in CORPUS:
        hres, hm, hn = run_httptools_case(data, ht_leniencies)
        hres["summary"] = describe(hres["verdict"], hm or {}, hn, hres.get("error"), show, hres.get("stage"))
        row = {"case": name, "expect": expect, "why": why, "raw": _jsonable(data), "httptools": hres}
        if with_twisted:
            tres, tm, tn = run_twisted_case(data)
            tres["summary"] = describe(
                tres["verdict"], tm or {}, tn, tres.get("error"), show, tres.get("stage")
            )
            row["twisted"] = tres
        rows.append(row)
    return rows


def tally(rows, parser):
    acc_bad = [r["case"] for r in rows if r["expect"] == REJECT and r[parser]["verdict"] == "ACCEPT"]
    stall_bad = [r["case"] for r in rows if r["expect"] == REJECT and r[parser]["verdict"] == "STALL"]
    false_rej = [r["case"] for r in rows if r["expect"] == ACCEPT and r[parser]["verdict"] != "ACCEPT"]
    policy_acc = [r["case"] for r in rows if r["expect"] == POLICY and r[parser]["verdict"] == "ACCEPT"]
    policy_rej = [r["case"] for r in rows if r["expect"] == POLICY and r[parser]["verdict"] != "ACCEPT"]
    return {
        "accepted_should_reject": acc_bad,
        "stalled_should_reject": stall_bad,
        "rejected_but_valid": false_rej,
        "policy_accepted_needs_validator": policy_acc,
        "policy_rejected_by_parser": policy_rej,
    }


# --------------------------------------------------------------------------------------
# Printing
# --------------------------------------------------------------------------------------


def _cell(s, w):
    return s if len(s) <= w else s[: w - 1] + "~"


def print_speed(speed, ht_iters):
    hn = list(HEADS)
    print("\n=== 1. SPEED: us per request head (best of rounds / median) ===")
    sizes = "  ".join(f"{k}={len(v)}B/{HEAD_NHEADERS[k]}hdr" for k, v in HEADS.items())
    print(f"heads: {sizes}  (post_cl includes its {len(POST_BODY)}-byte body)")
    hdr = f"{'variant':44s}" + "".join(f"{h:>22s}" for h in hn)
    print(hdr)
    print("-" * len(hdr))
    for row in speed.values():
        cells = "".join(f"{row[h]['best_us']:9.3f} / {row[h]['median_us']:7.3f}  " for h in hn)
        print(f"{row['label']:44s}{cells}")
    iters = {k: {h: v[h]["iterations"] for h in hn} for k, v in speed.items()}
    print(
        f"iterations/round: httptools {ht_iters}; twisted calibrated to ~0.2 s/round: "
        + ", ".join(
            f"{k}={min(v.values())}-{max(v.values())}" for k, v in iters.items() if k.startswith("tw")
        )
    )

    leftovers = [
        f"{k}/{h}={v[h]['cyclic_garbage_objs_per_iter']:.0f}"
        for k, v in speed.items()
        for h in hn
        if (v[h]["cyclic_garbage_objs_per_iter"] or 0) >= 0.5
    ]
    print(
        "cyclic garbage left per iteration (gc disabled in rounds): "
        + (", ".join(leftovers) if leftovers else "none")
        + "; all other variants 0"
    )

    print("\n--- Twisted cost breakdown (best-of, us) ---")
    print(f"{'':44s}" + "".join(f"{h:>14s}" for h in hn))

    def line(label, vals):
        print(f"{label:44s}" + "".join(f"{v:14.3f}" for v in vals))

    b = {k: [speed[k][h]["best_us"] for h in hn] for k in speed}
    line("keep-alive stock Request (A)", b["tw_ka_stock"])
    line("keep-alive minimal Request (B)", b["tw_ka_min"])
    line("keep-alive bare recorder = parse cost (C)", b["tw_ka_bare"])
    line(
        "  A-B: stock Request extras (cookies,BytesIO,qs)",
        [x - y for x, y in zip(b["tw_ka_stock"], b["tw_ka_min"], strict=True)],
    )
    line(
        "  B-C: Request object construction",
        [x - y for x, y in zip(b["tw_ka_min"], b["tw_ka_bare"], strict=True)],
    )
    line(
        "  (direct: Request ctor - bare ctor)",
        [x - y for x, y in zip(b["tw_req_ctor_min"], b["tw_req_ctor_bare"], strict=True)],
    )
    line("fresh channel minimal Request", b["tw_fresh_min"])
    line(
        "  minus channel+transport setup",
        [x - y for x, y in zip(b["tw_fresh_min"], b["tw_setup"], strict=True)],
    )
    line("httptools keep-alive (D)", b["ht_keepalive"])
    line("httptools fresh parser", b["ht_fresh"])
    line(
        "ratio C/D (twisted parse-only vs httptools)",
        [x / y for x, y in zip(b["tw_ka_bare"], b["ht_keepalive"], strict=True)],
    )
    line(
        "ratio B/D (twisted min Request vs httptools)",
        [x / y for x, y in zip(b["tw_ka_min"], b["ht_keepalive"], strict=True)],
    )
    line(
        "ratio A/D (twisted stock vs httptools)",
        [x / y for x, y in zip(b["tw_ka_stock"], b["ht_keepalive"], strict=True)],
    )


def print_matrix(rows):
    print("\n=== 2. STRICTNESS: corpus (httptools defaults; twisted HTTPChannel) ===")
    print(
        "expect: reject = RFC 9112/9110 MUST or SPEC 5 requires 400; accept = valid;"
        " policy = valid syntax, validator decides"
    )
    w = 62
    print(f"{'case':19s}|{'expect':7s}| {'httptools':{w}s}| twisted")
    print("-" * (19 + 8 + w + 2 + w + 2))
    for r in rows:
        mark_h = "!" if (r["expect"] == REJECT and r["httptools"]["verdict"] == "ACCEPT") else " "
        mark_t = "!" if (r["expect"] == REJECT and r["twisted"]["verdict"] == "ACCEPT") else " "
        print(
            f"{r['case']:19s}|{r['expect']:7s}|{mark_h}{_cell(r['httptools']['summary'], w):{w}s}"
            f"|{mark_t}{_cell(r['twisted']['summary'], w)}"
        )
    print("('!' = accepted although it must be rejected)")


def print_tallies(tallies, n):
    print(f"\n--- counts over {n} cases ---")
    keys = [
        ("accepted_should_reject", "accepted but should be rejected (RFC 9112/SPEC)"),
        ("stalled_should_reject", "stalled (no 400) but SPEC wants 400"),
        ("rejected_but_valid", "rejected although valid"),
        ("policy_accepted_needs_validator", "policy cases accepted (validator decides)"),
        ("policy_rejected_by_parser", "policy cases the parser refuses"),
    ]
    for k, label in keys:
        for p in ("httptools", "twisted"):
            lst = tallies[p][k]
            print(f"{label:50s} {p:9s} {len(lst):2d}: {', '.join(lst) or '-'}")


def print_validator_list(rows):
    print("\n=== VALIDATION LAYER: cases httptools (defaults) ACCEPTS that Linx must handle ===")
    for r in rows:
        h = r["httptools"]
        if h["verdict"] == "ACCEPT" and r["expect"] in (REJECT, POLICY):
            tag = "400" if r["expect"] == REJECT else "policy"
            print(f"  [{tag:6s}] {r['case']:18s} {r['why']}")
            print(f"           httptools: {h['summary']}")


def print_leniency(len_rows, len_speed, base_rows):
    print("\n=== 3. httptools leniency settings ===")
    base = {r["case"]: r["httptools"]["verdict"] for r in base_rows}
    print(
        "defaults == explicit all-False on every case:",
        all(
            r["httptools"]["verdict"] == base[r["case"]]
            and r["httptools"]["summary"] == b["httptools"]["summary"]
            for r, b in zip(len_rows["explicit_all_false"], base_rows, strict=True)
        ),
    )
    print(
        "(llhttp_init() zeroes all lenient flags: the defaults ARE the strictest setting "
        "httptools exposes; every flag only loosens)"
    )
    for mode, rows in len_rows.items():
        if mode == "explicit_all_false":
            continue
        flips = []
        for r, b in zip(rows, base_rows, strict=True):
            v0, v1 = base[r["case"]], r["httptools"]["verdict"]
            if v0 != v1:
                flips.append(f"{r['case']}({v0}->{v1})")
            elif r["httptools"]["summary"] != b["httptools"]["summary"]:
                flips.append(f"{r['case']}(detail: {r['httptools']['summary']})")
        print(f"  {mode:36s} changes {len(flips):2d}: {', '.join(flips) or '-'}")
    it = next(iter(next(iter(len_speed.values())).values()))["iterations"]
    print(
        f"\nspeed, us/request (best of rounds, {it} iterations/round; ka = reused parser, "
        "fresh = new parser + set_dangerous_leniencies() call per request):"
    )
    hn = list(HEADS)
    print(f"{'mode':22s}" + "".join(f"{h + ' ka':>16s}{h + ' fresh':>19s}" for h in hn))
    for mode, d in len_speed.items():
        print(
            f"{mode:22s}"
            + "".join(f"{d[h]['keepalive_best_us']:16.3f}{d[h]['fresh_best_us']:19.3f}" for h in hn)
        )
    print(
        "(modes interleaved per round; fresh includes the set_dangerous_leniencies() call "
        "itself, a 10-kwarg Python call)"
    )


# --------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--ht-iters", type=int, default=200_000)
    ap.add_argument(
        "--tw-target-s",
        type=float,
        default=0.2,
        help="target seconds per Twisted round (iterations calibrated)",
    )
    ap.add_argument("--tw-min-iters", type=int, default=10_000)
    ap.add_argument("--tw-max-iters", type=int, default=100_000)
    ap.add_argument(
        "--lenient-iters",
        type=int,
        default=100_000,
        help="iterations per round for the httptools leniency speed runs",
    )
    ap.add_argument("--quick", action="store_true", help="tiny run for smoke testing")
    ap.add_argument("--no-speed", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.ht_iters, args.tw_target_s, args.tw_min_iters = 2, 5000, 0.02, 1000
        args.tw_max_iters = args.lenient_iters = 5000

    t_start = time.monotonic()
    sanity = sanity_checks()

    rows = run_corpus()
    tallies = {p: tally(rows, p) for p in ("httptools", "twisted")}
    len_rows = {
        "explicit_all_false": run_corpus(ALL_STRICT, with_twisted=False),
        "all_lenient": run_corpus(ALL_LENIENT, with_twisted=False),
    }
    for flag in LENIENCY_FLAGS:
        len_rows[flag] = run_corpus({flag: True}, with_twisted=False)

    speed = len_speed = None
    section_s = {"strictness": time.monotonic() - t_start}
    if not args.no_speed:
        t0 = time.monotonic()
        speed = run_speed(args)
        section_s["speed"] = time.monotonic() - t0
        t0 = time.monotonic()
        len_speed = run_leniency_speed(args)
        section_s["leniency_speed"] = time.monotonic() - t0

    print(
        f"python {platform.python_version()}  httptools {httptools.__version__}  "
        f"twisted {twisted.__version__}  {platform.machine()}"
    )
    if speed:
        print_speed(speed, args.ht_iters)
    print_matrix(rows)
    print_tallies(tallies, len(rows))
    print_validator_list(rows)
    if len_speed:
        print_leniency(len_rows, len_speed, rows)
    elapsed = time.monotonic() - t_start
    print(
        f"\ntotal runtime {elapsed:.1f} s (" + ", ".join(f"{k} {v:.1f} s" for k, v in section_s.items()) + ")"
    )

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "env": {
            "python": platform.python_version(),
            "httptools": httptools.__version__,
            "twisted": twisted.__version__,
            "machine": platform.machine(),
            "platform": platform.platform(),
        },
        "args": vars(args),
        "heads": {k: {"raw": v.decode("latin-1"), **sanity[k]} for k, v in HEADS.items()},
        "speed": speed,
        "strictness": {"rows": rows, "tallies": tallies},
        "leniency": {
            "corpus_verdicts": {
                mode: {r["case"]: r["httptools"]["verdict"] for r in rs} for mode, rs in len_rows.items()
            },
            "speed": len_speed,
        },
        "validator_cases_httptools": [
            {
                "case": r["case"],
                "expect": r["expect"],
                "why": r["why"],
                "httptools": r["httptools"]["summary"],
            }
            for r in rows
            if r["httptools"]["verdict"] == "ACCEPT" and r["expect"] in (REJECT, POLICY)
        ],
        "runtime_s": elapsed,
    }
    RESULTS.write_text(json.dumps(doc, indent=1, default=str))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
