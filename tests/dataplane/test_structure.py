"""What the relay's shortcuts rely on, and the module layering, checked so a Twisted upgrade or
a stray import fails here rather than in production."""

from __future__ import annotations

import ast
from pathlib import Path

from twisted.internet import tcp

DATAPLANE = Path(__file__).resolve().parents[2] / "dataplane"


def test_the_twisted_internals_fastio_reads_still_exist():
    # fastio.send skips Twisted's buffer only while it is empty: it reads these attributes.
    import socket

    a, b = socket.socketpair()
    try:
        conn = tcp.Connection(a, None)
        for name in ("_tempDataLen", "offset", "dataBuffer", "connected", "disconnecting", "socket"):
            assert hasattr(conn, name), name
    finally:
        a.close()
        b.close()


def _imports(module: str) -> set[str]:
    tree = ast.parse((DATAPLANE / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dataplane"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_layering_has_no_circle_through_the_relay():
    # upstream and context sit below the relay; only the service (assembly) imports it
    for module in ("upstream", "context", "access", "forwarding", "http_head", "routes"):
        assert not {m for m in _imports(module) if "relay" in m or "service" in m}, module
    assert not {m for m in _imports("relay") if m.startswith("dataplane.service")}
