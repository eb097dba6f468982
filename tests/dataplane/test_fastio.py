"""fastio's shortcuts on a real socket: the same outcome as Twisted's own path."""

from __future__ import annotations

import socket
import time

from twisted.internet import error, protocol, tcp
from twisted.internet.task import Clock

from dataplane.fastio import close_now, send


class _Reactor(Clock):
    """Enough of a reactor for one tcp.Connection: records reader/writer changes."""

    def __init__(self):
        super().__init__()
        self.writers = set()

    def addReader(self, r):
        pass

    def removeReader(self, r):
        pass

    def addWriter(self, w):
        self.writers.add(w)

    def removeWriter(self, w):
        self.writers.discard(w)


class _Proto(protocol.Protocol):
    reason = None

    def connectionLost(self, reason=None):
        self.reason = reason


def _pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    reactor = _Reactor()
    proto = _Proto()
    conn = tcp.Connection(a, proto, reactor)
    conn.connected = True  # as tcp.Server sets it on accept
    proto.makeConnection(conn)
    return conn, proto, reactor, b


def test_close_now_sends_the_data_then_a_fin_on_the_next_turn():
    conn, proto, reactor, peer = _pair()
    send(conn, conn.socket, b"answer")
    close_now(conn, conn.socket)
    assert not reactor.writers  # no watching for writability: nothing was queued
    assert proto.reason is None  # closed on the next reactor turn, not inside the caller
    reactor.advance(0)
    assert proto.reason.check(error.ConnectionDone)
    peer.settimeout(2)
    assert peer.recv(100) == b"answer" and peer.recv(100) == b""  # EOF: a FIN, not a reset
    peer.close()


def test_close_now_with_data_queued_takes_twisteds_path():
    conn, proto, reactor, peer = _pair()
    conn.write(b"queued")  # in Twisted's buffer, not yet sent
    close_now(conn, conn.socket)
    assert conn in reactor.writers and conn.disconnecting  # loseConnection: flush, then close
    assert proto.reason is None
    peer.close()
    conn.socket.close()


class _Poller:
    """The reactor's epoll object, recording every change to the interest set."""

    def __init__(self, real):
        self.real, self.changes = real, []

    def register(self, fd, events):
        self.changes.append(("register", fd))
        self.real.register(fd, events)

    def modify(self, fd, events):
        self.changes.append(("modify", fd))
        self.real.modify(fd, events)

    def unregister(self, fd):
        self.changes.append(("unregister", fd))
        self.real.unregister(fd)

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_close_now_on_the_proxy_reactor_leaves_epoll_to_close():
    from dataplane.reactor import DirectEPollReactor

    reactor = DirectEPollReactor()
    real = reactor._poller
    reactor._poller = poller = _Poller(real)
    try:
        a, peer = socket.socketpair()
        a.setblocking(False)
        proto = _Proto()
        conn = tcp.Connection(a, proto, reactor)
        conn.connected = True
        proto.makeConnection(conn)
        conn.startReading()
        fd = a.fileno()
        assert poller.changes == [("register", fd)]
        send(conn, conn.socket, b"answer")
        close_now(conn, conn.socket)
        assert poller.changes == [("register", fd)]  # no epoll_ctl on the way out
        assert fd not in reactor._selectables and proto.reason is None
        assert reactor.getDelayedCalls() == []  # no timed call per close
        reactor.doPoll(0)  # the next turn closes it before it polls
        assert proto.reason.check(error.ConnectionDone)
        peer.settimeout(2)
        assert peer.recv(100) == b"answer" and peer.recv(100) == b""
        # close(2) took the descriptor out of the epoll set: its number, used again, registers
        made = [peer]
        while made[-1].fileno() != fd and len(made) < 100:
            made.append(socket.socket())
        assert made[-1].fileno() == fd
        real.register(fd, 1)  # EEXIST if the old registration had outlived the close
        for s in made:
            s.close()
    finally:
        real.close()


def test_a_close_asked_for_by_an_event_is_done_at_the_end_of_that_turn():
    from dataplane.reactor import DirectEPollReactor

    reactor = DirectEPollReactor()
    try:
        a, peer = socket.socketpair()
        a.setblocking(False)

        class Closer(_Proto):
            got = False

            def dataReceived(self, data):
                self.got = True
                send(self.transport, self.transport.socket, b"bye")
                close_now(self.transport, self.transport.socket)

        proto = Closer()
        conn = tcp.Connection(a, proto, reactor)
        conn.connected = True
        proto.makeConnection(conn)
        conn.startReading()
        peer.sendall(b"hello")
        deadline = time.monotonic() + 5
        while not proto.got and time.monotonic() < deadline:
            reactor.doPoll(0.1)
        # the same doPoll that delivered the bytes closed the connection, with no timed call
        assert proto.got and proto.reason is not None and proto.reason.check(error.ConnectionDone)
        peer.settimeout(2)
        assert peer.recv(100) == b"bye" and peer.recv(100) == b""
        peer.close()
    finally:
        reactor._poller.close()
