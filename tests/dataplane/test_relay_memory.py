"""The relay protocols in memory: StringTransports, a MemoryReactorClock, no sockets.

Timeouts are driven with the clock; where the proxy dials is read off the memory reactor.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError as TxConnectionRefused
from twisted.internet.error import TimeoutError as TxTimeout
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from dataplane.config import ProxyConfig
from dataplane.context import ProxyContext
from dataplane.fastio import BUFFER_SIZE, READ_SIZE
from dataplane.metrics import Metrics
from dataplane.probe import Prober
from dataplane.relay import REVOKED_IDLE_GRACE, ProxyFactory
from dataplane.routes import RouteTable
from shared import schema
from tests.dataplane import factories as f


class Harness:
    def __init__(self, **config):
        self.reactor = MemoryReactorClock()
        self.reactor.advance(1_000_000)
        self.config = ProxyConfig(**config)
        self.reports = []
        table = RouteTable(self.config.allowed_networks)
        prober = Prober(
            self.reactor,
            table,
            lambda r, sids: self.reports.extend((sid, r) for sid in sids),
            10.0,
            5.0,
        )
        self.ctx = ProxyContext(self.config, self.reactor, Metrics(), table=table, prober=prober)
        self.factory = ProxyFactory(self.ctx)
        self.ctr = f.container()
        self.svc = f.service(self.ctr)
        self.load(self.svc, self.ctr)

    def load(self, *records):
        self.ctx.table.load_snapshot(f.snapshot(*records))
        self.ctx.mark_exchange()

    def client(self):
        proto = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.9", 5555))
        tr = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.9", 5555))
        proto.makeConnection(tr)
        return proto, tr

    def upstream(self, index=-1):
        """Complete the proxy's pending connect to a container; return (protocol, transport)."""
        host, port, factory, timeout, _ = self.reactor.tcpClients[index]
        proto = factory.buildProtocol(None)
        tr = StringTransport()
        proto.makeConnection(tr)
        return proto, tr

    def path(self, rest=b"/"):
        return b"/linx/" + self.svc.service_id.encode() + rest

    def request(self, rest=b"/", *headers: bytes, token=True, method=b"GET") -> bytes:
        lines = [method + b" " + self.path(rest) + b" HTTP/1.1", b"Host: proxy.test", *headers]
        if token:
            lines.append(b"X-Linx-Token: " + self.svc.token.encode())
        return b"\r\n".join(lines) + b"\r\n\r\n"


