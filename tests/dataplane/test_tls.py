"""dataplane.tls: TLS between an in-memory TCP transport and a standard-library client.

The client is an ``ssl.SSLObject`` over memory BIOs, pumped by hand, so every step (the
handshake's flights, records split or merged, close_notify) is explicit; one test runs on a
real socket to show ciphertext leaving without Twisted's buffer.
"""

from __future__ import annotations

import socket
import ssl

import pytest
from twisted.internet import error, protocol, tcp
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python import failure

from dataplane.fastio import LINGER_SECS
from dataplane.tls import ServerTLS

trustme = pytest.importorskip("trustme")  # a declared test dependency; never absent in tox


@pytest.fixture(scope="module")
def contexts(tmp_path_factory):
    ca = trustme.CA()
    cert = ca.issue_cert("proxy.linx.test")
    path = tmp_path_factory.mktemp("tls") / "both.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(path))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(str(path))
    server.set_alpn_protocols(["http/1.1"])
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client)
    client.set_alpn_protocols(["h2", "http/1.1"])
    return server, client


class App(protocol.Protocol):
    """The relay's place: records what it is given."""

    def __init__(self):
        self.data = []
        self.lost = None
        self.on_data = None

    def dataReceived(self, data):
        self.data.append(data)
        if self.on_data:
            self.on_data(self, data)

    def connectionLost(self, reason=None):
        self.lost = reason


class TCP(StringTransport):
    write_closed = False

    def loseWriteConnection(self):
        self.write_closed = True


class Pipe:
    def __init__(self, contexts):
        server, client = contexts
        self.clock = Clock()
        self.app = App()
        self.tls = ServerTLS(server, self.app, self.clock)
        self.tcp = TCP()
        self.tls.makeConnection(self.tcp)
        self.cin, self.cout = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.client = client.wrap_bio(self.cin, self.cout, server_hostname="proxy.linx.test")

    def to_server(self):
        data = self.cout.read()
        if data:
            self.tls.dataReceived(data)
        return data

    def to_client(self):
        data = self.tcp.value()
        self.tcp.clear()
        self.cin.write(data)
        return data

    def handshake(self):
        for _ in range(5):
            try:
                self.client.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.to_server()
                self.to_client()
        self.to_server()  # the client's Finished
        self.to_client()  # session tickets
        assert self.tls.handshake_done

    def read(self):
        """What the client can read now; b"" after it, when close_notify came."""
        out = b""
        while True:
            try:
                chunk = self.client.read(65536)
            except ssl.SSLWantReadError:
                return out
            if not chunk:
                self.closed_by_server = True
                return out
            out += chunk

    closed_by_server = False


def test_handshake_then_bytes_both_ways(contexts):
    p = Pipe(contexts)
    assert p.app.transport is p.tls  # the relay's protocol is connected before the handshake
    p.handshake()
    assert p.client.selected_alpn_protocol() == "http/1.1"
    p.client.write(b"GET / HTTP/1.1\r\n\r\n")
    p.to_server()
    assert b"".join(p.app.data) == b"GET / HTTP/1.1\r\n\r\n"
    p.tls.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    p.to_client()
    assert p.read() == b"HTTP/1.1 204 No Content\r\n\r\n"


def test_records_merged_or_split_are_delivered_whole_and_in_order(contexts):
    p = Pipe(contexts)
    p.handshake()
    for part in (b"one", b"two", b"three"):
        p.client.write(part)
    p.to_server()  # three records in one read
    assert b"".join(p.app.data) == b"onetwothree"
    p.client.write(b"x" * 40_000)  # three records, fed a byte short, then the rest
    wire = p.cout.read()
    p.tls.dataReceived(wire[:-1])
    assert len(b"".join(p.app.data)) < 11 + 40_000
    p.tls.dataReceived(wire[-1:])
    assert b"".join(p.app.data) == b"onetwothree" + b"x" * 40_000


def test_a_large_write_goes_out_in_one_transport_write(contexts):
    p = Pipe(contexts)
    p.handshake()
    writes = []
    p.tcp.write = lambda data: (writes.append(data), StringTransport.write(p.tcp, data))
    body = bytes(range(256)) * 4096  # 1 MiB
    p.tls.write(body)
    assert len(writes) == 1
    p.to_client()
    assert p.read() == body


def test_an_answer_written_before_the_handshake_waits_for_it_then_closes(contexts):
    # RefusedConnection writes its 503 at once and closes: the bytes wait for the handshake.
    p = Pipe(contexts)
    p.tls.write(b"HTTP/1.1 503 Service Unavailable\r\n\r\n")
    p.tls.loseConnection()
    assert not p.tcp.disconnecting and not p.tcp.write_closed
    p.handshake()
    assert p.read() == b"HTTP/1.1 503 Service Unavailable\r\n\r\n"
    assert p.closed_by_server  # close_notify
    assert p.tcp.write_closed  # then a FIN, and reads go on for the linger time
    assert not p.tcp.disconnecting
    p.clock.advance(LINGER_SECS)
    assert p.tcp.disconnecting


