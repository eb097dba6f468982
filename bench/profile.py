"""Profile the proxy under keep-alive load with py-spy, and summarise where its CPU goes.

    python -m bench.profile [--seconds 15] [--rate 500] [--token [--query]] [--close] [--tls]
                            [--native] [--strace] [--conns 50]
                            [--out /tmp/linx-profile]

Starts the same stack as ``python -m bench`` (Redis, control plane, proxy pinned to the first
CPU, nginx or the peer as backend), runs wrk (or the Python load) against Linx, and meanwhile
``py-spy record --format raw`` on the proxy. Writes the collapsed stacks (``.txt``, for
flamegraph tools) and an SVG flame graph, then prints the top functions by own time and by
inclusive time, as percentages of the non-idle samples. Needs ``pip install py-spy``.
``--strace``: instead, ``strace -c`` on the proxy for the whole load, as calls per request.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

from bench import loadgen
from bench.__main__ import PREFIX, SMALL_BODY, _cpus, _raise_nofile
from bench.stack import (
    NGINX_BACKEND,
    Reaper,
    build_fastpeer,
    https_status,
    make_cert,
    nginx_path,
    peer_command,
    read_listening,
    start_control,
    start_nginx,
    start_proxy,
    start_redis,
    tenant_with_container,
)
from control.client import Client
from deploy.stack import free_port, http_status, wait_for


def summarise(collapsed: Path, top: int = 25) -> str:
    """Own and inclusive time per function and own time per file, over the reactor thread's
    samples only (the sync and Redis-writer threads sit blocked in Redis reads, which py-spy
    does not always count as idle). Percentages are of the reactor thread's samples."""
    own: Counter[str] = Counter()
    own_line: Counter[str] = Counter()
    by_file: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = other = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        if "ReactorBase.run " not in stack and "ReactorBase.mainLoop " not in stack:
            other += n
            continue
        frames = [_short(f) for f in stack.split(";")]
        total += n
        leaf_func, leaf_file, leaf_line = frames[-1]
        own[f"{leaf_func} ({leaf_file})"] += n
        own_line[f"{leaf_func} ({leaf_file}:{leaf_line})"] += n
        by_file[leaf_file] += n
        for f in {f"{func} ({path})" for func, path, _ in frames}:
            inclusive[f] += n
    if not total:
        return "no samples"

    def block(title, counter, k):
        return ["", title] + [f"  {100 * n / total:5.1f}%  {f}" for f, n in counter.most_common(k)]

    out = [f"{total} samples of the reactor thread ({other} of other threads left out)"]
    out += block("own time by file:", by_file, 15)
    out += block(f"top {top} functions by own time:", own, top)
    out += block("top 15 lines by own time:", own_line, 15)
    out += block(f"top {top} functions by inclusive time:", inclusive, top)
    return "\n".join(out)


