"""Connections to containers: one exchange at a time each, pooled per target with keep-alive.

An ``UpstreamConnection`` parses the container's response head (strictly: ``http_head``),
frames its body and hands both to the client side through the small ``UpstreamClient``
protocol below, so this module never imports the client side (``exchange``, ``relay``).
Back-pressure: once one side's writes back up, the other side's ``ReadPauser`` is registered as
their producer (``exchange.Exchange``).

Everything here runs on the reactor thread; time comes from the reactor passed in.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet import protocol
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from dataplane import forwarding, splice, tunnel
from dataplane.deadline import Deadline
from dataplane.fastio import BUFFER_SIZE, READ_SIZE, direct_socket, send
from dataplane.http_head import (
    HEAD_END,
    ChunkedDecoder,
    Framing,
    HeadError,
    ResponseHead,
    parse_response_head,
)

MAX_RESPONSE_HEAD = 65536


class UpstreamClient(Protocol):
    """What an upstream connection needs of the exchange it serves (``exchange.Exchange``)."""

    transport: object  # the client's, which a tunnel writes to directly
    sock: object

    def write(self, data: bytes) -> None: ...
    def cork(self) -> None: ...
    def uncork(self) -> None: ...
    def upstream_ready(self, up: UpstreamConnection) -> None: ...
    def upstream_failed(self, reason) -> None: ...
    def upstream_lost(self, before_response: bool, reused: bool) -> None: ...
    def upstream_bad_response(self, exc: HeadError) -> None: ...
    def upstream_timeout(self) -> None: ...
    def response_head(self, resp: ResponseHead, upstream: UpstreamConnection) -> bool: ...
    def informational(self, data: bytes) -> None: ...
    def response_body(self, pieces: list[bytes]) -> None: ...
    def response_done(self, upstream_reusable: bool) -> None: ...
    def splice_target(self) -> object | None: ...
    def tunnel_target(self) -> object | None: ...
    def spliced(self, count: int) -> None: ...


@implementer(IPushProducer)
class ReadPauser:
    """One side's reads, registered as the producer of the other side's writes.

    Registering a raw transport would also hand it ``stopProducing``: when one connection is
    lost, Twisted calls its producer's ``stopProducing``, which on a transport is
    ``loseConnection``, so the container hanging up would silently close the client (before
    its 502, or during the retry on a new connection). Which side ends what is the protocols'
    decision, so here stopping does nothing.

    Every pause of a connection's reads goes through its ``ReadPauser``, so ``resume`` at the
    end of an exchange costs nothing when nothing paused them (the common case).
    """

    __slots__ = ("transport", "paused")

    def __init__(self, transport) -> None:
        self.transport = transport
        self.paused = False

    def pauseProducing(self) -> None:
        self.paused = True
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        self.transport.resumeProducing()

    def resume(self) -> None:
        """Reads on again if anything paused them."""
        if self.paused:
            self.paused = False
            self.transport.resumeProducing()

    def stopProducing(self) -> None:
        pass


class UpstreamConnection(protocol.Protocol):
    """A connection to a container. Lent to one client exchange at a time by the pool."""

    def __init__(self, pool: UpstreamPool, target: tuple[str, int]) -> None:
        self.pool = pool
        self.target = target
        self.client: UpstreamClient | None = None
        self.buf = b""
        self.resp: ResponseHead | None = None
        self.method = b"GET"
        self.framing = Framing.NONE
        self.remaining = 0
        self.decoder: ChunkedDecoder | None = None
        # the response-head timeout while an exchange waits, the idle expiry while pooled
        self.timer = Deadline(pool.reactor, pool.idle_timeout)
        self.connected = False
        self.uses = 0
        self.tunnel = False
        self.sock = None
        self.reads: ReadPauser | None = None
        self.splice: splice.Splice | None = None  # a long body moving in the kernel, see dataplane.splice

    def connectionMade(self) -> None:
        self.connected = True
        self.reads = ReadPauser(self.transport)
        self.sock = direct_socket(self.transport)
        if hasattr(self.transport, "setTcpNoDelay"):
            self.transport.setTcpNoDelay(True)
        client = self.client
        if client is not None:
            client.upstream_ready(self)

    def expect_response(self, method: bytes, timeout: float) -> None:
        self.uses += 1
        self.method = method
        self.resp = None
        self.buf = b""
        self.timer.set(timeout, self._timeout)

    def _timeout(self) -> None:
        client = self.client
        if client is not None and self.resp is None:
            client.upstream_timeout()

    def _cancel(self) -> None:
        self.timer.clear()

    def _idle_expired(self) -> None:
        self.pool.expire(self)

    def dataReceived(self, data: bytes) -> None:
        client = self.client
        if len(data) == READ_SIZE:
            self.transport.bufferSize = BUFFER_SIZE  # a bulk transfer: see fastio.BUFFER_SIZE
        if self.tunnel:
            send(client.transport, client.sock, data)
            return
        if client is None:
            self.transport.abortConnection()  # bytes on an idle connection: not trustworthy
            return
        # Cork the client while this read is processed: a small response's head and body
        # (and a chunked body's pieces) leave in one send.
        client.cork()
        try:
            if self.resp is None:
                self._head_data(data)
            else:
                self._body_data(data)
        finally:
            client.uncork()
        if self.remaining >= splice.MIN_BYTES and self.resp is not None and self.framing == Framing.LENGTH:
            self._try_splice()
        elif self.tunnel and self.splice is None:
            self._try_tunnel()  # just opened: later tunnel reads return early, above

    def _try_tunnel(self) -> None:
        client = self.client
        dst = client.tunnel_target() if client is not None else None
        if dst is None or not tunnel.can_tunnel(self.transport, dst):
            return
        self.splice = tunnel.Tunnel(self.pool.reactor, dst, self.transport, self._tunnel_interrupted)
        self.splice.start()

    def _tunnel_interrupted(self) -> None:
        self.splice = None  # a side is closing: the relay ends the tunnel as it would have

    def _try_splice(self) -> None:
        client = self.client
        dst = client.splice_target() if client is not None else None
        if dst is None or not splice.can_splice(self.transport, dst):
            return
        self.splice = splice.Splice(
            self.pool.reactor,
            self.transport,
            dst,
            self.remaining,
            client.spliced,
            self._spliced,
            self._splice_failed,
        )
        self.splice.start()

    def _spliced(self) -> None:
        self.splice = None
        self.remaining = 0
        self._done(b"")

    def _splice_failed(self, client_side: bool) -> None:
        self.splice = None
        client = self.client
        if client_side and client is not None:
            client.transport.abortConnection()  # the client went: its loss ends the exchange
        else:
            self.transport.abortConnection()  # the container broke off: the client is cut

    def _head_data(self, data: bytes) -> None:
        client = self.client
        buf = self.buf + data
        while True:
            end = buf.find(HEAD_END)
            if end < 0 and len(buf) <= MAX_RESPONSE_HEAD:
                self.buf = buf
                return
            try:
                if end < 0 or end + 4 > MAX_RESPONSE_HEAD:
                    raise HeadError(
                        502, "bad_upstream_response", "the container's response head is too large"
                    )
                resp = parse_response_head(buf[: end + 4], self.method)
            except HeadError as exc:
                self._cancel()
                client.upstream_bad_response(exc)
                return
            rest = buf[end + 4 :]
            if 100 <= resp.status < 200 and resp.status != 101:
                client.informational(forwarding.informational_head(resp))
                buf = rest
                continue
            break
        self._cancel()
        self.buf = b""
        self.resp = resp
        if not client.response_head(resp, self):
            return
        if resp.status == 101:
            self.tunnel = True
            if rest:
                client.write(rest)
            return
        self.framing = resp.framing
        if self.framing == Framing.LENGTH:
            self.remaining = resp.content_length
        elif self.framing == Framing.CHUNKED:
            self.decoder = ChunkedDecoder(502)
        if self.framing == Framing.NONE or (self.framing == Framing.LENGTH and self.remaining == 0):
            self._done(rest)
        elif rest:
            self._body_data(rest)

    def _body_data(self, data: bytes) -> None:
        client = self.client
        framing = self.framing
        if framing == Framing.LENGTH:
            remaining = self.remaining
            if len(data) < remaining:
                self.remaining = remaining - len(data)
                client.response_body([data])
                return
            piece, rest = data[:remaining], data[remaining:]
            self.remaining = 0
            if piece:
                client.response_body([piece])
            self._done(rest)
        elif framing == Framing.CHUNKED:
            try:
                pieces, rest = self.decoder.feed(data)
            except HeadError:
                client.upstream_lost(before_response=False, reused=False)
                self.transport.abortConnection()
                return
            if pieces:
                client.response_body(pieces)
            if rest is not None:
                self._done(rest)
        elif framing == Framing.CLOSE:
            client.response_body([data])

    def _done(self, rest: bytes) -> None:
        reusable = self.resp.keep_alive and not rest and self.framing != Framing.CLOSE
        client = self.client
        self.resp = None
        self.decoder = None
        client.response_done(reusable)

    def release(self, reusable: bool) -> None:
        """The exchange is over: back to the pool, or closed."""
        if self.splice is not None:  # cut short (an error answer, a revocation): it stops here
            self._stop_splice()
        self._cancel()
        self.client = None
        self.resp = None
        if reusable and self.connected and not self.tunnel:
            self.transport.bufferSize = READ_SIZE
            # The client's back-pressure may have paused our reads at the very end of the
            # response; an idle pooled connection must read (to see a close, or its next answer).
            self.reads.resume()
            self.pool.put_idle(self)
        else:
            self.connected = False
            self.transport.loseConnection()

    def client_gone(self) -> None:
        """The client disconnected mid-exchange: the container's answer has nowhere to go."""
        self._stop_splice()
        self._cancel()
        self.client = None
        self.connected = False
        self.transport.abortConnection()

    def _stop_splice(self) -> None:
        if self.splice is not None:
            self.splice.stop()
            self.splice = None

    def connectionLost(self, reason=None) -> None:
        self._stop_splice()
        self.timer.stop()
        was_connected = self.connected
        self.connected = False
        self.pool.forget(self)
        client = self.client
        self.client = None
        if client is None:
            return
        if self.tunnel:
            client.upstream_lost(before_response=False, reused=False)
        elif self.resp is None:
            client.upstream_lost(before_response=True, reused=self.uses > 1 and was_connected)
        elif self.framing == Framing.CLOSE:
            self.resp = None
            client.response_done(False)
        else:
            client.upstream_lost(before_response=False, reused=False)


