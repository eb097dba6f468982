"""The change feed against a real Redis: writers' events read back, resumable positions,
gap detection (trimmed past the cursor), and epoch change (Redis came back empty)."""

from __future__ import annotations

import threading

import pytest
import redis

from deploy.redis_process import RedisProcess
from shared.records import ApiKey, Container, Service, Tenant
from shared.schema import (
    KIND_CONTAINER,
    KIND_SERVICE,
    KIND_TENANT,
    OP_DELETE,
    OP_PUT,
    FeedGap,
    Readiness,
    Schema,
)
from shared.tokens import SigningKey

TENANT = Tenant("ten_a", "acme", 1, (ApiKey("key_1", "d1", 1),))
CONTAINER = Container("ctr_a", "ten_a", None, "10.0.0.1", True, "running", True, True, 1, 1)
SERVICE = Service(
    "lnx_a",
    "ten_a",
    "ctr_a",
    "amp",
    7001,
    "http",
    False,
    "service_token",
    1,
    1,
    50,
    SigningKey("k", b"s" * 32),
)


def _read(schema, client, cursor, count=1000):
    return schema.read_feed(client, cursor, count)


def _follow(schema, client, cursor, count=1000):
    return schema.follow_feed(client, cursor, count, block_ms=10)


_HELD: dict = {}  # server address -> the connection kept for it


def _follow_held(schema, client, cursor, count=1000):
    # as the sync thread calls it: on a connection of its own, kept from call to call
    kw = client.connection_pool.connection_kwargs
    where = (kw.get("host"), kw.get("port"), kw.get("db"))
    if where not in _HELD:
        _HELD[where] = schema.feed_connection(client)
    return schema.follow_feed(client, cursor, count, block_ms=10, conn=_HELD[where])


# The sync thread follows the feed with follow_feed (one round trip: XREAD BLOCK, then the
# checks); every guarantee of read_feed must hold for it too.
READERS = pytest.mark.parametrize(
    "read", [_read, _follow, _follow_held], ids=["read_feed", "follow_feed", "follow_feed_held"]
)


def _tx(client, write):
    with client.pipeline(transaction=True) as pipe:
        pipe.multi()
        write(pipe)
        pipe.execute()


@READERS
def test_each_writer_emits_one_event_and_state(schema, redis_client, read):
    cursor = schema.snapshot(redis_client).cursor
    _tx(redis_client, lambda p: schema.put_tenant(p, TENANT))
    _tx(redis_client, lambda p: schema.put_container(p, CONTAINER))
    _tx(redis_client, lambda p: schema.put_service(p, SERVICE))
    events, cursor = read(schema, redis_client, cursor)
    assert [(e.kind, e.op, e.id) for e in events] == [
        (KIND_TENANT, OP_PUT, "ten_a"),
        (KIND_CONTAINER, OP_PUT, "ctr_a"),
        (KIND_SERVICE, OP_PUT, "lnx_a"),
    ]
    assert [e.record for e in events] == [TENANT, CONTAINER, SERVICE]
    assert schema.get_tenant(redis_client, "ten_a") == TENANT
    assert schema.tenant_key_owner(redis_client, "d1") == ("ten_a", "key_1")
    assert schema.list_tenant_containers(redis_client, "ten_a") == [CONTAINER]
    assert schema.list_containers(redis_client) == [CONTAINER]
    assert schema.service_id_by_name(redis_client, "ctr_a", "amp") == "lnx_a"
    assert schema.expired_before(redis_client, 50) == ["lnx_a"]
    assert schema.expired_before(redis_client, 49) == []

    # Nothing new: an empty read keeps the cursor.
    assert read(schema, redis_client, cursor) == ([], cursor)

    _tx(redis_client, lambda p: schema.delete_service(p, SERVICE))
    _tx(redis_client, lambda p: schema.delete_container(p, CONTAINER, []))
    events, cursor = read(schema, redis_client, cursor)
    assert [(e.kind, e.op, e.id, e.record) for e in events] == [
        (KIND_SERVICE, OP_DELETE, "lnx_a", None),
        (KIND_CONTAINER, OP_DELETE, "ctr_a", None),
    ]
    assert schema.get_service(redis_client, "lnx_a") is None
    assert schema.expired_before(redis_client, 10**9) == []


