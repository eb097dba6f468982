"""TTL: status expired from expires_at on; readable for the retention; then removed with an event."""

from __future__ import annotations

import dataclasses
import time

from control import create_app
from shared.schema import KIND_SERVICE, OP_DELETE
from tests.control.conftest import Api, close_app
from tests.helpers.procs import wait_for

RETENTION = 100


def _status(api, headers, sid):
    return api.http.get(f"/api/services/{sid}", headers=headers)


def test_expired_from_expires_at_on(api, clock):
    headers, _, rec = api.setup(ttl_secs=60)
    sid = rec["service_id"]
    clock.advance(59)
    assert _status(api, headers, sid).json["status"] == "pending"
    clock.advance(1)  # now == expires_at
    r = _status(api, headers, sid)
    assert r.status_code == 200
    assert r.json["status"] == "expired"
    assert r.json["expires_at"] == rec["expires_at"]


def test_expired_service_stays_readable_for_the_retention_then_404(make_api, clock):
    api = make_api(expired_retention_secs=RETENTION)
    headers, container, rec = api.setup(ttl_secs=10)
    sid = rec["service_id"]
    clock.advance(10 + RETENTION - 1)
    assert _status(api, headers, sid).json["status"] == "expired"
    listed = api.http.get(f"/api/containers/{container['container_id']}/services", headers=headers)
    assert [s["status"] for s in listed.json["services"]] == ["expired"]
    clock.advance(1)
    r = _status(api, headers, sid)
    assert r.status_code == 404
    assert r.json["error"]["code"] == "service_not_found"
    listed = api.http.get(f"/api/containers/{container['container_id']}/services", headers=headers)
    assert listed.json["services"] == []


def test_sweep_removes_past_retention_with_a_delete_event(
    make_api, clock, schema, redis_client, feed, key_prefix
):
    api = make_api(expired_retention_secs=RETENTION)
    headers, container, old = api.setup(ttl_secs=10)
    keep = api.service(container["container_id"], headers, name="keep", ttl_secs=1000)
    forever = api.service(container["container_id"], headers, name="forever")
    feed()  # skip the creation events
    clock.advance(10 + RETENTION)
    # Any request runs the sweep (at most once per interval per worker).
    assert api.http.get("/api/containers", headers=headers).status_code == 200
    events = feed()
    assert [(e.kind, e.op, e.id) for e in events] == [(KIND_SERVICE, OP_DELETE, old["service_id"])]
    assert schema.get_service(redis_client, old["service_id"]) is None
    assert schema.service_id_by_name(redis_client, container["container_id"], "amp") is None
    assert schema.expired_before(redis_client, float("inf")) == [keep["service_id"]]
    assert schema.get_service(redis_client, forever["service_id"]) is not None
    assert not redis_client.exists(schema.keys.status(old["service_id"]))


def test_store_sweep_is_idempotent_and_counts(make_api, clock):
    api = make_api(expired_retention_secs=0)
    headers, container, a = api.setup(ttl_secs=5)
    b = api.service(container["container_id"], headers, name="b", ttl_secs=5)
    store = api.app.extensions["linx"].store
    assert store.sweep_expired(clock.now) == []
    clock.advance(5)
    assert sorted(store.sweep_expired(clock.now)) == sorted([a["service_id"], b["service_id"]])
    assert store.sweep_expired(clock.now) == []


def test_sweep_skips_a_service_extended_meanwhile(make_api, clock, schema, redis_client):
    api = make_api(expired_retention_secs=0)
    headers, _, rec = api.setup(ttl_secs=5)
    store = api.app.extensions["linx"].store
    clock.advance(3)
    api.http.patch(f"/api/services/{rec['service_id']}", json={"ttl_secs": 100}, headers=headers)
    clock.advance(3)
    assert store.sweep_expired(clock.now) == []
    assert _status(api, headers, rec["service_id"]).json["status"] == "pending"


def test_sweep_runs_at_most_once_per_interval(make_api, clock, monkeypatch):
    api = make_api(sweep_interval_secs=5)
    store = api.app.extensions["linx"].store
    calls = []
    monkeypatch.setattr(store, "sweep_expired", lambda now: calls.append(now) or [])
    for _ in range(3):
        api.http.get("/api/openapi.json")
        api.http.get("/api/admin/tenants", headers=api.admin)
    assert calls == [clock.now]
    clock.advance(5)
    api.http.get("/api/admin/tenants", headers=api.admin)
    assert calls == [clock.now - 5, clock.now]
    clock.advance(-100)  # a clock stepped backwards does not stall the sweep
    api.http.get("/api/admin/tenants", headers=api.admin)
    assert len(calls) == 3


def test_sweep_failure_does_not_fail_the_request(make_api, monkeypatch, caplog):
    api = make_api()
    store = api.app.extensions["linx"].store

    def boom(now):
        raise RuntimeError("sweep broke")

    monkeypatch.setattr(store, "sweep_expired", boom)
    assert api.http.get("/api/admin/tenants", headers=api.admin).status_code == 200
    assert "expiry sweep failed" in caplog.text


def test_name_of_a_service_past_retention_is_free(make_api, clock):
    api = make_api(expired_retention_secs=RETENTION, sweep_interval_secs=10_000)
    headers, container, old = api.setup(ttl_secs=10)
    # an expired service within its retention still holds its name
    clock.advance(10)
    r = api.http.post(
        f"/api/containers/{container['container_id']}/services",
        json={"name": "amp", "target_port": 1},
        headers=headers,
    )
    assert r.status_code == 409
    assert old["service_id"] in r.json["error"]["message"]
    clock.advance(RETENTION)
    new = api.service(container["container_id"], headers, name="amp", target_port=1)
    assert new["service_id"] != old["service_id"]


def test_expired_service_can_still_be_deleted(api, clock):
    headers, _, rec = api.setup(ttl_secs=1)
    clock.advance(2)
    assert api.http.delete(f"/api/services/{rec['service_id']}", headers=headers).status_code == 204


def test_patch_revives_an_expired_service(api, clock):
    headers, _, rec = api.setup(ttl_secs=1)
    clock.advance(2)
    r = api.http.patch(f"/api/services/{rec['service_id']}", json={"ttl_secs": 60}, headers=headers)
    assert r.status_code == 200
    assert r.json["status"] == "pending"
    assert r.json["expires_at"] == int(clock.now) + 60


def test_sweep_drops_a_stale_index_entry(make_api, clock, schema, redis_client):
    api = make_api(expired_retention_secs=0)
    redis_client.zadd(schema.keys.expiry, {"lnx_ghost": clock.now - 10})
    store = api.app.extensions["linx"].store
    assert store.sweep_expired(clock.now) == []
    assert schema.expired_before(redis_client, float("inf")) == []


def test_background_sweeper_removes_past_retention_without_any_request(config, schema, redis_client, feed):
    app = create_app(dataclasses.replace(config, expired_retention_secs=1, background_sweep=True))
    try:
        api = Api(app)  # on the real clock: nothing but the thread moves time on
        _, _, rec = api.setup(ttl_secs=1)
        sid = rec["service_id"]
        feed()
        deadline = rec["expires_at"] + 1
        gone = wait_for(
            lambda: schema.get_service(redis_client, sid) is None and time.time(), 5, what="removal"
        )
        assert deadline - 0.01 <= gone < deadline + 1.5  # within about a second of the end
        assert [(e.op, e.id) for e in feed()] == [(OP_DELETE, sid)]
    finally:
        close_app(app)
