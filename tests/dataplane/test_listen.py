"""The proxy's listening socket: what accepted connections inherit from it."""

from __future__ import annotations

import os
import socket

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
