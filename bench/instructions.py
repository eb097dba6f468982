"""Instructions per request of the relay's own work, counted by callgrind: a before/after
figure that the machine's load cannot move.

    python -m bench.instructions [--baseline DIR] [--requests 1000] [--modes public,header,query]

Timings on this shared machine swing by a third within an hour, and a change worth 5% drowns
in that. Here keep-alive requests go through the relay in memory (``ClientConnection`` and its
pooled upstream on in-memory transports, the harness of ``tests/dataplane/test_relay_memory``:
routing, the access decision, both heads, the access log (to /dev/null: its lines are
formatted; the harness alone logs nothing), metrics, timers; no system calls and
no Twisted TCP), under ``valgrind --tool=callgrind``, twice (``N`` and ``3N`` requests): the
difference over ``2N`` is the count per request, start-up excluded. ``--baseline`` counts
another checkout (a ``git worktree`` of an earlier commit) the same way. Needs valgrind
(``apt-get install valgrind``). It complements the side-by-side bench; it does not replace it:
system calls (about a third of the proxy's CPU) and the kernel are not in it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODES = ("public", "header", "query")

# Runs in the checkout under test (PYTHONPATH), so each is measured with its own relay.
_LOOP = r"""
import os, sys
from dataplane.access_log import AccessLog
from tests.dataplane.test_relay_memory import Harness
mode, n = sys.argv[1], int(sys.argv[2])
h = Harness()
h.ctx.access_log = AccessLog(h.reactor, open(os.devnull, "w"))  # logging, as a proxy does by default
if mode == "public":
    h.svc = h.svc.with_changes(auth_mode="public")
    h.load(h.svc, h.ctr)
token = h.svc.token.encode()
if mode == "query":
    req = h.request(b"/small.txt?linx_token=" + token, b"User-Agent: wrk", token=False)
else:
    req = h.request(b"/small.txt", b"User-Agent: wrk", token=mode == "header")
resp = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Thu, 03 Dec 2026 14:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello"
)
proto, tr = h.client()
proto.dataReceived(req)
up, utr = h.upstream()
up.dataReceived(resp)
for _ in range(n):
    if not tr.value().startswith(b"HTTP/1.1 200 "):
        sys.exit("not relayed: " + repr(tr.value()[:200]))
    tr.clear()
    utr.clear()
    proto.dataReceived(bytes(bytearray(req)))  # a new bytes object, as a socket read gives
    up.dataReceived(bytes(bytearray(resp)))
if not tr.value().startswith(b"HTTP/1.1 200 "):
    sys.exit("not relayed: " + repr(tr.value()[:200]))
"""


def count(tree: Path, mode: str, requests: int, workdir: Path) -> int:
    """Instructions callgrind counted for ``requests`` keep-alive requests in ``tree``."""
    loop = workdir / "relay_loop.py"
    loop.write_text(_LOOP)
    out = workdir / f"cg.{os.getpid()}"
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}
    run = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            str(loop),
            mode,
            str(requests),
        ],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
    )
    out.unlink(missing_ok=True)
    collected = re.search(r"Collected : (\d+)", run.stderr)
    if run.returncode != 0 or collected is None:
        sys.exit(f"bench.instructions: {tree} {mode} failed:\n{run.stderr[-2000:]}")
    return int(collected.group(1))


def per_request(tree: Path, mode: str, requests: int, workdir: Path) -> float:
    return (count(tree, mode, 3 * requests, workdir) - count(tree, mode, requests, workdir)) / (2 * requests)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", type=Path, help="another checkout to count the same way")
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--modes", default=",".join(MODES), help="public, header (X-Linx-Token), query")
    args = p.parse_args(argv)
    if not shutil.which("valgrind"):
        sys.exit("bench.instructions: valgrind not found (apt-get install valgrind)")
    modes = [m for m in args.modes.split(",") if m]
    if any(m not in MODES for m in modes):
        sys.exit(f"bench.instructions: modes are {', '.join(MODES)}")
    trees = {"this checkout": ROOT}
    if args.baseline is not None:
        trees["baseline"] = args.baseline.resolve()
    with tempfile.TemporaryDirectory(prefix="linx-instr-") as tmp:
        figures = {
            (name, m): per_request(tree, m, args.requests, Path(tmp))
            for name, tree in trees.items()
            for m in modes
        }
    print("| request | " + " | ".join(trees) + (" | this/baseline |" if len(trees) > 1 else " |"))
    print("|---" * (len(trees) + 1 + (len(trees) > 1)) + "|")
    for m in modes:
        row = [f"{figures[(name, m)]:,.0f}" for name in trees]
        if len(trees) > 1:
            row.append(f"{figures[('this checkout', m)] / figures[('baseline', m)]:.3f}x")
        print(f"| {m} | " + " | ".join(row) + " |")
    print("\ninstructions per keep-alive request through the relay in memory (callgrind)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
