"""Request hooks the app installs before any view runs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from control.api import Runtime

log = logging.getLogger(__name__)

OPENAPI_PATH = "/api/openapi.json"


def refuse_large_bodies() -> None:
    """413 from Content-Length alone, before authentication or routing, so a huge upload is
    refused without being read. Chunked bodies are bounded while read (``json_body``)."""
    limit = request.max_content_length
    if limit is not None and request.content_length is not None and request.content_length > limit:
        raise RequestEntityTooLarge()


def make_sweeper(runtime: Runtime) -> Callable[[], None]:
    """A hook removing services past their expiry retention, at most once every
    ``sweep_interval_secs`` per worker process.

    Best effort: a failure is logged and the request goes on. Correctness never waits for it:
    reads already treat such services as gone; the sweep deletes their keys and tells the
    proxies (one service delete event each). Thread-safe: one sweep at a time per process.
    """
    lock = threading.Lock()

    def sweep() -> None:
        if request.path == OPENAPI_PATH:
            return  # the one route that must work without Redis
        now = runtime.clock()
        last = runtime.last_sweep
        # A clock stepped backwards (NTP) must not stop the sweep for that long.
        if last is not None and last <= now < last + runtime.config.sweep_interval_secs:
            return
        if not lock.acquire(blocking=False):
            return  # another thread of this worker is sweeping
        try:
            runtime.last_sweep = now
            removed = runtime.store.sweep_expired(now)
            if removed:
                log.info("removed %d service(s) past their expiry retention", len(removed))
        except Exception:
            log.warning("expiry sweep failed; retrying on a later request", exc_info=True)
        finally:
            lock.release()

    return sweep
