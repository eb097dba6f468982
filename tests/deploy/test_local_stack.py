"""The README's first command: ``linx-local`` starts Redis, the control plane, the proxy and a
demo container, prints a working public URL, and stops every one of them on a signal."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from deploy.redis_process import free_port
from tests.helpers.procs import wait_for

ROOT = Path(__file__).resolve().parents[2]


def _descendants(pid: int) -> set[int]:
    out = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        kids = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split()
        for kid in map(int, kids):
            if kid not in out:
                out.add(kid)
                todo.append(kid)
    return out


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


def test_linx_local_serves_the_demo_and_stops_everything_on_a_repeated_signal(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINX_") and k != "REDIS_URL"}
    env["PYTHONUNBUFFERED"] = "1"
    ports = [str(free_port()) for _ in range(3)]
    log = tmp_path / "local.log"
    children: set[int] = set()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deploy.local", "--data-dir", str(tmp_path / "data"),
             "--control-port", ports[0], "--proxy-port", ports[1], "--admin-port", ports[2]],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        url = wait_for(
            lambda: (m := re.search(r"(http://\S+/linx/lnx_\S+)", log.read_text())) and m.group(1),
            60,
            what="the demo's public URL",
        )
        assert url.startswith(f"http://127.0.0.1:{ports[1]}/linx/")
        out = log.read_text()
        token = re.search(r"admin token: (\S+)\)", out).group(1)
        assert f"export LINX_ADMIN_TOKEN={token}" in out
        assert f"http://127.0.0.1:{ports[0]}/console/" in out
        page = requests.get(url, timeout=5)
        assert page.status_code == 200 and "linx_" in page.headers.get("Set-Cookie", "")
        children |= _descendants(proc.pid)
        assert len(children) >= 4  # Redis, gunicorn (and its workers), the proxy, the demo
        # a supervisor and a terminal both signalling: the second must not cut the clean-up short
        demo = next(pid for pid in children if b"deploy.demo_app" in _cmdline(pid))
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: not _alive(demo), 10, what="the clean-up to begin")  # it stops the demo first
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        wait_for(lambda: not any(_alive(pid) for pid in children), 20, what="every component to exit")
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in children | _descendants(proc.pid):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_linx_local_names_a_port_in_use_and_its_flag_at_once(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "deploy.local", "--data-dir", str(tmp_path), "--proxy-port", str(port)],
            cwd=ROOT, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert result.returncode == 1 and time.monotonic() - started < 10
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "--proxy-port" in result.stderr
    assert not (tmp_path / "appendonly.aof").exists()  # nothing was started
