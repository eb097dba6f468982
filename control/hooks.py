"""Request hooks the app installs before any view runs."""

from __future__ import annotations

from collections.abc import Callable

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from control.api import Runtime

OPENAPI_PATH = "/api/openapi.json"


def refuse_large_bodies() -> None:
    """413 from Content-Length alone, before authentication or routing, so a huge upload is
    refused without being read. Chunked bodies are bounded while read (``json_body``)."""
    limit = request.max_content_length
    if limit is not None and request.content_length is not None and request.content_length > limit:
        raise RequestEntityTooLarge()


def make_sweeper(runtime: Runtime) -> Callable[[], None]:
    """A hook that keeps this process's background sweeper running and, at most once every
    ``sweep_interval_secs``, sweeps on the request's behalf too (best effort: a failure is
    logged and the request goes on; reads already treat such services as gone)."""
    sweeper = runtime.sweeper

    def sweep() -> None:
        sweeper.ensure_running()
        if request.path == OPENAPI_PATH:
            return  # the one route that must work without Redis
        sweeper.maybe_sweep()

    return sweep
