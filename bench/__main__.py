"""``python -m bench [--quick] [--json PATH]``: Linx beside direct, nginx, HAProxy and CHP.

Starts Redis, the control plane (gunicorn) and the proxy (pinned to the first CPU), a fast
backend (nginx for static files when installed, plus ``fastpeer``: a C epoll server for the
upload sink and the WebSocket echo, and the WebSocket load client), publishes services through
the API, and measures every workload against each target in turn (direct, Linx, and as reverse
proxies of the same backends, when installed: nginx, HAProxy and configurable-http-proxy),
alternating targets within each round. HTTPS rows: a second Linx proxy with its TLS
listener beside nginx terminating TLS, one throwaway certificate (trustme) for both. Change
fan-out over ten replicas is ``python -m bench.fanout``. Prints every target's figures and Linx's
ratio to each,
from this one run, with the targets of issue 12, and writes JSON (default
bench/results/latest.json).

``--quick`` is a smoke check (under a minute, no thresholds): short runs, small transfers, 5,000
routes instead of 100,000; without wrk or nginx it falls back to a Python load generator and
the peer as the backend, and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import sys
import time
from pathlib import Path

from bench import loadgen, workloads
from bench.stack import (
    NGINX_BACKEND,
    NGINX_PROXY,
    NGINX_TLS_PROXY,
    Reaper,
    build_fastpeer,
    busy_cores,
    chp_path,
    cpu_seconds,
    haproxy_path,
    https_status,
    make_cert,
    nginx_path,
    peer_command,
    read_listening,
    sched_ns,
    start_chp,
    start_control,
    start_haproxy,
    start_nginx,
    start_proxy,
    start_redis,
    status_kib,
    tenant_with_container,
    tree,
)
from bench.workloads import median, percentile
from control.client import Client
from deploy.stack import free_port, http_status, wait_for

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "bench" / "results" / "latest.json"
PREFIX = "linxbench:"
ROUTES_PREFIX = "linxbench-routes:"
SMALL_BODY = b"fastpeer says hello: this body is 128 bytes long, padded with dots".ljust(127, b".") + b"\n"


# A target is (text, measure(f), limit, kind) where f maps each target's name to its figure in
# this run and measure(f) gives the figure compared with ``limit`` (a ratio or a value), None when
# something it needs was not measured. kind: "max" (at most), "below" (strictly under) or "min"
# (at least). The verdict says by how much a missed target is missed (``judge``).
def _ratio_min(r: float, text: str, of: str = "direct"):
    return text, lambda f: None if not f.get(of) or f.get("linx") is None else f["linx"] / f[of], r, "min"


def _ratio_max(r: float, text: str, of: str):
    return text, lambda f: None if not f.get(of) or f.get("linx") is None else f["linx"] / f[of], r, "max"


def _max(limit: float, text: str):
    return text, lambda f: f.get("linx"), limit, "below"


def _min(limit: float, text: str):
    return text, lambda f: f.get("linx"), limit, "min"


def _tls_cpu(r: float, text: str):
    """Linx's HTTPS CPU per request against its own plain-HTTP figure (kept in ``f["linx_http"]``)."""
    return (
        text,
        lambda f: None if not f.get("linx_http") or f.get("linx") is None else f["linx"] / f["linx_http"],
        r,
        "max",
    )


def judge(measured: float | None, limit: float, kind: str) -> tuple[bool | None, float | None]:
    """(met, miss): miss is how far a missed target is from its limit, as a fraction of it
    (0.043: 4.3% over a maximum, or short of a minimum); None when met or not measured."""
    if measured is None:
        return None, None
    if kind == "min":
        ok = measured >= limit
        return ok, None if ok else 1 - measured / limit
    ok = measured <= limit if kind == "max" else measured < limit
    return ok, None if ok else measured / limit - 1


def verdict_text(met: bool | None, miss: float | None, kind: str) -> str:
    if met is None:
        return "—"
    if met:
        return "PASS"
    return f"FAIL, {miss:.1%} {'short' if kind == 'min' else 'over'}"


PEERS = ("nginx", "haproxy", "chp")
LABELS = {
    "direct": "direct",
    "linx": "Linx",
    "base": "Linx@base",
    "nginx": "nginx",
    "haproxy": "HAProxy",
    "chp": "CHP",
}


