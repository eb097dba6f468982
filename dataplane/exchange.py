"""One request and its answer on a client connection: the request's body on its way to the
container, the container's response on its way back, and the accounting of both.

A new request is a new ``Exchange``, so nothing is ever reset. The connection
(``dataplane.relay``) reads heads, decides, and says which exchange is current; the exchange
drives the connection's state from RELAY to the next request, to a TUNNEL, or to CLOSED.
The container side (``dataplane.upstream``) calls back only through the ``UpstreamClient``
protocol, which ``Exchange`` implements.

Everything here runs on the reactor thread; time comes from the context's reactor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet import error as neterror

from dataplane import forwarding, splice
from dataplane.fastio import BUFFER_SIZE, queued, send, try_send
from dataplane.http_head import (
    LAST_CHUNK,
    ChunkedDecoder,
    Framing,
    HeadError,
    RequestHead,
    ResponseHead,
    encode_chunk,
)

if TYPE_CHECKING:
    from dataplane.context import ProxyContext
    from dataplane.relay import ClientConnection
    from dataplane.routes import Route
    from dataplane.upstream import UpstreamConnection

# What a client connection is doing (``ClientConnection.state``).
HEAD, RELAY, TUNNEL, CLOSED = range(4)
CLIENT_CLOSED = 499  # logged status of a request its client abandoned (as nginx logs it)


def can_keep(req: RequestHead) -> bool:
    """Whether the connection may read another request after answering this one ourselves:
    a request body we did not read would be taken for the next head."""
    return req.keep_alive and not req.has_body


class Exchange:
    """One request/response exchange. Created for every parsed request (and for a head that
    could not be parsed), whether it is relayed or answered by the proxy itself."""

    __slots__ = (
        "conn",
        "ctx",
        "transport",
        "sock",
        "req",
        "route",
        "request_id",
        "started_at",
        "status",
        "finished",
        "upstream",
        "upstream_head",
        "websocket",
        "ws_selected",
        "extra_headers",
        "rewrite",
        "decoder",
        "remaining",
        "receiving_body",
        "pending_body",
        "keep_alive",
        "response_started",
        "out_framing",
        "retried",
        "req_bytes",
        "resp_bytes",
        "upstream_at",
        "paused_for_connect",
        "corked",
        "out",
        "client_paced",
        "upstream_paced",
        "body_splice_off",
    )

    def __init__(
        self, conn: ClientConnection, req: RequestHead | None, now: float, request_id: bytes
    ) -> None:
        self.conn = conn
        self.ctx: ProxyContext = conn.ctx
        self.transport = conn.transport  # the client's: the upstream side tunnels into it
        self.sock = conn.sock
        self.req = req
        self.route: Route | None = None  # the service it is attributed to, once looked up
        self.request_id = request_id
        self.started_at = now
        self.status = 0
        self.finished = False
        self.upstream: UpstreamConnection | None = None
        self.upstream_head = b""
        self.websocket = False
        self.ws_selected: bytes | None = None
        self.extra_headers: list[bytes] = []
        self.rewrite: forwarding.PrefixRewrite | None = None
        self.decoder: ChunkedDecoder | None = None
        self.remaining = 0
        self.receiving_body = False
        self.pending_body: list[bytes] = []
        self.keep_alive = True
        self.response_started = False
        self.out_framing = Framing.NONE
        self.retried = False
        self.req_bytes = 0
        self.resp_bytes = 0
        self.upstream_at = 0.0
        self.paused_for_connect = False
        self.corked = False
        self.out: list[bytes] = []
        # Back-pressure, set up only once a side's kernel buffer is full (most exchanges never
        # get there): the container's reads registered as the producer of the client's
        # writes, and the client's reads as the producer of the container's.
        self.client_paced = False
        self.upstream_paced = False
        self.body_splice_off = False  # the container spoke during the body: no splice for it

    @property
    def live(self) -> bool:
        """Still the connection's exchange in flight (not answered, cut or tunnelled)."""
        conn = self.conn
        return conn.state == RELAY and conn.exchange is self

    # ------------------------------------------------------------------ writing
    def write(self, data: bytes) -> None:
        """Send to the client; while corked (inside one upstream read), gather instead."""
        self.resp_bytes += len(data)
        if self.corked:
            self.out.append(data)
        else:
            self._to_client(data)

    def cork(self) -> None:
        self.corked = True

    def uncork(self) -> None:
        self.corked = False
        if self.out:
            data = b"".join(self.out)
            self.out = []
            self._to_client(data)

    def _to_client(self, data: bytes) -> None:
        rest = try_send(self.transport, self.sock, data)
        if rest:
            up = self.upstream
            if up is not None and not self.client_paced:
                # the client reads slower than the container sends: pace the container
                self.client_paced = True
                self.transport.registerProducer(up.reads, True)
            self.transport.bufferSize = BUFFER_SIZE  # a bulk transfer: see fastio.BUFFER_SIZE
            self.transport.write(rest)

    def _to_upstream(self, up: UpstreamConnection, data: bytes) -> None:
        rest = try_send(up.transport, up.sock, data)
        if rest:
            if not self.upstream_paced:
                # the container reads the body slower than the client sends: pace the client
                self.upstream_paced = True
                up.transport.registerProducer(self.conn.reads, True)
            up.transport.bufferSize = BUFFER_SIZE
            up.transport.write(rest)

    def splice_target(self):
        """The client's transport when the rest of the response body may be spliced to it now
        (passed through as it is, the request complete, plain TCP, reads not paused), else None."""
        conn = self.conn
        if (
            self.out_framing != Framing.LENGTH
            or self.receiving_body
            or self.corked
            or conn.sock is None
            or conn.reads.paused
            or not self.live
        ):
            return None
        if self.client_paced:
            if queued(self.transport):
                return None
            self.client_paced = False  # nothing is waiting to be paced any more
            conn.unregister_producer()
        return self.transport

    def tunnel_target(self):
        """The client's transport when the tunnel just opened may bypass the transports
        (``dataplane.tunnel``: plain TCP, nothing queued or paused either way), else None.
        The tunnel paces itself, so the producers registered at its start go."""
        conn = self.conn
        up = self.upstream
        if (
            conn.sock is None
            or conn.state != TUNNEL
            or conn.exchange is not self
            or up is None
            or conn.reads.paused
            or up.reads.paused
            or queued(self.transport)
            or queued(up.transport)
        ):
            return None
        self._unpace(up)
        return self.transport

    def spliced(self, count: int) -> None:
        self.resp_bytes += count

    def _unpace(self, up: UpstreamConnection | None) -> None:
        """The pairing ends: neither side's producer may outlive the exchange."""
        if self.client_paced:
            self.client_paced = False
            self.conn.unregister_producer()
        if self.upstream_paced:
            self.upstream_paced = False
            if up is not None:
                up.transport.unregisterProducer()

    def answer(self, data: bytes, status: int, code: str | None, keep: bool) -> None:
        """Answer with something of the proxy's own; then the next request, or close."""
        self.finish(status, code)
        self.conn.write(data)
        self.conn.exchange_over(keep)

    # ------------------------------------------------------------------ relaying
    def relay(
        self,
        route: Route,
        target: bytes,
        cookies: list[bytes],
        prefix: bytes | None,
        websocket: bool,
    ) -> None:
        """Send the request to ``route``'s container: its head now, its body as it comes."""
        conn = self.conn
        req = self.req
        self.route = route
        self.websocket = websocket
        # The head but its request id, kept by the connection for the next request of the
        # same head (its parts are memoised per head: compared by identity)
        kept = conn.head_kept
        if (
            kept is None
            or kept[0] is not req
            or kept[1] is not target
            or kept[2] is not cookies
            or kept[3] is not prefix
            or kept[4] is not websocket
        ):
            kept = conn.head_kept = (
                req,
                target,
                cookies,
                prefix,
                websocket,
                *forwarding.upstream_request_head_around(
                    req,
                    target,
                    cookies=cookies,
                    client_ip=conn.peer_ip,
                    scheme=conn.scheme,
                    prefix=prefix,
                    trusted=conn.trusted,
                    websocket=websocket,
                    request_id=True,
                ),
            )
        self.upstream_head = kept[5] + self.request_id + kept[6]
        conn.state = RELAY
        leftover, conn.buf = conn.buf, b""
        self.receiving_body = req.has_body
        if req.framing == Framing.CHUNKED:
            self.decoder = ChunkedDecoder(400, self.ctx.config.max_head_bytes)
        elif req.framing == Framing.LENGTH:
            self.remaining = req.content_length
        if leftover:
            if self.receiving_body:
                self.body_data(leftover)
            else:
                conn.buf = leftover
        if not self.live:
            return  # the body already in hand was malformed: refused, nothing goes upstream
        self.ctx.pool.acquire(route.target, self, fresh=websocket)
        if self.upstream is None and self.live:
            # A new connection is on its way: read no more body bytes until it is up (they
            # would have nowhere to go). A pooled one was lent at once: no pause, no syscalls.
            self.paused_for_connect = True
            conn.reads.pauseProducing()

    def body_data(self, data: bytes) -> None:
        """Bytes of the request body (and possibly what follows it) from the client."""
        self.req_bytes += len(data)
        conn = self.conn
        up = self.upstream
        if self.decoder is not None:
            try:
                pieces, rest = self.decoder.feed(data)
            except HeadError as exc:
                self.relay_error(exc.status, exc.code, exc.message, close_client=True)
                return
            out = []
            for piece in pieces:
                if piece:
                    out += encode_chunk(piece)
            if rest is not None:
                out.append(LAST_CHUNK)
                self.decoder = None
                self.receiving_body = False
                conn.buf = rest
            if out:
                if up is not None:
                    self._to_upstream(up, b"".join(out))
                else:
                    self.pending_body += out
        else:
            remaining = self.remaining
            if len(data) >= remaining:
                piece, conn.buf = data[:remaining], data[remaining:]
                self.remaining = 0
                self.receiving_body = False
            else:
                piece = data
                self.remaining = remaining - len(data)
            if piece:
                if up is not None:
                    self._to_upstream(up, piece)
                    if self.remaining >= splice.MIN_BYTES:
                        self._splice_body(up)
                else:
                    self.pending_body.append(piece)
        if not self.receiving_body and len(conn.buf) > self.ctx.config.max_head_bytes:
            conn.reads.pauseProducing()  # pipelined: hold at most one head's worth

    # ------------------------------------------------------------- UpstreamClient
    def upstream_ready(self, up: UpstreamConnection) -> None:
        """Called by the pool with a connected upstream (new or reused)."""
        if not self.live:
            up.release(reusable=False)
            return
        ctx = self.ctx
        conn = self.conn
        self.upstream = up
        if self.route is not ctx.api_route:  # the control plane is not a probed target
            ctx.prober.observed(self.route, True)
        if self.pending_body:
            self._to_upstream(up, b"".join([self.upstream_head, *self.pending_body]))
            self.pending_body = []
        else:
            self._to_upstream(up, self.upstream_head)
        up.expect_response(self.req.method, ctx.config.response_timeout)
        if self.paused_for_connect:
            self.paused_for_connect = False
            conn.reads.resumeProducing()
        if self.remaining >= splice.MIN_BYTES:  # a Content-Length body (chunked has none)
            self._splice_body(up)

    def _splice_body(self, up: UpstreamConnection) -> None:
        """The rest of a long Content-Length body moves in the kernel while the container is
        silent (see ``dataplane.splice``); at its first byte the body goes on as before."""
        conn = self.conn
        if (
            self.body_splice_off
            or self.response_started
            or up.splice is not None
            or up.buf
            or conn.sock is None
            or conn.reads.paused
            or not self.live
        ):
            return
        if self.upstream_paced:
            if queued(up.transport):
                return
            self.upstream_paced = False  # nothing is waiting to be paced any more
            up.transport.unregisterProducer()
        if not splice.can_splice(conn.transport, up.transport):
            return
        up.splice = splice.Splice(
            up.pool.reactor,
            conn.transport,
            up.transport,
            self.remaining,
            self._body_moved,
            self._body_in,
            None,
            self._body_interrupted,
        )
        up.splice.start()

    def _body_moved(self, count: int) -> None:
        self.req_bytes += count

    def _body_in(self) -> None:
        self.upstream.splice = None
        self.remaining = 0
        self.receiving_body = False

    def _body_interrupted(self, left: int, held: bytes) -> None:
        up = self.upstream
        up.splice = None
        self.body_splice_off = True
        self.remaining = left
        if not left:
            self.receiving_body = False
        if held:
            self._to_upstream(up, held)

    def upstream_failed(self, reason) -> None:
        """The connect failed (refused, unreachable or timed out)."""
        if not self.live:
            return
        if self.route is not self.ctx.api_route:
            self.ctx.prober.observed(self.route, False)
        timed_out = reason is not None and reason.check(neterror.TimeoutError)
        self.relay_error(
            503,
            "target_connect_timeout" if timed_out else "target_connect_failed",
            "the container did not accept the connection in time"
            if timed_out
            else "the container refused the connection",
        )

    def response_head(self, resp: ResponseHead, upstream: UpstreamConnection) -> bool:
        """Start the client's response. Returns False if the exchange was ended instead."""
        req = self.req
        self.upstream_at = self.ctx.reactor.seconds()
        if resp.status == 101:
            if not self.websocket or not _valid_accept(req, resp):
                self.relay_error(502, "bad_upgrade", "the container's WebSocket handshake is invalid")
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
            self.finish(101)
            conn = self.conn
            conn.tunnel_opened()
            # A tunnel is long and may be bulk: paced both ways from its start
            if not self.client_paced:
                self.client_paced = True
                conn.transport.registerProducer(upstream.reads, True)
            if not self.upstream_paced:
                self.upstream_paced = True
                upstream.transport.registerProducer(conn.reads, True)
            if conn.buf:
                send(upstream.transport, upstream.sock, conn.buf)
                conn.buf = b""
            return True
        self.response_started = True
        self.status = resp.status
        framing = resp.framing
        if framing in (Framing.CHUNKED, Framing.CLOSE):
            framing = Framing.CHUNKED if req.version == (1, 1) else Framing.CLOSE
        self.out_framing = framing
        # An answer before the whole request body (a refusal, most often): the rest of the body
        # may never be read, so the connection ends after it, and the head says so.
        self.keep_alive = req.keep_alive and framing != Framing.CLOSE and not self.receiving_body
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
        self.finish(self.status)
        conn = self.conn
        up = self.upstream
        self.upstream = None
        finished_request = not self.receiving_body
        self._unpace(up)
        if up is not None:
            up.release(reusable=upstream_reusable and finished_request)
        # Out before the next request is read: an answer to it must not overtake this one.
        self.uncork()
        conn.exchange_over(self.keep_alive and finished_request and self.live)

    def upstream_lost(self, before_response: bool, reused: bool) -> None:
        """The container's connection broke during the exchange (or ended its tunnel)."""
        conn = self.conn
        if conn.state == TUNNEL and conn.exchange is self:
            self.upstream = None
            conn.exchange_over(False)
            return
        if not self.live:
            return
        self.upstream = None
        if before_response:
            # A reused keep-alive connection may have been closed by the container just as we
            # sent: retry once on a new one, but only if no body byte has gone out.
            if reused and not self.retried and not self.req.has_body:
                self.retried = True
                self._unpace(None)  # the lost connection's transport goes with it
                self.paused_for_connect = True
                conn.reads.pauseProducing()
                self.ctx.pool.acquire(self.route.target, self, fresh=True)
                return
            self.relay_error(502, "upstream_closed", "the container closed the connection without a response")
            return
        # Mid-body: make the truncation unmistakable to the client.
        self.finish(self.status)
        conn.abort()

    def upstream_bad_response(self, exc: HeadError) -> None:
        self.relay_error(exc.status, exc.code, exc.message)

    def upstream_timeout(self) -> None:
        self.relay_error(504, "upstream_timeout", "the container did not answer in time")

    # ------------------------------------------------------------------ ending
    def relay_error(self, status: int, code: str, message: str, close_client: bool = False) -> None:
        """The exchange cannot go on: an error answer if nothing was sent yet, else a cut."""
        conn = self.conn
        up = self.upstream
        self.upstream = None
        self._unpace(up)
        if up is not None:
            up.release(reusable=False)
        if self.response_started:
            self.finish(self.status, code)
            conn.abort()
            return
        req = self.req
        keep = can_keep(req) and not close_client and not self.receiving_body
        data = forwarding.error_response(
            status,
            code,
            message,
            html_body=forwarding.prefers_html(req.header(b"accept")),
            keep_alive=keep,
            http10=req.http10,
            head_only=req.method == b"HEAD",
            origin=req.header(b"origin"),
            starting=self.route is not self.ctx.api_route and forwarding.starting(req, code),
        )
        self.finish(status, code)
        self.write(data)
        self.uncork()
        conn.exchange_over(keep)

    def client_gone(self) -> None:
        """The client's connection is going (lost, or cut by us): the container's answer has
        nowhere to go."""
        up = self.upstream
        if up is not None:
            self.upstream = None
            up.client_gone()

    def finish(self, status: int, code: str | None = None) -> None:
        """Account for the answered request, once: metrics and the access log line (both
        taken from the access log's batch, see ``access_log.AccessLog``)."""
        if self.finished:
            return
        self.finished = True
        ctx = self.ctx
        now = ctx.reactor.seconds()
        route = self.route
        started = self.started_at
        ctx.access_log.request(
            now,
            route.service_id if route is not None else "",
            self.req,
            status,
            self.req_bytes,
            self.resp_bytes,
            now - started,
            self.upstream_at - started if self.upstream_at else None,
            self.conn.peer_ip,
            code,
            self.request_id,
        )


def _valid_accept(req: RequestHead, resp: ResponseHead) -> bool:
    key = req.header(b"sec-websocket-key")
    got = resp.header(b"sec-websocket-accept")
    return key is not None and got is not None and got.strip() == forwarding.websocket_accept(key)
