"""JSON logs of the control plane: one access line per request, with a request id.

``register(app)`` installs the hooks (``create_app`` calls it first, so every other hook and
view runs with the request id known):

- the request id is the client's ``X-Request-Id`` when it is a plausible id (1 to 128 of
  ``A-Z a-z 0-9 . _ : - + = / @``), else a new random one; it is answered in the
  ``X-Request-Id`` response header and added to every log line emitted during the request;
- after the response is built, one line on the ``control.access`` logger::

    {"time": "2026-01-02T03:04:05.678Z", "level": "info", "logger": "control.access",
     "event": "request", "request_id": "...", "method": "GET", "path": "/api/services/lnx_...",
     "status": 200, "duration_ms": 3.1, "tenant_id": "ten_...", "remote_addr": "127.0.0.1"}

  with ``"error": "<code>"`` added for an error answer. What never appears: the query string
  (it may carry ``linx_token``), headers (``Authorization`` carries API keys and the admin
  token, cookies carry tokens), and bodies (``POST /api/admin/tenants`` answers a new key).

Where lines go: ``deploy/gunicorn.conf.py`` sends every logger (the app's and gunicorn's own)
through ``JsonFormatter`` to stderr. Without that file, ``register`` attaches a JSON handler
writing to stderr to the ``control`` logger, but only when logging is otherwise unconfigured
(no handler on ``control`` or on the root logger), the way ``logging.basicConfig`` decides: a
host that configures logging itself (a test runner, an embedding app) keeps its own handlers.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
import time
from datetime import UTC, datetime
from typing import IO, Any

from flask import Flask, Response, g, has_request_context, request

HEADER = "X-Request-Id"
ACCESS_LOGGER = "control.access"
_ROOT_LOGGER = "control"
_VALID_ID = re.compile(r"^[A-Za-z0-9._:+=/@-]{1,128}$")
# Paths are client-chosen; an 8 KiB request line must not become an 8 KiB log field.
_MAX_PATH = 512
# LogRecord attributes that are not ours to copy into a line.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def request_id_from(header: str | None) -> str:
    """The client's id when it is plausible, else a new one (32 hex digits)."""
    if header is not None and _VALID_ID.fullmatch(header):
        return header
    return secrets.token_hex(16)


def current_request_id() -> str | None:
    """The id of the request being handled on this thread, or None outside a request."""
    if not has_request_context():
        return None
    return g.get("request_id")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ms), level, logger, message or event fields,
    the request id when there is one, and the traceback (``exc``) for ``log.exception``.

    Fields passed as ``extra={"linx": {...}}`` are merged in; so is any other ``extra``
    attribute whose value is JSON-representable (others are written with ``str``).
    """

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "linx", None)
        if isinstance(fields, dict):
            line.update(fields)
        else:
            line["message"] = record.getMessage()
            request_id = current_request_id()
            if request_id is not None:
                line["request_id"] = request_id
        for name, value in vars(record).items():
            if name not in _RECORD_FIELDS and name != "linx" and name not in line:
                line[name] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return json.dumps(line, default=str, separators=(",", ":"))


def configure(stream: IO[str] | None = None) -> bool:
    """Send the ``control`` loggers to ``stream`` (default stderr) as JSON at level INFO,
    unless logging is already configured. Idempotent; returns whether it installed a handler."""
    logger = logging.getLogger(_ROOT_LOGGER)
    if logger.handlers or logging.getLogger().handlers:
        return False
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    return True


def _start() -> None:
    g.request_id = request_id_from(request.headers.get(HEADER))
    g.request_started = time.perf_counter()


def _finish(response: Response) -> Response:
    request_id = g.get("request_id") or request_id_from(None)
    response.headers[HEADER] = request_id
    started = g.get("request_started")
    fields: dict[str, Any] = {
        "event": "request",
        "request_id": request_id,
        "method": request.method,
        "path": request.path[:_MAX_PATH],
        "status": response.status_code,
        "duration_ms": round((time.perf_counter() - started) * 1000, 2) if started else None,
        "tenant_id": g.get("tenant_id") or (request.view_args or {}).get("tenant_id"),
        "remote_addr": request.remote_addr,
    }
    if response.status_code >= 400:
        fields["error"] = _error_code(response)
    logging.getLogger(ACCESS_LOGGER).info(
        "%s %s %s", fields["method"], fields["path"], fields["status"], extra={"linx": fields}
    )
    return response


def _error_code(response: Response) -> str | None:
    """The ``error.code`` of a JSON error answer (only the code: messages may echo input)."""
    if not response.is_json or response.is_streamed:
        return None
    body = response.get_json(silent=True)
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


def register(app: Flask) -> None:
    """Install the request-id and access-log hooks on ``app`` (call before other hooks)."""
    configure()
    app.before_request(_start)
    app.after_request(_finish)