# key, label, unit, format, (target text, check) or None
ROWS = [
    ("keepalive_rps", "keep-alive small GET (public)", "req/s", "{:,.0f}", _ratio_min(3, "≥ 3× CHP", "chp")),
    ("keepalive_p50_ms", "  latency p50", "ms", "{:.2f}", None),
    ("keepalive_p99_ms", "  latency p99", "ms", "{:.2f}", _max(5.0, "< 5 ms")),
    ("many_rps", "keep-alive, many connections", "req/s", "{:,.0f}", None),
    ("many_p99_ms", "  latency p99", "ms", "{:.2f}", None),
    ("many_cpu_us", "  proxy CPU per request", "µs", "{:.1f}", None),
    ("many_knee", "  CPU per request vs 50 connections", "×", "{:.2f}", _max(1.15, "≤ 1.15×")),
    ("c200_cpu_us", "keep-alive, 200 connections: proxy CPU per request", "µs", "{:.1f}", None),
    ("c200_knee", "  vs 50 connections", "×", "{:.2f}", _max(1.15, "≤ 1.15×")),
    ("proxy_cpu_us_per_req", "proxy CPU per request", "µs", "{:.1f}", _ratio_max(3, "≤ 3× nginx", "nginx")),
    # every token carrier against the peers' public figures (they check no tokens)
    ("token_keepalive_rps", "keep-alive GET, X-Linx-Token", "req/s", "{:,.0f}",
     _ratio_min(3, "≥ 3× CHP (public)", "chp_public")),
    ("token_cpu_us_per_req", "  proxy CPU per request", "µs", "{:.1f}",
     _ratio_max(3, "≤ 3× nginx (public)", "nginx_public")),
    ("query_keepalive_rps", "keep-alive GET, token in query", "req/s", "{:,.0f}",
     _ratio_min(3, "≥ 3× CHP (public)", "chp_public")),
    ("query_cpu_us_per_req", "  proxy CPU per request", "µs", "{:.1f}",
     _ratio_max(3, "≤ 3× nginx (public)", "nginx_public")),
    ("close_rps", "new connection per request", "req/s", "{:,.0f}", None),
    ("close_cpu_us_per_req", "  proxy CPU per request", "µs", "{:.1f}",
     _ratio_max(2.5, "≤ 2.5× nginx", "nginx")),
    ("tls_keepalive_rps", "HTTPS keep-alive small GET", "req/s", "{:,.0f}", None),
    ("tls_keepalive_p99_ms", "  latency p99", "ms", "{:.2f}", None),
    ("tls_cpu_us_per_req", "  proxy CPU per request", "µs", "{:.1f}",
     _tls_cpu(1.5, "≤ 1.5× Linx plain HTTP")),
    ("tls_handshake_rps", "TLS handshakes (new conn per req)", "req/s", "{:,.0f}",
     _ratio_min(0.5, "≥ 0.5× nginx", "nginx")),
    ("tls_handshake_cpu_us", "  proxy CPU per handshake", "µs", "{:.1f}", None),
    ("download_MBps", "download (transfer size)", "MB/s", "{:,.0f}", _ratio_min(0.9, "≥ 0.9× direct")),
    ("download_cpu_s_per_gib", "  proxy CPU per GiB", "s", "{:.2f}", None),
    ("upload_MBps", "upload (transfer size)", "MB/s", "{:,.0f}", _ratio_min(0.9, "≥ 0.9× direct")),
    ("upload_cpu_s_per_gib", "  proxy CPU per GiB", "s", "{:.2f}", None),
    ("ws_echo_msgs", "WebSocket echo, 32 B", "msg/s", "{:,.0f}",
     _ratio_min(1.5, "≥ 1.5× CHP", "chp")),  # issue 12: "WS 32 B at least 1.5x CHP"
    ("ws_1mib_MBps", "WebSocket 1 MiB messages", "MB/s", "{:,.0f}", _ratio_min(0.9, "≥ 0.9× direct")),
    ("idle_rss_mib", "idle RSS", "MiB", "{:.1f}", _max(60.0, "< 60 MiB")),
    ("peak_rss_mib", "peak RSS", "MiB", "{:.1f}", None),
    ("rss_kib_per_idle_conn", "RSS per idle keep-alive conn", "KiB", "{:.2f}", _max(10.0, "< 10 KiB")),
    ("publish_to_reachable_p50_ms", "publish → reachable p50", "ms", "{:.1f}", None),
    ("publish_to_reachable_p99_ms", "publish → reachable p99", "ms", "{:.1f}", _max(50.0, "< 50 ms")),
    ("revoke_to_refused_p50_ms", "revoke → refused p50", "ms", "{:.1f}", None),
    ("revoke_to_refused_p99_ms", "revoke → refused p99", "ms", "{:.1f}", _max(50.0, "< 50 ms")),
    ("routes_load_s", "start with N routes: to /readyz", "s", "{:.2f}", _max(3.0, "< 3 s")),
    ("routes_rss_mib", "start with N routes: RSS", "MiB", "{:.1f}", _max(150.0, "< 150 MiB")),
    ("workers2_scaling", "--workers 2 keep-alive scaling", "×", "{:.2f}", _min(1.6, "≥ 1.6×")),
    ("workers2_ceiling", "  most this machine allows (CPU)", "×", "{:.2f}", None),
]  # fmt: skip
WORKLOAD_KEYS = [r[0] for r in ROWS]


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke check: under a minute, no thresholds")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the results")
    p.add_argument("--rounds", type=int, help="rounds per workload (default 2; quick 1)")
    p.add_argument("--duration", type=float, help="seconds per load run (default 8; quick 1)")
    p.add_argument("--routes", type=int, help="routes for the start-up test (default 100000; quick 5000)")
    p.add_argument("--no-nginx", action="store_true", help="do not use nginx even if installed")
    p.add_argument("--no-peers", action="store_true", help="no HAProxy or configurable-http-proxy rows")
    p.add_argument("--transfer-mib", type=int, help="download/upload size in MiB (default 64; quick 8)")
    p.add_argument("--no-wrk", action="store_true", help="use the Python load generator")
    p.add_argument("--keep-logs", action="store_true", help="keep the run's directory and logs")
    p.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="also measure the proxy of another checkout (e.g. a git worktree of an earlier commit) "
        "as the target 'base', in the same run: before/after figures that can be compared",
    )
    return p.parse_args(argv)


