"""dataplane.sync.SyncThread against a real Redis: what it asks Redis, and what it hands over."""

from __future__ import annotations

import threading
import time

import redis

from dataplane import sync
from shared.records import Tenant
from shared.schema import Schema


class _Reactor:
    """callFromThread runs the callback in the sync thread: enough to record what is handed over."""

    def __init__(self):
        self.lock = threading.Lock()

    def callFromThread(self, fn, *args):
        with self.lock:
            fn(*args)


class _CountingSchema(Schema):
    def __init__(self, prefix):
        super().__init__(prefix)
        self.calls: list[tuple[str, int]] = []

    def read_feed(self, client, cursor, count=1000):
        events, after = super().read_feed(client, cursor, count)
        self.calls.append(("read", len(events)))
        return events, after

    def wait_feed(self, client, cursor, block_ms):
        self.calls.append(("wait", 0))
        return super().wait_feed(client, cursor, block_ms)

    def follow_feed(self, client, cursor, count=1000, block_ms=1000, conn=None):
        self.calls.append(("follow", 0))
        events, after = super().follow_feed(client, cursor, count, block_ms, conn)
        self.calls.append(("followed", len(events)))
        return events, after


def _until(cond, secs=5.0):
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError("timed out")


def test_each_batch_of_events_is_one_blocking_read(redis_server, redis_settings, key_prefix):
    schema = _CountingSchema(key_prefix)
    client = redis.Redis.from_url(redis_server.url)
    snapshots, batches = [], []
    thread = sync.SyncThread(
        _Reactor(),
        redis_settings,
        schema,
        on_snapshot=snapshots.append,
        on_events=batches.append,
        on_exchange=lambda: None,
    )
    thread.start()
    try:
        _until(lambda: snapshots and ("follow", 0) in schema.calls)
        for batch in range(3):
            with client.pipeline(transaction=True) as pipe:
                pipe.multi()
                for i in range(3):
                    schema.put_tenant(pipe, Tenant(f"ten_{batch}_{i}", "t", 1))
                pipe.execute()
            _until(lambda n=batch: sum(len(b) for b in batches) == 3 * (n + 1))
    finally:
        thread.stop()
    assert [e.id for b in batches for e in b] == [f"ten_{b}_{i}" for b in range(3) for i in range(3)]
    # The empty feed's cursor (0-0) has no entry to check: a wake-up, then read_feed. From the
    # first event on, each batch came from one follow_feed call alone (one round trip).
    first = schema.calls.index(next(c for c in schema.calls if c[0] == "followed" and c[1]))
    after = schema.calls[first + 1 :]
    assert after and all(c[0] in ("follow", "followed") for c in after)
    assert sorted(c[1] for c in after if c[0] == "followed" and c[1]) == [3, 3]
