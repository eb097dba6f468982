"""Fault injectors for the hardening suite: scripted containers, a counting listener, and a TCP
relay that can cut a proxy off from Redis. Threads only; every one stops in ``close()``."""

from __future__ import annotations

import base64
import hashlib
import selectors
import socket
import struct
import threading
from collections.abc import Callable

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def read_head(sock: socket.socket) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("peer closed before a whole head")
        buf += data
    return buf


def ws_accept_for(head: bytes) -> bytes:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            return base64.b64encode(hashlib.sha1(value.strip() + WS_GUID).digest())  # noqa: S324
    raise AssertionError("no Sec-WebSocket-Key in " + repr(head[:300]))


class ScriptedContainer:
    """A listener on ``host`` whose every connection is handled by ``script(sock)`` in a thread."""

    def __init__(self, script: Callable[[socket.socket], None], host: str = "127.0.0.1") -> None:
        self.script = script
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.errors: list[BaseException] = []
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._closing = False
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            if self._closing:
                sock.close()
                return
            self.accepted += 1
            self._conns.append(sock)
            t = threading.Thread(target=self._run, args=(sock,), daemon=True)
            self._threads.append(t)
            t.start()

    def _run(self, sock: socket.socket) -> None:
        try:
            self.script(sock)
        except OSError:
            pass
        except BaseException as exc:  # reported by the test through .errors
            self.errors.append(exc)

    def close(self) -> None:
        self._closing = True
        try:
            # wake the acceptor: shutdown makes accept() fail on Linux
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self._acceptor.join(5)
        for sock in self._conns:
            try:
                sock.close()
            except OSError:
                pass
        for t in self._threads:
            t.join(5)


def counting_listener(host: str) -> ScriptedContainer:
    """A listener that only counts connections (and closes them)."""
    return ScriptedContainer(lambda sock: sock.close(), host)


class TcpRelay:
    """A TCP forwarder to ``target`` that can be cut (a partition) and healed.

    Cut: no byte moves in either direction and new connections are accepted but not served,
    like a network that silently drops packets; TCP buffers what the peers send, so on heal the
    bytes flow again as retransmissions would deliver them. ``reset_all`` drops every connection.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.flowing = threading.Event()
        self.flowing.set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._pending: list[socket.socket] = []
        self._thread = threading.Thread(target=self._loop, name="tcp-relay", daemon=True)
        self._thread.start()

    def cut(self) -> None:
        self.flowing.clear()

    def heal(self) -> None:
        self.flowing.set()

    def reset_all(self) -> None:
        with self._lock:
            for a, b in self._pairs:
                reset(a)
                reset(b)
            for s in self._pending:
                reset(s)
            self._pairs, self._pending = [], []

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=2)
        except OSError:
            client.close()
            return
        upstream.setblocking(False)
        client.setblocking(False)
        self._pairs.append((client, upstream))

    def _loop(self) -> None:
        sel = selectors.DefaultSelector()
        while not self._stop.is_set():
            with self._lock:
                try:
                    while True:
                        client, _ = self.listener.accept()
                        self._pending.append(client)
                except BlockingIOError:
                    pass
                if self.flowing.is_set():
                    pending, self._pending = self._pending, []
                    for client in pending:
                        self._connect(client)
                    pairs = list(self._pairs)
                else:
                    pairs = []
            if not pairs:
                self._stop.wait(0.01)
                continue
            for a, b in pairs:
                sel.register(a, selectors.EVENT_READ, (a, b))
                sel.register(b, selectors.EVENT_READ, (b, a))
            try:
                ready = sel.select(0.01)
                with self._lock:
                    for key, _ in ready:
                        src, dst = key.data
                        if not self.flowing.is_set() or src.fileno() < 0 or dst.fileno() < 0:
                            continue  # cut meanwhile, or dropped earlier in this batch
                        try:
                            data = src.recv(65536)
                            if data:
                                dst.setblocking(True)
                                dst.sendall(data)
                                dst.setblocking(False)
                                continue
                        except OSError:
                            pass
                        self._drop(src, dst)
            finally:
                for key in list(sel.get_map().values()):
                    sel.unregister(key.fileobj)
        sel.close()

    def _drop(self, a: socket.socket, b: socket.socket) -> None:
        self._pairs = [p for p in self._pairs if a not in p]
        for s in (a, b):
            try:
                s.close()
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with self._lock:
            for a, b in self._pairs:
                a.close()
                b.close()
            for s in self._pending:
                s.close()
            self._pairs, self._pending = [], []
        self.listener.close()
