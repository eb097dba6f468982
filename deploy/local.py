"""``linx-local``: the whole stack on one machine, for trying Linx out.

Starts Redis (an embedded real server when ``REDIS_URL`` is unset), the control plane under
gunicorn, the proxy daemon and a small demo container; registers the demo, publishes it and
prints its ``public_url``. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from deploy.redis_process import RedisProcess, free_port

ROOT = Path(__file__).resolve().parent.parent


def _wait(url: str, what: str, procs: list[subprocess.Popen], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise SystemExit(f"linx-local: {what} exited with {p.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - our own loopback URL
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"linx-local: {what} did not become ready at {url}")


def _api(base: str, method: str, path: str, token: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(  # noqa: S310 - our own loopback URL
        base + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
        return json.loads(resp.read() or b"{}")


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _linx_command() -> str:
    """How to reach the ``linx`` command from this environment."""
    here = Path(sys.executable).parent / "linx"
    on_path = shutil.which("linx")
    if on_path and Path(on_path).resolve() == here.resolve():
        return "linx"
    return str(here) if here.exists() else "linx"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="linx-local",
        description="Run the whole Linx stack on this machine: Redis (embedded when REDIS_URL is "
        "unset), the control plane under gunicorn, the proxy, and a demo container it publishes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address every listener binds to")
    parser.add_argument("--control-port", type=int, default=8000, help="control plane API and console port")
    parser.add_argument("--proxy-port", type=int, default=8080, help="proxy port (public URLs)")
    parser.add_argument("--admin-port", type=int, default=9090, help="proxy /healthz, /readyz, /metrics port")
    parser.add_argument(
        "--data-dir",
        default=str(ROOT / ".linx-local"),
        help="where the embedded Redis keeps its append-only file",
    )
    parser.add_argument("--no-demo", action="store_true", help="do not start the demo container")
    args = parser.parse_args(argv)
    for flag, port in (
        ("--control-port", args.control_port),
        ("--proxy-port", args.proxy_port),
        ("--admin-port", args.admin_port),
    ):
        if not _port_free(args.host, port):
            raise SystemExit(
                f"linx-local: port {port} on {args.host} is already in use; "
                f"choose another with {flag} (or stop what listens there)"
            )

    # The first Ctrl-C or SIGTERM stops everything; a second one (a supervisor and a terminal
    # both signalling) must not cut that clean-up short and leave Redis running.
    interrupted = False

    def on_signal(*_):
        nonlocal interrupted
        if not interrupted:
            interrupted = True
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    procs: list[subprocess.Popen] = []
    redis_proc = None
    env = dict(os.environ)
    if not env.get("REDIS_URL"):
        Path(args.data_dir).mkdir(parents=True, exist_ok=True)
        redis_proc = RedisProcess(workdir=args.data_dir, extra_args=("--appendonly", "yes")).start()
        env["REDIS_URL"] = redis_proc.url
        print(
            f"redis        {redis_proc.url}  (embedded {Path(redis_proc.binary).name}, "
            f"data in {args.data_dir})"
        )
    admin_token = env.setdefault("LINX_ADMIN_TOKEN", secrets.token_urlsafe(24))
    proxy_base = f"http://{args.host}:{args.proxy_port}"
    env.setdefault("APP_BASE_URL", proxy_base)
    control = f"http://{args.host}:{args.control_port}"

    def stop(*_):
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        if redis_proc is not None:
            redis_proc.stop()

    try:
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "-c",
                    str(ROOT / "deploy" / "gunicorn.conf.py"),
                    "-b",
                    f"{args.host}:{args.control_port}",
                    "control:create_app()",
                ],
                env=env,
                cwd=str(ROOT),
            )
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "dataplane"],
                env=dict(
                    env,
                    LINX_PROXY_LISTEN=f"{args.host}:{args.proxy_port}",
                    LINX_PROXY_ADMIN_LISTEN=f"{args.host}:{args.admin_port}",
                ),
                cwd=str(ROOT),
            )
        )
        _wait(control + "/api/openapi.json", "the control plane", procs)
        _wait(f"http://{args.host}:{args.admin_port}/readyz", "the proxy", procs)
        print(f"control API  {control}   (admin token: {admin_token})")
        print(f"console      {control}/console/   (sign in with the admin token or a tenant key)")
        print(f"proxy        {proxy_base}   (health: http://{args.host}:{args.admin_port}/readyz)")
        if not args.no_demo:
            demo_port = free_port()
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "deploy.demo_app", "--port", str(demo_port)],
                    env=env,
                    cwd=str(ROOT),
                    stdout=subprocess.DEVNULL,
                )
            )
            _wait(f"http://127.0.0.1:{demo_port}/", "the demo container", procs)
            tenant = _api(control, "POST", "/api/admin/tenants", admin_token, {"name": "demo"})
            ctr = _api(
                control,
                "POST",
                "/api/admin/containers",
                admin_token,
                {
                    "tenant_id": tenant["tenant_id"],
                    "name": "demo",
                    "address": "127.0.0.1",
                    "networking_enabled": True,
                    "state": "running",
                    "exec_ready": True,
                    "network_ready": True,
                },
            )
            svc = _api(
                control,
                "POST",
                f"/api/containers/{ctr['container_id']}/services",
                tenant["api_key"],
                {"name": "demo", "target_port": demo_port, "enable_websockets": True},
            )
            print()
            print("A demo container is published. Open it in a browser or with curl:")
            print(f"  {svc['public_url']}")
            print()
            linx = _linx_command()
            print("Publish your own port (a service listening on 127.0.0.1:PORT) with the linx CLI")
            if linx != "linx":
                print(f"(at {linx}, or activate the virtualenv: . {Path(linx).parent}/activate):")
            print(f"  export LINX_API_URL={control} LINX_API_KEY={tenant['api_key']}")
            print(f"  export LINX_ADMIN_TOKEN={admin_token}  # for linx admin ...")
            print(f"  {linx} publish {ctr['container_id']} --port PORT --name mine  # its id and public_url")
            print(f"  {linx} wait-ready SERVICE_ID  # blocks until a proxy reaches the port")
            print(f"  {linx} list {ctr['container_id']}  # {linx} --help lists every command")
        print("\nCtrl-C stops everything.", flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        raise SystemExit("linx-local: a component exited; stopping")
    except KeyboardInterrupt:
        pass
    finally:
        stop()


if __name__ == "__main__":
    main()