class _UpstreamFactory(protocol.ClientFactory):
    noisy = False

    def __init__(self, pool: UpstreamPool, target: tuple[str, int], client: UpstreamClient):
        self.pool = pool
        self.target = target
        self.client = client

    def buildProtocol(self, addr):
        up = UpstreamConnection(self.pool, self.target)
        up.client = self.client
        up.factory = self
        return up

    def clientConnectionFailed(self, connector, reason) -> None:
        client, self.client = self.client, None
        if client is not None:
            client.upstream_failed(reason)


class UpstreamPool:
    """Idle keep-alive connections per target, reused most-recent first.

    Sized by demand: every connection that comes back is kept (up to ``max_idle_per_target``,
    LINX_UPSTREAM_MAX_IDLE) and expires after ``idle_timeout`` unused, so the pool holds about
    as many as were recently in use at once. A fixed small cap (64 before) made 200 or 1,000
    concurrent clients of one container open and close a connection per request beyond it.
    """

    def __init__(
        self, reactor, connect_timeout: float, idle_timeout: float = 30.0, max_idle_per_target: int = 1024
    ) -> None:
        self.reactor = reactor
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_idle_per_target = max_idle_per_target
        self.idle: dict[tuple[str, int], list[UpstreamConnection]] = {}

    def acquire(self, target: tuple[str, int], client: UpstreamClient, fresh: bool = False) -> None:
        if not fresh:
            conns = self.idle.get(target)
            while conns:
                up = conns.pop()
                up.timer.clear()
                if up.connected:
                    up.client = client
                    client.upstream_ready(up)
                    return
        self.reactor.connectTCP(
            target[0], target[1], _UpstreamFactory(self, target, client), timeout=self.connect_timeout
        )

    def put_idle(self, up: UpstreamConnection) -> None:
        conns = self.idle.setdefault(up.target, [])
        if len(conns) >= self.max_idle_per_target:
            up.connected = False
            up.transport.loseConnection()
            return
        conns.append(up)
        up.timer.set(self.idle_timeout, up._idle_expired)

    def expire(self, up: UpstreamConnection) -> None:
        self.forget(up)
        up.connected = False
        up.transport.loseConnection()

    def forget(self, up: UpstreamConnection) -> None:
        conns = self.idle.get(up.target)
        if conns and up in conns:
            conns.remove(up)
            if not conns:
                del self.idle[up.target]

    def close_all(self) -> None:
        for conns in list(self.idle.values()):
            for up in list(conns):
                up.timer.stop()
                self.expire(up)
