"""SPEC section 7, staying under the prefix: ``forwarding.PrefixRewrite`` as a pure function,
and the relay applying it only to path-routed services with the prefix stripped."""

from __future__ import annotations

import pytest

from dataplane.forwarding import PrefixRewrite
from tests.dataplane.test_relay_memory import Harness, status_of

P = b"/linx/lnx_abc"


def rw(request_path: bytes = b"/a/b", target=("10.1.2.3", 8888)) -> PrefixRewrite:
    return PrefixRewrite(P, target, request_path)


@pytest.mark.parametrize(
    "value,expected",
    [
        (b"/lab?", P + b"/lab?"),
        (b"/", P + b"/"),
        (P + b"/tree", P + b"/tree"),  # already under the prefix: not doubled
        (P, P),
        (b"/linx/lnx_abcdef/x", P + b"/linx/lnx_abcdef/x"),  # a sibling id is not "under"
        (b"lab?", b"lab?"),  # relative: the browser resolves it under the prefix already
        (b"../up", b"../up"),
        (b"//cdn.example/x.js", b"//cdn.example/x.js"),
        (b"//10.1.2.3:8888/x", P + b"/x"),  # scheme-relative, naming the container
        (b"//10.1.2.3:9999/x", b"//10.1.2.3:9999/x"),
        (b"ftp://10.1.2.3:8888/x", b"ftp://10.1.2.3:8888/x"),
        (b"https://example.org/login", b"https://example.org/login"),
        (b"http://10.1.2.3:8888/lab?x=1", P + b"/lab?x=1"),  # the container's own address
        (b"HTTP://10.1.2.3:8888", P + b"/"),
        (b"http://10.1.2.3:8888?x", P + b"/?x"),
        (b"http://10.1.2.3:9999/lab", b"http://10.1.2.3:9999/lab"),  # another port
        (b"http://10.1.2.3/lab", P + b"/lab"),  # the address alone still names the container
        (b"https://10.1.2.3?x", P + b"/?x"),
    ],
)
def test_location(value, expected):
    assert rw().location(value) == expected


def test_location_of_an_ipv6_container_on_port_80():
    r = PrefixRewrite(P, ("fd00::5", 80), b"/")
    assert r.location(b"http://[fd00::5]/x") == P + b"/x"
    assert r.location(b"http://[FD00::5]:80/x") == P + b"/x"


@pytest.mark.parametrize(
    "value,request_path,expected",
    [
        (b"sid=1; Path=/; HttpOnly", b"/", b"sid=1; Path=" + P + b"/; HttpOnly"),
        (b"sid=1", b"/a/b", b"sid=1; Path=" + P + b"/a"),  # absent: the app's default path
        (b"sid=1", b"/login", b"sid=1; Path=" + P + b"/"),
        (b"sid=1; Path=/lab; Secure", b"/", b"sid=1; Path=" + P + b"/lab; Secure"),
        (b"sid=1; path=" + P + b"/x", b"/", b"sid=1; Path=" + P + b"/x"),
        (b"sid=1; Domain=.example.test; Path=/", b"/", b"sid=1; Path=" + P + b"/"),
        (b"sid=1; Path=relative", b"/a/b", b"sid=1; Path=" + P + b"/a"),
        (b"sid=1; Path=/a; Path=/b", b"/", b"sid=1; Path=" + P + b"/b"),  # the last one counts
    ],
)
def test_set_cookie(value, request_path, expected):
    assert rw(request_path).set_cookie(value) == expected


def _response_through(h: Harness, head: bytes, rest: bytes = b"/a/b") -> tuple[bytes, bytes]:
    proto, tr = h.client()
    proto.dataReceived(h.request(rest))
    up, utr = h.upstream()
    up.dataReceived(head)
    return utr.value(), tr.value()


HEAD = (
    b"HTTP/1.1 302 Found\r\nLocation: /lab?\r\nContent-Location: http://127.0.0.1:7001/x\r\n"
    b"Set-Cookie: app=1; Path=/; Domain=example.test\r\nContent-Length: 0\r\n\r\n"
)