def status_of(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


def body_json(data: bytes) -> dict:
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


def test_relays_to_the_container_address_and_port():
    h = Harness()
    proto, tr = h.client()
    proto.dataReceived(h.request(b"/a/b?x=1&linx_token=" + h.svc.token.encode() + b"&y=2", token=False))
    host, port, _factory, timeout, _ = h.reactor.tcpClients[0]
    assert (host, port, timeout) == ("127.0.0.1", 7001, 5.0)
    up, utr = h.upstream()
    sent = utr.value()
    assert sent.startswith(b"GET /a/b?x=1&y=2 HTTP/1.1\r\n")
    assert b"linx_token" not in sent and h.svc.token.encode() not in sent
    assert b"\r\nHost: proxy.test\r\n" in sent
    assert b"\r\nX-Forwarded-For: 127.0.0.9\r\n" in sent
    assert b"\r\nX-Forwarded-Prefix: /linx/" + h.svc.service_id.encode() + b"\r\n" in sent
    up.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
    out = tr.value()
    assert status_of(out) == 200 and out.endswith(b"\r\n\r\nhi")
    assert b"Set-Cookie: linx_" + h.svc.service_id.encode() in out  # token came in the query


def test_an_absolute_form_target_is_relayed_as_origin_form_with_its_host():
    # RFC 9112 3.2.2: a server MUST accept it; its authority replaces Host (7.2)
    h = Harness()
    proto, tr = h.client()
    proto.dataReceived(
        b"GET http://public.test:8080" + h.path(b"/a?x=1") + b" HTTP/1.1\r\nHost: other.test\r\n"
        b"X-Linx-Token: " + h.svc.token.encode() + b"\r\n\r\n"
    )
    up, utr = h.upstream()
    sent = utr.value()
    assert sent.startswith(b"GET /a?x=1 HTTP/1.1\r\n")
    assert b"\r\nHost: public.test:8080\r\n" in sent and b"other.test" not in sent
    assert b"\r\nX-Forwarded-Host: public.test:8080\r\n" in sent
    up.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
    assert status_of(tr.value()) == 200


def test_keep_alive_reuses_the_upstream_connection():
    h = Harness()
    proto, tr = h.client()
    proto.dataReceived(h.request())
    up, utr = h.upstream()
    up.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na")
    utr.clear()
    proto.dataReceived(h.request(b"/second"))
    assert len(h.reactor.tcpClients) == 1  # no new dial
    assert utr.value().startswith(b"GET /second HTTP/1.1")


def test_token_cookie_follows_the_clock_and_the_record_on_one_connection():
    h = Harness()
    now = int(h.reactor.seconds())
    svc = h.svc = h.svc.with_changes(expires_at=now + 100)
    h.load(svc, h.ctr)
    proto, tr = h.client()
    ups = []

    def answer(rest=b"/"):
        tr.clear()
        proto.dataReceived(h.request(rest + b"?linx_token=" + svc.token.encode(), token=False))
        if not ups:
            ups.append(h.upstream()[0])
        ups[0].dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na")
        head = tr.value().split(b"\r\n\r\n", 1)[0]
        cookies = [line for line in head.split(b"\r\n") if line.startswith(b"Set-Cookie: ")]
        assert len(cookies) == 1 and head.startswith(b"HTTP/1.1 200 ")
        return cookies[0]

    first = answer()
    assert first.startswith(b"Set-Cookie: linx_" + svc.service_id.encode() + b"=" + svc.token.encode() + b";")
    assert b"Max-Age=100" in first
    assert answer(b"/again") == first  # the same second: the same line
    h.reactor.advance(3.5)
    assert b"Max-Age=96" in answer()
    # the service's expiry moved (a new route, the same token): the line follows at once
    h.load(svc.with_changes(expires_at=now + 200), h.ctr)
    assert b"Max-Age=196" in answer()
    assert len(h.reactor.tcpClients) == 1 and not tr.disconnecting


def test_token_cookie_with_under_a_second_left_is_not_deleted_at_once():
    h = Harness()
    svc = h.svc = h.svc.with_changes(expires_at=int(h.reactor.seconds()) + 100)
    h.load(svc, h.ctr)
    h.reactor.advance(99.6)
    h.ctx.mark_exchange()  # the sync is fresh
    proto, tr = h.client()
    proto.dataReceived(h.request(b"/?linx_token=" + svc.token.encode(), token=False))
    h.upstream()[0].dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na")
    head = tr.value().split(b"\r\n\r\n", 1)[0]
    assert status_of(head) == 200
    # Max-Age=0 would have the browser drop the cookie while the token is still good
    assert head.split(b"Max-Age=")[1].split(b"\r\n")[0] == b"1"


@pytest.mark.parametrize(
    ("trusted", "proto", "secure"),
    [
        (True, b"https", True),
        (True, b"HTTPS, http", True),
        (True, b"http", False),
        (False, b"https", False),  # anyone can say https: only a trusted front proxy counts
    ],
)
def test_token_cookie_is_secure_behind_a_trusted_front_proxy_that_terminated_tls(trusted, proto, secure):
    h = Harness(trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),) if trusted else ())
    proto_, tr = h.client()
    proto_.dataReceived(
        h.request(b"/?linx_token=" + h.svc.token.encode(), b"X-Forwarded-Proto: " + proto, token=False)
    )
    h.upstream()[0].dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na")
    cookie = [line for line in tr.value().split(b"\r\n") if line.startswith(b"Set-Cookie: linx_")]
    assert len(cookie) == 1 and (b"; Secure" in cookie[0]) is secure


def test_pipelined_requests_are_answered_in_order():
    h = Harness()
    proto, tr = h.client()
    proto.dataReceived(h.request(b"/one") + h.request(b"/two"))
    up, utr = h.upstream()
    assert b"/two" not in utr.value()  # the second waits for the first response
    up.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1")
    assert utr.value().count(b"GET /") == 2
    up.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2")
    assert tr.value().count(b"HTTP/1.1 200 OK") == 2


