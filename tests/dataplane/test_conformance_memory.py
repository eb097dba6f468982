"""Issue 11 in memory: revocation between requests, framing answers, attribution, aborts.

The same ``Harness`` as the relay tests: StringTransports and a MemoryReactorClock.
"""

from __future__ import annotations

import dataclasses
import io

import pytest

from dataplane.access_log import AccessLog
from dataplane.relay import REVOKED_IDLE_GRACE
from shared import schema
from tests.dataplane.test_relay_memory import Harness, body_json, status_of

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def _delete(h):
    return [schema.Event("9-1", schema.KIND_SERVICE, schema.OP_DELETE, h.svc.service_id, None)]


def _rotate(h):
    from shared import ids
    from shared.tokens import SigningKey

    rotated = h.svc.with_changes(token_key=SigningKey(ids.new_key_id(), ids.new_secret()))
    return [schema.Event("9-1", schema.KIND_SERVICE, schema.OP_PUT, h.svc.service_id, rotated)]


def _container(h, **changes):
    ctr = dataclasses.replace(h.ctr, **changes)
    return [schema.Event("9-1", schema.KIND_CONTAINER, schema.OP_PUT, h.ctr.container_id, ctr)]


REVOCATIONS = {
    "delete": (_delete, 404, "service_not_found"),
    "rotate": (_rotate, 403, "token_invalid"),
    "stopped": (lambda h: _container(h, state="stopped"), 503, "target_unavailable"),
    "network_not_ready": (lambda h: _container(h, network_ready=False), 503, "target_unavailable"),
    "networking_disabled": (lambda h: _container(h, networking_enabled=False), 503, "target_unavailable"),
}


def _idle_after_one_request(h):
    proto, tr = h.client()
    proto.dataReceived(h.request())
    up, utr = h.upstream()
    up.dataReceived(OK)
    assert status_of(tr.value()) == 200 and not tr.disconnecting
    tr.clear()
    return proto, tr, up


@pytest.mark.parametrize("kind", sorted(REVOCATIONS))
def test_idle_connection_gets_the_decision_with_connection_close(kind):
    events, status, code = REVOCATIONS[kind]
    h = Harness()
    proto, tr, _ = _idle_after_one_request(h)
    h.ctx.table.apply(events(h))
    assert not tr.disconnecting  # not reset: the next request is answered
    proto.dataReceived(h.request())
    out = tr.value()
    assert status_of(out) == status, out
    assert f"X-Linx-Error: {code}\r\n".encode() in out
    assert b"Connection: close\r\n" in out
    assert tr.disconnecting and not tr.disconnected  # closed after the answer, with a FIN


@pytest.mark.parametrize("kind", sorted(REVOCATIONS))
def test_idle_revoked_connection_is_closed_with_a_fin_within_the_grace(kind):
    events, _, _ = REVOCATIONS[kind]
    h = Harness()
    proto, tr, _ = _idle_after_one_request(h)
    h.ctx.table.apply(events(h))
    h.reactor.advance(REVOKED_IDLE_GRACE - 0.01)
    assert not tr.disconnecting
    h.reactor.advance(0.01)
    assert tr.disconnecting and not tr.disconnected and tr.value() == b""


def test_partial_head_at_revocation_gets_the_decision_once_complete():
    h = Harness()
    proto, tr, _ = _idle_after_one_request(h)
    req = h.request()
    proto.dataReceived(req[:20])
    h.ctx.table.apply(_delete(h))
    proto.dataReceived(req[20:])
    assert status_of(tr.value()) == 404 and b"Connection: close\r\n" in tr.value()


def test_a_revoked_connection_may_go_on_with_a_request_that_is_allowed():
    h = Harness()
    other = h.svc.with_changes(service_id="lnx_" + "b" * 26, name="other")
    h.load(h.svc, other, h.ctr)
    proto, tr, up = _idle_after_one_request(h)
    h.ctx.table.apply(_delete(h))
    h.svc = other
    proto.dataReceived(h.request())
    up.dataReceived(OK)  # the pooled connection to the same container
    assert status_of(tr.value()) == 200 and b"Connection: close" not in tr.value()
    h.reactor.advance(REVOKED_IDLE_GRACE + 1)
    assert not tr.disconnecting  # a live connection again, under the idle timeout


@pytest.mark.parametrize("kind", sorted(REVOCATIONS))
def test_request_in_flight_gets_the_decision_status_and_upstream_is_dropped(kind):
    events, status, code = REVOCATIONS[kind]
    h = Harness()
    proto, tr = h.client()
    proto.dataReceived(h.request())
    up, utr = h.upstream()
    h.ctx.table.apply(events(h))
    out = tr.value()
    assert status_of(out) == status and f"X-Linx-Error: {code}\r\n".encode() in out
    assert b"Connection: close\r\n" in out and tr.disconnecting
    assert utr.disconnecting  # the container's answer, if it comes, goes nowhere
    up.dataReceived(OK)
    assert tr.value() == out


