"""dataplane.splice on real sockets: exact byte counts, back-pressure, and both ways to fail.

The two ends are Twisted TCP connections over loopback TCP pairs; the reactor is a recorder
(readers and writers as sets), and the test calls ``pump`` where a reactor would.
"""

from __future__ import annotations

import hashlib
import os
import socket

import pytest
from twisted.internet import protocol, tcp
from twisted.internet.task import Clock

from dataplane import splice


class _Reactor(Clock):
    def __init__(self):
        super().__init__()
        self.readers, self.writers = set(), set()

    def addReader(self, r):
        self.readers.add(r)

    def removeReader(self, r):
        self.readers.discard(r)

    def addWriter(self, w):
        self.writers.add(w)

    def removeWriter(self, w):
        self.writers.discard(w)


def _tcp_pair():
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    a = socket.create_connection(lsock.getsockname())
    b, _ = lsock.accept()
    lsock.close()
    return a, b


def _connection(sock, reactor):
    sock.setblocking(False)
    conn = tcp.Connection(sock, protocol.Protocol(), reactor)
    conn.connected = True
    conn.protocol.makeConnection(conn)
    conn.startReading()
    return conn


class Rig:
    """container --(src)--> proxy --(dst)--> client, a response body; with ``interrupt``, a
    request body the other way round (``container`` then plays the uploading client, and
    ``client`` the container, which may answer early)."""

    def __init__(self, count, interrupt=False):
        self.reactor = _Reactor()
        self.container, src_sock = _tcp_pair()
        dst_sock, self.client = _tcp_pair()
        self.src = _connection(src_sock, self.reactor)
        self.dst = _connection(dst_sock, self.reactor)
        self.moved, self.done, self.failed, self.interrupted = [], [], [], []
        assert splice.can_splice(self.src, self.dst)
        self.splice = splice.Splice(
            self.reactor, self.src, self.dst, count,
            self.moved.append, lambda: self.done.append(True),
            None if interrupt else self.failed.append,
            (lambda left, held: self.interrupted.append((left, held))) if interrupt else None,
        )  # fmt: skip

    def pump_until(self, outcome: list, turns: int = 100) -> None:
        """Start, then pump as a reactor would until ``outcome`` has something (or give up)."""
        if not self.started:
            self.started = True
            self.splice.start()
        for _ in range(turns):
            if outcome:
                return
            self.splice.pump()

    started = False

    def clog(self, until, body: bytes | None = None) -> None:
        """Small buffers on the client's side, then send ``body`` (else x's) and pump, as a
        reactor would, until ``until()``: the client is not reading."""
        self.client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        self.dst.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        self.container.setblocking(False)
        sent = 0
        for _ in range(200):
            chunk = b"x" * (1 << 20) if body is None else body[sent : sent + (1 << 20)]
            try:
                sent += self.container.send(chunk)
            except BlockingIOError:
                pass
            if not self.started:
                self.started = True
                self.splice.start()
            else:
                self.splice.pump()
            if until():
                return

    def assert_handed_back(self) -> None:
        """Twisted reads both transports again, and nothing of the splice is watched."""
        watched = self.reactor.readers | self.reactor.writers
        assert {self.src, self.dst} <= self.reactor.readers
        assert not {self.splice.reader, self.splice.writer} & watched

    def close(self):
        self.splice.stop()
        for s in (self.container, self.client, self.src.socket, self.dst.socket):
            s.close()


def _recv_exactly(sock, n):
    out = bytearray()
    sock.settimeout(5)
    while len(out) < n:
        chunk = sock.recv(min(1 << 20, n - len(out)))
        assert chunk
        out += chunk
    return bytes(out)


def test_moves_exactly_the_count_and_leaves_what_follows_unread():
    body = bytes(range(256)) * 8192  # 2 MiB
    rig = Rig(len(body))
    try:
        assert rig.src not in rig.reactor.readers and rig.dst not in rig.reactor.readers
        rig.container.sendall(body[: 1 << 20])
        rig.pump_until([], 1)  # start: moves what is there
        got = _recv_exactly(rig.client, 1 << 20)
        assert rig.splice.reader in rig.reactor.readers  # waits for the container's next bytes
        rig.container.sendall(body[1 << 20 :] + b"NEXT RESPONSE")
        rig.pump_until(rig.done)
        got += _recv_exactly(rig.client, len(body) - len(got))
        assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
        assert rig.done == [True] and rig.failed == [] and sum(rig.moved) == len(body)
        # handed back: Twisted reads both again, and the next response is still in the socket
        rig.assert_handed_back()
        assert rig.src.socket.recv(100) == b"NEXT RESPONSE"
    finally:
        rig.close()


def test_a_client_that_does_not_read_stops_reads_from_the_container():
    rig = Rig(256 << 20)
    try:
        rig.clog(lambda: rig.splice.writer in rig.reactor.writers)
        assert rig.splice.writer in rig.reactor.writers  # waiting for the client to drain
        assert rig.splice.reader not in rig.reactor.readers  # and not reading the container
        assert not rig.done and rig.failed == []
        moved = sum(rig.moved)
        _recv_exactly(rig.client, moved)  # the client reads: the splice goes on where it was
        rig.splice.pump()
        assert sum(rig.moved) > moved
    finally:
        rig.close()


