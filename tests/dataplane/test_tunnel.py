"""dataplane.tunnel on real sockets: bytes both ways in order, back-pressure, and a close
handing both transports back to the relay.

The two ends are Twisted TCP connections over loopback TCP pairs; the reactor is a recorder
(readers and writers as sets), and the test calls ``doRead``/``doWrite`` where a reactor would.
"""

from __future__ import annotations

import socket

from dataplane import tunnel
from tests.dataplane.test_splice import _connection, _Reactor, _recv_exactly, _tcp_pair


class Rig:
    """client --(a)--> proxy <--(b)-- container"""

    def __init__(self):
        self.reactor = _Reactor()
        self.client, a_sock = _tcp_pair()
        b_sock, self.container = _tcp_pair()
        self.a = _connection(a_sock, self.reactor)
        self.b = _connection(b_sock, self.reactor)
        self.interrupted = []
        assert tunnel.can_tunnel(self.a, self.b)
        self.tunnel = tunnel.Tunnel(self.reactor, self.a, self.b, lambda: self.interrupted.append(True))
        self.tunnel.start()
        self.side_a, self.side_b = self.tunnel.side_a, self.tunnel.side_b

    def close(self):
        self.tunnel.stop()
        for s in (self.client, self.container, self.a.socket, self.b.socket):
            s.close()


def test_bytes_go_both_ways_in_order_and_only_the_tunnel_is_watched():
    rig = Rig()
    try:
        assert {rig.side_a, rig.side_b} <= rig.reactor.readers
        assert not {rig.a, rig.b} & (rig.reactor.readers | rig.reactor.writers)
        for i in range(20):
            rig.client.sendall(b"ping %d" % i)
            rig.side_a.doRead()
            assert _recv_exactly(rig.container, len(b"ping %d" % i)) == b"ping %d" % i
            rig.container.sendall(b"pong %d" % i)
            rig.side_b.doRead()
            assert _recv_exactly(rig.client, len(b"pong %d" % i)) == b"pong %d" % i
        assert rig.interrupted == []
    finally:
        rig.close()


def test_a_peer_that_does_not_read_stops_reads_from_the_other_side():
    rig = Rig()
    try:
        rig.container.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        rig.b.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        rig.client.setblocking(False)
        sent = 0
        for _ in range(400):
            try:
                sent += rig.client.send(b"x" * (1 << 20))
            except BlockingIOError:
                pass
            rig.side_a.doRead()
            if rig.side_b.pending:
                break
        assert rig.side_b.pending  # the container is not reading: bytes wait for it
        assert rig.side_b in rig.reactor.writers and rig.side_a not in rig.reactor.readers
        waiting = rig.side_b.pending
        rig.side_a.doRead()  # an event polled before the pause: nothing overtakes what waits
        assert rig.side_b.pending == waiting
        got = 0
        rig.container.settimeout(5)
        while rig.side_b.pending:  # the container reads: what waited goes, then reads resume
            got += len(rig.container.recv(1 << 20))
            rig.side_b.doWrite()
        assert rig.side_a in rig.reactor.readers and rig.side_b not in rig.reactor.writers
        assert rig.interrupted == []
    finally:
        rig.close()


def test_a_close_hands_both_transports_back_with_what_waited():
    rig = Rig()
    try:
        rig.side_a.pending = b"waiting for the client"  # as back-pressure leaves it
        rig.tunnel.watch(rig.side_a, write=True)
        rig.tunnel.watch(rig.side_b, read=False)
        rig.client.close()
        rig.side_a.doRead()  # reads the close
        assert rig.interrupted == [True]
        assert {rig.a, rig.b} <= rig.reactor.readers  # Twisted reads the close and reports it
        assert not {rig.side_a, rig.side_b} & (rig.reactor.readers | rig.reactor.writers)
        assert rig.a.dataBuffer or rig.a._tempDataBuffer  # what waited went to the transport
        rig.tunnel.interrupt()
        assert rig.interrupted == [True]  # once
    finally:
        rig.close()


def test_stop_after_a_socket_closed_leaves_the_reactor_clean():
    from twisted.internet.epollreactor import EPollReactor

    reactor = EPollReactor()
    rig = Rig()
    try:
        rig.tunnel.stop()
        rig.tunnel = tunnel.Tunnel(reactor, rig.a, rig.b, lambda: None)
        rig.tunnel.start()
        fd = rig.tunnel.side_a.fd
        assert reactor._selectables.get(fd) is rig.tunnel.side_a
        rig.a.socket.close()  # as tcp.Connection.connectionLost does before its protocol's
        rig.tunnel.stop()
        assert fd not in reactor._reads and fd not in reactor._selectables
    finally:
        rig.close()
        reactor._poller.close()
