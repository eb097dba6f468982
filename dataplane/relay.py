"""The relay: client connections, upstream connections, and the splice between them.

A client connection lives through explicit states::

    HEAD     buffering a request head (the only thing ever buffered, bounded by the 431 limit)
    RELAY    one request in flight: its body streams to the container, the response back
    TUNNEL   after a container's real 101: bytes spliced both ways until either side closes
    CLOSED

Bodies are never held: each transport is registered as the other's producer, so a slow reader
on one side stops reads on the other (back-pressure both ways). The container side, pooled
per target, is ``dataplane.upstream``; what connections share is ``dataplane.context``.

Everything here runs on the reactor thread; time comes from the reactor passed in.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from twisted.internet import error as neterror
from twisted.internet import protocol
from twisted.logger import Logger

from dataplane import access, forwarding
from dataplane.access_log import request_id
from dataplane.deadline import Deadline
from dataplane.fastio import direct_socket, send
from dataplane.http_head import (
    HEAD_END,
    LAST_CHUNK,
    ChunkedDecoder,
    Framing,
    HeadError,
    RequestHead,
    ResponseHead,
    check_partial_line_endings,
    encode_chunk,
    parse_request_head,
)
from dataplane.upstream import BUFFER_SIZE, ReadPauser, UpstreamConnection
from shared import ids

if TYPE_CHECKING:
    from dataplane.context import ProxyContext

log = Logger()

HEAD, RELAY, TUNNEL, CLOSED = range(4)
CLIENT_CLOSED = 499  # logged status of a request its client abandoned (as nginx logs it)
LINX_PREFIX = b"/linx/"
CONSOLE_COOKIE = b"linx_console"
_SAFE_METHODS = frozenset((b"GET", b"HEAD", b"OPTIONS"))
# A revoked connection between requests waits this long for the request a client may already
# have sent (it gets the access decision, not a reset), then is closed with a FIN.
REVOKED_IDLE_GRACE = 1.0
# After answering and closing with the client possibly still sending (a refused body,
# pipelined requests), its bytes are read and dropped this long before the socket closes:
# closing with unread data makes the kernel send RST, which can destroy the answer.
LINGER_SECS = 2.0


class ClientConnection(protocol.Protocol):
    """One end-user connection. Thin: parsing and decisions are delegated to pure modules."""

    def __init__(self, ctx: ProxyContext, scheme: bytes) -> None:
        self.ctx = ctx
        self.scheme = scheme
        self.state = HEAD
        self.buf = b""
        self.timer = Deadline(ctx.reactor)
        self.head_started = False
        self.peer_ip = b""
        self.trusted = False
        # the exchange in flight
        self.req: RequestHead | None = None
        self.route = None
        self.kid: str | None = None
        self.upstream: UpstreamConnection | None = None
        self.body_decoder: ChunkedDecoder | None = None
        self.body_remaining = 0
        self.receiving_body = False
        self.pending_body: list[bytes] = []
        self.keep_alive = True
        self.response_started = False
        self.out_framing = Framing.NONE
        self.extra_headers: list[bytes] = []
        self.request_started_at = 0.0
        self.retried = False
        self.status = 0
        self.in_tunnel = False
        self.websocket = False
        self.upstream_head = b""
        self.req_bytes = 0
        self.resp_bytes = 0
        self.upstream_at = 0.0
        self.request_id = b""
        self.ws_selected: bytes | None = None
        self.sock = None
        self.corked = False
        self.paused_for_connect = False
        self.out: list[bytes] = []
        self.reads: ReadPauser | None = None
        self.revoked = False  # its service was revoked while it was between requests
        self.rewrite: forwarding.PrefixRewrite | None = None

    # ------------------------------------------------------------------ connection life
    def connectionMade(self) -> None:
        ctx = self.ctx
        self.reads = ReadPauser(self.transport)
        ctx.open_connections += 1
        ctx.live_connections.add(self)
        self.sock = direct_socket(self.transport)
        if self.sock is not None:
            self.transport.bufferSize = BUFFER_SIZE
        ctx.metrics.open_connections.inc()
        peer = self.transport.getPeer()
        host = getattr(peer, "host", "127.0.0.1")
        self.peer_ip = host.encode()
        if ctx.config.trusted_proxies:
            try:
                addr = ipaddress.ip_address(host)
                self.trusted = any(addr in net for net in ctx.config.trusted_proxies)
            except ValueError:
                self.trusted = False
        if hasattr(self.transport, "setTcpNoDelay"):
            self.transport.setTcpNoDelay(True)
        # The first request's head deadline runs from the connection's start, not its first byte.
        self.head_started = True
        self._set_timer(ctx.config.head_timeout, self._head_timeout)

    def connectionLost(self, reason=None) -> None:
        if self.state == RELAY and self.req is not None:
            # The client went away mid-exchange: counted as such (nginx's 499), with the bytes
            # that did pass, never as the status the container may have started to send.
            self._finish(CLIENT_CLOSED, "client_closed")
        self.state = CLOSED
        if self.in_tunnel:
            self.in_tunnel = False
            self.ctx.metrics.websockets.dec()
        self.timer.stop()
        ctx = self.ctx
        ctx.open_connections -= 1
        ctx.live_connections.discard(self)
        ctx.metrics.open_connections.dec()
        ctx.registry.unregister(self)
        up = self.upstream
        if up is not None:
            self.upstream = None
            up.client_gone()

    def write(self, data: bytes) -> None:
        """Send to the client; while corked (inside one upstream read), gather instead."""
        if self.corked:
            self.out.append(data)
        else:
            send(self.transport, self.sock, data)

    def flush(self) -> None:
        if self.out:
            data = b"".join(self.out)
            self.out = []
            send(self.transport, self.sock, data)

    def _close(self) -> None:
        self.flush()
        # A producer left registered (and paused by back-pressure) would be resumed instead of
        # the close when the buffer drains, keeping the connection open for ever.
        self._unregister_producer()
        req = self.req
        unread = self.receiving_body or self.buf or (req is not None and req.has_body)
        if self.sock is not None and unread:
            self.state = CLOSED
            self.transport.loseWriteConnection()  # FIN after the answer; reads go on, ignored
            self.transport.resumeProducing()  # back-pressure may have paused them
            self._set_timer(LINGER_SECS, self.transport.loseConnection)
            return
        self.transport.loseConnection()

    def _unregister_producer(self) -> None:
        try:
            self.transport.unregisterProducer()
        except RuntimeError:  # none registered (in-memory transports say so)
            pass

    def _set_timer(self, delay: float, fn) -> None:
        self.timer.set(delay, fn)

    def _cancel_timer(self) -> None:
        self.timer.clear()

    def _head_timeout(self) -> None:
        if self.state != HEAD:
            return
        if self.buf:
            self._fail(408, "head_timeout", "the request head did not arrive in time")
        else:
            self._close()

    def _idle_timeout(self) -> None:
        if self.state == HEAD and not self.buf:
            self._close()

    def revoke(self, denial: access.Denial | None) -> None:
        """The service of this connection's last request was revoked (``denial``: what a
        request now gets) or its container moved (``denial`` None).

        Between requests nothing is cut: the next request gets the current decision and, if
        refused, ``Connection: close``; a connection that stays idle is closed with a FIN
        after ``REVOKED_IDLE_GRACE``. A request whose response has not started gets the
        decision's status. A response under way may finish within the grace (a stream still
        going then is cut); a WebSocket is cut at once.
        """
        state = self.state
        if state == CLOSED:
            return
        if state == HEAD:
            if denial is not None:
                self.revoked = True
                if not self.buf:  # a head on its way keeps its deadline and gets the answer
                    self._set_timer(REVOKED_IDLE_GRACE, self._revoked_idle)
            return
        if state == RELAY and not self.response_started:
            denial = denial or access.TARGET_UNAVAILABLE
            self._relay_error(denial.status, denial.code, denial.message, close_client=True)
            return
        if state == RELAY:
            # A response under way was allowed when asked for, and most are short: cutting it
            # would turn a race with the change into a broken download. It may finish within
            # the grace (then the connection is between requests, as above); a stream still
            # going then is cut.
            self.revoked = denial is not None
            self._set_timer(REVOKED_IDLE_GRACE, self._revoked_cut)
            return
        self.drop("revoked")  # a WebSocket

    def _revoked_idle(self) -> None:
        if self.state == HEAD and not self.buf:
            self.state = CLOSED
            self._close()

    def _revoked_cut(self) -> None:
        if self.state == RELAY:
            self.drop("revoked")

    def close_idle(self) -> None:
        """Close with a FIN if between requests (draining); otherwise leave it be."""
        if self.state == HEAD:
            self.state = CLOSED
            self._close()

    def drop(self, code: str | None = None) -> None:
        """Cut the connection now (RST): a stream or tunnel that may not go on."""
        if self.state == CLOSED:
            return
        if self.state == RELAY and self.req is not None:
            self._finish(self.status or CLIENT_CLOSED, code)
        self.state = CLOSED
        up = self.upstream
        if up is not None:
            self.upstream = None
            up.client_gone()
        self.transport.abortConnection()

    @property
    def busy(self) -> bool:
        """A request is in flight (its response not finished): draining waits for it."""
        return self.state == RELAY

    # --------------------------------------------------------------------- reading
    def dataReceived(self, data: bytes) -> None:
        state = self.state
        if state == TUNNEL:
            up = self.upstream
            send(up.transport, up.sock, data)
            return
        if state == RELAY and self.receiving_body:
            self._body_data(data)
            return
        if state == CLOSED:
            return
        self.buf += data
        if state == RELAY:
            # Pipelined bytes while a response is in flight: hold at most one head's worth.
            if len(self.buf) > self.ctx.config.max_head_bytes:
                self.transport.pauseProducing()
            return
        self._read_head()

    def _read_head(self) -> None:
        buf = self.buf
        if buf[:2] == b"\r\n":
            # RFC 9112 2.2: ignore empty lines before a request line (after a body's CRLF).
            buf = self.buf = buf.lstrip(b"\r\n")
            if not buf:
                return
        if not self.head_started:
            self.head_started = True
            self._set_timer(self.ctx.config.head_timeout, self._head_timeout)
        end = buf.find(HEAD_END)
        limit = self.ctx.config.max_head_bytes
        if end < 0 and len(buf) <= limit:
            if b"\n" in buf or b"\r" in buf:
                # A head that can never end in CRLF CRLF (bare LF or CR line ends) is refused
                # now, not left to time out as if the client were merely slow.
                try:
                    check_partial_line_endings(buf)
                except HeadError as exc:
                    self._fail(exc.status, exc.code, exc.message)
            return  # more to come
        if end < 0 or end + 4 > limit:
            self._fail(431, "head_too_large", f"the request head exceeds {limit} bytes")
            return
        head = buf[: end + 4]
        self.buf = buf[end + 4 :]
        self._cancel_timer()
        self.head_started = False
        try:
            req = parse_request_head(head, self.ctx.config.max_headers)
        except HeadError as exc:
            self._fail(exc.status, exc.code, exc.message)
            return
        self._handle(req)

    def _fail(self, status: int, code: str, message: str) -> None:
        """Answer a malformed request and close: nothing after it can be trusted."""
        self.req = None
        self.route = None
        self.kid = None
        self.request_id = request_id(None)  # never the previous request's id
        self.request_started_at = self.ctx.reactor.seconds()
        self._finish(status, code)
        self.write(forwarding.error_response(status, code, message, keep_alive=False))
        self.state = CLOSED
        self._close()

    # -------------------------------------------------------------------- routing
    def _handle(self, req: RequestHead) -> None:
        ctx = self.ctx
        now = ctx.reactor.seconds()
        self.request_started_at = now
        self.req = req
        self.status = 0
        self.request_id = request_id(req.header(b"x-request-id"))
        self.route = None
        self.ws_selected = None
        self.rewrite = None
        target = req.target
        qpos = target.find(b"?")
        path, query = (target, b"") if qpos < 0 else (target[:qpos], target[qpos + 1 :])
        route = None
        prefix: bytes | None = None
        suffix = ctx.host_suffix
        hostname = _hostname(req.host) if suffix is not None else b""
        if suffix is not None and hostname.endswith(suffix):
            label = hostname[: -len(suffix)]
            sid = ids.service_id_from_label(label.decode("ascii")) if b"." not in label else None
            route = ctx.table.get(sid) if sid else None
            if route is not None and not route.host_routed:
                route = None
            upstream_path = path
        elif path.startswith(LINX_PREFIX):
            sid_end = path.find(b"/", 6)
            sid_bytes = path[6:] if sid_end < 0 else path[6:sid_end]
            sid = sid_bytes.decode("ascii", "replace")
            route = ctx.table.get(sid)
            if route is not None and route.host_routed:
                route = None
            if sid_end < 0 and sid_bytes:
                # The access table's first row, before the id is looked up: it reveals nothing.
                location = path + b"/" + (b"?" + query if qpos >= 0 else b"")
                ctx.registry.unregister(self)
                self.route = route
                keep = self._can_keep(req)
                self._local(
                    forwarding.redirect_response(308, location, keep_alive=keep, http10=req.http10),
                    308,
                    None,
                    keep,
                )
                return
            if route is not None and not route.strip_prefix:
                upstream_path = path  # the app serves under its base URL /linx/<id>/
            else:
                upstream_path = path[sid_end:] if sid_end >= 0 else b"/"
                prefix = path[:sid_end] if sid_end >= 0 else path
        elif ctx.api_route is not None and (path == b"/api" or path.startswith(b"/api/")):
            self._relay_api(req)
            return
        else:
            self._deny(access.Denial(404, "not_found", "no service at this address"), req)
            return

        websocket = req.upgrade == b"websocket"
        origin = req.header(b"origin")
        preflight = (
            req.method == b"OPTIONS"
            and origin is not None
            and req.header(b"access-control-request-method") is not None
        )
        query_tokens, kept_query = access.split_query(query)
        cookie_headers = req.values(b"cookie")
        if route is not None:
            header_tokens = [v.strip() for v in req.values(access.TOKEN_HEADER)]
            cookie_tokens, cookies = access.cookie_token(cookie_headers, route.cookie_name)
            sub_tokens: list[bytes] = []
            if websocket:
                sub_tokens, self.ws_selected = forwarding.token_subprotocols(req)
            creds = access.pick_credentials(query_tokens, header_tokens, cookie_tokens, sub_tokens)
        else:
            cookies = cookie_headers
            creds = access.NO_CREDENTIALS
        same_origin = True
        unsafe_cross_origin = False
        if websocket:
            same_origin = origin is not None and _origin_host(origin) == req.host.lower()
        elif origin is not None and req.method not in _SAFE_METHODS:
            unsafe_cross_origin = _origin_host(origin) != req.host.lower()
        decision = access.decide(
            route,
            creds,
            now,
            fresh=ctx.sync_fresh(),
            websocket=websocket,
            preflight=preflight,
            same_origin=same_origin,
            unsafe_cross_origin=unsafe_cross_origin,
        )
        if isinstance(decision, access.Denial):
            ctx.registry.unregister(self)
            self.route = route  # attributed to the service when it is in the table
            self.kid = None
            self._deny(decision, req)
            return
        self.route = route
        self.kid = decision.kid
        self.revoked = False
        ctx.registry.register(self, route.service_id)
        if route.link_of_kid and ctx.links is not None:
            ctx.links.used(route, decision.kid, now)
        self.extra_headers = []
        if decision.source == "query":
            cookie = self._token_cookie(route, decision, now)
            if _is_navigation(req):
                location = path + (b"?" + kept_query if kept_query else b"")
                keep = self._can_keep(req)
                self._local(
                    forwarding.redirect_response(
                        303,
                        location,
                        keep_alive=keep,
                        http10=req.http10,
                        extra=[cookie, b"Referrer-Policy: no-referrer\r\n"],
                    ),
                    303,
                    None,
                    keep,
                )
                return
            self.extra_headers.append(cookie)
        upstream_target = upstream_path + (b"?" + kept_query if kept_query else b"")
        if prefix is not None and route.strip_prefix:
            self.rewrite = forwarding.PrefixRewrite(prefix, route.target, upstream_path)
        self._relay(route, req, upstream_target, cookies, prefix, websocket)

    def _relay_api(self, req: RequestHead) -> None:
        """``/api/`` on the proxy's own origin (LINX_PROXY_API_UPSTREAM), relayed as it came:
        the control plane authenticates it, so no Linx token, cookie or access rule applies."""
        self.route = self.ctx.api_route
        self.rewrite = None
        self.kid = None
        self.revoked = False
        self.ctx.registry.unregister(self)  # a change to the last service must not cut this
        self.extra_headers = []
        # The console's session cookie is the control plane's own: never relayed (SPEC 7).
        _, cookies = access.cookie_token(req.values(b"cookie"), CONSOLE_COOKIE)
        self._relay(self.route, req, req.target, cookies, None, False)

    def _relay(self, route, req: RequestHead, target: bytes, cookies, prefix: bytes | None, websocket: bool):
        head = forwarding.upstream_request_head(
            req,
            target,
            cookies=cookies,
            client_ip=self.peer_ip,
            scheme=self.scheme,
            prefix=prefix,
            trusted=self.trusted,
            websocket=websocket,
            request_id=self.request_id,
        )
        self._start_relay(route, req, head, websocket)

    def _token_cookie(self, route, decision: access.Grant, now: float) -> bytes:
        key = route.get(decision.kid)
        ends = [t for t in (route.expires_at, key.expires_at if key else None) if t is not None]
        max_age = int(min(ends) - now) if ends else None
        path = b"/" if route.host_routed else route.prefix + b"/"
        return forwarding.token_cookie(
            route.cookie_name,
            decision.token,
            path=path,
            secure=self.scheme == b"https",
            max_age=max_age,
        )

    def _can_keep(self, req: RequestHead) -> bool:
        return req.keep_alive and not req.has_body

    def _deny(self, denial: access.Denial, req: RequestHead) -> None:
        origin = req.header(b"origin")
        keep = self._can_keep(req) and not self.revoked
        data = forwarding.error_response(
            denial.status,
            denial.code,
            denial.message,
            html_body=forwarding.prefers_html(req.header(b"accept")),
            keep_alive=keep,
            http10=req.http10,
            head_only=req.method == b"HEAD",
            origin=origin,
            starting=_starting(req, denial.code),
        )
        self._local(data, denial.status, denial.code, keep)

    def _local(self, data: bytes, status: int, code: str | None, keep: bool) -> None:
        """Send an answer of the proxy's own, then read the next request or close."""
        self._finish(status, code)
        self.write(data)
        if keep:
            self._next_request()
        else:
            self.state = CLOSED
            self._close()

    # --------------------------------------------------------------------- relaying
    def _start_relay(self, route, req: RequestHead, head: bytes, websocket: bool) -> None:
        self.state = RELAY
        self.response_started = False
        self.retried = False
        self.upstream_head = head
        self.websocket = websocket
        leftover, self.buf = self.buf, b""
        self.pending_body = []
        self.receiving_body = req.has_body
        if req.framing == Framing.CHUNKED:
            self.body_decoder = ChunkedDecoder(400, self.ctx.config.max_head_bytes)
        elif req.framing == Framing.LENGTH:
            self.body_remaining = req.content_length
        if leftover:
            if self.receiving_body:
                self._body_data(leftover)
            else:
                self.buf = leftover
        if self.state != RELAY:
            return  # the body already in hand was malformed: refused, nothing goes upstream
        self.ctx.pool.acquire(route.target, self, fresh=websocket)
        if self.upstream is None and self.state == RELAY:
            # A new connection is on its way: read no more body bytes until it is up (they
            # would have nowhere to go). A pooled one was lent at once: no pause, no syscalls.
            self.paused_for_connect = True
            self.transport.pauseProducing()

    def upstream_ready(self, up: UpstreamConnection) -> None:
        """Called by the pool with a connected upstream (new or reused)."""
        if self.state != RELAY:
            up.release(reusable=False)
            return
        self.upstream = up
        if self.route is not self.ctx.api_route:  # the control plane is not a probed target
            self.ctx.prober.observed(self.route, True)
        if self.pending_body:
            send(up.transport, up.sock, b"".join([self.upstream_head, *self.pending_body]))
            self.pending_body = []
        else:
            send(up.transport, up.sock, self.upstream_head)
        # Back-pressure both ways: a full write buffer on one side pauses reads on the other.
        up.transport.registerProducer(self.reads, True)
        self.transport.registerProducer(up.reads, True)
        up.expect_response(self.req.method, self.ctx.config.response_timeout)
        if self.paused_for_connect:
            self.paused_for_connect = False
            self.transport.resumeProducing()

    def upstream_failed(self, reason) -> None:
        """The connect failed (refused, unreachable or timed out)."""
        if self.state != RELAY:
            return
        if self.route is not self.ctx.api_route:
            self.ctx.prober.observed(self.route, False)
        timed_out = reason is not None and reason.check(neterror.TimeoutError)
        self._relay_error(
            503,
            "target_connect_timeout" if timed_out else "target_connect_failed",
            "the container did not accept the connection in time"
            if timed_out
            else "the container refused the connection",
        )

    def _body_data(self, data: bytes) -> None:
        self.req_bytes += len(data)
        up = self.upstream
        if self.body_decoder is not None:
            try:
                pieces, rest = self.body_decoder.feed(data)
            except HeadError as exc:
                self._relay_error(exc.status, exc.code, exc.message, close_client=True)
                return
            out = []
            for piece in pieces:
                if piece:
                    out += encode_chunk(piece)
            if rest is not None:
                out.append(LAST_CHUNK)
                self.body_decoder = None
                self.receiving_body = False
                self.buf = rest
            if out:
                if up is not None:
                    send(up.transport, up.sock, b"".join(out))
                else:
                    self.pending_body += out
        else:
            remaining = self.body_remaining
            if len(data) >= remaining:
                piece, self.buf = data[:remaining], data[remaining:]
                self.body_remaining = 0
                self.receiving_body = False
            else:
                piece = data
                self.body_remaining = remaining - len(data)
            if piece:
                if up is not None:
                    send(up.transport, up.sock, piece)
                else:
                    self.pending_body.append(piece)
        if not self.receiving_body and self.buf and len(self.buf) > self.ctx.config.max_head_bytes:
            self.transport.pauseProducing()

    # called by UpstreamConnection
    def response_head(self, resp: ResponseHead, upstream: UpstreamConnection) -> bool:
        """Start the client's response. Returns False if the exchange was ended instead."""
        req = self.req
        self.upstream_at = self.ctx.reactor.seconds()
        if resp.status == 101:
            if not self.websocket or not _valid_accept(req, resp):
                self._relay_error(502, "bad_upgrade", "the container's WebSocket handshake is invalid")
                return False
            if self.ws_selected is not None and resp.header(b"sec-websocket-protocol") is None:
                # The client offered only the token carrier, which the container never saw;
                # browsers fail a handshake that selects none of the offered subprotocols.
                self.extra_headers.append(b"Sec-WebSocket-Protocol: " + self.ws_selected + b"\r\n")
            self.write(
                forwarding.client_response_head(
                    resp, framing=Framing.NONE, keep_alive=True, extra=self.extra_headers, upgrade=True
                )
            )
            self.status = 101
            self._finish(101)
            self.state = TUNNEL
            self.in_tunnel = True
            self.ctx.metrics.websockets.inc()
            if self.buf:
                send(upstream.transport, upstream.sock, self.buf)
                self.buf = b""
            return True
        self.response_started = True
        self.status = resp.status
        framing = resp.framing
        client_11 = req.version == (1, 1)
        if framing in (Framing.CHUNKED, Framing.CLOSE):
            framing = Framing.CHUNKED if client_11 else Framing.CLOSE
        self.out_framing = framing
        self.keep_alive = req.keep_alive and framing != Framing.CLOSE
        self.write(
            forwarding.client_response_head(
                resp,
                framing=framing,
                keep_alive=self.keep_alive,
                extra=self.extra_headers,
                http10=req.http10,
                rewrite=self.rewrite,
            )
        )
        return True

    def informational(self, data: bytes) -> None:
        if self.req.version == (1, 1):
            self.write(data)

    def response_body(self, pieces: list[bytes]) -> None:
        if self.out_framing == Framing.CHUNKED:
            out = []
            for piece in pieces:
                if piece:
                    out += encode_chunk(piece)
            if out:
                self.write(b"".join(out))
        elif len(pieces) == 1:
            self.write(pieces[0])
        else:
            self.write(b"".join(pieces))

    def response_done(self, upstream_reusable: bool) -> None:
        """The whole response has been relayed."""
        if self.out_framing == Framing.CHUNKED:
            self.write(LAST_CHUNK)
        self._finish(self.status)
        up = self.upstream
        self.upstream = None
        finished_request = not self.receiving_body
        self.transport.unregisterProducer()
        if up is not None:
            up.transport.unregisterProducer()
            up.release(reusable=upstream_reusable and finished_request)
        if self.keep_alive and finished_request and self.state == RELAY:
            self._next_request()
        else:
            self.state = CLOSED
            self._close()

    def upstream_lost(self, before_response: bool, reused: bool) -> None:
        """The container's connection broke during the exchange."""
        if self.state == TUNNEL:
            self.upstream = None
            self.state = CLOSED
            self._close()
            return
        if self.state != RELAY:
            return
        self.upstream = None
        if before_response:
            # A reused keep-alive connection may have been closed by the container just as we
            # sent: retry once on a new one, but only if no body byte has gone out.
            if reused and not self.retried and not self.req.has_body:
                self.retried = True
                self.transport.unregisterProducer()
                self.paused_for_connect = True
                self.transport.pauseProducing()
                self.ctx.pool.acquire(self.route.target, self, fresh=True)
                return
            self._relay_error(
                502, "upstream_closed", "the container closed the connection without a response"
            )
            return
        # Mid-body: make the truncation unmistakable to the client.
        self._finish(self.status)
        self.state = CLOSED
        self.transport.abortConnection()

    def upstream_bad_response(self, exc: HeadError) -> None:
        self._relay_error(exc.status, exc.code, exc.message)

    def upstream_timeout(self) -> None:
        self._relay_error(504, "upstream_timeout", "the container did not answer in time")

    def _relay_error(self, status: int, code: str, message: str, close_client: bool = False) -> None:
        up = self.upstream
        self.upstream = None
        if up is not None:
            up.transport.unregisterProducer()
            up.release(reusable=False)
        try:
            self.transport.unregisterProducer()
        except RuntimeError:
            pass
        if self.response_started:
            self._finish(self.status, code)
            self.state = CLOSED
            self.transport.abortConnection()
            return
        req = self.req
        keep = self._can_keep(req) and not close_client and not self.receiving_body
        data = forwarding.error_response(
            status,
            code,
            message,
            html_body=forwarding.prefers_html(req.header(b"accept")),
            keep_alive=keep,
            http10=req.http10,
            head_only=req.method == b"HEAD",
            origin=req.header(b"origin"),
            starting=self.route is not self.ctx.api_route and _starting(req, code),
        )
        self._finish(status, code)
        self.write(data)
        if keep:
            self._next_request()
        else:
            self.state = CLOSED
            self._close()

    def _finish(self, status: int, code: str | None = None) -> None:
        """Account for one answered request: metrics and the access log line."""
        ctx = self.ctx
        now = ctx.reactor.seconds()
        sid = self.route.service_id if self.route is not None else ""
        duration = now - self.request_started_at
        ctx.metrics.observe(sid, status, duration, self.req_bytes, self.resp_bytes)
        if ctx.access_log.enabled:
            req = self.req
            ctx.access_log.request(
                now,
                sid,
                req,
                status,
                self.req_bytes,
                self.resp_bytes,
                duration,
                self.upstream_at - self.request_started_at if self.upstream_at else None,
                self.peer_ip,
                code,
                self.request_id,
            )
        self.req_bytes = 0
        self.resp_bytes = 0
        self.upstream_at = 0.0

    def _next_request(self) -> None:
        self.state = HEAD
        self.req = None
        self.body_decoder = None
        self.receiving_body = False
        self.paused_for_connect = False
        self.transport.resumeProducing()
        if self.buf:
            self._read_head()
        elif self.revoked:
            self._set_timer(REVOKED_IDLE_GRACE, self._revoked_idle)
        else:
            self._set_timer(self.ctx.config.idle_timeout, self._idle_timeout)


