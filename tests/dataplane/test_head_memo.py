"""Identical heads are parsed once and what is derived from them alone is made once, while
everything that differs per request (client address, request id, cookies, framing, rewriting)
is still applied per request."""

from __future__ import annotations

import pytest

from dataplane import forwarding
from dataplane.http_head import (
    Framing,
    HeadError,
    HeadMemo,
    parse_request_head,
    parse_response_head,
)

REQ = b"GET /a HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nX-Forwarded-For: 9.9.9.9\r\n\r\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nServer: s\r\n\r\n"


def test_an_identical_request_head_is_parsed_once():
    first = parse_request_head(REQ, 100)
    assert parse_request_head(bytes(REQ), 100) is first  # equal bytes, not the same object
    other = parse_request_head(REQ.replace(b"/a", b"/b"), 100)
    assert other is not first and other.target == b"/b"


def test_the_header_limit_is_part_of_the_key():
    head = b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n"
    assert parse_request_head(head, 100).host == b"h"
    with pytest.raises(HeadError) as err:
        parse_request_head(head, 1)
    assert err.value.status == 431


def test_refused_heads_are_never_kept():
    bad = b"GET / HTTP/1.1\r\nHost: h\r\nHost: i\r\n\r\n"
    for _ in range(2):
        with pytest.raises(HeadError) as err:
            parse_request_head(bad, 100)
        assert err.value.code == "bad_host"


def test_the_memo_is_bounded():
    memo = HeadMemo(entries=2, max_bytes=10)
    memo.put(b"a", 1)
    memo.put(b"b", 2)
    assert memo.get(b"a") == 1
    memo.put(b"c", 3)  # full: starts over
    assert memo.get(b"a") is None and memo.get(b"c") == 3
    memo.put(b"x" * 11, 4)  # too long to keep
    assert memo.get(b"x" * 11) is None


def test_a_response_to_head_is_kept_apart():
    get = parse_response_head(RESP, b"GET")
    head = parse_response_head(RESP, b"HEAD")
    assert get.framing == Framing.LENGTH and head.framing == Framing.NONE
    assert parse_response_head(RESP, b"GET") is get


def _upstream(req, **kw):
    args = dict(cookies=[], client_ip=b"1.2.3.4", scheme=b"http", prefix=None, trusted=False, websocket=False)
    args.update(kw)
    return forwarding.upstream_request_head(req, b"/a", **args)


def test_upstream_heads_from_a_shared_head_differ_where_requests_do():
    req = parse_request_head(REQ, 100)
    one = _upstream(req, request_id=b"r1", cookies=[b"a=1"])
    two = _upstream(req, client_ip=b"5.6.7.8", request_id=b"r2")
    assert b"X-Request-Id: r1\r\n" in one and b"Cookie: a=1\r\n" in one
    assert b"X-Forwarded-For: 1.2.3.4\r\n" in one
    assert b"X-Request-Id: r2\r\n" in two and b"Cookie" not in two
    assert b"X-Forwarded-For: 5.6.7.8\r\n" in two
    # trust is part of the memo's key: a trusted peer's X-Forwarded-For is extended
    trusted = _upstream(req, trusted=True, request_id=b"r3")
    assert b"X-Forwarded-For: 9.9.9.9, 1.2.3.4\r\n" in trusted
    assert b"X-Forwarded-For: 1.2.3.4\r\n" in _upstream(req, request_id=b"r4")


