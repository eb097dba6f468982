"""The processes a benchmark run needs, and their reaping.

Every child runs in its own session (so a whole nginx or ``--workers`` tree can be killed) and is
registered with a ``Reaper`` that terminates it, kills it after a timeout, and waits for it, in
reverse start order, whatever way the run ends.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from deploy.redis_process import RedisProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
ADMIN_TOKEN = "bench-admin-token-0123456789abcdef"
PAGE = 4096


class Child:
    def __init__(
        self, name: str, args: list[str], log: Path, env: dict | None = None, pipe: bool = False, cwd=ROOT
    ):
        self.name = name
        self.args = args
        self.log = log
        self._logf = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            args,
            cwd=str(cwd),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipe else self._logf,
            stderr=self._logf,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def read_listening(self, timeout: float = 10.0) -> int:
        """For children that print ``LISTENING <port>`` first."""
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline().decode()
        if not line.startswith("LISTENING") or time.monotonic() > deadline:
            raise RuntimeError(f"{self.name} did not start: {line!r}\n{self.tail()}")
        return int(line.split()[1])

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        if self.alive() or _group_alive(self.proc.pid):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._logf.close()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


class Reaper:
    """Owns every process of the run; ``close()`` stops them all (reverse order)."""

    def __init__(self, keep_dir: bool = False) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="linx-bench-"))
        os.chmod(self.dir, 0o755)  # nginx workers (user nobody) read files here
        self.children: list[Child] = []
        self.redis: RedisProcess | None = None
        self.keep_dir = keep_dir

    def spawn(
        self, name: str, args: list[str], env: dict | None = None, pipe: bool = False, cwd=ROOT
    ) -> Child:
        child = Child(name, args, self.dir / f"{name}-{len(self.children)}.log", env=env, pipe=pipe, cwd=cwd)
        self.children.append(child)
        return child

    def stop(self, child: Child) -> None:
        child.stop()
        if child in self.children:
            self.children.remove(child)

    def close(self) -> None:
        while self.children:
            self.children.pop().stop()
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        if not self.keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def pinned(args: list[str], cpus: str | None) -> list[str]:
    if cpus and shutil.which("taskset"):
        return ["taskset", "-c", cpus, *args]
    return args


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

    The wait is how much a pinned process was kept off its core by others: a disturbed run."""
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


# ---------------------------------------------------------------------------- HTTP helpers
def http_json(method: str, url: str, token: str | None = None, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw) if raw else {}
        except ValueError:
            return exc.code, {"raw": raw.decode(errors="replace")}