def test_no_handshake_in_the_linger_time_closes_the_connection(contexts):
    p = Pipe(contexts)
    p.tls.write(b"HTTP/1.1 503 Service Unavailable\r\n\r\n")
    p.tls.loseConnection()
    p.clock.advance(LINGER_SECS)
    assert p.tcp.disconnecting and p.tcp.value() == b""


def test_closing_before_any_handshake_closes_at_once(contexts):
    p = Pipe(contexts)
    p.tls.loseConnection()  # the first-head deadline, say, on a client that never said hello
    assert p.tcp.disconnecting and p.tcp.value() == b""


def test_close_sends_close_notify_a_fin_then_drops_what_comes(contexts):
    p = Pipe(contexts)
    p.handshake()
    p.tls.write(b"bye")
    p.tls.loseConnection()
    p.tls.write(b"after close")  # dropped, as by a TCP transport after loseConnection
    p.to_client()
    assert p.read() == b"bye" and p.closed_by_server
    assert p.tcp.write_closed and not p.tcp.disconnecting
    p.client.write(b"late request")
    p.to_server()
    assert b"late request" not in b"".join(p.app.data)
    p.tls.connectionLost(failure.Failure(error.ConnectionDone()))  # the client's FIN
    assert p.app.lost.check(error.ConnectionDone)
    assert not p.clock.getDelayedCalls()  # the linger timer went with the connection


def test_the_clients_close_notify_closes_our_side(contexts):
    p = Pipe(contexts)
    p.handshake()
    try:
        p.client.unwrap()
    except ssl.SSLWantReadError:
        pass
    p.to_server()
    assert p.tls.closed and p.tcp.write_closed and p.app.data == []
    p.to_client()
    p.client.unwrap()  # our close_notify answered theirs: their unwrap completes


def test_not_tls_at_all_is_closed_without_reaching_the_relay(contexts):
    p = Pipe(contexts)
    p.tls.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert p.tcp.disconnecting and p.app.data == []
    p.tls.dataReceived(b"more")  # until the close completes, ignored
    assert p.app.data == []


def test_the_relay_aborting_stops_delivery_of_what_is_buffered(contexts):
    p = Pipe(contexts)
    p.handshake()
    p.app.on_data = lambda app, data: p.tls.abortConnection()
    p.client.write(b"first")
    p.client.write(b"second")
    p.to_server()
    assert p.app.data == [b"first"]


def test_transport_side_properties_are_the_tcp_connections(contexts):
    p = Pipe(contexts)
    p.tls.bufferSize = 12345
    assert p.tcp.bufferSize == 12345 and p.tls.bufferSize == 12345
    assert p.tls.getPeer() == p.tcp.getPeer() and p.tls.getHost() == p.tcp.getHost()
    producer = object()
    p.tls.registerProducer(producer, True)
    assert p.tcp.producer is producer
    p.tls.unregisterProducer()
    assert p.tcp.producer is None


def test_try_send_on_a_real_socket_skips_twisteds_buffer(contexts):
    server, client_ctx = contexts
    a, b = socket.socketpair()
    a.setblocking(False)
    clock = Clock()
    clock.addReader = clock.removeReader = lambda *_: None
    writers = set()
    clock.addWriter, clock.removeWriter = writers.add, writers.discard
    app = App()
    tls = ServerTLS(server, app, clock)
    conn = tcp.Connection(a, tls, clock)
    conn.connected = True
    tls.makeConnection(conn)
    client = client_ctx.wrap_socket(b, server_hostname="proxy.linx.test", do_handshake_on_connect=False)
    client.setblocking(False)

    def pump():
        try:
            tls.dataReceived(a.recv(65536))
        except BlockingIOError:
            pass

    for _ in range(10):
        try:
            client.do_handshake()
            break
        except ssl.SSLWantReadError:
            pump()
    client.write(b"ping")
    pump()
    pump()
    assert tls.handshake_done and b"".join(app.data) == b"ping"
    assert tls.try_send(b"pong") == b""
    assert not writers and not conn.dataBuffer  # sent, not queued
    client.setblocking(True)
    client.settimeout(2)
    assert client.recv(10) == b"pong"
    conn.write(b"queued")  # Twisted's buffer holds bytes: try_send must not jump the queue
    assert tls.try_send(b"later") == b"later"
    client.close()
    a.close()


def test_after_a_tls_error_writes_are_dropped_not_raised(contexts):
    p = Pipe(contexts)
    p.handshake()
    p.tls.dataReceived(b"\x15\x03\x03\x00\x02\x02\x28")  # a bare fatal alert record, unencrypted
    assert p.tls.closed and p.tcp.disconnecting
    p.tls.write(b"HTTP/1.1 200 OK\r\n\r\n")  # the relay answering what it had: no exception