def _hostname(host: bytes) -> bytes:
    """``Host`` without its port, lower-cased."""
    host = host.lower()
    if host.startswith(b"["):
        return host[: host.find(b"]") + 1]
    return host.partition(b":")[0]


# 503s meaning "the app is not up (yet)": a browser navigation gets the self-reloading page.
_STARTING_CODES = frozenset(("target_unavailable", "target_connect_failed", "target_connect_timeout"))


def _starting(req: RequestHead, code: str) -> bool:
    """A browser navigation to an app that is not up: it gets the self-reloading page."""
    return code in _STARTING_CODES and _is_navigation(req)


def _is_navigation(req: RequestHead) -> bool:
    """A browser opening the page (SPEC section 5): a GET with Sec-Fetch-Mode: navigate, or
    one whose Accept names text/html."""
    if req.method != b"GET":
        return False
    mode = req.header(b"sec-fetch-mode")
    if mode is not None:
        return mode.strip().lower() == b"navigate"
    accept = req.header(b"accept")
    return accept is not None and b"text/html" in accept.lower()


def _origin_host(origin: bytes) -> bytes:
    rest = origin.partition(b"://")[2]
    return rest.rstrip(b"/").lower()


def _valid_accept(req: RequestHead, resp: ResponseHead) -> bool:
    key = req.header(b"sec-websocket-key")
    got = resp.header(b"sec-websocket-accept")
    return key is not None and got is not None and got.strip() == forwarding.websocket_accept(key)


