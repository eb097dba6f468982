"""``linx-local``: the whole stack on one machine, for trying Linx out.

Starts Redis (an embedded real server when ``REDIS_URL`` is unset), the control plane under
gunicorn, the proxy daemon and a small demo container; registers the demo, publishes it and
prints its ``public_url``. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

from control.client import Client
from deploy.redis_process import RedisProcess
from deploy.stack import (
    ControlPlane,
    Process,
    ProcessExited,
    Proxy,
    Reaper,
    free_port,
    http_status,
    stack_env,
    wait_for,
)

ROOT = Path(__file__).resolve().parent.parent


def _ready(what: str, url: str, wait: Callable[[], object]) -> None:
    """Run ``wait``; a component that exits or is not ready in time ends linx-local, named."""
    try:
        wait()
    except ProcessExited as exc:
        raise SystemExit(f"linx-local: {what} exited with {exc.process.returncode}")
    except TimeoutError:
        raise SystemExit(f"linx-local: {what} did not become ready at {url}")


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
        help="where the embedded Redis keeps its append-only file, and Redis and the demo their logs",
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
    reaper = Reaper()
    try:
        _run(args, reaper)
    except KeyboardInterrupt:
        pass
    finally:
        reaper.close()


def _run(args: argparse.Namespace, reaper: Reaper) -> None:
    """Start everything (owned by ``reaper``), print how to use it, and return only by an
    exception: ``KeyboardInterrupt`` on a signal, ``SystemExit`` when a component exits."""
    env = stack_env(keep_settings=True)
    if not env.get("REDIS_URL"):
        Path(args.data_dir).mkdir(parents=True, exist_ok=True)
        redis = reaper.add(RedisProcess(workdir=args.data_dir, extra_args=("--appendonly", "yes")))
        redis.start()
        env["REDIS_URL"] = redis.url
        print(f"redis        {redis.url}  (embedded {Path(redis.binary).name}, data in {args.data_dir})")
    admin_token = env.setdefault("LINX_ADMIN_TOKEN", secrets.token_urlsafe(24))
    proxy_base = f"http://{args.host}:{args.proxy_port}"
    env.setdefault("APP_BASE_URL", proxy_base)

    control = reaper.add(ControlPlane(env, host=args.host, port=args.control_port))
    proxy = reaper.add(Proxy(env, host=args.host, port=args.proxy_port, admin_port=args.admin_port))
    _ready("the control plane", control.url, control.wait_ready)
    _ready("the proxy", proxy.admin_url + "/readyz", proxy.wait_ready)
    print(f"control API  {control.url}   (admin token: {admin_token})")
    print(f"console      {control.url}/console/   (sign in with the admin token or a tenant key)")
    print(f"proxy        {proxy_base}   (health: {proxy.admin_url}/readyz)")
    procs = [control.proc, proxy.proc]
    if not args.no_demo:
        demo_port = free_port()
        Path(args.data_dir).mkdir(parents=True, exist_ok=True)
        demo = reaper.add(
            Process(
                "demo",
                [sys.executable, "-m", "deploy.demo_app", "--port", str(demo_port)],
                env=env,
                log=Path(args.data_dir) / "demo.log",
            )
        )
        procs.append(demo)
        demo_url = f"http://127.0.0.1:{demo_port}/"
        _ready(
            "the demo container",
            demo_url,
            lambda: wait_for(lambda: http_status(demo_url) == 200, 30, procs=[demo]),
        )
        with Client(control.url, admin_token=admin_token) as admin:
            tenant = admin.create_tenant("demo")
            ctr = admin.register_container(tenant["tenant_id"], "127.0.0.1", name="demo")
        with Client(control.url, api_key=tenant["api_key"]) as linx:
            svc = linx.publish(ctr["container_id"], "demo", demo_port, enable_websockets=True)
        print()
        print("A demo container is published. Open it in a browser or with curl:")
        print(f"  {svc['public_url']}")
        print()
        linx = _linx_command()
        print("Publish your own port (a service listening on 127.0.0.1:PORT) with the linx CLI")
        if linx != "linx":
            print(f"(at {linx}, or activate the virtualenv: . {Path(linx).parent}/activate):")
        print(f"  export LINX_API_URL={control.url} LINX_API_KEY={tenant['api_key']}")
        print(f"  export LINX_ADMIN_TOKEN={admin_token}  # for linx admin ...")
        print(f"  {linx} publish {ctr['container_id']} --port PORT --name mine  # its id and public_url")
        print(f"  {linx} wait-ready SERVICE_ID  # blocks until a proxy reaches the port")
        print(f"  {linx} list {ctr['container_id']}  # {linx} --help lists every command")
    print("\nCtrl-C stops everything.", flush=True)
    while all(p.alive() for p in procs):
        time.sleep(0.5)
    raise SystemExit("linx-local: a component exited; stopping")


if __name__ == "__main__":
    main()
