"""What the relay's shortcuts rely on, and the module layering, checked so a Twisted upgrade or
a stray import fails here rather than in production."""

from __future__ import annotations

import ast
from pathlib import Path

from twisted.internet import tcp

DATAPLANE = Path(__file__).resolve().parents[2] / "dataplane"


def test_the_twisted_internals_fastio_reads_still_exist():
    # fastio.send skips Twisted's buffer only while it is empty, and close_now its close round
    # trip: they read and set these attributes.
    import socket

    a, b = socket.socketpair()
    try:
        conn = tcp.Connection(a, None)
        names = ("_tempDataLen", "offset", "dataBuffer", "connected", "disconnecting", "socket")
        for name in (*names, "producer", "_shouldShutdown", "reactor", "stopReading", "stopWriting"):
            assert hasattr(conn, name), name
    finally:
        a.close()
        b.close()


def _imports(module: str, runtime_only: bool = False) -> set[str]:
    tree = ast.parse((DATAPLANE / f"{module}.py").read_text())
    typing_only = set()
    if runtime_only:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
                typing_only.update(id(n) for n in ast.walk(node))
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
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
    # the exchange names the connection's type for checkers only; at run time it is below it
    assert not {m for m in _imports("exchange", runtime_only=True) if "relay" in m or "service" in m}
    assert not {m for m in _imports("upstream") if "exchange" in m}


def test_no_import_circle_at_run_time():
    modules = {p.stem for p in DATAPLANE.glob("*.py")}
    graph = {
        m: {i.split(".")[1] for i in _imports(m, runtime_only=True) if i.count(".") >= 1} & modules - {m}
        for m in modules
    }
    visiting, done = set(), set()

    def visit(m, path):
        assert m not in visiting, " -> ".join([*path, m])
        if m in done:
            return
        visiting.add(m)
        for n in graph[m]:
            visit(n, [*path, m])
        visiting.discard(m)
        done.add(m)

    for m in sorted(modules):
        visit(m, [])