TOO_MANY_CONNECTIONS = forwarding.error_response(
    503,
    "too_many_connections",
    "the proxy is at its connection limit; try again shortly",
    keep_alive=False,
)


class RefusedConnection(protocol.Protocol):
    """Past ``LINX_MAX_CONNECTIONS``: one canned 503, then a FIN. The request is never parsed;
    its bytes are read and dropped for ``LINGER_SECS`` so that closing sends no RST (which
    could destroy the 503 before the client reads it)."""

    def __init__(self, reactor) -> None:
        self.reactor = reactor
        self.timer = None

    def connectionMade(self) -> None:
        transport = self.transport
        transport.write(TOO_MANY_CONNECTIONS)
        if direct_socket(transport) is None:  # TLS: no half-close; close after the write
            transport.loseConnection()
            return
        transport.loseWriteConnection()
        self.timer = self.reactor.callLater(LINGER_SECS, transport.loseConnection)

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason=None) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


class ProxyFactory(protocol.Factory):
    """Builds client connections; past the connection limit, a ``RefusedConnection``."""

    noisy = False

    def __init__(self, ctx: ProxyContext, scheme: bytes = b"http") -> None:
        self.ctx = ctx
        self.scheme = scheme

    def buildProtocol(self, addr):
        ctx = self.ctx
        if ctx.draining:
            return None
        if ctx.open_connections >= ctx.config.max_connections:
            ctx.metrics.refused_connections.inc()
            return RefusedConnection(ctx.reactor)
        return ClientConnection(ctx, self.scheme)
