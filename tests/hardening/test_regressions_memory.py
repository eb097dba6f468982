"""In-memory regressions for the proxy bugs the hardening corpus found (no sockets, no clock).

- A request whose body bytes, arriving with the head, were malformed was refused with 400, yet
  the proxy still dialled the container (or borrowed, then closed, a pooled connection).
- ``Connection: Host`` made the proxy drop the ``Host`` header on the way to the container.
"""

from __future__ import annotations

from dataplane import forwarding
from dataplane.http_head import parse_request_head
from tests.dataplane.test_relay_memory import Harness, status_of


def test_malformed_chunked_body_with_the_head_never_dials_the_container():
    h = Harness()
    proto, tr = h.client()
    data = h.request(b"/", b"Transfer-Encoding: chunked") + b"5\r\nhello\r\nzz\r\n"
    proto.dataReceived(data)
    assert status_of(tr.value()) == 400
    assert tr.disconnecting
    assert h.reactor.tcpClients == []


def test_malformed_body_leaves_a_pooled_upstream_connection_alone():
    h = Harness()
    proto, tr = h.client()
    proto.dataReceived(h.request(b"/first"))
    up, up_tr = h.upstream()
    up.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert status_of(tr.value()) == 200
    pooled = h.ctx.pool.idle[up.target]
    assert pooled == [up]
    tr.clear()
    proto.dataReceived(h.request(b"/", b"Transfer-Encoding: chunked") + b"-1\r\nx\r\n")
    assert status_of(tr.value()) == 400
    assert h.ctx.pool.idle[up.target] == [up] and not up_tr.disconnecting
    assert len(h.reactor.tcpClients) == 1  # only the first request's connect


def test_connection_header_cannot_remove_host():
    req = parse_request_head(
        b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: Host, X-Hop\r\nX-Hop: 1\r\n\r\n", 100
    )
    head = forwarding.upstream_request_head(
        req,
        b"/",
        cookies=[],
        client_ip=b"127.0.0.1",
        scheme=b"http",
        prefix=None,
        trusted=False,
        websocket=False,
    )
    assert b"\r\nHost: app.test\r\n" in head
    assert b"X-Hop" not in head and b"Connection" not in head
