"""The TLS listener: the standard library's ``ssl`` over Twisted's TCP transport.

``ServerTLS`` sits between a TCP connection and the relay's protocol: to the TCP transport it
is the protocol, to the relay it is the transport. TLS runs in an ``ssl.SSLObject`` over two
memory BIOs, all C code; the BIOs' ``pending`` counts say when a read loop is done (no
exception per read), and ciphertext is sent at once through ``fastio`` when nothing is
queued below. Chosen over Twisted's ``TLSMemoryBIOProtocol`` (pyOpenSSL) by measurement (see
the README's performance section): there, every read and write crosses pyOpenSSL's Python
wrappers several times with an exception ending each read loop, each write waits a reactor
turn in an aggregator (a ``callLater``) and leaves through Twisted's buffered write
(``epoll_ctl`` twice), and each new connection copies its transport's interfaces.

Closing sends close_notify, then a FIN, and reads on (dropping what comes) until the client
closes or ``LINGER_SECS`` pass: closing with unread bytes would send a reset, which can
destroy the answer before the client reads it (the plain listener does the same).
"""

from __future__ import annotations

import ssl

from twisted.internet import interfaces, protocol
from zope.interface import implementer

from dataplane.config import ProxyConfig
from dataplane.fastio import LINGER_SECS, direct_socket, queued, send

# Decrypted bytes asked of one read; a TLS record carries at most 16 KiB.
_READ = 16 * 1024


def context_factory(config: ProxyConfig) -> ssl.SSLContext:
    """The server context; a certificate or key that does not load fails the start."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(config.tls_cert, config.tls_key)  # the certificate file may hold a chain
    # Clients such as urllib3 offer ALPN; answering it (HTTP/1.1 only) is required by some.
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


@implementer(interfaces.ITransport, interfaces.IConsumer, interfaces.IPushProducer)
class ServerTLS(protocol.Protocol):
    """One server-side TLS connection (see the module text)."""

    def __init__(self, context: ssl.SSLContext, wrapped: protocol.Protocol, reactor) -> None:
        self.wrapped = wrapped
        self.reactor = reactor
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.sock = None
        self.handshake_done = False
        self.early: list[bytes] = []  # written before the handshake completed
        self.disconnecting = False
        self.closed = False  # close_notify sent (or the handshake failed): reads are dropped
        self.aborted = False
        self.linger = None

    # ----------------------------------------------------- as the TCP connection's protocol
    def connectionMade(self) -> None:
        self.sock = direct_socket(self.transport)
        self.wrapped.makeConnection(self)

    def dataReceived(self, data: bytes) -> None:
        if self.closed:
            return
        self.incoming.write(data)
        if not self.handshake_done and not self._handshake():
            return
        tls, incoming, wrapped = self.tls, self.incoming, self.wrapped
        while not self.aborted:
            try:
                chunk = tls.read(_READ)
            except ssl.SSLWantReadError:
                break  # a record not yet whole
            except ssl.SSLError:
                self._fail()
                return
            if not chunk:  # the client's close_notify
                self.loseConnection()
                return
            wrapped.dataReceived(chunk)
            if not incoming.pending and not tls.pending():
                break
        if self.outgoing.pending:  # what reading produced (a KeyUpdate's answer, say)
            self._flush()

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        self.connected = False
        self.disconnecting = True
        if self.linger is not None and self.linger.active():
            self.linger.cancel()
        self.linger = None
        self.wrapped.connectionLost(reason)

    def _handshake(self) -> bool:
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return False
        except ssl.SSLError:  # no shared protocol or cipher, not TLS at all ...
            self._fail()
            return False
        self.handshake_done = True
        if self.early:
            data = b"".join(self.early)
            self.early = []
            self.tls.write(data)
        self._flush()  # the session tickets (and anything written before)
        if self.disconnecting:
            self._shutdown()
            return False
        return True

    def _fail(self) -> None:
        """A TLS error: send the alert OpenSSL wrote, and close."""
        self.closed = self.disconnecting = True
        self._flush()
        self.transport.loseConnection()

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            send(self.transport, self.sock, data)

    # ---------------------------------------------------- as the relay protocol's transport
    def write(self, data: bytes) -> None:
        if self.disconnecting:
            return  # as a TCP transport: nothing goes out after loseConnection
        if not self.handshake_done:
            self.early.append(data)
            return
        try:
            self.tls.write(data)  # a memory BIO takes everything
        except ssl.SSLError:  # the session broke (the client sent a fatal alert, say)
            self._fail()
            return
        self._flush()

    def writeSequence(self, seq) -> None:
        self.write(b"".join(seq))

    def try_send(self, data: bytes) -> bytes:
        """``fastio.try_send`` for this transport: write ``data`` (its ciphertext leaves at
        once) and return b"" when nothing is queued below; else return ``data`` unwritten, for
        the caller to ``write`` once it has registered a producer."""
        if not self.handshake_done or self.sock is None or queued(self.transport):
            return data
        self.write(data)
        return b""

    def loseConnection(self) -> None:
        if self.disconnecting:
            return
        self.disconnecting = True
        if self.handshake_done:
            self._shutdown()
        elif self.early:  # an answer waits for the handshake; it gets a while to complete
            self.linger = self.reactor.callLater(LINGER_SECS, self.transport.loseConnection)
        else:
            self.closed = True
            self.transport.loseConnection()

    def _shutdown(self) -> None:
        self.closed = True
        try:
            self.tls.unwrap()  # writes close_notify; the client's need not be awaited
        except (ssl.SSLError, ValueError):
            pass
        self._flush()
        tcp = self.transport
        tcp.loseWriteConnection()
        tcp.resumeProducing()  # back-pressure may have paused reads: the client's FIN must be seen
        if self.linger is None:
            self.linger = self.reactor.callLater(LINGER_SECS, tcp.loseConnection)

    def abortConnection(self) -> None:
        self.disconnecting = self.closed = self.aborted = True
        self.transport.abortConnection()

    @property
    def client(self):
        return self.transport.client

    @property
    def bufferSize(self) -> int:
        return self.transport.bufferSize

    @bufferSize.setter
    def bufferSize(self, size: int) -> None:
        self.transport.bufferSize = size  # the TCP side's read size and back-pressure mark

    def getPeer(self):
        return self.transport.getPeer()

    def getHost(self):
        return self.transport.getHost()

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        self.transport.stopProducing()

    def registerProducer(self, producer, streaming: bool) -> None:
        # Ciphertext never waits here (it is in the TCP transport's buffer or sent), so the
        # TCP transport's own back-pressure is the right one.
        self.transport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.transport.unregisterProducer()


class ServerTLSFactory(protocol.Factory):
    """Wraps each connection of ``wrapped`` in ``ServerTLS`` with ``context``."""

    noisy = False

    def __init__(self, context: ssl.SSLContext, wrapped: protocol.Factory, reactor) -> None:
        self.context = context
        self.wrapped = wrapped
        self.reactor = reactor

    def buildProtocol(self, addr):
        inner = self.wrapped.buildProtocol(addr)
        return None if inner is None else ServerTLS(self.context, inner, self.reactor)

    def doStart(self) -> None:
        self.wrapped.doStart()

    def doStop(self) -> None:
        self.wrapped.doStop()
