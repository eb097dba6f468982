"""The proxy's listening socket: what accepted connections inherit from it."""

from __future__ import annotations

import os
import socket
import time

from twisted.internet import protocol

from dataplane.listener import ProxyServer, adopt_port
from dataplane.reactor import DirectEPollReactor
from dataplane.service import ProxyService


class _AdoptingReactor:
    def adoptStreamPort(self, fd, family, factory):
        self.sock = socket.socket(family, socket.SOCK_STREAM, fileno=os.dup(fd))
        return self


def test_accepted_connections_have_nodelay_without_a_setsockopt_each():
    svc = object.__new__(ProxyService)  # only _listen's inputs: no Redis, no config
    svc.reuse_port = False
    svc.reactor = _AdoptingReactor()
    svc._listen(("127.0.0.1", 0), None)
    listener = svc.reactor.sock
    try:
        with socket.create_connection(listener.getsockname()) as _client:
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        listener.close()


class _Recorder(protocol.Protocol):
    made: list = []

    def connectionMade(self):
        self.made.append(self)


class _Factory(protocol.Factory):
    def __init__(self, fail_first: bool = False):
        self.addrs: list = []
        self.fail_first = fail_first

    def buildProtocol(self, addr):
        self.addrs.append(addr)
        if self.fail_first and len(self.addrs) == 1:
            raise RuntimeError("a factory that fails once")
        if len(self.addrs) == 2 and self.fail_first:
            return None  # refused: the socket is closed
        return _Recorder()


def _listening(factory):
    reactor = DirectEPollReactor()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    try:
        port = adopt_port(reactor, sock.fileno(), socket.AF_INET, factory)
    finally:
        sock.close()
    return reactor, port


def _turns(reactor, until, secs=5.0):
    deadline = time.monotonic() + secs
    while not until() and time.monotonic() < deadline:
        reactor.doPoll(0.05)
    return until()


def test_the_lean_port_accepts_with_the_peer_address_as_accept_gave_it():
    factory = _Factory()
    reactor, port = _listening(factory)
    try:
        clients = [socket.create_connection(("127.0.0.1", port.getHost().port)) for _ in range(3)]
        assert _turns(reactor, lambda: len(factory.addrs) == 3)
        assert [a for a in factory.addrs] == [c.getsockname() for c in clients]
        conns = [p.transport for p in _Recorder.made[-3:]]
        assert [c.client for c in conns] == [c.getsockname() for c in clients]
        assert {c.sessionno for c in conns} == {0, 1, 2}
        # made on demand, as Twisted's were made up front
        assert conns[0].logPrefix() == f"_Recorder,{conns[0].sessionno},127.0.0.1"
        assert repr(conns[0]) == f"<_Recorder #{conns[0].sessionno} on {port.getHost().port}>"
        clients[0].sendall(b"x")
        for c in clients:
            c.close()
    finally:
        port.connectionLost(None)
        reactor._poller.close()


def test_a_failing_factory_does_not_close_the_port():
    factory = _Factory(fail_first=True)
    reactor, port = _listening(factory)
    try:
        addr = ("127.0.0.1", port.getHost().port)
        first = socket.create_connection(addr)
        assert _turns(reactor, lambda: len(factory.addrs) == 1)
        first.settimeout(2)
        assert first.recv(10) == b""  # closed, not left to the garbage collector
        refused = socket.create_connection(addr)
        assert _turns(reactor, lambda: len(factory.addrs) == 2)
        refused.settimeout(2)
        assert refused.recv(10) == b""  # closed by the port: the factory said no
        ok = socket.create_connection(addr)
        assert _turns(reactor, lambda: len(factory.addrs) == 3)  # still accepting
        assert isinstance(_Recorder.made[-1].transport, ProxyServer)
        for s in (first, refused, ok):
            s.close()
    finally:
        port.connectionLost(None)
        reactor._poller.close()
