"""The relay: client connections, from the first byte of a head to the decision about it.

A client connection lives through explicit states::

    HEAD     buffering a request head (the only thing ever buffered, bounded by the 431 limit)
    RELAY    one request in flight: its body streams to the container, the response back
    TUNNEL   after a container's real 101: bytes relayed both ways, unparsed, until either side closes
    CLOSED

Each parsed request is handed to a new ``dataplane.exchange.Exchange``, which relays it (or
answers it) and moves the connection on. Bodies are never held: once one side's writes back
up, the other side's reads become their producer, so a slow reader on one side stops reads on
the other (back-pressure both ways); a long Content-Length body, request or response, moves
in the kernel (``dataplane.splice``). The container side, pooled per target, is
``dataplane.upstream``; what connections share is ``dataplane.context``.

Everything here runs on the reactor thread; time comes from the reactor passed in.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from twisted.internet import protocol
from twisted.logger import Logger

from dataplane import access, forwarding
from dataplane.access_log import request_id
from dataplane.deadline import Deadline, FifoDeadlines
from dataplane.exchange import CLIENT_CLOSED, CLOSED, HEAD, RELAY, TUNNEL, Exchange, can_keep
from dataplane.fastio import BUFFER_SIZE, LINGER_SECS, READ_SIZE, close_now, direct_socket, send
from dataplane.http_head import (
    HEAD_END,
    HeadError,
    RequestHead,
    check_partial_line_endings,
    parse_request_head,
)
from dataplane.request_view import API, HOST, PATH, SLASH, view_of
from dataplane.upstream import ReadPauser

if TYPE_CHECKING:
    from dataplane.context import ProxyContext
    from dataplane.routes import Route

log = Logger()

__all__ = ["CLOSED", "HEAD", "RELAY", "TUNNEL", "ClientConnection", "ProxyFactory", "RefusedConnection"]
CONSOLE_COOKIE = b"linx_console"
# A revoked connection between requests waits this long for the request a client may already
# have sent (it gets the access decision, not a reset), then is closed with a FIN.
REVOKED_IDLE_GRACE = 1.0


class ClientConnection(protocol.Protocol):
    """One end-user connection: reads heads, decides, and hands each request to an
    ``Exchange``. Parsing and decisions are delegated to pure modules."""

    def __init__(self, ctx: ProxyContext, scheme: bytes) -> None:
        self.ctx = ctx
        self.scheme = scheme
        self.state = HEAD
        self.buf = b""
        self.timer = Deadline(ctx.reactor, ctx.config.head_timeout)
        self.first_head: list | None = None  # its entry in ctx.first_heads until the head is in
        self.head_started = False
        self.peer_ip = b""
        self.trusted = False
        self.sock = None
        self.reads: ReadPauser | None = None
        self.in_tunnel = False
        self.exchange: Exchange | None = None  # the request in flight, or the tunnel
        # The grant that outlives an exchange: the service and key of the last allowed
        # request, which the registry re-checks on every change to that service.
        self.route: Route | None = None
        self.kid: str | None = None
        self.revoked = False  # its service was revoked while it was between requests
        # The last token cookie line made here: (route, token, valid from, valid until, line).
        self.cookie_memo: tuple | None = None
        # The last container head made here, but its request id (see Exchange.relay).
        self.head_kept: tuple | None = None

    @property
    def grant(self) -> tuple[Route | None, str | None]:
        return self.route, self.kid

    @property
    def busy(self) -> bool:
        """A request is in flight (its response not finished): draining waits for it."""
        return self.state == RELAY

    @property
    def tunnelling(self) -> bool:
        return self.state == TUNNEL

    # ------------------------------------------------------------------ connection life
    def connectionMade(self) -> None:
        ctx = self.ctx
        self.reads = ReadPauser(self.transport)
        ctx.open_connections += 1
        ctx.live_connections.add(self)
        self.sock = direct_socket(self.transport)
        # A TCP transport's peer address as accept(2) gave it: no IPv4Address per connection
        client = getattr(self.transport, "client", None)
        host = client[0] if type(client) is tuple else getattr(self.transport.getPeer(), "host", "127.0.0.1")
        self.peer_ip = host.encode()
        if ctx.config.trusted_proxies:
            try:
                addr = ipaddress.ip_address(host)
                self.trusted = any(addr in net for net in ctx.config.trusted_proxies)
            except ValueError:
                self.trusted = False
        # TCP_NODELAY is set on the listening socket, and accepted sockets inherit it
        # (service._listen): no setsockopt per connection.
        # The first request's head deadline runs from the connection's start, not its first byte.
        self.head_started = True
        self.first_head = ctx.first_heads.add(self._head_timeout)

    def connectionLost(self, reason=None) -> None:
        ex = self.exchange
        if self.state == RELAY:
            # The client went away mid-exchange: counted as such (nginx's 499), with the bytes
            # that did pass, never as the status the container may have started to send.
            ex.finish(CLIENT_CLOSED, "client_closed")
        self.state = CLOSED
        if self.in_tunnel:
            self.in_tunnel = False
            self.ctx.metrics.websockets.dec()
        self.timer.stop()
        if self.first_head is not None:
            FifoDeadlines.cancel(self.first_head)
            self.first_head = None
        ctx = self.ctx
        ctx.open_connections -= 1
        ctx.live_connections.discard(self)
        ctx.registry.unregister(self)
        if ex is not None:
            ex.client_gone()

    def write(self, data: bytes) -> None:
        send(self.transport, self.sock, data)

    def _close(self) -> None:
        # A producer left registered (and paused by back-pressure) would be resumed instead of
        # the close when the buffer drains, keeping the connection open for ever.
        self.unregister_producer()
        ex = self.exchange
        req = ex.req if ex is not None else None
        unread = self.buf or (req is not None and (ex.receiving_body or req.has_body))
        if self.sock is not None and unread:
            self.state = CLOSED
            self.transport.loseWriteConnection()  # FIN after the answer; reads go on, ignored
            self.transport.resumeProducing()  # back-pressure may have paused them
            self.timer.set(LINGER_SECS, self.transport.loseConnection)
            return
        close_now(self.transport, self.sock)

    def unregister_producer(self) -> None:
        try:
            self.transport.unregisterProducer()
        except RuntimeError:  # none registered (in-memory transports say so)
            pass

    def _head_timeout(self) -> None:
        if self.state != HEAD:
            return
        if self.buf:
            self._fail(408, "head_timeout", "the request head did not arrive in time", self.buf)
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
                    self.timer.set(REVOKED_IDLE_GRACE, self._revoked_idle)
            return
        ex = self.exchange
        if state == RELAY and not ex.response_started:
            denial = denial or access.TARGET_UNAVAILABLE
            ex.relay_error(denial.status, denial.code, denial.message, close_client=True)
            return
        if state == RELAY:
            # A response under way was allowed when asked for, and most are short: cutting it
            # would turn a race with the change into a broken download. It may finish within
            # the grace (then the connection is between requests, as above); a stream still
            # going then is cut.
            self.revoked = denial is not None
            self.timer.set(REVOKED_IDLE_GRACE, self._revoked_cut)
            return
        self.drop("revoked")  # a WebSocket

    def moved(self, route: Route) -> None:
        """Its service's container has a new address: streams to the old one end; the grant
        stands."""
        self.revoke(None)
        self.route = route

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
        ex = self.exchange
        if self.state == RELAY:
            ex.finish(ex.status or CLIENT_CLOSED, code)
        self.state = CLOSED
        if ex is not None:
            ex.client_gone()
        self.transport.abortConnection()

    # ------------------------------------------------- called by the current exchange
    def exchange_over(self, keep: bool) -> None:
        """The exchange has answered: read the next request, or close."""
        if keep:
            self.state = HEAD
            self.exchange = None
            self.transport.bufferSize = READ_SIZE
            self.reads.resume()
            if self.buf:
                self._read_head()
            elif self.revoked:
                self.timer.set(REVOKED_IDLE_GRACE, self._revoked_idle)
            else:
                self.timer.set(self.ctx.config.idle_timeout, self._idle_timeout)
        else:
            self.state = CLOSED
            self._close()

    def tunnel_opened(self) -> None:
        """The container switched protocols: bytes now go both ways unparsed."""
        self.state = TUNNEL
        self.in_tunnel = True
        self.ctx.metrics.websockets.inc()

    def abort(self) -> None:
        """Cut the client mid-response (RST): a truncation it cannot mistake for an end."""
        self.state = CLOSED
        self.transport.abortConnection()

    # --------------------------------------------------------------------- reading
    def dataReceived(self, data: bytes) -> None:
        if len(data) == READ_SIZE:
            self.transport.bufferSize = BUFFER_SIZE  # a bulk transfer: see fastio.BUFFER_SIZE
        state = self.state
        if state == TUNNEL:
            up = self.exchange.upstream
            send(up.transport, up.sock, data)
            return
        if state == RELAY:
            ex = self.exchange
            if ex.receiving_body:
                ex.body_data(data)
                return
            # Pipelined bytes while a response is in flight: hold at most one head's worth.
            self.buf += data
            if len(self.buf) > self.ctx.config.max_head_bytes:
                self.reads.pauseProducing()
            return
        if state == CLOSED:
            return
        self.buf += data
        self._read_head()

    def _read_head(self) -> None:
        buf = self.buf
        if buf[:2] == b"\r\n":
            # RFC 9112 2.2: ignore empty lines before a request line (after a body's CRLF).
            buf = self.buf = buf.lstrip(b"\r\n")
            if not buf:
                return
        end = buf.find(HEAD_END)
        limit = self.ctx.config.max_head_bytes
        if end < 0 and len(buf) <= limit:
            # The head deadline runs from its first byte; a head that came whole in one read
            # (nearly all of them) needs none, so it costs no timer.
            if not self.head_started:
                self.head_started = True
                self.timer.set(self.ctx.config.head_timeout, self._head_timeout)
            if b"\n" in buf or b"\r" in buf:
                # A head that can never end in CRLF CRLF (bare LF or CR line ends) is refused
                # now, not left to time out as if the client were merely slow.
                try:
                    check_partial_line_endings(buf)
                except HeadError as exc:
                    self._fail(exc.status, exc.code, exc.message, buf)
            return  # more to come
        if end < 0 or end + 4 > limit:
            self._fail(431, "head_too_large", f"the request head exceeds {limit} bytes", buf[:limit])
            return
        head = buf[: end + 4]
        self.buf = buf[end + 4 :]
        self.timer.clear()
        if self.first_head is not None:
            FifoDeadlines.cancel(self.first_head)
            self.first_head = None
        self.head_started = False
        try:
            req = parse_request_head(head, self.ctx.config.max_headers)
        except HeadError as exc:
            self._fail(exc.status, exc.code, exc.message, head)
            return
        self._handle(req)

    def _fail(self, status: int, code: str, message: str, raw: bytes) -> None:
        """Answer a malformed request (``raw``: what there is of its head) and close: nothing
        after it can be trusted."""
        ex = self.exchange = Exchange(self, None, self.ctx.reactor.seconds(), request_id(None))
        data = forwarding.error_response(
            status, code, message, keep_alive=False, origin=forwarding.raw_origin(raw)
        )
        ex.answer(data, status, code, False)

    # -------------------------------------------------------------------- routing
    def _handle(self, req: RequestHead) -> None:
        ctx = self.ctx
        now = ctx.reactor.seconds()
        v = view_of(req, ctx.host_suffix)
        ex = self.exchange = Exchange(self, req, now, request_id(v.request_id))
        kind = v.kind
        route = ctx.table.get(v.sid) if v.sid else None
        prefix: bytes | None = None
        if kind == PATH:
            if route is not None and route.host_routed:
                route = None
            if route is not None and not route.strip_prefix:
                # the app serves under its base URL /linx/<id>/
                upstream_path, upstream_target = v.path, v.path_target
            else:
                upstream_path, upstream_target = v.stripped, v.stripped_target
                prefix = v.prefix
        elif kind == HOST:
            if route is not None and not route.host_routed:
                route = None
            upstream_path, upstream_target = v.path, v.path_target
        elif kind == SLASH:
            # The access table's first row, before the id is looked up: it reveals nothing.
            self._ungrant()
            ex.route = route if route is not None and not route.host_routed else None
            keep = v.keep
            data = forwarding.redirect_response(308, v.location, keep_alive=keep, http10=req.http10)
            ex.answer(data, 308, None, keep)
            return
        elif kind == API and ctx.api_route is not None:
            self._relay_api(ex, req)
            return
        else:
            self._deny(ex, access.Denial(404, "not_found", "no service at this address"), req)
            return

        websocket = v.websocket
        if route is not None:
            creds, cookies = v.carried(route)
            if websocket:
                ex.ws_selected = v.ws_selected
        else:
            creds, cookies = access.NO_CREDENTIALS, v.cookie_headers
        decision = access.decide(
            route,
            creds,
            now,
            fresh=ctx.sync_fresh(),
            websocket=websocket,
            preflight=v.preflight,
            same_origin=v.same_origin,
            unsafe_cross_origin=v.unsafe_cross_origin,
        )
        ex.route = route  # attributed to the service when it is in the table
        if isinstance(decision, access.Denial):
            self._ungrant()
            self._deny(ex, decision, req)
            return
        self.route = route
        self.kid = decision.kid
        self.revoked = False
        ctx.registry.register(self, route.service_id)
        if route.link_of_kid and ctx.links is not None:
            ctx.links.used(route, decision.kid, now)
        if decision.source == "query":
            # Secure over TLS: this listener's, or a trusted front proxy's that terminated it
            secure = self.scheme == b"https" or (self.trusted and forwarding.forwarded_https(req))
            cookie = self._token_cookie(route, decision, now, secure)
            if v.navigation:
                keep = v.keep
                ex.answer(
                    forwarding.redirect_response(
                        303,
                        v.path_target,  # the same URL without its token
                        keep_alive=keep,
                        http10=req.http10,
                        extra=[cookie, b"Referrer-Policy: no-referrer\r\n"],
                    ),
                    303,
                    None,
                    keep,
                )
                return
            ex.extra_headers.append(cookie)
        if prefix is not None:
            ex.rewrite = forwarding.PrefixRewrite(prefix, route.target, upstream_path)
        ex.relay(route, upstream_target, cookies, prefix, websocket)

    def _ungrant(self) -> None:
        """This request was not granted (or needs no grant): no change to the last service
        may cut what follows."""
        self.ctx.registry.unregister(self)
        self.route = None
        self.kid = None

    def _relay_api(self, ex: Exchange, req: RequestHead) -> None:
        """``/api/`` on the proxy's own origin (LINX_PROXY_API_UPSTREAM), relayed as it came:
        the control plane authenticates it, so no Linx token, cookie or access rule applies."""
        self._ungrant()
        self.revoked = False
        # The console's session cookie is the control plane's own: never relayed (SPEC 7).
        _, cookies = access.cookie_token(req.values(b"cookie"), CONSOLE_COOKIE)
        ex.relay(self.ctx.api_route, req.target, cookies, None, False)

    def _token_cookie(self, route: Route, decision: access.Grant, now: float, secure: bool) -> bytes:
        # A client sending its token in every query (an API client, a script) gets the same
        # line again within the same second of Max-Age: made once per connection, route
        # (immutable: a change is a new Route) and token, while Max-Age reads the same.
        memo = self.cookie_memo
        if (
            memo is not None
            and memo[0] is route
            and memo[1] == decision.token
            and memo[2] < now <= memo[3]
            and memo[5] is secure
        ):
            return memo[4]
        key = route.get(decision.kid)
        ends = [t for t in (route.expires_at, key.expires_at if key else None) if t is not None]
        if ends:
            end = min(ends)
            whole = int(end - now)
            valid = (end - whole - 1, end - whole)  # where int(end - now) == whole
            # Under a second left: Max-Age=0 would have the browser drop the cookie at once
            max_age = whole or 1
        else:
            max_age = None
            valid = (float("-inf"), float("inf"))
        path = b"/" if route.host_routed else route.prefix + b"/"
        line = forwarding.token_cookie(
            route.cookie_name,
            decision.token,
            path=path,
            secure=secure,
            max_age=max_age,
        )
        self.cookie_memo = (route, decision.token, valid[0], valid[1], line, secure)
        return line

    def _deny(self, ex: Exchange, denial: access.Denial, req: RequestHead) -> None:
        keep = can_keep(req) and not self.revoked
        data = forwarding.error_response(
            denial.status,
            denial.code,
            denial.message,
            html_body=forwarding.prefers_html(req.header(b"accept")),
            keep_alive=keep,
            http10=req.http10,
            head_only=req.method == b"HEAD",
            origin=req.header(b"origin"),
            starting=forwarding.starting(req, denial.code),
        )
        ex.answer(data, denial.status, denial.code, keep)


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