class Plan:
    def __init__(self, a) -> None:
        q = a.quick
        self.quick = q
        self.rounds = a.rounds or (1 if q else 2)
        self.duration = a.duration or (1.0 if q else 8.0)
        self.warm = 0.2 if q else 1.0
        self.transfer = (a.transfer_mib or (8 if q else 64)) << 20
        self.transfers = 1 if q else 3
        self.sync_trials = 10 if q else 50
        self.routes = a.routes or (5_000 if q else 100_000)
        self.idle_conns = 200 if q else 1000
        self.conns = 50
        self.many_conns = 200 if q else 1000


def _cpus():
    avail = sorted(os.sched_getaffinity(0))
    if len(avail) >= 2:
        return str(avail[0]), str(avail[1]), avail
    return None, None, avail


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


class Target:
    def __init__(self, name: str, web: str, peer: str, pids=None) -> None:
        self.name = name
        self.web = web  # base URL of the HTTP backend (small file, big file)
        self.peer = peer  # base URL of the peer (upload sink, WebSocket echo)
        self.pids = pids  # callable -> pids to charge CPU and RSS to (None: direct)


def main(argv=None) -> int:
    args = parse_args(argv)
    plan = Plan(args)
    _raise_nofile()

    def on_term(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    reaper = Reaper(keep_dir=args.keep_logs)
    t0 = time.monotonic()
    try:
        results = run(plan, args, reaper)
    except KeyboardInterrupt:
        print("\nbench: interrupted; stopping everything", file=sys.stderr)
        return 130
    except Exception:
        for child in reaper.processes():
            if not child.alive():
                print(f"--- {child.name} exited:\n{child.output(4000)}", file=sys.stderr)
        raise
    finally:
        reaper.close()
    results["meta"]["wall_seconds"] = round(time.monotonic() - t0, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwall time {results['meta']['wall_seconds']} s; JSON written to {args.json}")
    return 0


def run(plan: Plan, args, reaper: Reaper) -> dict:
    proxy_cpu, load_cpu, avail = _cpus()
    if load_cpu is not None:
        os.sched_setaffinity(0, {int(load_cpu)})  # children (backend, load) inherit the other core
    use_nginx = bool(nginx_path()) and not args.no_nginx
    use_wrk = bool(loadgen.wrk_path()) and not args.no_wrk
    loadgen.USE_WRK = use_wrk
    fast = build_fastpeer(reaper.dir)
    peer_cmd = peer_command(fast)
    background = busy_cores(1.0)
    meta = {
        "background_busy_cores": round(background, 2),
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
        "quick": plan.quick,
        "machine": {"cpus": os.cpu_count(), "affinity": avail, "platform": platform.platform()},
        "python": sys.version.split()[0],
        "proxy_cpu": proxy_cpu,
        "load_cpu": load_cpu,
        "http_load": "wrk -t 1 -c 50" if use_wrk else "python-load (asyncio; wrk not installed)",
        "ws_peer": "fastpeer (C, epoll)" if fast else "bench.peer (Python asyncio; no C compiler)",
        "http_backend": "nginx (static files)" if use_nginx else "peer",
        "nginx_proxy": use_nginx,
        "rounds": plan.rounds,
        "duration_s": plan.duration,
        "transfer_bytes": plan.transfer,
        "routes": plan.routes,
    }
    print(_banner(meta, plan))
    if background > 0.25:
        print(
            f"  WARNING: the machine is not quiet: other processes keep {background:.2f} cores busy; "
            "absolute figures will be low and noisy (CPU per request is less affected)",
            flush=True,
        )

    # ---- backends
    peer = reaper.spawn("peer", [*peer_cmd, "server", "0"], pipe=True)
    peer_port = read_listening(peer)
    www = reaper.dir / "www"
    www.mkdir()
    if use_nginx:
        (www / "small.txt").write_bytes(SMALL_BODY)
        with open(www / "big.bin", "wb") as f:
            block = b"b" * (1 << 20)
            for _ in range(plan.transfer >> 20):
                f.write(block)
        for p in www.iterdir():
            p.chmod(0o644)
        www.chmod(0o755)
        web_port = free_port()
        web = start_nginx(
            reaper, "nginx-backend", NGINX_BACKEND.format(port=web_port, dir=reaper.dir), web_port, None
        )
        small_path, big_path = "/small.txt", "/big.bin"
    else:
        web, web_port = peer, peer_port
        small_path, big_path = "/small", f"/bytes/{plan.transfer}"
    backend_pids = lambda: tree(web.pid) + ([peer.pid] if web is not peer else [])  # noqa: E731

    # ---- Linx
    redis = start_redis(reaper)
    proxy = start_proxy(reaper, redis.url, PREFIX, proxy_cpu)
    control, admin = start_control(reaper, redis.url, PREFIX, proxy.url)
    empty_start_s = proxy.wait_ready(timeout=60, interval=0.01).ready_after
    tenant, ctr = tenant_with_container(admin, "bench")
    linx = Client(control.url, api_key=tenant["api_key"])

    def publish(name, port, **fields):
        return linx.publish(ctr["container_id"], name, port, **fields)

    svc_web = publish("web", web_port, auth_mode="public")
    svc_peer = publish("peer", peer_port, auth_mode="public", enable_websockets=True)
    svc_tok = publish("webtoken", web_port, auth_mode="service_token")
    token = svc_tok["public_url"].split("linx_token=")[1].split("&")[0]
    linx_web = f"{proxy.url}/linx/{svc_web['service_id']}"
    linx_peer = f"{proxy.url}/linx/{svc_peer['service_id']}"
    linx_tok = f"{proxy.url}/linx/{svc_tok['service_id']}"
    for url in (linx_web + small_path, linx_peer + "/small"):
        wait_for(lambda u=url: http_status(u) == 200, 10, f"{url} through Linx", procs=[proxy.proc])
    time.sleep(0.5)
    idle_rss = status_kib(tree(proxy.proc.pid)) / 1024

    targets = [
        Target("direct", f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{peer_port}"),
        Target("linx", linx_web, linx_peer, lambda: tree(proxy.proc.pid)),
    ]
    tok_urls = {"linx": linx_tok}
    # HTTPS: Linx's TLS listener beside nginx terminating TLS with the same certificate, both in
    # front of the same backend as the plain rows (name -> (base URL, pids)). A proxy of its own,
    # pinned as the others, so that the TLS stack's memory stays out of the plain proxy's RSS rows.
    cert, key = make_cert(reaper.dir)
    tls_port = free_port()
    tls_proxy = start_proxy(
        reaper, redis.url, PREFIX, proxy_cpu, name="proxy-tls",
        LINX_PROXY_TLS_LISTEN=f"127.0.0.1:{tls_port}", LINX_TLS_CERT=str(cert), LINX_TLS_KEY=str(key),
    )  # fmt: skip
    tls_proxy.wait_ready(timeout=60)
    tls_base = f"https://127.0.0.1:{tls_port}/linx/{svc_web['service_id']}"
    tls_targets = {"linx": (tls_base, lambda: tree(tls_proxy.proc.pid))}
    if args.baseline is not None:
        base_proxy = start_proxy(
            reaper, redis.url, PREFIX, proxy_cpu, name="proxy-base", source=args.baseline.resolve()
        )
        base_proxy.wait_ready(timeout=60)
        base_url = base_proxy.url + linx_web[len(proxy.url) :]
        wait_for(
            lambda: http_status(base_url + small_path) == 200,
            10,
            "the baseline proxy",
            procs=[base_proxy.proc],
        )
        base_peer = base_proxy.url + linx_peer[len(proxy.url) :]
        targets.append(Target("base", base_url, base_peer, lambda: tree(base_proxy.proc.pid)))
        meta["baseline"] = str(args.baseline)
    nginx_proxy = None
    if use_nginx:
        nport = free_port()
        ntls = free_port()
        body = NGINX_PROXY.format(port=nport, web_port=web_port, peer_port=peer_port)
        body += NGINX_TLS_PROXY.format(port=ntls, cert=cert, key=key)
        nginx_proxy = start_nginx(reaper, "nginx-proxy", body, nport, proxy_cpu)
        npids = lambda: tree(nginx_proxy.pid)  # noqa: E731
        targets.append(Target("nginx", f"http://127.0.0.1:{nport}/w", f"http://127.0.0.1:{nport}/p", npids))
        tls_targets["nginx"] = (f"https://127.0.0.1:{ntls}/w", npids)
    peer_procs = {}
    if use_nginx:
        peer_procs["nginx"] = nginx_proxy
    for name, installed, start in (("haproxy", haproxy_path, start_haproxy), ("chp", chp_path, start_chp)):
        if args.no_peers or not installed():
            continue
        port = free_port()
        child = peer_procs[name] = start(reaper, port, web_port, peer_port, proxy_cpu)
        base = f"http://127.0.0.1:{port}"
        targets.append(Target(name, f"{base}/w", f"{base}/p", lambda c=child: tree(c.pid)))
    meta["peers"] = [t.name for t in targets if t.name in PEERS]
    peer_idle = {name: status_kib(tree(c.pid)) / 1024 for name, c in peer_procs.items()}
    for t in targets:
        if http_status(t.web + small_path) != 200 or http_status(t.peer + "/small") != 200:
            raise RuntimeError(f"target {t.name} does not serve the small file")
    for name, (url, _) in tls_targets.items():
        wait_for(
            lambda u=url: https_status(u + small_path) == 200,
            10,
            f"{name} over HTTPS",
            procs=[tls_proxy.proc],
        )

    raw: dict[str, dict[str, list]] = {}

    def record(key: str, target: str, value) -> None:
        raw.setdefault(key, {}).setdefault(target, []).append(value)

    d, warm = plan.duration, plan.warm
    # warm-up (not recorded): JIT-free Python still fills caches, pools and allocator arenas
    for t in targets:
        loadgen.http_load(t.web + small_path, plan.conns, 1.0, cpus=load_cpu)
    for url, _ in tls_targets.values():
        loadgen.http_load(url + small_path, plan.conns, 1.0, cpus=load_cpu)

    for rnd in range(plan.rounds):
        order = targets if rnd % 2 == 0 else list(reversed(targets))
        print(f"round {rnd + 1}/{plan.rounds}", flush=True)
        for t in order:
            pids = t.pids() if t.pids else []
            c0, s0, w0 = cpu_seconds(pids), sched_ns(pids), time.monotonic_ns()
            res = loadgen.http_load(t.web + small_path, plan.conns, d, cpus=load_cpu)
            c1, s1, w1 = cpu_seconds(pids), sched_ns(pids), time.monotonic_ns()
            record("keepalive", t.name, res)
            record("keepalive_cpu_us", t.name, (c1 - c0) / max(1, res["requests"]) * 1e6 if pids else None)
            note = ""
            if pids:
                busy, waited = (s1[0] - s0[0]) / (w1 - w0), (s1[1] - s0[1]) / (w1 - w0)
                record("keepalive_proxy_busy", t.name, busy)
                record("keepalive_proxy_waited", t.name, waited)
                note = f", proxy on CPU {busy:.0%}, waiting for it {waited:.0%}"
            _progress("keep-alive", t.name, f"{res['rps']:,.0f} req/s p99 {res['p99_ms']:.2f} ms{note}")
            if t.name in tok_urls:
                tok_url = tok_urls[t.name]
                c0 = cpu_seconds(pids)
                tres = loadgen.http_load(
                    tok_url + small_path, plan.conns, d, [f"X-Linx-Token: {token}"], cpus=load_cpu
                )
                c1 = cpu_seconds(pids)
                record("token", t.name, tres)
                record("token_cpu_us", t.name, (c1 - c0) / max(1, tres["requests"]) * 1e6)
                _progress("keep-alive token", t.name, f"{tres['rps']:,.0f} req/s")
                c0 = cpu_seconds(pids)
                qres = loadgen.http_load(
                    f"{tok_url}{small_path}?linx_token={token}", plan.conns, d, cpus=load_cpu
                )
                c1 = cpu_seconds(pids)
                record("query", t.name, qres)
                record("query_cpu_us", t.name, (c1 - c0) / max(1, qres["requests"]) * 1e6)
                _progress("keep-alive query", t.name, f"{qres['rps']:,.0f} req/s")
        for conns, key in ((plan.many_conns, "many"), (200, "c200")):
            for t in order:
                pids = t.pids() if t.pids else []
                c0 = cpu_seconds(pids)
                res = loadgen.http_load(t.web + small_path, conns, d, cpus=load_cpu)
                c1 = cpu_seconds(pids)
                record(key, t.name, res)
                record(f"{key}_cpu", t.name, (c1 - c0) / max(1, res["requests"]) * 1e6 if pids else None)
                _progress(f"{conns} conns", t.name, f"{res['rps']:,.0f} req/s p99 {res['p99_ms']:.2f} ms")
        for t in order:
            pids = t.pids() if t.pids else []
            c0 = cpu_seconds(pids)
            res = loadgen.http_load(t.web + small_path, plan.conns, d, ["Connection: close"], cpus=load_cpu)
            c1 = cpu_seconds(pids)
            record("close", t.name, res)
            record("close_cpu_us", t.name, (c1 - c0) / max(1, res["requests"]) * 1e6 if pids else None)
            _progress("new connection", t.name, f"{res['rps']:,.0f} req/s")
        tls_order = list(tls_targets.items())
        for name, (url, pids_of) in tls_order if rnd % 2 == 0 else reversed(tls_order):
            pids = pids_of()
            c0 = cpu_seconds(pids)
            res = loadgen.http_load(url + small_path, plan.conns, d, cpus=load_cpu)
            c1 = cpu_seconds(pids)
            record("tls_keepalive", name, res)
            record("tls_keepalive_cpu_us", name, (c1 - c0) / max(1, res["requests"]) * 1e6)
            c0 = cpu_seconds(pids)
            hres = loadgen.http_load(url + small_path, plan.conns, d, ["Connection: close"], cpus=load_cpu)
            c1 = cpu_seconds(pids)
            record("tls_close", name, hres)
            record("tls_close_cpu_us", name, (c1 - c0) / max(1, hres["requests"]) * 1e6)
            _progress("https", name, f"keep-alive {res['rps']:,.0f} req/s, handshakes {hres['rps']:,.0f}/s")
        gib = plan.transfers * plan.transfer / (1 << 30)
        for t in order:
            c0 = cpu_seconds(t.pids()) if t.pids else 0.0
            down = [workloads.download(t.web + big_path, plan.transfer) for _ in range(plan.transfers)]
            c1 = cpu_seconds(t.pids()) if t.pids else 0.0
            up = [workloads.upload(t.peer + "/upload", plan.transfer) for _ in range(plan.transfers)]
            c2 = cpu_seconds(t.pids()) if t.pids else 0.0
            record("download", t.name, median(down))
            record("upload", t.name, median(up))
            if t.pids:  # where a body moves in the kernel, this falls even when throughput cannot
                record("download_cpu", t.name, (c1 - c0) / gib)
                record("upload_cpu", t.name, (c2 - c1) / gib)
            _progress("transfer", t.name, f"down {median(down):,.0f} MB/s up {median(up):,.0f} MB/s")
        for t in order:
            ws = workloads.ws_load(peer_cmd, t.peer + "/ws", 50, 1, 32, d, warm, load_cpu)
            record("ws_small", t.name, ws)
            big = workloads.ws_load(peer_cmd, t.peer + "/ws", 4, 2, 1 << 20, d, warm, load_cpu)
            record("ws_big", t.name, big)
            _progress("websocket", t.name, f"{ws['msgs_per_s']:,.0f} msg/s, 1 MiB: {big['MBps']:,.0f} MB/s")

    peak = {"linx": status_kib(tree(proxy.proc.pid), "VmHWM") / 1024}
    for name, c in peer_procs.items():
        peak[name] = status_kib(tree(c.pid), "VmHWM") / 1024

    # ---- idle keep-alive connections
    idle = {}
    for t in targets:
        if t.pids:
            idle[t.name] = workloads.idle_connections(t.web + small_path, plan.idle_conns, t.pids())
            _progress("idle connections", t.name, f"{idle[t.name]['kib_per_conn']:.2f} KiB each")

    # ---- route sync
    sync = workloads.route_sync(linx, ctr["container_id"], peer_port, proxy.url, plan.sync_trials)
    _progress(
        "route sync",
        "linx",
        f"publish p99 {percentile(sync['publish_ms'], 0.99):.1f} ms, "
        f"revoke p99 {percentile(sync['revoke_ms'], 0.99):.1f} ms",
    )

    # ---- a proxy starting with many routes
    write_s, sample_sid = workloads.write_routes(redis.url, ROUTES_PREFIX, plan.routes, peer_port)
    big_proxy = start_proxy(reaper, redis.url, ROUTES_PREFIX, proxy_cpu, name="proxy-routes")
    load_s = big_proxy.wait_ready(timeout=120).ready_after
    rss_ready = status_kib(tree(big_proxy.proc.pid)) / 1024
    ok = http_status(f"{big_proxy.url}/linx/{sample_sid}/small") == 200
    idle_secs = 1.0 if plan.quick else 5.0
    c0 = cpu_seconds(tree(big_proxy.proc.pid))
    time.sleep(idle_secs)
    idle_cpu = (cpu_seconds(tree(big_proxy.proc.pid)) - c0) / idle_secs
    routes = {
        "idle_cpu_cores": idle_cpu,
        "routes": plan.routes,
        "write_s": write_s,
        "load_s": load_s,
        "empty_start_s": empty_start_s,
        "rss_ready_mib": rss_ready,
        "rss_after_1s_mib": status_kib(tree(big_proxy.proc.pid)) / 1024,
        "hwm_mib": status_kib(tree(big_proxy.proc.pid), "VmHWM") / 1024,
        "sample_route_ok": ok,
    }
    reaper.stop(big_proxy)
    _progress(
        f"{plan.routes:,} routes",
        "linx",
        f"ready in {load_s:.2f} s (empty: {empty_start_s:.2f} s), RSS {routes['hwm_mib']:.1f} MiB, "
        f"idle CPU {idle_cpu:.0%} of a core",
    )

    # ---- --workers scaling: every process may use every core here
    if load_cpu is not None:
        os.sched_setaffinity(0, set(avail))
        for pid in backend_pids():
            try:
                os.sched_setaffinity(pid, set(avail))
            except OSError:
                pass
    p1 = start_proxy(reaper, redis.url, PREFIX, None, workers=1, name="proxy-w1")
    p2 = start_proxy(reaper, redis.url, PREFIX, None, workers=2, name="proxy-w2")
    p1.wait_ready(timeout=60)
    p2.wait_ready(timeout=60)
    scale = {"w1": [], "w2": []}
    path = f"/linx/{svc_web['service_id']}{small_path}"
    for url in (p1.url + path, p2.url + path):
        wait_for(lambda u=url: http_status(u) == 200, 10, url)
        loadgen.http_load(url, plan.conns, 1.0)
    scale["w2_cpu_seconds_per_process"] = []
    scale["w1_cpu"], scale["w2_cpu"] = [], []
    for _ in range(plan.rounds):
        for name, p in (("w1", p1), ("w2", p2)):
            used = _cpu_split(p, backend_pids, lambda p=p: loadgen.http_load(p.url + path, plan.conns, d))
            scale[name].append(used.pop("rps"))
            scale[f"{name}_cpu"].append(used)
            if name == "w2":
                scale["w2_cpu_seconds_per_process"].append(used.pop("per_worker"))
    scaling = median(scale["w2"]) / median(scale["w1"])
    # What two cores allow at all: with the load generator and the backend sharing them, two
    # workers can at best turn (proxy + load + backend) CPU per request into req/s over two
    # cores. Reported beside the scaling so a machine-bound figure reads as one.
    w2 = scale["w2_cpu"][-1]
    per_req = w2["busy"] / scale["w2"][-1]  # CPU seconds per request, all parties together
    ceiling = len(avail) / per_req / median(scale["w1"])
    scale["ceiling"] = ceiling
    split = ", ".join(f"{c:.1f}" for c in scale["w2_cpu_seconds_per_process"][-1])
    _progress(
        "--workers 2",
        "linx",
        f"{median(scale['w1']):,.0f} → {median(scale['w2']):,.0f} req/s (CPU s per worker: {split}; "
        f"cores busy {w2['busy']:.2f} of {len(avail)}; ceiling on this machine {ceiling:.2f}×)",
    )
    reaper.stop(p2)
    reaper.stop(p1)

    # ---- summary
    def med(key, target, field=None):
        vals = raw.get(key, {}).get(target)
        if not vals:
            return None
        vals = [v[field] if field else v for v in vals]
        vals = [v for v in vals if v is not None]
        return median(vals) if vals else None

    names = [t.name for t in targets]
    fig: dict[str, dict[str, float | None]] = {k: {} for k in WORKLOAD_KEYS}
    for n in names:
        fig["keepalive_rps"][n] = med("keepalive", n, "rps")
        fig["keepalive_p50_ms"][n] = med("keepalive", n, "p50_ms")
        fig["keepalive_p99_ms"][n] = med("keepalive", n, "p99_ms")
        fig["proxy_cpu_us_per_req"][n] = med("keepalive_cpu_us", n)
        fig["many_rps"][n] = med("many", n, "rps")
        fig["many_p99_ms"][n] = med("many", n, "p99_ms")
        fig["many_cpu_us"][n] = med("many_cpu", n)
        fig["c200_cpu_us"][n] = med("c200_cpu", n)
        base_cpu = med("keepalive_cpu_us", n)
        for k in ("many", "c200"):
            cpu = fig[f"{k}_cpu_us"][n]
            fig[f"{k}_knee"][n] = cpu / base_cpu if cpu and base_cpu else None
        fig["close_rps"][n] = med("close", n, "rps")
        fig["close_cpu_us_per_req"][n] = med("close_cpu_us", n)
        fig["download_MBps"][n] = med("download", n)
        fig["upload_MBps"][n] = med("upload", n)
        fig["download_cpu_s_per_gib"][n] = med("download_cpu", n)
        fig["upload_cpu_s_per_gib"][n] = med("upload_cpu", n)
        fig["ws_echo_msgs"][n] = med("ws_small", n, "msgs_per_s")
        fig["ws_1mib_MBps"][n] = med("ws_big", n, "MBps")
    for n in tls_targets:
        fig["tls_keepalive_rps"][n] = med("tls_keepalive", n, "rps")
        fig["tls_keepalive_p99_ms"][n] = med("tls_keepalive", n, "p99_ms")
        fig["tls_cpu_us_per_req"][n] = med("tls_keepalive_cpu_us", n)
        fig["tls_handshake_rps"][n] = med("tls_close", n, "rps")
        fig["tls_handshake_cpu_us"][n] = med("tls_close_cpu_us", n)
    fig["tls_cpu_us_per_req"]["linx_http"] = fig["proxy_cpu_us_per_req"].get("linx")
    for n in tok_urls:
        fig["token_keepalive_rps"][n] = med("token", n, "rps")
        fig["token_cpu_us_per_req"][n] = med("token_cpu_us", n)
        fig["query_keepalive_rps"][n] = med("query", n, "rps")
        fig["query_cpu_us_per_req"][n] = med("query_cpu_us", n)
    for k in ("token", "query"):  # the reference figures of those rows' targets, not shown as columns
        fig[f"{k}_keepalive_rps"]["chp_public"] = fig["keepalive_rps"].get("chp")
        fig[f"{k}_cpu_us_per_req"]["nginx_public"] = fig["proxy_cpu_us_per_req"].get("nginx")
    fig["idle_rss_mib"]["linx"] = idle_rss
    fig["peak_rss_mib"].update(peak)
    fig["idle_rss_mib"].update(peer_idle)
    for n, v in idle.items():
        fig["rss_kib_per_idle_conn"][n] = v["kib_per_conn"]
    fig["publish_to_reachable_p50_ms"]["linx"] = percentile(sync["publish_ms"], 0.5)
    fig["publish_to_reachable_p99_ms"]["linx"] = percentile(sync["publish_ms"], 0.99)
    fig["revoke_to_refused_p50_ms"]["linx"] = percentile(sync["revoke_ms"], 0.5)
    fig["revoke_to_refused_p99_ms"]["linx"] = percentile(sync["revoke_ms"], 0.99)
    fig["routes_load_s"]["linx"] = load_s
    fig["routes_rss_mib"]["linx"] = routes["hwm_mib"]
    fig["workers2_scaling"]["linx"] = scaling
    fig["workers2_ceiling"]["linx"] = scale["ceiling"]

    errors = {
        f"{key}/{n}": sum(v.get("errors", 0) for v in vals if isinstance(v, dict))
        for key, per in raw.items()
        for n, vals in per.items()
    }
    table = []
    for key, label, unit, fmt, target in ROWS:
        if key.startswith("routes_"):
            label = label.replace("N routes", f"{plan.routes:,} routes")
        if key == "many_rps":
            label = f"keep-alive, {plan.many_conns:,} connections"
        f = fig[key]
        linx = f.get("linx")
        met = miss = measured = None
        if target is not None and not (key.startswith("routes_") and plan.routes < 100_000):
            measured = target[1](f)
            met, miss = judge(measured, target[2], target[3])
        row = {"key": key, "label": label, "unit": unit, "values": {n: f.get(n) for n in names}}
        row["ratios"] = {
            n: linx / f[n] if linx is not None and f.get(n) else None for n in names if n != "linx"
        }
        row.update(target=target[0] if target else None, **{"pass": met}, miss=miss, measured=measured)
        row.update(kind=target[3] if target else None, fmt=fmt)
        table.append(row)
    # A "direct" row is a ceiling only if the harness, not the backend, is the limit there: the
    # direct run must beat the fastest proxy by a margin, else ratios to it mean little.
    direct_ka, nginx_ka = fig["keepalive_rps"].get("direct"), fig["keepalive_rps"].get("nginx")
    meta["direct_is_ceiling"] = None if not (direct_ka and nginx_ka) else direct_ka >= 1.3 * nginx_ka
    print()
    print(render_table(table, meta))
    waited = median(raw.get("keepalive_proxy_waited", {}).get("linx", [0.0]))
    meta["linx_waited_for_cpu"] = waited
    meta["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    if waited > 0.05 or background > 0.25:
        print(
            f"\nWARNING: disturbed run: before it other processes kept {background:.2f} cores busy, and "
            f"during the keep-alive runs Linx waited for its CPU {waited:.0%} of the time. "
            "Rerun on a quiet machine for absolute figures."
        )
    bad = {k: v for k, v in errors.items() if v}
    if bad:
        print(f"\nload errors (non-2xx, connect/write/timeout, broken WebSockets): {bad}")
    return {
        "meta": meta,
        "workloads": {
            row["key"]: {
                "label": row["label"],
                "unit": row["unit"],
                **row["values"],
                "linx_to": row["ratios"],
                "target": row["target"],
                "pass": row["pass"],
                "measured": row["measured"],  # the figure compared with the target (a ratio or a value)
                "miss": row["miss"],  # how far a missed target is from it, as a fraction
            }
            for row in table
        },
        "details": {
            "routes": routes,
            "sync_ms": sync,
            "idle_connections": idle,
            "workers_rps": scale,
            "load_errors": errors,
            "runs": raw,
        },
    }


def _cpu_split(proxy, backend_pids, run) -> dict:
    """``run()``'s req/s and the CPU seconds spent meanwhile by the proxy (each worker), the
    load generator (this process and its children) and the backend."""
    pids = tree(proxy.proc.pid)
    workers = [pid for pid in pids if pid != proxy.proc.pid] or pids
    w0 = [cpu_seconds([pid]) for pid in workers]
    b0 = cpu_seconds(backend_pids())
    t0, wall0 = os.times(), time.perf_counter()
    rps = run()["rps"]
    t1, wall = os.times(), time.perf_counter() - wall0
    per_worker = [cpu_seconds([pid]) - c for pid, c in zip(workers, w0, strict=True)]
    load = (t1.user + t1.system + t1.children_user + t1.children_system) - (
        t0.user + t0.system + t0.children_user + t0.children_system
    )
    backend = cpu_seconds(backend_pids()) - b0
    proxy_cpu = sum(per_worker)
    return {
        "rps": rps,
        "per_worker": per_worker,
        "proxy": proxy_cpu,
        "load": load,
        "backend": backend,
        "busy": (proxy_cpu + load + backend) / wall,
    }


def _progress(what: str, target: str, text: str) -> None:
    print(f"  {what:<18} {target:<7} {text}", flush=True)


def _banner(meta: dict, plan: Plan) -> str:
    lines = [
        f"Linx benchmark ({'quick smoke check, figures indicative only' if plan.quick else 'full'})",
        f"  proxy CPU {meta['proxy_cpu']}, backend and load CPU {meta['load_cpu']}; "
        f"{plan.rounds} round(s) of {plan.duration:g} s per run, targets alternating",
        f"  HTTP load: {meta['http_load']}; backend: {meta['http_backend']}; "
        f"WebSocket echo and client: {meta['ws_peer']}",
    ]
    return "\n".join(lines)


def render_table(rows: list[dict], meta: dict) -> str:
    """Figures of every target side by side, then Linx's ratio to each (same run only)."""
    names = list(rows[0]["values"]) if rows else []
    others = [n for n in names if n != "linx"]
    head = ["workload", "unit", *(LABELS[n] for n in names), *(f"Linx/{LABELS[n]}" for n in others)]
    head += ["target", "verdict"]
    out = [head]
    for r in rows:
        fmt = r["fmt"]
        cell = lambda v, fmt=fmt: "—" if v is None else fmt.format(v)  # noqa: E731
        ratio = lambda v: "—" if v is None else f"{v:.2f}×"  # noqa: E731
        line = [r["label"], r["unit"], *(cell(r["values"][n]) for n in names)]
        line += [ratio(r["ratios"][n]) for n in others]
        verdict = verdict_text(r["pass"], r.get("miss"), r.get("kind") or "max")
        if meta["quick"] and r["pass"] is not None:
            verdict = f"({verdict})"
        line += [r["target"] or "", verdict]
        out.append(line)
    widths = [max(len(row[i]) for row in out) for i in range(len(head))]
    numeric = set(range(2, 2 + len(names) + len(others)))
    text = []
    for n, row in enumerate(out):
        cells = [c.rjust(widths[i]) if i in numeric and n else c.ljust(widths[i]) for i, c in enumerate(row)]
        text.append("| " + " | ".join(cells) + " |")
        if n == 0:
            text.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    notes = [
        "Every figure comes from this one run, targets alternating; only ratios within it count. CPU "
        "per request is the process tree's utime+stime (/proc) over the run divided by its requests; "
        "for CPU and latency rows a ratio below 1 is Linx doing better.",
    ]
    if meta.get("direct_is_ceiling") is False:
        notes.append(
            "WARNING: direct beat nginx by less than 1.3× on keep-alive, so the backend, not the harness, "
            "may be the limit there: ratios to direct understate every proxy."
        )
    if meta["quick"]:
        notes.append("Quick mode: short runs and small transfers; verdicts in brackets are not asserted.")
    return "\n".join(text + [""] + notes)


if __name__ == "__main__":
    sys.exit(main())
