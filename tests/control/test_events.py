"""The change events each mutation emits, read back through Schema.read_feed.

Every successful mutation appends exactly one event carrying the whole new record (or the id
for a delete); reads and refused requests append none.
"""

from __future__ import annotations

from shared.records import Container, Service, Tenant
from shared.schema import KIND_CONTAINER, KIND_SERVICE, KIND_TENANT, OP_DELETE, OP_PUT


def _one(feed):
    events = feed()
    assert len(events) == 1, events
    return events[0]


def test_tenant_events(api, feed):
    r = api.http.post("/api/admin/tenants", json={"name": "acme"}, headers=api.admin)
    tid = r.json["tenant_id"]
    e = _one(feed)
    assert (e.kind, e.op, e.id) == (KIND_TENANT, OP_PUT, tid)
    assert isinstance(e.record, Tenant) and len(e.record.keys) == 1

    key = api.http.post(f"/api/admin/tenants/{tid}/keys", headers=api.admin).json
    e = _one(feed)
    assert (e.kind, e.op, e.id) == (KIND_TENANT, OP_PUT, tid)
    assert [k.key_id for k in e.record.keys][-1] == key["key_id"]

    api.http.delete(f"/api/admin/tenants/{tid}/keys/{key['key_id']}", headers=api.admin)
    e = _one(feed)
    assert (e.kind, e.op) == (KIND_TENANT, OP_PUT)
    assert key["key_id"] not in [k.key_id for k in e.record.keys]


def test_container_events(api, feed):
    tid, _ = api.tenant()
    feed()
    c = api.container(tid)
    cid = c["container_id"]
    e = _one(feed)
    assert (e.kind, e.op, e.id) == (KIND_CONTAINER, OP_PUT, cid)
    assert isinstance(e.record, Container) and e.record.public() == c

    patched = api.http.patch(
        f"/api/admin/containers/{cid}", json={"state": "stopped"}, headers=api.admin
    ).json
    e = _one(feed)
    assert (e.kind, e.op, e.id) == (KIND_CONTAINER, OP_PUT, cid)
    assert e.record.public() == patched

    api.http.delete(f"/api/admin/containers/{cid}", headers=api.admin)
    e = _one(feed)
    assert (e.kind, e.op, e.id, e.record) == (KIND_CONTAINER, OP_DELETE, cid, None)


def test_container_delete_with_services_is_one_event(api, feed):
    headers, container, _ = api.setup()
    api.service(container["container_id"], headers, name="b", target_port=2)
    feed()
    api.http.delete(f"/api/admin/containers/{container['container_id']}", headers=api.admin)
    e = _one(feed)
    assert (e.kind, e.op, e.id) == (KIND_CONTAINER, OP_DELETE, container["container_id"])


def test_service_events(api, feed):
    tid, headers = api.tenant()
    c = api.container(tid)
    feed()
    rec = api.service(c["container_id"], headers, ttl_secs=60)
    sid = rec["service_id"]
    e = _one(feed)
    assert (e.kind, e.op, e.id) == (KIND_SERVICE, OP_PUT, sid)
    assert isinstance(e.record, Service)
    assert e.record.expires_at == rec["expires_at"]
    assert e.record.token in rec["public_url"]

    rotated = api.http.post(f"/api/services/{sid}/rotate-token", headers=headers).json
    e = _one(feed)
    assert (e.kind, e.op, e.id) == (KIND_SERVICE, OP_PUT, sid)
    assert e.record.token in rotated["public_url"]

    api.http.patch(f"/api/services/{sid}", json={"ttl_secs": 120}, headers=headers)
    e = _one(feed)
    assert e.op == OP_PUT and e.record.expires_at == rec["created_at"] + 120

    link = api.http.post(f"/api/services/{sid}/share-links", json={"ttl_secs": 5}, headers=headers).json
    e = _one(feed)
    assert e.op == OP_PUT and [ln.link_id for ln in e.record.share_links] == [link["link_id"]]

    api.http.delete(f"/api/services/{sid}/share-links/{link['link_id']}", headers=headers)
    e = _one(feed)
    assert e.op == OP_PUT and e.record.share_links == ()

    api.http.delete(f"/api/services/{sid}", headers=headers)
    e = _one(feed)
    assert (e.kind, e.op, e.id, e.record) == (KIND_SERVICE, OP_DELETE, sid, None)


def test_reads_and_refusals_emit_nothing(api, feed):
    headers, container, rec = api.setup()
    sid, cid = rec["service_id"], container["container_id"]
    feed()
    api.http.get(f"/api/services/{sid}", headers=headers)
    api.http.get(f"/api/containers/{cid}/services", headers=headers)
    api.http.get("/api/admin/tenants", headers=api.admin)
    api.http.post(f"/api/containers/{cid}/services", json={"name": "amp", "target_port": 1}, headers=headers)
    api.http.post(f"/api/containers/{cid}/services", json={"name": "BAD", "target_port": 1}, headers=headers)
    api.http.patch(f"/api/services/{sid}", json={"name": "x"}, headers=headers)
    api.http.delete("/api/services/lnx_nope", headers=headers)
    api.http.post("/api/admin/containers", json={"tenant_id": "ten_nope"}, headers=api.admin)
    assert feed() == []
