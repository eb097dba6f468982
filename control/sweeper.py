"""Removing services past their expiry retention, on the control plane's own clock.

SPEC section 7: an expired service is removed within about a second of ``expires_at +
LINX_EXPIRED_RETENTION_SECS`` whether or not anyone calls the API. Every process serving the
app (each gunicorn worker, each replica) runs one sweeper thread. They do not fight: each
removal is one WATCHed transaction that re-reads the record and deletes it only if it is
still past its retention (``Store.sweep_expired``), so racing sweepers remove a service once
and emit one delete event.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

# How often the background thread looks for services past their retention: a ZRANGEBYSCORE
# on the expiry index, so cheap enough to run twice a second in every worker.
BACKGROUND_SWEEP_SECS = 0.5
FAILURE_LOG_SECS = 30.0


class ExpirySweeper:
    """``sweep(now)`` at most once per ``interval`` for requests; a daemon thread every
    ``BACKGROUND_SWEEP_SECS`` when ``background``. One sweep at a time per process."""

    def __init__(
        self,
        sweep_expired: Callable[[float], list[str]],
        clock: Callable[[], float],
        interval: float,
        *,
        background: bool,
    ) -> None:
        self.sweep_expired = sweep_expired
        self.clock = clock
        self.interval = interval
        self.background = background
        self.last: float | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._stop = threading.Event()
        self._failing_since: float | None = None
        self._logged_at = 0.0

    def maybe_sweep(self) -> None:
        """From a request: sweep unless one ran within ``interval`` (or is running)."""
        now = self.clock()
        last = self.last
        # A clock stepped backwards (NTP) must not stop the sweep for that long.
        if last is not None and last <= now < last + self.interval:
            return
        self._sweep(now)

    def _sweep(self, now: float) -> None:
        if not self._lock.acquire(blocking=False):
            return  # another thread of this process is sweeping
        try:
            self.last = now
            removed = self.sweep_expired(now)
            if removed:
                log.info("removed %d service(s) past their expiry retention", len(removed))
            self._failing_since = None
        except Exception:
            # Redis away: say so once, then every FAILURE_LOG_SECS, not twice a second.
            if self._failing_since is None or now - self._logged_at >= FAILURE_LOG_SECS:
                log.warning("expiry sweep failed; retrying shortly", exc_info=True)
                self._logged_at = now
            if self._failing_since is None:
                self._failing_since = now
        finally:
            self._lock.release()

    def ensure_running(self) -> None:
        """Start the thread in this process if it is not running here (also after a fork:
        a thread never survives into the child, so a preloading server gets one per worker)."""
        if not self.background or self._stop.is_set():
            return
        pid = os.getpid()
        if self._thread is not None and self._pid == pid and self._thread.is_alive():
            return
        self._pid = pid
        self._lock = threading.Lock()  # a lock held across fork would never be released
        self._thread = threading.Thread(target=self._run, name="linx-expiry-sweeper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(BACKGROUND_SWEEP_SECS):
            self._sweep(self.clock())

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(5)
