"""What a benchmark run starts beside the stack, and the readings it takes of it.

The stack (Redis, the control plane under gunicorn, proxies) is started with ``deploy.stack``;
this adds the run's directory and logs, the backends and peer proxies (nginx, HAProxy,
configurable-http-proxy), CPU pinning, and /proc readings of process trees. Every child runs in
its own session (so a whole nginx or ``--workers`` tree can be killed) and is owned by the
run's ``Reaper``, which stops everything in reverse start order, whatever way the run ends.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from control.client import Client
from deploy import stack
from deploy.redis_process import RedisProcess
from deploy.stack import ControlPlane, Process, Proxy, free_port, http_status, pinned, stack_env, wait_for

ROOT = Path(__file__).resolve().parents[1]
ADMIN_TOKEN = "bench-admin-token-0123456789abcdef"
PAGE = 4096


class Reaper(stack.Reaper):
    """``deploy.stack.Reaper`` with the run's directory (logs, configs, nginx's files), removed
    by ``close()`` unless ``keep_dir``."""

    def __init__(self, keep_dir: bool = False) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="linx-bench-"))
        os.chmod(self.dir, 0o755)  # nginx workers (user nobody) read files here
        self.keep_dir = keep_dir

    def log(self, name: str) -> Path:
        return self.dir / f"{name}-{len(self.owned)}.log"

    def spawn(self, name: str, args: list[str], env: dict | None = None, pipe: bool = False) -> Process:
        return self.add(Process(name, args, env=env, log=self.log(name), pipe=pipe))

    def close(self) -> None:
        super().close()
        if not self.keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def read_listening(child: Process, timeout: float = 10.0) -> int:
    """The port a child started with ``pipe`` announces in its first line, ``LISTENING <port>``."""
    deadline = time.monotonic() + timeout
    line = child.proc.stdout.readline().decode()
    if not line.startswith("LISTENING") or time.monotonic() > deadline:
        raise RuntimeError(f"{child.name} did not start: {line!r}\n{child.output(4000)}")
    return int(line.split()[1])


# ---------------------------------------------------------------------------- /proc readings
def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                out += [int(x) for x in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
            except OSError:
                pass
    except OSError:
        pass
    return out


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (nginx master + worker, ``--workers`` parent + children)."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += _children(p)
    return pids


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


def sched_ns(pids: list[int]) -> tuple[int, int]:
    """(on-CPU ns, ns spent runnable but waiting for a CPU) summed over every thread of ``pids``.

    The wait is how much a pinned process was kept off its core by others: a disturbed reaper."""
    run = wait = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                fields = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
            except OSError:
                continue
            run += int(fields[0])
            wait += int(fields[1])
    return run, wait


def busy_cores(secs: float = 1.0) -> float:
    """How many cores the whole machine kept busy over ``secs`` (from /proc/stat)."""

    def sample():
        f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = f[3] + (f[4] if len(f) > 4 else 0)
        return sum(f[:8]), idle

    t0, i0 = sample()
    time.sleep(secs)
    t1, i1 = sample()
    total = t1 - t0
    return (total - (i1 - i0)) / total * (os.cpu_count() or 1) if total else 0.0


def status_kib(pids: list[int], field: str = "VmRSS") -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


# ---------------------------------------------------------------------------- the stack
def start_redis(reaper: Reaper) -> RedisProcess:
    (reaper.dir / "redis").mkdir(exist_ok=True)
    return reaper.add(RedisProcess(workdir=str(reaper.dir / "redis"))).start()


def start_control(reaper: Reaper, redis_url: str, prefix: str, app_base: str) -> tuple[ControlPlane, Client]:
    """The control plane (two workers), and a ``Client`` of it with the admin token."""
    env = stack_env(redis_url, prefix, LINX_ADMIN_TOKEN=ADMIN_TOKEN, APP_BASE_URL=app_base)
    control = reaper.add(ControlPlane(env, workers=2, log=reaper.log("control"))).wait_ready()
    return control, Client(control.url, admin_token=ADMIN_TOKEN)


def start_proxy(
    reaper: Reaper,
    redis_url: str,
    prefix: str,
    cpus: str | None,
    workers: int = 1,
    name: str = "proxy",
    source: Path | None = None,
    **extra_env: str,
) -> Proxy:
    """A proxy (not waited for: ``wait_ready()`` measures its start), pinned to ``cpus``;
    ``source``: run the dataplane of another checkout (a baseline); ``extra_env``: more settings
    (``LINX_PROXY_TLS_LISTEN`` ...)."""
    env = stack_env(redis_url, prefix, LINX_MAX_CONNECTIONS="20000", **extra_env)
    if source is not None:
        env["PYTHONPATH"] = str(source)
    args = ["--workers", str(workers)] if workers > 1 else []
    proxy = Proxy(env, *args, cpus=cpus, log=reaper.log(name), name=name, cwd=source or ROOT)
    return reaper.add(proxy)


def tenant_with_container(admin: Client, name: str) -> tuple[dict, dict]:
    """A new tenant and a running, network-ready container of it on 127.0.0.1."""
    tenant = admin.create_tenant(name)
    return tenant, admin.register_container(tenant["tenant_id"], "127.0.0.1")


def build_fastpeer(workdir: Path) -> list[str] | None:
    """Compile fastpeer.c; None when there is no C compiler (callers fall back to bench.peer)."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        return None
    out = workdir / "fastpeer"
    try:
        res = subprocess.run(
            [cc, "-O2", "-o", str(out), str(ROOT / "bench" / "fastpeer.c")], capture_output=True, text=True
        )
    except OSError as exc:
        res = subprocess.CompletedProcess([cc], 127, "", str(exc))
    if res.returncode != 0:
        print(f"bench: {cc} failed, using the Python peer: {res.stderr.strip()}", file=sys.stderr)
        return None
    return [str(out)]


