# ruff: noqa: N999 - gunicorn looks for this conventional file name
"""gunicorn settings for the Linx control plane: ``gunicorn -c deploy/gunicorn.conf.py``.

Process-level knobs only (they are gunicorn's, not the app's, so they are read here):

| variable | default | meaning |
| --- | --- | --- |
| ``LINX_CONTROL_LISTEN`` | ``127.0.0.1:8000`` | address(es) to bind, comma-separated |
| ``LINX_CONTROL_WORKERS`` (or ``WEB_CONCURRENCY``) | ``2`` | worker processes |
| ``LINX_CONTROL_TIMEOUT_SECS`` | ``30`` | a worker silent this long is restarted |

The app itself is configured by the variables ``control.config`` documents. If they are
invalid, ``create_app`` raises in the worker, the worker exits with gunicorn's boot-error
status, and the arbiter stops ("Worker failed to boot") instead of respawning it for ever.
"""

import os

wsgi_app = "control:create_app()"

bind = [
    part.strip()
    for part in os.environ.get("LINX_CONTROL_LISTEN", "127.0.0.1:8000").split(",")
    if part.strip()
]
workers = int(os.environ.get("LINX_CONTROL_WORKERS") or os.environ.get("WEB_CONCURRENCY") or 2)
# Sync workers: every request is a few Redis round trips, nothing streams; extra threads
# would only add locking. Scale with workers.
worker_class = "sync"
timeout = int(os.environ.get("LINX_CONTROL_TIMEOUT_SECS") or 30)
# On SIGTERM, in-flight requests get this long to finish before workers are killed.
graceful_timeout = 30
keepalive = 5
# Each worker builds its own app (and Redis connection pool) after the fork: no sockets
# shared between processes.
preload_app = False
# Worker heartbeats go through a file; tmpfs avoids stalls on a slow or full disk.
_SHM = "/dev/shm"  # noqa: S108 - gunicorn's documented heartbeat location, not a temp file
worker_tmp_dir = _SHM if os.path.isdir(_SHM) else None

# Logs: JSON lines on stderr for the service manager, one object per line (control/logs.py).
# The app writes the access log itself, one line per request with its request id and tenant,
# so gunicorn's own access log stays off: it would repeat each request in another format, query
# string included (which may carry a linx_token). gunicorn's lifecycle lines (boot, worker
# exits) go through the same JSON formatter, so every line of the process parses alike.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LINX_CONTROL_LOG_LEVEL", "info")
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "control.logs.JsonFormatter"}},
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    },
    "root": {"level": loglevel.upper(), "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"level": loglevel.upper(), "handlers": [], "propagate": True},
        "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": False},
    },
}
# X-Forwarded-* are read by the app itself (public URL derivation); this only governs which
# peers may set wsgi.url_scheme. Default: the local reverse proxy.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
# Request line and header bounds, matching the body limit's spirit: the API needs no more.
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
# gunicorn 25.1+ opens a control socket at a per-user path by default; the control plane
# needs none, and two instances on one host would fight over it. (Older gunicorns ignore
# this unknown name.)
control_socket_disable = True


def on_starting(server):
    """Check the app's configuration once in the master, before binding or forking.

    A missing or invalid variable then stops gunicorn at once with one clear line (exit 3,
    gunicorn's boot-error status) instead of a traceback per worker. Without this file,
    ``create_app`` raising in the worker still stops gunicorn ("Worker failed to boot").
    """
    from control.config import ControlConfig
    from shared.config import ConfigError

    try:
        ControlConfig.from_env()
    except ConfigError as exc:
        server.log.error("invalid configuration: %s", exc)
        raise SystemExit(3)