def test_streaming_response_is_cut_when_the_grace_ends():
    h = Harness()
    proto, tr = h.client()
    proto.dataReceived(h.request())
    up, utr = h.upstream()
    up.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    h.ctx.table.apply(_delete(h))
    up.dataReceived(b"5\r\nworld\r\n")
    assert not tr.disconnecting and tr.value().endswith(b"world\r\n")
    h.reactor.advance(REVOKED_IDLE_GRACE)
    assert tr.disconnected and (utr.disconnected or utr.disconnecting)


def test_response_under_way_may_finish_then_the_next_request_gets_the_decision():
    h = Harness()
    proto, tr = h.client()
    proto.dataReceived(h.request())
    up, _ = h.upstream()
    up.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
    h.ctx.table.apply(_delete(h))
    up.dataReceived(b"cd")
    assert tr.value().endswith(b"abcd") and not tr.disconnecting
    tr.clear()
    proto.dataReceived(h.request())
    assert status_of(tr.value()) == 404 and b"Connection: close\r\n" in tr.value()


def test_websocket_is_cut_at_once():
    h = Harness()
    proto, tr = h.client()
    key = b"dGhlIHNhbXBsZSBub25jZQ=="
    proto.dataReceived(
        h.request(
            b"/ws",
            b"Connection: Upgrade",
            b"Upgrade: websocket",
            b"Sec-WebSocket-Version: 13",
            b"Sec-WebSocket-Key: " + key,
        )
    )
    up, utr = h.upstream()
    up.dataReceived(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    )
    assert status_of(tr.value()) == 101 and not tr.disconnecting
    h.ctx.table.apply(_delete(h))
    assert tr.disconnected and (utr.disconnected or utr.disconnecting)


def test_slash_redirect_comes_before_the_existence_check():
    h = Harness()
    proto, tr = h.client()
    proto.dataReceived(b"GET /linx/lnx_doesnotexist000?q=1 HTTP/1.1\r\nHost: a\r\n\r\n")
    out = tr.value()
    assert status_of(out) == 308
    assert b"\r\nLocation: /linx/lnx_doesnotexist000/?q=1\r\n" in out
    families = list(h.ctx.metrics.per_request.collect())
    labels = {s.labels["service"] for s in families[0].samples}
    assert labels == {"-"}  # an unknown id never becomes a label


@pytest.mark.parametrize(
    "head",
    [
        b"GET /linx/{sid}/ HTTP/1.1\nHost: a\n\n",
        b"GET /linx/{sid}/ HTTP/1.1\r\nHost: a\n\r\n",
        b"GET /linx/{sid}/ HTTP/1.1\rHost: a\r\r",
    ],
)
def test_bare_line_ends_are_400_json_at_once_and_closed(head):
    h = Harness()
    proto, tr = h.client()
    proto.dataReceived(head.replace(b"{sid}", h.svc.service_id.encode()))
    out = tr.value()
    assert status_of(out) == 400
    assert b"X-Linx-Error: bare_" in out and body_json(out)["error"]["code"].startswith("bare_")
    assert tr.disconnecting and not h.reactor.tcpClients  # nothing reached a container


def test_a_head_still_arriving_is_not_refused_for_a_final_cr():
    h = Harness()
    proto, tr = h.client()
    req = h.request()
    proto.dataReceived(req[: req.index(b"\r\n") + 1])
    assert tr.value() == b"" and not tr.disconnecting
    proto.dataReceived(req[req.index(b"\r\n") + 1 :])
    assert h.reactor.tcpClients


@pytest.mark.parametrize(
    "headers,token,status",
    [((), False, 401), ((b"X-Linx-Token: nope",), False, 403)],
)
def test_denials_are_attributed_to_the_known_service(headers, token, status):
    h = Harness()
    stream = io.StringIO()
    h.ctx.access_log = AccessLog(h.reactor, stream)
    proto, tr = h.client()
    proto.dataReceived(h.request(b"/", *headers, token=token))
    assert status_of(tr.value()) == status
    h.ctx.access_log.flush()
    assert f'"service":"{h.svc.service_id}"' in stream.getvalue()
    got = h.ctx.metrics.registry.get_sample_value(
        "linx_proxy_requests_total", {"service": h.svc.service_id, "status_class": "4xx"}
    )
    assert got == 1


def test_expired_and_unavailable_denials_are_attributed():
    h = Harness()
    now = int(h.reactor.seconds())
    expired = h.svc.with_changes(expires_at=now - 1)
    stopped = dataclasses.replace(h.ctr, state="stopped")
    other = h.svc.with_changes(service_id="lnx_" + "c" * 26, name="other")
    h.svc = expired
    h.load(expired, stopped)
    proto, tr = h.client()
    proto.dataReceived(h.request())
    assert status_of(tr.value()) == 410
    h.load(other, stopped)
    h.svc = other
    proto, tr = h.client()
    proto.dataReceived(h.request())
    assert status_of(tr.value()) == 503
    value = h.ctx.metrics.registry.get_sample_value
    assert value("linx_proxy_requests_total", {"service": expired.service_id, "status_class": "4xx"}) == 1
    assert value("linx_proxy_requests_total", {"service": other.service_id, "status_class": "5xx"}) == 1


