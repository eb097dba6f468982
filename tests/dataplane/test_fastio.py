"""fastio's shortcuts on a real socket: the same outcome as Twisted's own path."""

from __future__ import annotations

import socket

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