def test_head_deadline_is_absolute_not_reset_by_bytes():
    h = Harness()
    proto, tr = h.client()
    for _ in range(9):
        proto.dataReceived(b"G" if not tr.value() and _ == 0 else b"E")
        h.reactor.advance(1)
    assert not tr.disconnecting
    h.reactor.advance(1.01)
    assert status_of(tr.value()) == 408
    assert tr.disconnecting


def test_a_later_heads_deadline_runs_from_its_first_byte_on_a_keep_alive_connection():
    """A head that comes whole costs no head timer (relay._read_head); one that comes in
    pieces gets the absolute deadline from its first byte, after any time spent idle."""
    h = Harness(head_timeout=10.0, idle_timeout=75.0)
    proto, tr = h.client()
    proto.dataReceived(h.request())
    up, _ = h.upstream()
    up.dataReceived(b"HTTP/1.1 204 No Content\r\n\r\n")
    tr.clear()
    h.reactor.advance(50)  # idle, then a second request starts arriving
    second = h.request()
    for i in range(9):
        proto.dataReceived(second[i : i + 1])
        h.reactor.advance(1)
    assert tr.value() == b"" and not tr.disconnecting
    h.reactor.advance(1.01)
    assert status_of(tr.value()) == 408 and tr.disconnecting


def test_silent_connection_closed_at_head_deadline():
    h = Harness(head_timeout=3.0)
    proto, tr = h.client()
    h.reactor.advance(2.9)
    assert not tr.disconnecting
    h.reactor.advance(0.2)
    assert tr.disconnecting and tr.value() == b""


def test_idle_keep_alive_closes_after_idle_timeout():
    h = Harness(idle_timeout=75.0)
    proto, tr = h.client()
    proto.dataReceived(h.request())
    up, _ = h.upstream()
    up.dataReceived(b"HTTP/1.1 204 No Content\r\n\r\n")
    h.reactor.advance(74)
    assert not tr.disconnecting
    h.reactor.advance(1.5)
    assert tr.disconnecting


def test_head_size_limit_boundary():
    h = Harness(max_head_bytes=1024)
    base = h.request(b"/", b"X-Pad: ")
    fill = 1024 - len(base)
    proto, tr = h.client()
    proto.dataReceived(h.request(b"/", b"X-Pad: " + b"a" * fill))
    assert h.reactor.tcpClients  # exactly at the limit: relayed
    h2 = Harness(max_head_bytes=1024)
    proto, tr = h2.client()
    proto.dataReceived(h2.request(b"/", b"X-Pad: " + b"a" * (fill + 1)))
    assert status_of(tr.value()) == 431 and tr.disconnecting
    assert not h2.reactor.tcpClients


def test_header_count_limit_boundary():
    def run(n):
        h = Harness(max_headers=10)
        proto, tr = h.client()
        # Host and X-Linx-Token are two of the fields
        proto.dataReceived(h.request(b"/", *[b"X-%d: 1" % i for i in range(n - 2)]))
        return h, tr

    h, tr = run(10)
    assert h.reactor.tcpClients and tr.value() == b""
    h, tr = run(11)
    assert status_of(tr.value()) == 431 and not h.reactor.tcpClients


def test_malformed_head_is_400_and_closed():
    h = Harness()
    proto, tr = h.client()
    proto.dataReceived(
        b"POST " + h.path() + b" HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx"
    )
    assert status_of(tr.value()) == 400 and tr.disconnecting
    assert not h.reactor.tcpClients


