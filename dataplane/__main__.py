"""``python -m dataplane`` / ``linx-proxy``: the only module that touches the global reactor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from shared.config import ConfigError


def _run_one(environ: dict[str, str], reuse_port: bool) -> None:
    from dataplane.config import ProxyConfig

    config = ProxyConfig.from_env(environ)
    # Twisted's reactor loads pyOpenSSL and cryptography whenever they are installed: about
    # 12 MiB of resident memory per process, never used (TLS is the standard library's ssl).
    sys.modules.setdefault("OpenSSL", None)
    from dataplane.reactor import install

    install()  # before anything imports twisted.internet.reactor
    from twisted.internet import defer, task
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from dataplane import gc_policy
    from dataplane.service import make_service

    gc_policy.tune()

    def main(reactor):
        globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
        svc = make_service(config, reactor, reuse_port=reuse_port, freeze_heap=True)
        svc.startService()
        reactor.addSystemEventTrigger("before", "shutdown", svc.stopService)
        svc.when_listening(
            lambda s: print(
                f"linx-proxy listening on {config.listen[0]}:{s.bound_port()}", file=sys.stderr, flush=True
            )
        )
        return defer.Deferred()  # runs until SIGTERM/SIGINT stops the reactor

    task.react(main)


def _run_workers(argv: list[str], workers: int) -> int:
    """N processes sharing the listeners through SO_REUSEPORT; each syncs on its own."""
    env = dict(os.environ, LINX_WORKER_PROCESS="1")
    children = [subprocess.Popen([sys.executable, "-m", "dataplane", *argv], env=env) for _ in range(workers)]

    def forward(signum, _frame):
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [child.wait() for child in children]
    return max(codes, default=0)


def main(argv: list[str] | None = None) -> None:
    from dataplane.config import flags_to_environ

    args = list(sys.argv[1:] if argv is None else argv)
    workers = 1
    rest: list[str] = []
    while args:
        arg = args.pop(0)
        if arg in ("-h", "--help"):
            from dataplane.config import OPTIONS

            print("usage: linx-proxy [--workers N] [--<variable> VALUE ...]\n")
            for opt in OPTIONS:
                default = f" (default: {opt.default})" if opt.default is not None else ""
                print(f"  --{opt.env.lower().replace('_', '-'):36} {opt.help}{default}")
            return
        if arg == "--workers" or arg.startswith("--workers="):
            value = arg.partition("=")[2] or (args.pop(0) if args else "")
            if not value.isdigit() or int(value) < 1:
                sys.exit("linx-proxy: --workers needs a positive integer")
            workers = int(value)
        else:
            rest.append(arg)
    try:
        environ = flags_to_environ(rest, os.environ)
        from dataplane.config import ProxyConfig

        ProxyConfig.from_env(environ)  # fail here, once, before any worker starts
    except ConfigError as exc:
        sys.exit(f"linx-proxy: configuration error: {exc}")
    if workers > 1:
        sys.exit(_run_workers(rest, workers))
    _run_one(environ, reuse_port=os.environ.get("LINX_WORKER_PROCESS") == "1")


if __name__ == "__main__":
    main()