def test_path_routed_stripped_service_stays_under_the_prefix():
    h = Harness()
    sent, out = _response_through(h, HEAD)
    prefix = b"/linx/" + h.svc.service_id.encode()
    assert sent.startswith(b"GET /a/b HTTP/1.1\r\n")
    assert status_of(out) == 302
    assert b"\r\nLocation: " + prefix + b"/lab?\r\n" in out
    assert b"\r\nContent-Location: " + prefix + b"/x\r\n" in out
    assert b"\r\nSet-Cookie: app=1; Path=" + prefix + b"/\r\n" in out


def test_keep_prefix_sends_the_whole_path_and_rewrites_nothing():
    h = Harness()
    h.svc = h.svc.with_changes(strip_prefix=False)
    h.load(h.svc, h.ctr)
    sent, out = _response_through(h, HEAD)
    prefix = b"/linx/" + h.svc.service_id.encode()
    assert sent.startswith(b"GET " + prefix + b"/a/b HTTP/1.1\r\n")
    assert b"X-Forwarded-Prefix" not in sent
    assert b"\r\nLocation: /lab?\r\n" in out
    assert b"\r\nSet-Cookie: app=1; Path=/; Domain=example.test\r\n" in out


def test_host_routing_rewrites_nothing():
    h = Harness(service_domain="svc.example.test")
    h.svc = h.svc.with_changes(routing="host")
    h.load(h.svc, h.ctr)
    label = h.svc.service_id.replace("_", "-").encode()
    proto, tr = h.client()
    proto.dataReceived(
        b"GET /a/b HTTP/1.1\r\nHost: "
        + label
        + b".svc.example.test\r\nX-Linx-Token: "
        + h.svc.token.encode()
        + b"\r\n\r\n"
    )
    up, _ = h.upstream()
    up.dataReceived(HEAD)
    out = tr.value()
    assert status_of(out) == 302 and b"\r\nLocation: /lab?\r\n" in out
    assert b"\r\nSet-Cookie: app=1; Path=/; Domain=example.test\r\n" in out


# ------------------------------------------------------ starting apps (SPEC section 7)
NAVIGATE = (b"Accept: text/html,application/xhtml+xml", b"Sec-Fetch-Mode: navigate")


def test_a_browser_navigation_to_a_refusing_app_gets_a_self_reloading_page():
    from twisted.internet.error import ConnectionRefusedError as Refused
    from twisted.python.failure import Failure

    h = Harness()
    proto, tr = h.client()
    proto.dataReceived(h.request(b"/", *NAVIGATE))
    h.reactor.tcpClients[-1][2].clientConnectionFailed(None, Failure(Refused()))
    out = tr.value()
    assert status_of(out) == 503 and b"\r\nRetry-After: " in out
    assert b"\r\nX-Linx-Error: target_connect_failed\r\n" in out
    assert b"Content-Type: text/html" in out and b'http-equiv="refresh"' in out
    assert b"starting" in out.lower()


def test_a_stopped_container_is_the_starting_page_for_browsers_and_json_for_others():
    import dataclasses

    from shared import schema

    h = Harness()
    stopped = dataclasses.replace(h.ctr, state="created")
    h.ctx.table.apply(
        [schema.Event("1-9", schema.KIND_CONTAINER, schema.OP_PUT, h.ctr.container_id, stopped)]
    )
    proto, tr = h.client()
    proto.dataReceived(h.request(b"/", *NAVIGATE))
    out = tr.value()
    assert status_of(out) == 503 and b"X-Linx-Error: target_unavailable" in out
    assert b'http-equiv="refresh"' in out
    proto, tr = h.client()
    proto.dataReceived(h.request(b"/", b"Accept: application/json"))
    out = tr.value()
    assert status_of(out) == 503 and b"Content-Type: application/json" in out
    assert b"refresh" not in out
    proto, tr = h.client()
    proto.dataReceived(h.request(b"/", *NAVIGATE, method=b"POST"))  # not a navigation GET
    assert b"refresh" not in tr.value()