def peer_command(fast: list[str] | None) -> list[str]:
    return fast or [sys.executable, "-m", "bench.peer"]


NGINX_COMMON = """
worker_processes 1;
daemon off;
master_process on;
pid {dir}/{name}.pid;
error_log {dir}/{name}.err warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; multi_accept on; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_requests 100000000;
  keepalive_timeout 120s;
  client_body_temp_path {dir}/{name}-body;
  proxy_temp_path {dir}/{name}-proxy;
  fastcgi_temp_path {dir}/{name}-fcgi;
  uwsgi_temp_path {dir}/{name}-uwsgi;
  scgi_temp_path {dir}/{name}-scgi;
  types {{ text/plain txt; application/octet-stream bin; }}
  default_type application/octet-stream;
  {body}
}}
"""

NGINX_BACKEND = """
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    root {dir}/www;
    location / {{ }}
  }}
"""

_PROXY_HEADERS = """
      proxy_http_version 1.1;
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
      proxy_max_temp_file_size 0;
      proxy_read_timeout 300s;
      client_max_body_size 0;
"""

NGINX_PROXY = (
    """
  upstream web {{ server 127.0.0.1:{web_port}; keepalive 64; }}
  upstream peer {{ server 127.0.0.1:{peer_port}; keepalive 64; }}
  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location /w/ {{
      proxy_pass http://web/;"""
    + _PROXY_HEADERS
    + """      proxy_set_header X-Forwarded-Prefix /w;
      proxy_set_header Connection "";
    }}
    location /p/ {{
      proxy_pass http://peer/;"""
    + _PROXY_HEADERS
    + """      proxy_set_header X-Forwarded-Prefix /p;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_request_buffering off;
    }}
  }}
"""
)


NGINX_TLS_PROXY = (
    """
  server {{
    listen 127.0.0.1:{port} ssl backlog=4096;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    location /w/ {{
      proxy_pass http://web/;"""
    + _PROXY_HEADERS
    + """      proxy_set_header X-Forwarded-Prefix /w;
      proxy_set_header Connection "";
    }}
  }}
"""
)