def test_client_abort_mid_body_is_counted_and_logged_as_499():
    h = Harness()
    stream = io.StringIO()
    h.ctx.access_log = AccessLog(h.reactor, stream)
    proto, tr = h.client()
    proto.dataReceived(h.request(b"/upload", b"Content-Length: 100", method=b"POST") + b"x" * 40)
    up, _ = h.upstream()
    proto.connectionLost(None)
    h.ctx.access_log.flush()
    line = stream.getvalue()
    assert '"status":499' in line and '"error":"client_closed"' in line and '"bytes_in":40' in line
    value = h.ctx.metrics.registry.get_sample_value
    assert value("linx_proxy_requests_total", {"service": h.svc.service_id, "status_class": "4xx"}) == 1


def test_client_abort_mid_download_is_499_not_2xx():
    h = Harness()
    stream = io.StringIO()
    h.ctx.access_log = AccessLog(h.reactor, stream)
    proto, tr = h.client()
    proto.dataReceived(h.request(b"/bytes/1000000"))
    up, _ = h.upstream()
    up.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"y" * 5000)
    proto.connectionLost(None)
    h.ctx.access_log.flush()
    assert '"status":499' in stream.getvalue()
    value = h.ctx.metrics.registry.get_sample_value
    assert value("linx_proxy_requests_total", {"service": h.svc.service_id, "status_class": "2xx"}) is None


def test_a_malformed_head_after_a_request_is_logged_with_its_own_request_id():
    h = Harness()
    stream = io.StringIO()
    h.ctx.access_log = AccessLog(h.reactor, stream)
    proto, tr = h.client()
    proto.dataReceived(h.request(b"/", b"X-Request-Id: first-request"))
    up, _ = h.upstream()
    up.dataReceived(OK)
    proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n")
    h.ctx.access_log.flush()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and '"status":400' in lines[1]
    assert "first-request" in lines[0] and "first-request" not in lines[1]


def test_api_relay_is_not_cut_by_a_change_to_the_previous_service():
    h = Harness(api_upstream=("127.0.0.5", 8000))
    proto, tr, _ = _idle_after_one_request(h)
    proto.dataReceived(b"GET /api/containers HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
    up, utr = h.upstream()
    assert proto.kid is None
    h.ctx.table.apply(_rotate(h))
    assert not tr.disconnecting and not utr.disconnecting
    up.dataReceived(OK)
    assert status_of(tr.value()) == 200 and not tr.disconnecting


def test_api_relay_never_carries_the_console_cookie_and_console_is_not_relayed():
    h = Harness(api_upstream=("127.0.0.5", 8000))
    proto, tr = h.client()
    proto.dataReceived(
        b"GET /api/containers HTTP/1.1\r\nHost: proxy.test\r\nCookie: a=1; linx_console=s3cret; b=2\r\n\r\n"
    )
    up, utr = h.upstream()
    sent = utr.value()
    assert b"s3cret" not in sent and b"Cookie: a=1; b=2\r\n" in sent
    proto2, tr2 = h.client()
    proto2.dataReceived(b"GET /console/ HTTP/1.1\r\nHost: proxy.test\r\nCookie: linx_console=s3cret\r\n\r\n")
    assert status_of(tr2.value()) == 404 and len(h.reactor.tcpClients) == 1


def test_a_container_move_keeps_idle_connections_registered_for_a_later_revocation():
    h = Harness()
    proto, tr, _ = _idle_after_one_request(h)
    h.ctx.table.apply(_container(h, address="127.0.0.2"))
    assert not tr.disconnecting
    h.ctx.table.apply(_delete(h))
    h.reactor.advance(REVOKED_IDLE_GRACE)
    assert tr.disconnecting and not tr.disconnected  # still told: closed with a FIN


def test_a_head_on_its_way_at_revocation_is_answered_not_closed_at_the_grace():
    h = Harness()
    proto, tr, _ = _idle_after_one_request(h)
    req = h.request()
    proto.dataReceived(req[:20])
    h.ctx.table.apply(_delete(h))
    h.reactor.advance(REVOKED_IDLE_GRACE + 0.5)
    assert not tr.disconnecting
    proto.dataReceived(req[20:])
    assert status_of(tr.value()) == 404 and b"Connection: close\r\n" in tr.value()


def test_a_slash_redirect_for_another_service_leaves_the_registry():
    h = Harness()
    proto, tr, _ = _idle_after_one_request(h)
    proto.dataReceived(b"GET /linx/lnx_other000 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert status_of(tr.value()) == 308
    assert proto not in h.ctx.registry.service_of