@pytest.mark.parametrize(
    "make",
    [
        # duplicate Content-Length: 400
        lambda h: (
            b"POST " + h.path() + b" HTTP/1.1\r\nHost: a\r\nOrigin: http://app.test\r\n"
            b"Content-Length: 1\r\nContent-Length: 1\r\n\r\nx"
        ),
        # two Hosts: 400
        lambda h: b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nOrigin: http://app.test\r\n\r\n",
        # too large: 431
        lambda h: h.request(b"/", b"Origin: http://app.test", b"X-Pad: " + b"a" * 2000),
    ],
    ids=["duplicate-length", "two-hosts", "too-large"],
)
def test_a_malformed_head_with_an_origin_gets_it_back(make):
    # SPEC 6: error answers the proxy makes to a request with Origin carry it, so that a
    # browser's script can read them; a head that did not parse too
    h = Harness(max_head_bytes=1024)
    proto, tr = h.client()
    proto.dataReceived(make(h))
    out = tr.value()
    assert status_of(out) in (400, 431) and tr.disconnecting
    assert b"\r\nAccess-Control-Allow-Origin: http://app.test\r\nVary: Origin\r\n" in out


@pytest.mark.parametrize(
    "origin",
    [b"Origin: http://a.test\r\nOrigin: http://b.test", b"Origin: http://a.test\x00x", b"Origin: <script>"],
    ids=["two", "nul", "not-an-origin"],
)
def test_a_malformed_head_never_echoes_an_origin_it_cannot_trust(origin):
    h = Harness()
    proto, tr = h.client()
    proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n" + origin + b"\r\n\r\n")
    out = tr.value()
    assert status_of(out) == 400 and b"Access-Control-Allow-Origin" not in out


def test_connect_refused_is_503_with_retry_after():
    h = Harness()
    proto, tr = h.client()
    proto.dataReceived(h.request())
    _, _, factory, _, _ = h.reactor.tcpClients[0]
    factory.clientConnectionFailed(None, Failure(TxConnectionRefused()))
    out = tr.value()
    assert status_of(out) == 503
    assert b"\r\nRetry-After: " in out and b"X-Linx-Error: target_connect_failed" in out
    assert h.reports and h.reports[-1][1].status == "target_unreachable"


def test_connect_timeout_is_503():
    h = Harness()
    proto, tr = h.client()
    proto.dataReceived(h.request())
    _, _, factory, _, _ = h.reactor.tcpClients[0]
    factory.clientConnectionFailed(None, Failure(TxTimeout()))
    assert b"X-Linx-Error: target_connect_timeout" in tr.value()


def test_response_head_timeout_is_504():
    h = Harness(response_timeout=300.0)
    proto, tr = h.client()
    proto.dataReceived(h.request())
    up, utr = h.upstream()
    h.reactor.advance(299)
    assert tr.value() == b""
    h.reactor.advance(1.5)
    assert status_of(tr.value()) == 504
    assert utr.disconnecting


def test_target_outside_allowed_networks_is_never_dialled():
    h = Harness()
    ctr = f.container(address="169.254.169.254")
    svc = f.service(ctr)
    h.svc = svc
    h.load(svc, ctr)
    proto, tr = h.client()
    proto.dataReceived(h.request())
    assert status_of(tr.value()) == 503
    assert b"target_not_allowed" in tr.value()
    assert h.reactor.tcpClients == []


def test_delete_event_closes_open_connections():
    h = Harness()
    proto, tr = h.client()
    proto.dataReceived(h.request())
    up, utr = h.upstream()
    up.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    assert not tr.disconnecting
    h.ctx.table.apply([schema.Event("1-1", schema.KIND_SERVICE, schema.OP_DELETE, h.svc.service_id, None)])
    h.reactor.advance(REVOKED_IDLE_GRACE)  # a stream still going after the grace is cut
    assert tr.disconnected or tr.disconnecting
    assert utr.disconnected or utr.disconnecting


def test_container_stop_refuses_and_closes_idle_connections_with_a_fin():
    h = Harness()
    proto, tr = h.client()
    proto.dataReceived(h.request())
    up, _ = h.upstream()
    up.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na")  # idle keep-alive now
    stopped = dataclasses.replace(h.ctr, state="stopped")
    h.ctx.table.apply(
        [schema.Event("1-2", schema.KIND_CONTAINER, schema.OP_PUT, h.ctr.container_id, stopped)]
    )
    assert not tr.disconnecting  # a request may already be on its way: it gets an answer
    h.reactor.advance(REVOKED_IDLE_GRACE)
    assert tr.disconnecting and not tr.disconnected  # FIN, not RST