def test_head_parts_are_kept_per_client_and_every_input_of_the_head():
    req = parse_request_head(REQ, 100)
    args = dict(cookies=[], client_ip=b"1.2.3.4", scheme=b"http", prefix=None, trusted=False)
    first = forwarding.upstream_request_head_around(req, b"/a", websocket=False, request_id=True, **args)
    again = forwarding.upstream_request_head_around(req, b"/a", websocket=False, request_id=True, **args)
    assert again is first  # a client opening a connection per request: made once
    variants = [
        dict(args, client_ip=b"5.6.7.8"),
        dict(args, cookies=[b"a=1"]),
        dict(args, scheme=b"https"),
        dict(args, prefix=b"/linx/lnx_a"),
        dict(args, trusted=True),
    ]
    heads = {b"".join(first)}
    for kw in variants:
        heads.add(
            b"".join(
                forwarding.upstream_request_head_around(req, b"/a", websocket=False, request_id=True, **kw)
            )
        )
    heads.add(
        b"".join(
            forwarding.upstream_request_head_around(req, b"/b", websocket=False, request_id=True, **args)
        )
    )
    heads.add(
        b"".join(forwarding.upstream_request_head_around(req, b"/a", websocket=True, request_id=True, **args))
    )
    heads.add(
        b"".join(
            forwarding.upstream_request_head_around(req, b"/a", websocket=False, request_id=False, **args)
        )
    )
    assert len(heads) == 9  # each input changes the head
    for n in range(forwarding._AROUND_PER_HEAD * 2):  # bounded however many clients
        forwarding.upstream_request_head_around(
            req,
            b"/a",
            websocket=False,
            request_id=True,
            **dict(args, client_ip=b"10.0.%d.%d" % divmod(n, 256)),
        )
    assert len(req.memo["around"]) <= forwarding._AROUND_PER_HEAD


def test_other_x_forwarded_fields_go_on_from_a_trusted_peer_only():
    req = parse_request_head(
        b"GET /a HTTP/1.1\r\nHost: h\r\nX-Forwarded-Port: 443\r\nX-Forwarded-Ssl: on\r\n\r\n", 100
    )
    untrusted, trusted = _upstream(req), _upstream(req, trusted=True)
    assert b"X-Forwarded-Port" not in untrusted and b"X-Forwarded-Ssl" not in untrusted
    assert b"X-Forwarded-Port: 443\r\n" in trusted and b"X-Forwarded-Ssl: on\r\n" in trusted


def test_client_heads_from_a_shared_response_follow_each_request():
    resp = parse_response_head(RESP, b"GET")
    plain = forwarding.client_response_head(resp, framing=Framing.LENGTH, keep_alive=True, extra=[])
    close = forwarding.client_response_head(resp, framing=Framing.LENGTH, keep_alive=False, extra=[])
    cookie = forwarding.client_response_head(
        resp, framing=Framing.LENGTH, keep_alive=True, extra=[b"Set-Cookie: linx_t=1\r\n"]
    )
    assert b"Connection: close" not in plain and b"Connection: close\r\n" in close
    assert b"Set-Cookie: linx_t=1\r\n" in cookie and b"Set-Cookie" not in plain
    # the proxy's line is added to the memoised head, which stays as it was for the next answer
    fields = lambda head: sorted(parse_response_head(head, b"GET").headers)  # noqa: E731
    assert fields(cookie) == sorted([*fields(plain), (b"Set-Cookie", b"linx_t=1")])
    closing = forwarding.client_response_head(
        resp, framing=Framing.LENGTH, keep_alive=False, extra=[b"Set-Cookie: linx_t=2\r\n"]
    )
    assert fields(closing) == sorted([*fields(close), (b"Set-Cookie", b"linx_t=2")])
    assert forwarding.client_response_head(resp, framing=Framing.LENGTH, keep_alive=True, extra=[]) == plain
    rewrite = forwarding.PrefixRewrite(b"/linx/lnx_x", ("127.0.0.1", 80), b"/a")
    # nothing to rewrite in this head: the same bytes as without a rewrite
    assert (
        forwarding.client_response_head(
            resp, framing=Framing.LENGTH, keep_alive=True, extra=[], rewrite=rewrite
        )
        == plain
    )


def test_a_rewritten_location_never_leaks_into_an_unrewritten_answer():
    resp = parse_response_head(b"HTTP/1.1 302 Found\r\nLocation: /next\r\nContent-Length: 0\r\n\r\n", b"GET")
    rewrite = forwarding.PrefixRewrite(b"/linx/lnx_x", ("127.0.0.1", 80), b"/a")
    kw = dict(framing=Framing.LENGTH, keep_alive=True, extra=[])
    rewritten = forwarding.client_response_head(resp, rewrite=rewrite, **kw)
    assert b"Location: /linx/lnx_x/next\r\n" in rewritten
    assert b"Location: /next\r\n" in forwarding.client_response_head(resp, **kw)
    assert b"Location: /linx/lnx_x/next\r\n" in forwarding.client_response_head(resp, rewrite=rewrite, **kw)