def test_revoked_key_index_is_removed(schema, redis_client):
    _tx(redis_client, lambda p: schema.put_tenant(p, TENANT))
    revoked = Tenant("ten_a", "acme", 1, (ApiKey("key_2", "d2", 2),))
    _tx(redis_client, lambda p: schema.put_tenant(p, revoked, TENANT))
    assert schema.tenant_key_owner(redis_client, "d1") is None
    assert schema.tenant_key_owner(redis_client, "d2") == ("ten_a", "key_2")


def test_container_delete_cascades_in_one_event(schema, redis_client):
    _tx(redis_client, lambda p: schema.put_container(p, CONTAINER))
    _tx(redis_client, lambda p: schema.put_service(p, SERVICE))
    cursor = schema.snapshot(redis_client).cursor
    _tx(redis_client, lambda p: schema.delete_container(p, CONTAINER, ["lnx_a"]))
    events, _ = schema.read_feed(redis_client, cursor)
    assert [(e.kind, e.op, e.id) for e in events] == [(KIND_CONTAINER, OP_DELETE, "ctr_a")]
    assert schema.get_service(redis_client, "lnx_a") is None
    assert schema.list_container_services(redis_client, "ctr_a") == []


def test_snapshot_then_resume_from_its_cursor(schema, redis_client):
    _tx(redis_client, lambda p: schema.put_container(p, CONTAINER))
    snap = schema.snapshot(redis_client)
    assert snap.containers == {"ctr_a": CONTAINER} and snap.services == {}
    _tx(redis_client, lambda p: schema.put_service(p, SERVICE))
    events, _ = schema.read_feed(redis_client, snap.cursor)
    assert [e.id for e in events] == ["lnx_a"]


@READERS
def test_read_feed_pages_with_count(schema, redis_client, read):
    cursor = schema.snapshot(redis_client).cursor
    for i in range(5):
        _tx(
            redis_client,
            lambda p, i=i: schema.put_container(
                p,
                CONTAINER.__class__(f"ctr_{i}", "ten_a", None, "10.0.0.1", True, "running", True, True, 1, 1),
            ),
        )
    seen = []
    while True:
        events, cursor = read(schema, redis_client, cursor, count=2)
        if not events:
            break
        seen.extend(e.id for e in events)
    assert seen == [f"ctr_{i}" for i in range(5)]
    assert cursor.offset == 5


@READERS
def test_gap_when_trimmed_past_the_cursor(schema, redis_client, read):
    _tx(redis_client, lambda p: schema.put_container(p, CONTAINER))
    early = schema.snapshot(redis_client).cursor
    for _ in range(3):
        _tx(redis_client, lambda p: schema.put_service(p, SERVICE))
    # Exact trim to one entry: two events this reader has not seen are gone.
    redis_client.xtrim(schema.keys.feed, maxlen=1, approximate=False)
    with pytest.raises(FeedGap):
        read(schema, redis_client, early)
    # A fresh snapshot's cursor is fine again.
    fresh = schema.snapshot(redis_client).cursor
    assert read(schema, redis_client, fresh) == ([], fresh)


@pytest.mark.parametrize("keep", [1, 0], ids=["cursor-entry-kept", "cursor-entry-trimmed"])
@READERS
def test_no_gap_when_only_seen_entries_were_trimmed(schema, redis_client, read, keep):
    # keep=1: the cursor's own entry is still there (the read needs no XINFO); keep=0: it is
    # gone too, and the exact check decides (3 trimmed, all seen)
    cursor = schema.snapshot(redis_client).cursor
    for _ in range(3):
        _tx(redis_client, lambda p: schema.put_service(p, SERVICE))
    _, cursor = read(schema, redis_client, cursor)
    redis_client.xtrim(schema.keys.feed, maxlen=keep, approximate=False)
    _tx(redis_client, lambda p: schema.put_container(p, CONTAINER))
    events, after = read(schema, redis_client, cursor)
    assert [e.id for e in events] == ["ctr_a"] and after.offset == 4
    _tx(redis_client, lambda p: schema.put_service(p, SERVICE))
    events, after = read(schema, redis_client, after)
    assert [e.id for e in events] == ["lnx_a"] and after.offset == 5


@READERS
def test_gap_when_the_feed_is_gone(schema, redis_client, read):
    cursor = schema.snapshot(redis_client).cursor
    _tx(redis_client, lambda p: schema.put_service(p, SERVICE))
    _, cursor = read(schema, redis_client, cursor)
    redis_client.delete(schema.keys.feed)
    with pytest.raises(FeedGap):
        read(schema, redis_client, cursor)


