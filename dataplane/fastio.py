"""Writing to a TCP transport without a round trip through the reactor when nothing is queued.

Twisted's ``transport.write`` always buffers and registers write interest, so each response
costs two ``epoll_ctl`` calls and a trip through the reactor loop before the first byte leaves.
When the transport has nothing queued (the common case for request/response traffic), we send
at once and hand only an unsent remainder to Twisted, which keeps ordering, back-pressure and
error handling exactly as before. TLS transports and anything unusual take the normal path.
"""

from __future__ import annotations

from twisted.internet import main, tcp
from twisted.python import failure

DONE = failure.Failure(main.CONNECTION_DONE)  # the reason of a connection closed cleanly
# Read size and back-pressure threshold of a transport (Twisted's ``bufferSize``). A transport
# starts at Twisted's 64 KiB and moves to BUFFER_SIZE when a read fills it or a write finds
# the kernel's buffer full (a bulk transfer: fewer reactor turns and pauses), back at the end
# of the exchange. Not 256 KiB throughout: CPython's recv(256 KiB) allocates a buffer past
# glibc's mmap threshold and shrinks it, an mmap, mremap and munmap per read that cost a small
# request about 15 us a read, twice per request.
READ_SIZE = 64 * 1024
BUFFER_SIZE = 256 * 1024
# After answering and closing with the client possibly still sending (a refused body,
# pipelined requests), its bytes are read and dropped this long before the socket closes:
# closing with unread data makes the kernel send RST, which can destroy the answer. The plain
# relay and the TLS listener both close this way.
LINGER_SECS = 2.0


def direct_socket(transport):
    """The transport's socket when ``send`` may bypass it, else None."""
    if isinstance(transport, tcp.Connection):
        return transport.socket
    return None


def send(transport, sock, data: bytes) -> None:
    """Write ``data`` to ``transport`` (whose socket is ``sock``, or None), in order."""
    rest = try_send(transport, sock, data)
    if rest:
        transport.bufferSize = BUFFER_SIZE  # see BUFFER_SIZE
        transport.write(rest)


def try_send(transport, sock, data: bytes) -> bytes:
    """Send what the kernel takes now when nothing is queued; return the rest (empty when all
    went), which the caller must ``transport.write`` (after registering a producer, say).
    A transport without a socket of its own (TLS) may have a ``try_send`` of its own."""
    if sock is None:
        own = getattr(transport, "try_send", None)
        return data if own is None else own(data)
    if (
        not transport._tempDataLen  # not queued(transport), spelled out on the per-request path
        and transport.offset == len(transport.dataBuffer)
        and transport.connected
        and not transport.disconnecting
    ):
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            sent = 0  # Twisted's own write path notices the error and reports the loss
        if sent == len(data):
            return b""
        return data[sent:]
    return data


def queued(transport) -> bool:
    """Whether a TCP transport holds bytes not yet sent."""
    return bool(transport._tempDataLen) or transport.offset != len(transport.dataBuffer)


def close_now(transport, sock) -> None:
    """``transport.loseConnection()``, without its round trip when nothing is queued.

    Twisted closes by stopping reads, watching for writability (one ``epoll_ctl`` each), waiting
    for the next reactor turn to find the empty buffer, then shutting down and closing the
    socket. With nothing queued there is nothing to wait for: stop reading and close once this
    reactor turn's events are handled (as ``abortConnection`` does, but with a FIN); ``close``
    alone sends the FIN, so the extra ``shutdown`` call goes too (the descriptor is this
    process's alone: CLOEXEC).
    """
    if (
        sock is None
        or queued(transport)
        or not transport.connected
        or transport.disconnecting
        or transport.producer is not None
    ):
        transport.loseConnection()
        return
    transport.disconnecting = True  # later writes are dropped, a second close does nothing
    transport._shouldShutdown = False
    close_soon = getattr(transport.reactor, "close_soon", None)
    if close_soon is not None:
        close_soon(transport)  # the proxy's reactor: no epoll_ctl, no timed call
        return
    transport.stopReading()
    transport.stopWriting()
    transport.reactor.callLater(0, transport.connectionLost, DONE)