def test_the_container_closing_early_fails_on_its_side():
    rig = Rig(4 << 20)
    try:
        rig.container.sendall(b"y" * (1 << 20))
        rig.container.close()
        rig.pump_until(rig.failed, 10)
        assert rig.failed == [False] and not rig.done
        assert sum(rig.moved) == 1 << 20  # what came was passed on before the failure
        assert not (rig.reactor.readers | rig.reactor.writers) & {rig.splice.reader, rig.splice.writer}
    finally:
        rig.close()


def test_the_client_going_away_fails_on_its_side():
    rig = Rig(64 << 20)
    try:
        rig.client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        rig.client.close()  # a reset
        rig.container.sendall(b"z" * (256 << 10))
        rig.pump_until(rig.failed, 10)
        assert rig.failed == [True] and not rig.done
    finally:
        rig.close()


def test_stop_is_idempotent_and_closes_the_pipe():
    rig = Rig(1 << 20)
    fds = (rig.splice.pipe_r, rig.splice.pipe_w)
    rig.splice.stop()
    rig.splice.stop()
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)
    rig.close()


def test_stop_after_the_clients_socket_closed_leaves_the_reactor_clean():
    # A connection aborted mid-splice closes its socket before its protocol stops the splice:
    # the reactor must not keep a record of the closed descriptor (a new socket may get it).
    from twisted.internet.epollreactor import EPollReactor

    reactor = EPollReactor()
    rig = Rig(64 << 20)
    try:
        rig.splice.reactor = reactor
        rig.clog(lambda: rig.splice.writing)
        assert rig.splice.writing
        fd = rig.splice.writer.fd
        assert reactor._selectables.get(fd) is rig.splice.writer
        rig.dst.socket.close()  # as tcp.Connection.connectionLost does before its protocol's
        rig.splice.stop()
        assert fd not in reactor._writes and fd not in reactor._reads
        assert fd not in reactor._selectables
    finally:
        rig.close()
        reactor._poller.close()


# ------------------------------------------------------------ request bodies (on_interrupt)
def _pattern(n: int) -> bytes:
    return (bytes(range(251)) * (n // 251 + 1))[:n]  # 251: no period that a 1 MiB read hides


def test_a_request_body_moves_exactly_while_the_container_is_watched_for_an_answer():
    body = _pattern(3 << 20)
    rig = Rig(len(body), interrupt=True)
    try:
        rig.container.sendall(body[: 1 << 20])
        rig.pump_until([], 1)
        assert rig.splice.writer in rig.reactor.readers  # the container's answer would stop it
        got = _recv_exactly(rig.client, 1 << 20)
        rig.container.sendall(body[1 << 20 :] + b"NEXT REQUEST")
        rig.pump_until(rig.done)
        got += _recv_exactly(rig.client, len(body) - len(got))
        assert got == body and sum(rig.moved) == len(body)
        assert rig.done == [True] and rig.interrupted == [] and rig.failed == []
        rig.assert_handed_back()
        assert rig.src.socket.recv(100) == b"NEXT REQUEST"
    finally:
        rig.close()


def test_the_container_answering_mid_body_hands_everything_back_in_order():
    count = 64 << 20
    body = _pattern(count)
    rig = Rig(count, interrupt=True)
    try:
        rig.clog(lambda: rig.splice.writing and rig.splice.in_pipe, body)
        assert rig.splice.writing and rig.splice.in_pipe  # the container is not reading: bytes wait
        rig.client.sendall(b"HTTP/1.1 413 Payload Too Large\r\n\r\n")
        rig.splice.writer.doRead()  # what the reactor does when the container's socket is readable
        assert rig.failed == [] and rig.done == [] and len(rig.interrupted) == 1
        left, held = rig.interrupted[0]
        moved = sum(rig.moved)
        assert held and held == body[moved : moved + len(held)]
        assert moved + len(held) + left == count  # nothing lost, nothing counted twice
        assert _recv_exactly(rig.client, moved) == body[:moved]
        # Twisted reads both sides again; the answer waits for it, unread
        rig.assert_handed_back()
        assert rig.dst.socket.recv(100).startswith(b"HTTP/1.1 413")
    finally:
        rig.close()


def test_the_uploader_closing_early_interrupts_instead_of_failing():
    rig = Rig(4 << 20, interrupt=True)
    try:
        rig.container.sendall(_pattern(1 << 20))
        rig.container.close()
        rig.pump_until(rig.interrupted, 10)
        assert rig.failed == [] and rig.done == []
        left, held = rig.interrupted[0]
        assert left == 3 << 20 and sum(rig.moved) + len(held) == 1 << 20
        assert rig.src in rig.reactor.readers  # Twisted reads the close and reports it
    finally:
        rig.close()


def test_stop_after_the_containers_socket_closed_mid_upload_leaves_the_reactor_clean():
    # The container's descriptor is watched both ways during an upload (room to write, an
    # answer to read): both records go when its socket was closed under the splice.
    from twisted.internet.epollreactor import EPollReactor

    reactor = EPollReactor()
    rig = Rig(64 << 20, interrupt=True)
    try:
        rig.splice.reactor = reactor
        rig.clog(lambda: rig.splice.writing)
        fd = rig.splice.writer.fd
        assert rig.splice.writing and fd in reactor._reads and fd in reactor._writes
        rig.dst.socket.close()
        rig.splice.stop()
        assert fd not in reactor._writes and fd not in reactor._reads
        assert fd not in reactor._selectables
        assert rig.interrupted == []  # stopped, not interrupted: whoever stops it ends the exchange
    finally:
        rig.close()
        reactor._poller.close()