def make_cert(workdir: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost from a throwaway CA (``trustme``, else the
    ``openssl`` command): (PEM chain path, PEM key path), shared by Linx and nginx."""
    cert, key = workdir / "tls-chain.pem", workdir / "tls-key.pem"
    try:
        import trustme
    except ImportError:
        trustme = None
    if trustme is not None:
        leaf = trustme.CA().issue_cert("127.0.0.1", "localhost")
        leaf.private_key_pem.write_to_path(str(key))
        cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    else:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext",
             "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True,
        )  # fmt: skip
    cert.chmod(0o644)
    key.chmod(0o644)  # nginx reads it as its master's user; a throwaway key
    return cert, key


def https_status(url: str, timeout: float = 1.0) -> int:
    """``http_status`` over HTTPS, the certificate not verified (the bench's own)."""
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return http_status(url, timeout, context=ctx)


def start_nginx(reaper: Reaper, name: str, body: str, port: int, cpus: str | None) -> Process:
    conf = reaper.dir / f"{name}.conf"
    conf.write_text(NGINX_COMMON.format(dir=reaper.dir, name=name, body=body))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    args = [nginx, "-p", str(reaper.dir), "-c", str(conf), "-e", str(reaper.dir / f"{name}.err")]
    child = reaper.spawn(name, pinned(args, cpus))
    wait_for(lambda: _port_open(port), 10, name, procs=[child])
    return child


def _port_open(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def nginx_path() -> str | None:
    return shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


HAPROXY_CONF = """
global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout tunnel 3600s
  option http-keep-alive
  http-reuse always
frontend f
  bind 127.0.0.1:{port}
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  use_backend web if {{ path_beg /w/ }}
  use_backend peer if {{ path_beg /p/ }}
backend web
  http-request set-header X-Forwarded-Prefix /w
  http-request replace-path ^/w(/.*) \\1
  server s 127.0.0.1:{web_port}
backend peer
  http-request set-header X-Forwarded-Prefix /p
  http-request replace-path ^/p(/.*) \\1
  server s 127.0.0.1:{peer_port}
"""


def haproxy_path() -> str | None:
    return shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None
    )


def start_haproxy(reaper: Reaper, port: int, web_port: int, peer_port: int, cpus: str | None) -> Process:
    """HAProxy as a reverse proxy: /w/ to the web backend, /p/ to the peer, one thread, reuse."""
    conf = reaper.dir / "haproxy.cfg"
    conf.write_text(HAPROXY_CONF.format(port=port, web_port=web_port, peer_port=peer_port))
    child = reaper.spawn("haproxy", pinned([haproxy_path() or "haproxy", "-db", "-f", str(conf)], cpus))
    wait_for(lambda: _port_open(port), 10, "haproxy", procs=[child])
    return child


def chp_path() -> str | None:
    return shutil.which("configurable-http-proxy")


def start_chp(reaper: Reaper, port: int, web_port: int, peer_port: int, cpus: str | None) -> Process:
    """configurable-http-proxy (JupyterHub's): routes /w and /p, prefix removed as Linx does."""
    api_port = free_port()
    args = [
        chp_path() or "configurable-http-proxy",
        "--ip", "127.0.0.1", "--port", str(port),
        "--api-ip", "127.0.0.1", "--api-port", str(api_port),
        "--no-include-prefix", "--log-level", "error",
    ]  # fmt: skip
    env = dict(os.environ, CONFIGPROXY_AUTH_TOKEN="bench")
    child = reaper.spawn("chp", pinned(args, cpus), env=env)
    wait_for(lambda: _port_open(api_port), 20, "configurable-http-proxy", procs=[child])
    for prefix, target in (("w", web_port), ("p", peer_port)):
        req = urllib.request.Request(  # noqa: S310 - our own loopback API
            f"http://127.0.0.1:{api_port}/api/routes/{prefix}",
            data=json.dumps({"target": f"http://127.0.0.1:{target}"}).encode(),
            method="POST",
            headers={"Authorization": "token bench"},
        )
        urllib.request.urlopen(req, timeout=5).close()  # noqa: S310
    wait_for(lambda: _port_open(port), 10, "configurable-http-proxy", procs=[child])
    return child