def http_status(url: str, timeout: float = 1.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


def wait_until(check, timeout: float, what: str, children: list[Child] = (), interval: float = 0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for c in children:
            if not c.alive():
                raise RuntimeError(f"{c.name} exited with {c.proc.returncode}:\n{c.tail()}")
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


# ---------------------------------------------------------------------------- components
def start_redis(reaper: Reaper) -> RedisProcess:
    (reaper.dir / "redis").mkdir(exist_ok=True)
    reaper.redis = RedisProcess(workdir=str(reaper.dir / "redis"))
    reaper.redis.start()
    return reaper.redis


def base_env(redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINX_")}
    env.update(REDIS_URL=redis_url, LINX_KEY_PREFIX=prefix, PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


class ControlPlane:
    def __init__(self, reaper: Reaper, redis_url: str, prefix: str, app_base: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = base_env(redis_url, prefix, LINX_ADMIN_TOKEN=ADMIN_TOKEN, APP_BASE_URL=app_base)
        args = [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py"]
        args += ["-b", f"127.0.0.1:{self.port}", "--workers", "2", "control:create_app()"]
        self.child = reaper.spawn("control", args, env=env)

    def wait_ready(self, timeout: float = 30.0) -> ControlPlane:
        wait_until(
            lambda: http_status(self.url + "/api/openapi.json") == 200,
            timeout,
            "the control plane",
            [self.child],
            0.05,
        )
        return self

    def call(self, method: str, path: str, token: str = ADMIN_TOKEN, body: dict | None = None, expect=None):
        status, data = http_json(method, self.url + path, token, body)
        if expect is not None and status != expect:
            raise RuntimeError(f"{method} {path}: {status} {data}")
        return data

    def tenant_with_container(self, name: str) -> tuple[dict, dict]:
        """A new tenant and a running, network-ready container of it on 127.0.0.1."""
        tenant = self.call("POST", "/api/admin/tenants", body={"name": name}, expect=201)
        ctr = self.call(
            "POST",
            "/api/admin/containers",
            body={
                "tenant_id": tenant["tenant_id"],
                "address": "127.0.0.1",
                "networking_enabled": True,
                "state": "running",
                "exec_ready": True,
                "network_ready": True,
            },
            expect=201,
        )
        return tenant, ctr


class Proxy:
    """A proxy process; ``source``: run the dataplane of another checkout (a baseline)."""

    def __init__(
        self,
        reaper: Reaper,
        redis_url: str,
        prefix: str,
        cpus: str | None,
        workers: int = 1,
        name="proxy",
        source: Path | None = None,
    ):
        self.port = free_port()
        self.admin_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        env = base_env(
            redis_url,
            prefix,
            LINX_PROXY_LISTEN=f"127.0.0.1:{self.port}",
            LINX_PROXY_ADMIN_LISTEN=f"127.0.0.1:{self.admin_port}",
            LINX_MAX_CONNECTIONS="20000",
        )
        args = [sys.executable, "-m", "dataplane"] + (["--workers", str(workers)] if workers > 1 else [])
        self.started = time.monotonic()
        if source is not None:
            env["PYTHONPATH"] = str(source)
        self.child = reaper.spawn(name, pinned(args, cpus), env=env, cwd=source or ROOT)

    def ready(self) -> bool:
        return http_status(self.admin_url + "/readyz", timeout=0.5) == 200

    def wait_ready(self, timeout: float = 60.0, interval: float = 0.01) -> float:
        """Seconds from spawn to a 200 from /readyz."""
        wait_until(self.ready, timeout, f"{self.child.name} readiness", [self.child], interval)
        return time.monotonic() - self.started

    def pids(self) -> list[int]:
        return tree(self.child.pid)


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


def start_nginx(reaper: Reaper, name: str, body: str, port: int, cpus: str | None) -> Child:
    conf = reaper.dir / f"{name}.conf"
    conf.write_text(NGINX_COMMON.format(dir=reaper.dir, name=name, body=body))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    args = [nginx, "-p", str(reaper.dir), "-c", str(conf), "-e", str(reaper.dir / f"{name}.err")]
    child = reaper.spawn(name, pinned(args, cpus))
    wait_until(lambda: _port_open(port), 10, name, [child])
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


def start_haproxy(reaper: Reaper, port: int, web_port: int, peer_port: int, cpus: str | None) -> Child:
    """HAProxy as a reverse proxy: /w/ to the web backend, /p/ to the peer, one thread, reuse."""
    conf = reaper.dir / "haproxy.cfg"
    conf.write_text(HAPROXY_CONF.format(port=port, web_port=web_port, peer_port=peer_port))
    child = reaper.spawn("haproxy", pinned([haproxy_path() or "haproxy", "-db", "-f", str(conf)], cpus))
    wait_until(lambda: _port_open(port), 10, "haproxy", [child])
    return child


def chp_path() -> str | None:
    return shutil.which("configurable-http-proxy")


def start_chp(reaper: Reaper, port: int, web_port: int, peer_port: int, cpus: str | None) -> Child:
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
    wait_until(lambda: _port_open(api_port), 20, "configurable-http-proxy", [child])
    for prefix, target in (("w", web_port), ("p", peer_port)):
        req = urllib.request.Request(  # noqa: S310 - our own loopback API
            f"http://127.0.0.1:{api_port}/api/routes/{prefix}",
            data=json.dumps({"target": f"http://127.0.0.1:{target}"}).encode(),
            method="POST",
            headers={"Authorization": "token bench"},
        )
        urllib.request.urlopen(req, timeout=5).close()  # noqa: S310
    wait_until(lambda: _port_open(port), 10, "configurable-http-proxy", [child])
    return child