@READERS
def test_epoch_changes_after_flushall(read):
    """Redis that comes back empty (FLUSHALL here; a restart without persistence in real
    life) gets a new epoch, and a reader's old cursor reports a gap. A private server: the
    session's one is shared by every test."""
    server = RedisProcess().start()
    client = redis.Redis.from_url(server.url)
    try:
        schema = Schema("feedtest:")
        _tx(client, lambda p: schema.put_container(p, CONTAINER))
        snap = schema.snapshot(client)
        client.flushall()
        _tx(client, lambda p: schema.put_container(p, CONTAINER))
        with pytest.raises(FeedGap):
            read(schema, client, snap.cursor)
        again = schema.snapshot(client)
        assert again.cursor.epoch != snap.cursor.epoch
        assert again.containers == {"ctr_a": CONTAINER}
    finally:
        client.close()
        server.stop()


def test_wait_feed_wakes_on_new_events(schema, redis_client):
    cursor = schema.snapshot(redis_client).cursor
    assert schema.wait_feed(redis_client, cursor, block_ms=10) is False
    _tx(redis_client, lambda p: schema.put_container(p, CONTAINER))
    assert schema.wait_feed(redis_client, cursor, block_ms=10) is True


def test_follow_feed_waits_for_the_next_event_and_returns_it(schema, redis_client):
    _tx(redis_client, lambda p: schema.put_tenant(p, TENANT))
    cursor = schema.snapshot(redis_client).cursor  # on a real entry: the one-trip path
    assert schema.follow_feed(redis_client, cursor, block_ms=10) == ([], cursor)  # timed out
    writer = threading.Timer(0.05, lambda: _tx(redis_client, lambda p: schema.put_container(p, CONTAINER)))
    writer.start()
    try:
        events, after = schema.follow_feed(redis_client, cursor, block_ms=5000)
    finally:
        writer.join()
    assert [e.id for e in events] == ["ctr_a"] and events[0].record == CONTAINER
    assert after.offset == cursor.offset + 1 and after.position == events[0].position


def test_a_held_feed_connection_reconnects_after_it_broke(schema, redis_client):
    _tx(redis_client, lambda p: schema.put_tenant(p, TENANT))
    cursor = schema.snapshot(redis_client).cursor
    conn = schema.feed_connection(redis_client)
    try:
        assert schema.follow_feed(redis_client, cursor, block_ms=10, conn=conn) == ([], cursor)
        conn.disconnect()  # as an error in an exchange leaves it
        _tx(redis_client, lambda p: schema.put_container(p, CONTAINER))
        events, _ = schema.follow_feed(redis_client, cursor, block_ms=10, conn=conn)
        assert [e.id for e in events] == ["ctr_a"]
    finally:
        conn.disconnect()


def test_readiness_written_only_for_existing_services(schema, redis_client):
    schema.write_readiness(redis_client, "lnx_a", Readiness("ready", "10.0.0.1:7001", 5))
    assert schema.read_readiness(redis_client, ["lnx_a"]) == {}
    _tx(redis_client, lambda p: schema.put_service(p, SERVICE))
    schema.write_readiness(redis_client, "lnx_a", Readiness("ready", "10.0.0.1:7001", 5))
    assert schema.read_readiness(redis_client, ["lnx_a", "lnx_b"]) == {
        "lnx_a": Readiness("ready", "10.0.0.1:7001", 5)
    }
    assert schema.read_readiness(redis_client, []) == {}


def test_links_used_recorded_only_while_the_service_exists(schema, redis_client):
    schema.mark_links_used(redis_client, "lnx_a", {"shl_1": 10})
    assert schema.links_used(redis_client, "lnx_a") == {}
    _tx(redis_client, lambda p: schema.put_service(p, SERVICE))
    schema.mark_links_used(redis_client, "lnx_a", {"shl_1": 10, "shl_2": 20})
    assert schema.links_used(redis_client, "lnx_a") == {"shl_1": 10, "shl_2": 20}
    _tx(redis_client, lambda p: schema.delete_service(p, SERVICE))
    assert schema.links_used(redis_client, "lnx_a") == {}


def test_forget_expiry_drops_only_the_index_entry(schema, redis_client):
    _tx(redis_client, lambda p: schema.put_service(p, SERVICE))
    cursor = schema.snapshot(redis_client).cursor
    _tx(redis_client, lambda p: schema.forget_expiry(p, "lnx_a"))
    assert schema.expired_before(redis_client, 10**9) == []
    assert schema.get_service(redis_client, "lnx_a") == SERVICE
    assert schema.read_feed(redis_client, cursor)[0] == []