def _short(frame: str) -> tuple[str, str, str]:
    """``func (path/to/file.py:123)`` -> (func, pkg/file.py, 123)."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path, _, line = where.rpartition(":")
    parts = path.split("/")
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1 :]
    elif len(parts) > 2:
        parts = parts[-2:]
    return name, "/".join(parts), line


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    p.add_argument("--token", action="store_true", help="load a service_token service with its token")
    p.add_argument("--query", action="store_true", help="with --token: the token in the query, as returned")
    p.add_argument("--close", action="store_true", help="a new connection per request")
    p.add_argument("--conns", type=int, default=50, help="keep-alive client connections")
    p.add_argument("--tls", action="store_true", help="through the proxy's TLS listener (HTTPS)")
    p.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    p.add_argument(
        "--blocking",
        action="store_true",
        help="py-spy stops the proxy for each sample (its default; samples then land on system calls)",
    )
    p.add_argument(
        "--strace", action="store_true", help="count the proxy's system calls per request instead of sampling"
    )
    p.add_argument("--out", type=Path, default=Path("/tmp/linx-profile"))
    args = p.parse_args(argv)
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if args.strace and not shutil.which("strace"):
        sys.exit("bench.profile: strace not found (apt-get install strace)")
    if not args.strace and not Path(pyspy).exists():
        sys.exit("bench.profile: py-spy not found (pip install py-spy)")
    _raise_nofile()
    proxy_cpu, load_cpu, _ = _cpus()
    reaper = Reaper()
    try:
        fast = build_fastpeer(reaper.dir)
        peer = reaper.spawn("peer", [*peer_command(fast), "server", "0"], pipe=True)
        peer_port = read_listening(peer)
        small = "/small"
        web_port = peer_port
        if nginx_path():
            www = reaper.dir / "www"
            www.mkdir()
            (www / "small.txt").write_bytes(SMALL_BODY)
            (www / "small.txt").chmod(0o644)
            www.chmod(0o755)
            web_port = free_port()
            body = NGINX_BACKEND.format(port=web_port, dir=reaper.dir)
            start_nginx(reaper, "nginx-backend", body, web_port, load_cpu)
            small = "/small.txt"
        redis = start_redis(reaper)
        tls_env = {}
        if args.tls:
            cert, key = make_cert(reaper.dir)
            tls_port = free_port()
            tls_env = {
                "LINX_PROXY_TLS_LISTEN": f"127.0.0.1:{tls_port}",
                "LINX_TLS_CERT": str(cert),
                "LINX_TLS_KEY": str(key),
            }
        proxy = start_proxy(reaper, redis.url, PREFIX, proxy_cpu, **tls_env)
        control, admin = start_control(reaper, redis.url, PREFIX, proxy.url)
        proxy.wait_ready(timeout=60)
        tenant, ctr = tenant_with_container(admin, "profile")
        mode = "service_token" if args.token else "public"
        with Client(control.url, api_key=tenant["api_key"]) as linx:
            svc = linx.publish(ctr["container_id"], "web", web_port, auth_mode=mode)
        base = f"https://127.0.0.1:{tls_port}" if args.tls else proxy.url
        url = f"{base}/linx/{svc['service_id']}{small}"
        headers = []
        if args.token and args.query:
            url += "?linx_token=" + svc["public_url"].split("linx_token=")[1].split("&")[0]
        elif args.token:
            headers.append("X-Linx-Token: " + svc["public_url"].split("linx_token=")[1].split("&")[0])
        if args.close:
            headers.append("Connection: close")
        status = https_status if args.tls else http_status
        wait_for(lambda: status(url, 1.0) in (200, 401), 10, url)
        loadgen.http_load(url, args.conns, 2.0, headers, cpus=load_cpu)  # warm-up
        args.out.mkdir(parents=True, exist_ok=True)
        raw = args.out / "profile.txt"
        svg = args.out / "profile.svg"
        results = {}
        secs = args.seconds + 2
        load = threading.Thread(
            target=lambda: results.update(loadgen.http_load(url, args.conns, secs, headers, cpus=load_cpu))
        )
        if args.strace:
            return _count_syscalls(proxy.proc.pid, load, results)
        load.start()
        spy = [pyspy, "record", "--pid", str(proxy.proc.pid), "--rate", str(args.rate)]
        spy += ["--duration", str(int(args.seconds)), "--format", "raw", "-o", str(raw)]
        if args.native:
            spy.append("--native")
        if not args.blocking and not args.native:  # --native needs the process stopped
            spy.append("--nonblocking")
        subprocess.run(spy, check=True, capture_output=True)
        load.join()
        flame = [pyspy, "record", "--pid", str(proxy.proc.pid), "--rate", str(args.rate)]
        flame += ["--duration", "3", "--format", "flamegraph", "-o", str(svg)]
        side = threading.Thread(target=lambda: loadgen.http_load(url, args.conns, 5, headers, cpus=load_cpu))
        side.start()
        subprocess.run(flame, capture_output=True)
        side.join()
        print(f"load during profiling: {results.get('rps', 0):,.0f} req/s ({results.get('tool')})")
        print(f"collapsed stacks: {raw}\nflame graph: {svg}\n")
        print(summarise(raw))
    finally:
        reaper.close()
    return 0


def _count_syscalls(pid: int, load: threading.Thread, results: dict) -> int:
    """``strace -c`` on every thread of the proxy for the whole of the load, per request."""
    trace = subprocess.Popen(["strace", "-c", "-f", "-p", str(pid)], stderr=subprocess.PIPE, text=True)
    attached = trace.stderr.readline()  # "strace: Process N attached ...": tracing from here
    if "attached" not in attached:
        sys.exit(f"bench.profile: strace did not attach: {attached.strip()}")
    load.start()
    load.join()
    trace.send_signal(signal.SIGINT)
    table = trace.communicate(timeout=30)[1]
    print(table)
    requests = results.get("requests", 0)
    print(
        f"load: {requests:,} requests, {results.get('rps', 0):,.0f} req/s under strace",
        f"({results.get('tool')})",
    )
    for line in table.splitlines():
        cols = line.split()
        if len(cols) >= 5 and cols[3].isdigit() and requests and int(cols[3]) >= requests / 100:
            print(f"  {cols[-1]:<16} {int(cols[3]) / requests:6.2f} per request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
