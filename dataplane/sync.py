"""Keeping the route table in step with Redis.

One dedicated thread runs a blocking redis-py loop: a full snapshot, then the change feed from
the snapshot's cursor. It never touches the route table: it hands immutable snapshots and
event batches to the reactor thread with ``callFromThread``, and reports each successful
exchange so the reactor side knows how fresh it is.

Failure handling: on a Redis error it keeps the cursor and retries with back-off (100 ms
doubling, capped at 2 s), so after an outage it resumes from where it was when the feed still
holds those events, and takes a new snapshot when the feed read reports a gap (trimmed feed,
or a Redis that came back empty or from an older backup). Meanwhile the proxy serves what it
knows.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

from twisted.logger import Logger

from dataplane import gc_policy
from shared import schema as schema_mod
from shared.config import RedisSettings
from shared.redis_conn import make_client

log = Logger()
MAX_BACKOFF = 2.0
WAIT_MS = 1000
FEED_PAGE = 1000  # events per read at most
# After a read that brought events, the next read waits this long first, so that under a
# steady stream of changes one wake-up and one round trip carry several: each read costs the
# sync thread about 80 us of CPU whether it brings one event or ten, and ten replicas under
# 1,000 changes a second each spend that per change. A change after a quiet spell is not
# delayed (the thread is already waiting in XREAD); under load a change waits at most this.
COALESCE_SECS = 0.002


class SyncThread:
    """The feed follower. ``start``/``stop`` from the reactor thread; the callbacks run there."""

    def __init__(
        self,
        reactor,
        settings: RedisSettings,
        schema: schema_mod.Schema,
        on_snapshot: Callable[[schema_mod.Snapshot], None],
        on_events: Callable[[list[schema_mod.Event]], None],
        on_exchange: Callable[[], None],
        client_factory: Callable[[], object] | None = None,
        convert: Callable[[], Callable] | None = None,
    ) -> None:
        self.reactor = reactor
        self.settings = settings
        self.schema = schema
        self.on_snapshot = on_snapshot
        self.on_events = on_events
        self.on_exchange = on_exchange
        # Makes a fresh snapshot converter (services -> what the table keeps) per snapshot.
        self.convert = convert
        self.client_factory = client_factory or (
            lambda: make_client(settings, socket_timeout=WAIT_MS / 1000 + 5)
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="linx-sync", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        backoff = 0.1
        cursor: schema_mod.FeedCursor | None = None
        client = conn = None
        call = self.reactor.callFromThread
        while not self._stop.is_set():
            try:
                if client is None:
                    client = self.client_factory()
                    conn = self.schema.feed_connection(client)  # this thread's alone
                if cursor is None:
                    with gc_policy.paused():
                        snap = self.schema.snapshot(client, self.convert() if self.convert else None)
                    cursor = snap.cursor
                    call(self.on_snapshot, snap)
                    snap = None  # the reactor owns it now; do not keep a second copy alive
                    call(self.on_exchange)
                # Waits up to WAIT_MS when nothing is new, returns at once when something is
                events, cursor_after = self.schema.follow_feed(client, cursor, FEED_PAGE, WAIT_MS, conn)
                call(self.on_exchange)
                backoff = 0.1
                if events:
                    cursor = cursor_after
                    call(self.on_events, events)
                    self._stop.wait(COALESCE_SECS)
            except schema_mod.FeedGap as gap:
                log.info("sync: full resync needed: {why}", why=str(gap))
                cursor = None
            except Exception as exc:  # any Redis or network error: keep serving, retry
                log.warn(
                    "sync: Redis exchange failed ({err}); retrying in {delay:.1f}s",
                    err=f"{type(exc).__name__}: {exc}",
                    delay=backoff,
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
        # closing on shutdown: nothing to do about an error
        with contextlib.suppress(Exception):
            if conn is not None:
                conn.disconnect()
        with contextlib.suppress(Exception):
            if client is not None:
                client.close()