def test_expiry_closes_connections_on_the_clock():
    h = Harness()
    now = int(h.reactor.seconds())
    svc = h.svc.with_changes(expires_at=now + 5)
    h.svc = svc
    h.load(svc, h.ctr)
    proto, tr = h.client()
    proto.dataReceived(h.request())
    up, _ = h.upstream()
    up.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na")
    h.reactor.advance(4)
    h.ctx.check_expiry()
    assert not tr.disconnecting
    h.reactor.advance(1)
    h.ctx.check_expiry()
    tr.clear()
    proto.dataReceived(h.request())
    out = tr.value()
    assert status_of(out) == 410 and b"Connection: close\r\n" in out and tr.disconnecting


def test_upstream_reset_mid_body_aborts_the_client():
    h = Harness()
    proto, tr = h.client()
    proto.dataReceived(h.request())
    up, _ = h.upstream()
    up.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    up.connectionLost(Failure(Exception("reset")))
    assert tr.disconnected  # abortConnection: the client cannot mistake it for a whole body


def test_chunked_request_body_is_reframed_canonically():
    h = Harness()
    proto, tr = h.client()
    proto.dataReceived(
        h.request(b"/up", b"Transfer-Encoding: chunked", method=b"POST") + b"3;x=y\r\nabc\r\n0\r\n\r\n"
    )
    up, utr = h.upstream()
    sent = utr.value()
    assert sent.endswith(b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    assert b"x=y" not in sent


def test_linx_set_cookie_from_container_is_dropped():
    h = Harness()
    proto, tr = h.client()
    proto.dataReceived(h.request())
    up, _ = h.upstream()
    up.dataReceived(
        b"HTTP/1.1 200 OK\r\nSet-Cookie: app=1\r\nSet-Cookie: linx_"
        + h.svc.service_id.encode()
        + b"=evil\r\nSet-Cookie: LINX_x=1\r\nContent-Length: 0\r\n\r\n"
    )
    out = tr.value()
    assert b"Set-Cookie: app=1" in out
    assert b"evil" not in out and b"LINX_x" not in out


def test_unknown_service_is_404_json_with_error_header():
    h = Harness()
    proto, tr = h.client()
    proto.dataReceived(b"GET /linx/lnx_nope/ HTTP/1.1\r\nHost: a\r\n\r\n")
    out = tr.value()
    assert status_of(out) == 404
    assert b"X-Linx-Error: service_not_found" in out
    assert body_json(out)["error"]["code"] == "service_not_found"


@pytest.mark.parametrize(
    ("accept", "html"), [(b"text/html,application/xhtml+xml", True), (b"application/json", False)]
)
def test_error_body_follows_accept(accept, html):
    h = Harness()
    proto, tr = h.client()
    proto.dataReceived(h.request(b"/", b"Accept: " + accept, token=False))
    out = tr.value()
    assert status_of(out) == 401
    assert (b"Content-Type: text/html" in out) is html


def test_connection_limit_answers_503_too_many_connections_and_closes():
    h = Harness(max_connections=2)
    a = h.client()
    b = h.client()
    refused, rtr = h.client()
    out = rtr.value()
    assert status_of(out) == 503 and rtr.disconnecting
    assert b"X-Linx-Error: too_many_connections\r\n" in out and b"Retry-After: " in out
    assert b"Connection: close\r\n" in out
    assert body_json(out)["error"]["code"] == "too_many_connections"
    refused.dataReceived(h.request())  # never parsed, never relayed
    assert not h.reactor.tcpClients
    assert h.ctx.open_connections == 2
    assert h.ctx.metrics.registry.get_sample_value("linx_proxy_refused_connections_total") == 1
    a[0].connectionLost(None)
    proto, _ = h.client()
    assert proto.__class__.__name__ == "ClientConnection"
    assert not b[1].disconnecting  # existing ones unaffected


def test_http10_keep_alive_is_answered_with_connection_keep_alive():
    h = Harness()
    proto, tr = h.client()
    head = b"GET " + h.path() + b" HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n"
    proto.dataReceived(head + b"X-Linx-Token: " + h.svc.token.encode() + b"\r\n\r\n")
    up, _ = h.upstream()
    up.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    out = tr.value()
    assert b"\r\nConnection: keep-alive\r\n" in out and not tr.disconnecting
    tr.clear()
    # a local answer on the same connection says so too, and the connection stays open
    proto.dataReceived(head + b"\r\n")
    assert status_of(tr.value()) == 401
    assert b"\r\nConnection: keep-alive\r\n" in tr.value() and not tr.disconnecting


def test_http10_without_keep_alive_is_closed_after_the_answer():
    h = Harness()
    proto, tr = h.client()
    proto.dataReceived(b"GET " + h.path() + b" HTTP/1.0\r\nHost: a\r\n\r\n")
    assert status_of(tr.value()) == 401 and tr.disconnecting


# ------------------------------------------------------------------ /api/ on the proxy's origin
def test_api_is_404_unless_relaying_it_is_configured():
    h = Harness()
    proto, tr = h.client()
    proto.dataReceived(b"GET /api/containers HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
    assert status_of(tr.value()) == 404 and not h.reactor.tcpClients


def test_api_is_relayed_to_the_control_plane_as_it_came():
    h = Harness(api_upstream=("127.0.0.5", 8000))
    proto, tr = h.client()
    proto.dataReceived(
        b"POST /api/containers/c1/services?x=1&linx_token=t HTTP/1.1\r\nHost: proxy.test\r\n"
        b"Authorization: Bearer lxk_abc\r\nCookie: a=1\r\nContent-Length: 2\r\n\r\n{}"
    )
    host, port, *_ = h.reactor.tcpClients[-1]
    assert (host, port) == ("127.0.0.5", 8000)
    up, utr = h.upstream()
    sent = utr.value()
    assert sent.startswith(b"POST /api/containers/c1/services?x=1&linx_token=t HTTP/1.1\r\n")
    assert b"Authorization: Bearer lxk_abc\r\n" in sent and b"Cookie: a=1\r\n" in sent
    assert b"X-Forwarded-Host: proxy.test\r\n" in sent and b"X-Forwarded-Prefix" not in sent
    assert sent.endswith(b"\r\n\r\n{}")
    up.dataReceived(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}")
    assert status_of(tr.value()) == 201
    assert h.reports == []  # the control plane is not a probed target
    assert not h.ctx.prober.targets.get(("127.0.0.5", 8000))


def test_api_relay_failure_is_503_and_service_paths_are_unaffected():
    h = Harness(api_upstream=("127.0.0.5", 8000))
    proto, tr = h.client()
    proto.dataReceived(b"GET /api HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
    h.reactor.tcpClients[-1][2].clientConnectionFailed(None, Failure(TxConnectionRefused()))
    assert status_of(tr.value()) == 503 and h.reports == []
    proto2, tr2 = h.client()
    proto2.dataReceived(b"GET /apis HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
    assert status_of(tr2.value()) == 404  # only /api and /api/...
    proto3, tr3 = h.client()
    proto3.dataReceived(h.request())
    assert h.reactor.tcpClients[-1][:2] == ("127.0.0.1", 7001)


def test_upstream_pool_keeps_as_many_connections_as_were_in_use_at_once():
    h = Harness()
    clients = [h.client() for _ in range(200)]
    ups = []
    for proto, _ in clients:
        proto.dataReceived(h.request())
        ups.append(h.upstream())
    for up, utr in ups:
        up.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na")
        assert not utr.disconnecting  # kept for the next request, not closed past a small cap
    assert len(h.ctx.pool.idle[("127.0.0.1", 7001)]) == 200
    dialled = len(h.reactor.tcpClients)
    for proto, _ in clients:
        proto.dataReceived(h.request())
    assert len(h.reactor.tcpClients) == dialled  # all 200 reused: no new connect
    h.reactor.advance(h.ctx.pool.idle_timeout + 1)
    assert all(not utr.disconnecting for _, utr in ups)  # busy again, not expired


def test_upstream_pool_cap_is_configurable():
    h = Harness(upstream_max_idle=2)
    clients = [h.client() for _ in range(3)]
    ups = []
    for proto, _ in clients:
        proto.dataReceived(h.request())
        ups.append(h.upstream())
    for up, _ in ups:
        up.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na")
    assert [utr.disconnecting for _, utr in ups] == [False, False, True]


def test_read_size_grows_for_a_bulk_transfer_and_comes_back_after_it():
    h = Harness()
    proto, tr = h.client()
    size = 3 * READ_SIZE
    proto.dataReceived(h.request(b"/up", b"Content-Length: %d" % size, method=b"POST"))
    up, utr = h.upstream()
    tr.bufferSize = utr.bufferSize = READ_SIZE  # as on a TCP transport
    proto.dataReceived(b"x" * 100)
    assert tr.bufferSize == READ_SIZE  # a short read: small reads stay cheap
    proto.dataReceived(b"x" * READ_SIZE)  # a read that filled the buffer: a bulk upload
    assert tr.bufferSize == BUFFER_SIZE
    proto.dataReceived(b"x" * (size - READ_SIZE - 100))
    up.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (2 * READ_SIZE))
    up.dataReceived(b"y" * READ_SIZE)
    assert utr.bufferSize == BUFFER_SIZE
    up.dataReceived(b"y" * READ_SIZE)
    # the exchange is over: both back at the small read size for the next request
    assert tr.bufferSize == READ_SIZE and utr.bufferSize == READ_SIZE
    assert tr.value().count(b"y") == 2 * READ_SIZE


def test_metrics_count_every_answered_request_at_a_scrape_with_the_log_off_or_on():
    """The metrics are taken from the access log's batch (dataplane/access_log.py): a scrape
    sees every request answered so far, before any timer or a full batch, log off or on."""
    import io

    from dataplane.access_log import FLUSH_ROWS, AccessLog

    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    for stream in (None, io.StringIO()):
        h = Harness()
        if stream is not None:
            h.ctx.access_log = AccessLog(h.reactor, stream)
        proto, tr = h.client()
        total = FLUSH_ROWS + 3  # one full batch taken at once, three waiting for the scrape
        for n in range(total):
            proto.dataReceived(h.request(b"/x"))
            if n == 0:
                up, utr = h.upstream()
            up.dataReceived(resp)
        proto.dataReceived(h.request(b"/y", token=False))  # a 401, counted for the service
        value = h.ctx.metrics.registry.get_sample_value
        sid = h.svc.service_id
        assert value("linx_proxy_requests_total", {"service": sid, "status_class": "2xx"}) == total
        assert value("linx_proxy_requests_total", {"service": sid, "status_class": "4xx"}) == 1
        assert value("linx_proxy_request_duration_seconds_count") == total + 1
        if stream is not None:
            h.ctx.access_log.flush()
            lines = [json.loads(line) for line in stream.getvalue().splitlines()]
            assert len(lines) == total + 1
            assert value("linx_proxy_response_bytes_total") == sum(line["bytes_out"] for line in lines)


def test_repeated_heads_on_a_connection_differ_only_by_request_id():
    """A connection keeps the container head of its last request but its request id
    (Exchange.relay): identical requests get their own ids, and any other head its own head."""
    h = Harness()
    proto, tr = h.client()
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    sent = []
    for rest, extra in ((b"/a", ()), (b"/a", ()), (b"/a", (b"X-Request-Id: mine-1",)), (b"/b?q=1", ())):
        proto.dataReceived(h.request(rest, *extra))
        if not sent:
            up, utr = h.upstream()
        sent.append(utr.value())
        utr.clear()
        up.dataReceived(resp)
    ids = [re.search(rb"\r\nX-Request-Id: ([^\r]*)\r\n", head).group(1) for head in sent]
    assert len(set(ids)) == 4 and ids[2] == b"mine-1"
    same = [re.sub(rb"X-Request-Id: [^\r]*", b"", head) for head in sent[:2]]
    assert same[0] == same[1] and sent[0].startswith(b"GET /a HTTP/1.1\r\n")
    assert sent[3].startswith(b"GET /b?q=1 HTTP/1.1\r\n")
    assert all(head.endswith(b"\r\n\r\n") and head.count(b"X-Request-Id") == 1 for head in sent)
