"""The stack's processes, started one way for ``linx-local``, the end-to-end tests and the bench.

- ``Process``: a child in its own session, its output in a log file (or on the terminal);
  ``stop()`` terminates it, kills what is left of its session after a timeout, and waits.
- ``Reaper``: owns what a run started and stops it all, the last started first.
- ``stack_env``: the environment of a Linx process.
- ``wait_for``: poll with a deadline, failing at once when a watched process has exited.
- ``ControlPlane`` (gunicorn with ``deploy/gunicorn.conf.py``) and ``Proxy``
  (``python -m dataplane``); Redis is ``deploy.redis_process.RedisProcess``.

API calls go through ``control.client.Client``.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Protocol, TypeVar

ROOT = Path(__file__).resolve().parent.parent
GUNICORN_CONF = Path(__file__).with_name("gunicorn.conf.py")
# What a Linx process reads from its environment besides the LINX_ settings.
_SETTINGS = ("REDIS_URL", "APP_BASE_URL", "BACKEND_DOMAIN")


class ProcessExited(RuntimeError):
    """A process being waited for has exited: waiting longer cannot help."""

    def __init__(self, process: Process) -> None:
        self.process = process
        message = f"{process.name} exited with {process.returncode}"
        output = process.output(6000)
        super().__init__(f"{message}:\n{output}" if output else message)


def free_port(host: str = "127.0.0.1") -> int:
    """A port free to listen on, chosen below Linux's ephemeral range (32768-60999).

    A port the kernel hands out for port 0 can be given to an outgoing connection's local end
    before our server binds it (seen under parallel test load); ports below the ephemeral range
    are never used that way.
    """
    for _ in range(200):
        port = random.randrange(20000, 32700)
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def pinned(args: list[str], cpus: str | None) -> list[str]:
    """``args`` run by ``taskset -c cpus`` (when ``cpus`` is given and taskset is installed)."""
    if cpus and shutil.which("taskset"):
        return ["taskset", "-c", cpus, *args]
    return args


def stack_env(
    redis_url: str | None = None,
    prefix: str | None = None,
    *,
    base: Mapping[str, str] | None = None,
    keep_settings: bool = False,
    **extra: str,
) -> dict[str, str]:
    """The environment of a Linx process: ``base`` (default ``os.environ``), without the Linx
    settings it holds unless ``keep_settings`` (a test or bench run must not pick up the
    caller's; ``linx-local`` keeps them), with ``REDIS_URL`` and ``LINX_KEY_PREFIX`` when given,
    ``PYTHONUNBUFFERED=1`` (the log holds what was written before a crash), and ``extra``."""
    env = dict(os.environ if base is None else base)
    if not keep_settings:
        env = {k: v for k, v in env.items() if not k.startswith("LINX_") and k not in _SETTINGS}
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    if prefix is not None:
        env["LINX_KEY_PREFIX"] = prefix
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Process:
    """A child process in a session of its own, so that ``stop()`` reaches its whole tree
    (gunicorn's workers, ``--workers`` children, nginx's).

    Output goes to ``log`` (appended to), or to this process's terminal when ``log`` is None.
    With ``pipe`` its stdout is a pipe (``.proc.stdout``) for a child that announces its port.
    ``.proc`` is the ``subprocess.Popen``.
    """

    def __init__(
        self,
        name: str,
        args: list[str],
        *,
        env: Mapping[str, str] | None = None,
        log: Path | None = None,
        pipe: bool = False,
        cwd: Path = ROOT,
    ) -> None:
        self.name = name
        self.args = list(args)
        self.log = Path(log) if log is not None else None
        out = self.log.open("ab") if self.log is not None else None
        try:
            self.proc = subprocess.Popen(
                self.args,
                cwd=str(cwd),
                env=None if env is None else dict(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipe else out,
                stderr=out,
                start_new_session=True,
            )
        finally:
            if out is not None:
                out.close()  # the child holds its own descriptor; output() reads the file by name

    def __repr__(self) -> str:
        return f"Process({self.name!r}, pid={self.proc.pid})"

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self, limit: int | None = None) -> str:
        """What it wrote to its log (the last ``limit`` characters); empty without a log."""
        if self.log is None:
            return ""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return text if limit is None else text[-limit:]

    def signal(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL its whole session now, and wait."""
        self._kill_group()
        self.proc.kill()
        self._reap()

    def stop(self, timeout: float = 10.0) -> int | None:
        """Terminate it, SIGKILL its session after ``timeout`` seconds (and whatever of its
        session outlived it), wait; return its exit status. Safe to call twice."""
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self._kill_group()
        self._reap()
        return self.proc.returncode

    def _kill_group(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # nothing is left of the session

    def _reap(self) -> None:
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Stoppable(Protocol):
    def stop(self) -> object: ...


S = TypeVar("S", bound=Stoppable)


class Reaper:
    """Owns what a run started (processes, a ``RedisProcess``, anything with ``stop()``);
    ``close()`` stops it all, the last started first, however the run ends."""

    def __init__(self) -> None:
        self.owned: list[Stoppable] = []

    def add(self, thing: S) -> S:
        self.owned.append(thing)
        return thing

    def processes(self) -> list[Process]:
        return [p for p in self.owned if isinstance(p, Process)]

    def stop(self, thing: Stoppable) -> None:
        """Stop one thing now (it is no longer owned)."""
        if thing in self.owned:
            self.owned.remove(thing)
        thing.stop()

    def close(self) -> None:
        while self.owned:
            self.owned.pop().stop()

    def __enter__(self) -> Reaper:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def wait_for(
    check: Callable[[], object],
    timeout: float = 10.0,
    what: str = "",
    *,
    procs: Iterable[Process] = (),
    interval: float = 0.02,
):
    """Poll ``check`` until it returns something truthy, and return that.

    An exception from ``check`` counts as not yet (the thing may not be up). Raises
    ``ProcessExited`` at once when one of ``procs`` has exited (a ``ProcessExited`` raised by
    ``check`` passes through too), and ``TimeoutError`` after ``timeout`` seconds, with the
    last exception and the output of ``procs``.
    """
    procs = list(procs)
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        for proc in procs:
            if not proc.alive():
                raise ProcessExited(proc)
        try:
            value = check()
            if value:
                return value
        except ProcessExited:
            raise
        except Exception as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    message = f"timed out after {timeout}s waiting for {what or check}"
    if last_exc is not None:
        message += f": {last_exc!r}"
    for proc in procs:
        if output := proc.output(6000):
            message += f"\n--- {proc.name} output ---\n{output}"
    raise TimeoutError(message)


def http_status(url: str, timeout: float = 1.0, context=None) -> int:
    """The status a GET of ``url`` answers; 0 when nothing answers (``context``: an
    ``ssl.SSLContext`` for https URLs)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:  # noqa: S310 - our own loopback URLs
            resp.read()
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


class ControlPlane:
    """The control plane under gunicorn (``deploy/gunicorn.conf.py``) on ``host:port`` (a free
    port by default); ``workers`` overrides the config file's count."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        workers: int | None = None,
        log: Path | None = None,
        name: str = "control",
    ) -> None:
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        args = [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "-b", f"{host}:{self.port}"]
        if workers:
            args += ["--workers", str(workers)]
        self.proc = Process(name, [*args, "control:create_app()"], env=env, log=log)

    def wait_ready(self, timeout: float = 30.0) -> ControlPlane:
        """Wait until the API answers; ``ProcessExited`` or ``TimeoutError`` otherwise."""
        wait_for(
            lambda: http_status(self.url + "/api/openapi.json") == 200,
            timeout,
            "the control plane",
            procs=[self.proc],
            interval=0.05,
        )
        return self

    def stop(self) -> int | None:
        return self.proc.stop()


class Proxy:
    """The proxy daemon (``python -m dataplane *args``) on ``host:port``, its admin endpoint
    (``/readyz``, ``/metrics``) on ``host:admin_port`` (free ports by default), pinned to
    ``cpus`` when given, run in ``cwd`` (another checkout's, for a baseline)."""

    def __init__(
        self,
        env: Mapping[str, str],
        *args: str,
        host: str = "127.0.0.1",
        port: int | None = None,
        admin_port: int | None = None,
        cpus: str | None = None,
        log: Path | None = None,
        name: str = "proxy",
        cwd: Path = ROOT,
    ) -> None:
        self.port = port or free_port(host)
        self.admin_port = admin_port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.admin_url = f"http://{host}:{self.admin_port}"
        env = dict(
            env,
            LINX_PROXY_LISTEN=f"{host}:{self.port}",
            LINX_PROXY_ADMIN_LISTEN=f"{host}:{self.admin_port}",
        )
        self.started = time.monotonic()
        self.ready_after: float | None = None
        args = pinned([sys.executable, "-m", "dataplane", *args], cpus)
        self.proc = Process(name, args, env=env, log=log, cwd=cwd)

    def ready(self) -> bool:
        return http_status(self.admin_url + "/readyz", timeout=0.5) == 200

    def wait_ready(self, timeout: float = 30.0, interval: float = 0.02) -> Proxy:
        """Wait until ``/readyz`` answers 200; ``ready_after`` is then the seconds it took from
        the start. ``ProcessExited`` or ``TimeoutError`` otherwise."""
        wait_for(self.ready, timeout, f"{self.proc.name} readiness", procs=[self.proc], interval=interval)
        self.ready_after = time.monotonic() - self.started
        return self

    def stop(self) -> int | None:
        return self.proc.stop()
