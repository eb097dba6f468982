"""A request never half-applies: a failure after some writes were queued, or at EXEC, leaves
Redis exactly as it was (no record, no event); a concurrent change makes the store retry."""

from __future__ import annotations

import pytest
import redis
from redis.client import Pipeline

from shared.schema import Schema


def _state(redis_client, prefix):
    """Every key under the prefix with its serialized value (streams included)."""
    return {k: redis_client.dump(k) for k in sorted(redis_client.keys(prefix + "*"))}


def _failing(original):
    """A Schema writer that queues its commands and then fails before EXEC."""

    def writer(self, pipe, *args, **kwargs):
        original(self, pipe, *args, **kwargs)
        assert len(pipe.command_stack) > 1  # writes really were queued
        raise RuntimeError("injected failure after queueing")

    return writer


MUTATIONS = {
    "create_tenant": (
        "put_tenant",
        lambda api, ctx: api.http.post("/api/admin/tenants", json={"name": "x"}, headers=api.admin),
    ),
    "add_key": (
        "put_tenant",
        lambda api, ctx: api.http.post(f"/api/admin/tenants/{ctx['tid']}/keys", headers=api.admin),
    ),
    "register_container": (
        "put_container",
        lambda api, ctx: api.http.post(
            "/api/admin/containers",
            json={
                "tenant_id": ctx["tid"],
                "address": "10.0.0.9",
                "networking_enabled": True,
                "state": "running",
                "exec_ready": True,
                "network_ready": True,
            },
            headers=api.admin,
        ),
    ),
    "patch_container": (
        "put_container",
        lambda api, ctx: api.http.patch(
            f"/api/admin/containers/{ctx['cid']}", json={"state": "stopped"}, headers=api.admin
        ),
    ),
    "delete_container": (
        "delete_container",
        lambda api, ctx: api.http.delete(f"/api/admin/containers/{ctx['cid']}", headers=api.admin),
    ),
    "create_service": (
        "put_service",
        lambda api, ctx: api.http.post(
            f"/api/containers/{ctx['cid']}/services",
            json={"name": "new", "target_port": 9},
            headers=ctx["headers"],
        ),
    ),
    "rotate_token": (
        "put_service",
        lambda api, ctx: api.http.post(f"/api/services/{ctx['sid']}/rotate-token", headers=ctx["headers"]),
    ),
    "share_link": (
        "put_service",
        lambda api, ctx: api.http.post(
            f"/api/services/{ctx['sid']}/share-links", json={"ttl_secs": 5}, headers=ctx["headers"]
        ),
    ),
    "delete_service": (
        "delete_service",
        lambda api, ctx: api.http.delete(f"/api/services/{ctx['sid']}", headers=ctx["headers"]),
    ),
}


@pytest.fixture
def ctx(api):
    tid, headers = api.tenant()
    container = api.container(tid)
    service = api.service(container["container_id"], headers)
    return {
        "tid": tid,
        "headers": headers,
        "cid": container["container_id"],
        "sid": service["service_id"],
    }


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_failure_after_queueing_leaves_nothing(api, ctx, redis_client, key_prefix, monkeypatch, name):
    writer, call = MUTATIONS[name]
    before = _state(redis_client, key_prefix)
    monkeypatch.setattr(Schema, writer, _failing(getattr(Schema, writer)))
    r = call(api, ctx)
    assert r.status_code == 500
    assert r.json == {"error": {"code": "internal_error", "message": "internal error"}}
    assert _state(redis_client, key_prefix) == before
    # and the store is usable afterwards
    monkeypatch.undo()
    assert call(api, ctx).status_code in (200, 201, 204)


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_connection_lost_at_exec_is_503_and_leaves_nothing(
    api, ctx, redis_client, key_prefix, monkeypatch, name
):
    _, call = MUTATIONS[name]
    before = _state(redis_client, key_prefix)
    original = Pipeline.execute

    def execute(self, *args, **kwargs):
        if self.explicit_transaction:  # the MULTI ... EXEC of a mutation
            self.reset()
            raise redis.ConnectionError("injected: connection lost before EXEC")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "execute", execute)
    r = call(api, ctx)
    assert r.status_code == 503
    assert r.json["error"]["code"] == "redis_unavailable"
    assert _state(redis_client, key_prefix) == before


def test_concurrent_container_delete_wins_over_service_create(api, ctx, redis_server, schema, monkeypatch):
    """The container vanishes between the store's read and its EXEC: WATCH makes the create
    start again, and it then answers 404 instead of leaving an orphan service."""
    other = redis.Redis.from_url(redis_server.url)
    store = api.app.extensions["linx"].store
    real_get = store.schema.get_container
    calls = []

    def get_container(reader, container_id):
        found = real_get(reader, container_id)
        if not calls:
            # Another control-plane worker deletes the container right now.
            with other.pipeline(transaction=True) as pipe:
                pipe.multi()
                schema.delete_container(pipe, found, [ctx["sid"]])
                pipe.execute()
        calls.append(container_id)
        return found

    monkeypatch.setattr(store.schema, "get_container", get_container)
    r = api.http.post(
        f"/api/containers/{ctx['cid']}/services",
        json={"name": "late", "target_port": 5},
        headers=ctx["headers"],
    )
    other.close()
    assert len(calls) == 2  # the first attempt was discarded by WATCH
    assert r.status_code == 404
    assert schema.list_container_services(store.client, ctx["cid"]) == []
    assert store.client.smembers(schema.keys.services) == set()


def test_concurrent_same_name_create_is_detected(api, ctx, schema, monkeypatch):
    """Two creates of the same name: the second one's WATCH sees the first one's write."""
    store = api.app.extensions["linx"].store
    real = store.schema.service_id_by_name
    raced = []

    def by_name(reader, container_id, name):
        result = real(reader, container_id, name)
        if not raced and reader is not store.client:  # inside the transaction, first time
            raced.append(name)
            # A concurrent request publishes the same name first.
            other = api.http.post(
                f"/api/containers/{ctx['cid']}/services",
                json={"name": name, "target_port": 1},
                headers=ctx["headers"],
            )
            assert other.status_code == 201
        return result

    monkeypatch.setattr(store.schema, "service_id_by_name", by_name)
    r = api.http.post(
        f"/api/containers/{ctx['cid']}/services",
        json={"name": "race", "target_port": 2},
        headers=ctx["headers"],
    )
    assert r.status_code == 409
    assert r.json["error"]["code"] == "name_conflict"
    names = [s.name for s in schema.list_container_services(store.client, ctx["cid"])]
    assert sorted(names) == ["amp", "race"]
