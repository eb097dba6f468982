"""A WebSocket tunnel's bytes, both ways, straight between the two sockets.

After a container's 101 the relay parses nothing more; what remains per message is a read on
one side and a send on the other. Through the Twisted transports each message also passes
``tcp.Connection.doRead``, ``_dataReceived``, the connection's state dispatch and ``send``'s
checks; here a readable side's ``doRead`` reads and sends at once. Each side waits for reads
while nothing waits to go out to the other side, and for writes while something does (then it
stops reading the other side: back-pressure), so neither direction waits for the other.

A close, a reset or any error on either side *interrupts* the tunnel: what waits to go out is
written to its transport, both transports read again, and the relay sees the close exactly as
it would have without the tunnel (``on_interrupt()`` then). Only plain TCP on both sides.
"""

from __future__ import annotations

from collections.abc import Callable

from dataplane.fastio import BUFFER_SIZE, READ_SIZE, queued
from dataplane.splice import takeable, unwatch


def can_tunnel(a, b) -> bool:
    """Both are TCP transports that may be taken over now, nothing queued or paced either way."""
    return all(takeable(t) and not queued(t) and t.producer is None for t in (a, b))


class _Side:
    """One socket as the reactor sees it: readable, its bytes go to the other side; writable,
    what waited for it goes."""

    __slots__ = ("tunnel", "sock", "fd", "peer", "pending", "size", "reading", "writing")

    def __init__(self, tunnel: Tunnel, transport) -> None:
        self.tunnel = tunnel
        self.sock = transport.socket
        self.fd = self.sock.fileno()
        self.peer: _Side | None = None
        self.pending = b""  # read from the peer, not yet sent to this side
        self.size = READ_SIZE
        self.reading = self.writing = False

    def fileno(self) -> int:
        return self.fd

    def doRead(self):
        tunnel, peer = self.tunnel, self.peer
        if peer.pending:
            # An event of this turn polled before the pause (this side stays watched for
            # writes): read on once the peer has taken what waits, or bytes would overtake it.
            return
        try:
            data = self.sock.recv(self.size)
        except BlockingIOError:
            return
        except OSError:
            tunnel.interrupt()
            return
        if not data:
            tunnel.interrupt()
            return
        if len(data) == self.size:
            self.size = BUFFER_SIZE  # a bulk stream: fewer turns (as fastio.BUFFER_SIZE says)
        try:
            sent = peer.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            tunnel.interrupt()
            return
        if sent < len(data):
            peer.pending = data[sent:]
            tunnel.watch(peer, write=True)
            tunnel.watch(self, read=False)  # the peer reads slower than this side sends

    def doWrite(self):
        tunnel = self.tunnel
        try:
            sent = self.sock.send(self.pending)
        except BlockingIOError:
            return
        except OSError:
            tunnel.interrupt()
            return
        self.pending = self.pending[sent:]
        if not self.pending:
            tunnel.watch(self, write=False)
            tunnel.watch(self.peer, read=True)

    def connectionLost(self, reason) -> None:
        self.tunnel.interrupt()

    def logPrefix(self) -> str:
        return "tunnel"


class Tunnel:
    """Bytes between transports ``a`` and ``b`` until either closes (see the module)."""

    def __init__(self, reactor, a, b, on_interrupt: Callable[[], None]) -> None:
        self.reactor = reactor
        self.a, self.b = a, b
        self.on_interrupt = on_interrupt
        self.side_a, self.side_b = _Side(self, a), _Side(self, b)
        self.side_a.peer, self.side_b.peer = self.side_b, self.side_a
        self.active = True
        for transport in (a, b):
            transport.stopReading()
            transport.stopWriting()

    def start(self) -> None:
        self.watch(self.side_a, read=True)
        self.watch(self.side_b, read=True)

    def watch(self, side: _Side, read: bool | None = None, write: bool | None = None) -> None:
        reactor = self.reactor
        if read is not None and read != side.reading:
            (reactor.addReader if read else reactor.removeReader)(side)
            side.reading = read
        if write is not None and write != side.writing:
            (reactor.addWriter if write else reactor.removeWriter)(side)
            side.writing = write

    def stop(self) -> None:
        """Take the tunnel down (idempotent); the transports are not restarted and what waits
        is dropped (the connections are going)."""
        if not self.active:
            return
        self.active = False
        for side in (self.side_a, self.side_b):
            if side.reading or side.writing:
                unwatch(self.reactor, side, reading=side.reading, writing=side.writing)
            side.reading = side.writing = False

    def interrupt(self) -> None:
        if not self.active:
            return
        self.stop()
        for side, transport in ((self.side_a, self.a), (self.side_b, self.b)):
            if side.pending and transport.connected and not transport.disconnecting:
                transport.write(side.pending)
            side.pending = b""
        for transport in (self.a, self.b):
            if transport.connected and not transport.disconnecting:
                transport.startReading()
        self.on_interrupt()
