"""The traffic listeners: Twisted's TCP port and server transport, with a leaner accept.

Under a new connection per request, Twisted's accept path costs more Python than the
proxy's own handling of the request: a logging context per ``doRead``, a generator per
batch of accepts, an ``IPv4Address`` per connection (no factory of the proxy reads it), and a
log prefix and ``repr`` string formatted for every connection whether or not anything is ever
logged about it. ``ProxyPort`` accepts in a plain loop and hands its factory the address tuple
``accept(2)`` gave; ``ProxyServer`` makes its log prefix and ``repr`` only when asked. Anything
but "no more connections" (EMFILE, ECONNABORTED ...) goes to Twisted's own ``doRead``, which
knows how to recover from each.
"""

from __future__ import annotations

import socket

from twisted.internet import address, tcp
from twisted.logger import Logger

log = Logger()


class ProxyServer(tcp.Server):
    """A TCP server connection whose log prefix and ``repr`` are made on demand."""

    def __init__(self, sock, protocol, client, server, sessionno, reactor) -> None:
        tcp.Connection.__init__(self, sock, protocol, reactor)
        if len(client) != 2:
            self._addressType = address.IPv6Address
        self.server = server
        self.client = client
        self.sessionno = sessionno
        self.hostname = client[0]
        self.startReading()
        self.connected = 1

    @property
    def logstr(self) -> str:
        return f"{self._getLogPrefix(self.protocol)},{self.sessionno},{self.hostname}"

    @property
    def repstr(self) -> str:
        port = self.server._realPortNumber if self.server is not None else None
        return f"<{self.protocol.__class__.__name__} #{self.sessionno} on {port}>"


class ProxyPort(tcp.Port):
    """A listening port that accepts without Twisted's per-call and per-connection extras."""

    transport = ProxyServer

    def doRead(self) -> None:
        accept = self.socket.accept
        build = self.factory.buildProtocol
        transport = self.transport
        reactor = self.reactor
        accepted = 0
        limit = self.numberAccepts
        while accepted < limit:
            try:
                skt, addr = accept()
            except BlockingIOError:
                break
            except OSError:
                super().doRead()  # Twisted's recovery (a reserved descriptor for EMFILE ...)
                return
            accepted += 1
            try:
                if len(addr) == 4:  # IPv6: the scope id in the host, as Twisted gives it
                    host = socket.getnameinfo(addr, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
                    addr = (host[0], *addr[1:])
                protocol = build(addr)
                if protocol is None:
                    skt.close()
                    continue
                s = self.sessionno
                self.sessionno = s + 1
                conn = transport(skt, protocol, addr, self, s, reactor)
            except Exception:
                # Logged, and the port goes on, as in Twisted's doRead (raised from here, the
                # reactor would close the listening socket)
                skt.close()
                log.failure("error accepting a connection")
                continue
            try:
                protocol.makeConnection(conn)
            except Exception:
                log.failure("error setting up an accepted connection")
        # Twisted's scaling of the accept loop to the traffic
        if accepted == limit:
            self.numberAccepts = limit + 20
        else:
            self.numberAccepts = max(1, accepted)


def adopt_port(reactor, fd: int, family: int, factory) -> ProxyPort:
    """``reactor.adoptStreamPort`` with a ``ProxyPort``: listening on the bound,
    non-blocking socket ``fd`` (the port holds its own duplicate)."""
    port = ProxyPort._fromListeningDescriptor(reactor, fd, family, factory)
    port.startListening()
    return port
