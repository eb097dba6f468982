"""Container registration (admin), patch, delete with cascade, and the tenant's read view."""

from __future__ import annotations

import pytest

from shared import ids

FULL = {
    "address": "10.1.2.3",
    "networking_enabled": True,
    "state": "running",
    "exec_ready": True,
    "network_ready": True,
}
RECORD_FIELDS = {
    "container_id",
    "tenant_id",
    "name",
    "address",
    "networking_enabled",
    "state",
    "exec_ready",
    "network_ready",
    "created_at",
    "updated_at",
}


def test_register_generates_an_id_and_returns_the_record(api, clock):
    tenant_id, _ = api.tenant()
    r = api.http.post("/api/admin/containers", json={"tenant_id": tenant_id, **FULL}, headers=api.admin)
    assert r.status_code == 201
    body = r.json
    assert set(body) == RECORD_FIELDS
    assert ids.looks_like(ids.CONTAINER, body["container_id"])
    assert body["tenant_id"] == tenant_id
    assert body["name"] is None
    assert {k: body[k] for k in FULL} == FULL
    assert body["created_at"] == body["updated_at"] == int(clock.now)


def test_register_with_given_id_and_name(api):
    tenant_id, _ = api.tenant()
    body = api.container(tenant_id, container_id="ctr_123", name="web 1")
    assert body["container_id"] == "ctr_123"
    assert body["name"] == "web 1"
    r = api.http.get("/api/admin/containers/ctr_123", headers=api.admin)
    assert r.status_code == 200
    assert r.json == body


def test_register_existing_id_is_409(api):
    tenant_id, _ = api.tenant()
    api.container(tenant_id, container_id="ctr_dup")
    r = api.http.post(
        "/api/admin/containers",
        json={"tenant_id": tenant_id, "container_id": "ctr_dup", **FULL},
        headers=api.admin,
    )
    assert r.status_code == 409
    assert r.json["error"]["code"] == "container_exists"


def test_register_for_unknown_tenant_is_404(api):
    r = api.http.post("/api/admin/containers", json={"tenant_id": "ten_nobody", **FULL}, headers=api.admin)
    assert r.status_code == 404
    assert r.json["error"]["code"] == "tenant_not_found"


@pytest.mark.parametrize(
    "address", ["10.1.2.3", "127.0.0.1", "::1", "fd00::1", "2001:db8::42", "192.168.0.10"]
)
def test_register_accepts_ip_literals(api, address):
    tenant_id, _ = api.tenant()
    assert api.container(tenant_id, address=address)["address"] == address


def test_address_is_stored_in_canonical_form(api):
    tenant_id, _ = api.tenant()
    assert api.container(tenant_id, address="2001:DB8:0:0::42")["address"] == "2001:db8::42"


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("address", "example.com", "invalid_field"),
        ("address", "localhost", "invalid_field"),
        ("address", "10.1.2.3:80", "invalid_field"),
        ("address", "10.1.2", "invalid_field"),
        ("address", "", "invalid_field"),
        ("address", 167837955, "invalid_field"),
        ("address", None, "invalid_field"),
        ("networking_enabled", "true", "invalid_field"),
        ("networking_enabled", 1, "invalid_field"),
        ("networking_enabled", None, "invalid_field"),
        ("exec_ready", 0, "invalid_field"),
        ("network_ready", "yes", "invalid_field"),
        ("state", "paused", "invalid_field"),
        ("state", "RUNNING", "invalid_field"),
        ("state", 1, "invalid_field"),
        ("tenant_id", 5, "invalid_field"),
        ("tenant_id", "", "invalid_field"),
        ("container_id", "has space", "invalid_field"),
        ("container_id", "a:b", "invalid_field"),
        ("container_id", "x" * 129, "invalid_field"),
        ("container_id", 7, "invalid_field"),
        ("name", 5, "invalid_field"),
        ("name", "", "invalid_field"),
        ("name", "x" * 256, "invalid_field"),
        ("color", "blue", "unknown_field"),
    ],
)
def test_register_validation(api, field, value, code):
    tenant_id, _ = api.tenant()
    body = {"tenant_id": tenant_id, **FULL, field: value}
    r = api.http.post("/api/admin/containers", json=body, headers=api.admin)
    assert r.status_code == 400, r.json
    assert r.json["error"]["code"] == code
    assert r.json["error"]["field"] == field
    assert field in r.json["error"]["message"]


@pytest.mark.parametrize("missing", ["tenant_id", *FULL])
def test_register_requires_fields(api, missing):
    tenant_id, _ = api.tenant()
    body = {"tenant_id": tenant_id, **FULL}
    del body[missing]
    r = api.http.post("/api/admin/containers", json=body, headers=api.admin)
    assert r.status_code == 400
    assert r.json["error"]["code"] == "missing_field"
    assert r.json["error"]["field"] == missing


@pytest.mark.parametrize("state", ["created", "running", "stopped", "exited"])
def test_every_state_is_accepted(api, state):
    tenant_id, _ = api.tenant()
    assert api.container(tenant_id, state=state)["state"] == state


@pytest.mark.parametrize(
    "changes",
    [
        {"address": "10.9.9.9"},
        {"networking_enabled": False},
        {"state": "stopped"},
        {"exec_ready": False},
        {"network_ready": False},
        {"address": "::1", "state": "exited", "network_ready": False},
    ],
)
def test_patch_changes_only_the_given_fields(api, clock, changes):
    tenant_id, _ = api.tenant()
    before = api.container(tenant_id, name="c")
    clock.advance(10)
    r = api.http.patch(f"/api/admin/containers/{before['container_id']}", json=changes, headers=api.admin)
    assert r.status_code == 200
    assert r.json == {**before, **changes, "updated_at": before["updated_at"] + 10}
    again = api.http.get(f"/api/admin/containers/{before['container_id']}", headers=api.admin)
    assert again.json == r.json


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({}, "empty_patch", None),
        ({"state": "paused"}, "invalid_field", "state"),
        ({"address": "host.example"}, "invalid_field", "address"),
        ({"networking_enabled": "false"}, "invalid_field", "networking_enabled"),
        ({"tenant_id": "ten_other"}, "field_not_patchable", "tenant_id"),
        ({"name": "x"}, "field_not_patchable", "name"),
        ({"container_id": "x"}, "field_not_patchable", "container_id"),
        ({"bogus": 1}, "unknown_field", "bogus"),
    ],
)
def test_patch_validation(api, body, code, field):
    tenant_id, _ = api.tenant()
    c = api.container(tenant_id)
    r = api.http.patch(f"/api/admin/containers/{c['container_id']}", json=body, headers=api.admin)
    assert r.status_code == 400
    assert r.json["error"]["code"] == code
    assert r.json["error"].get("field") == field


def test_patch_unknown_container_is_404(api):
    r = api.http.patch("/api/admin/containers/ctr_nope", json={"state": "running"}, headers=api.admin)
    assert r.status_code == 404
    assert r.json["error"]["code"] == "container_not_found"


def test_delete_cascades_to_services(api, redis_client, key_prefix):
    headers, container, service = api.setup()
    other = api.service(container["container_id"], headers, name="second", target_port=7002)
    cid = container["container_id"]
    r = api.http.delete(f"/api/admin/containers/{cid}", headers=api.admin)
    assert r.status_code == 204
    assert r.data == b""
    for sid in (service["service_id"], other["service_id"]):
        assert api.http.get(f"/api/services/{sid}", headers=headers).status_code == 404
    assert api.http.get(f"/api/containers/{cid}", headers=headers).status_code == 404
    assert api.http.get(f"/api/admin/containers/{cid}", headers=api.admin).status_code == 404
    assert api.http.delete(f"/api/admin/containers/{cid}", headers=api.admin).status_code == 404
    # Nothing of the container or its services is left in Redis but tenant-level keys.
    left = {k.decode() for k in redis_client.keys(key_prefix + "*")}
    assert not [k for k in left if cid in k or "service" in k or "status:" in k]


def test_tenant_sees_only_its_containers(api):
    a, a_headers = api.tenant("a")
    b, b_headers = api.tenant("b")
    ca = api.container(a)
    cb = api.container(b)
    listed = api.http.get("/api/containers", headers=a_headers).json["containers"]
    assert listed == [ca]
    r = api.http.get(f"/api/containers/{ca['container_id']}", headers=a_headers)
    assert r.status_code == 200 and r.json == ca
    foreign = api.http.get(f"/api/containers/{cb['container_id']}", headers=a_headers)
    missing = api.http.get("/api/containers/ctr_doesnotexist", headers=a_headers)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json == missing.json


def test_tenant_cannot_register_containers(api):
    tenant_id, headers = api.tenant()
    r = api.http.post("/api/admin/containers", json={"tenant_id": tenant_id, **FULL}, headers=headers)
    assert r.status_code == 403
    r = api.http.post("/api/containers", json={"tenant_id": tenant_id, **FULL}, headers=headers)
    assert r.status_code == 405


def test_admin_lists_containers_optionally_by_tenant(api):
    a, _ = api.tenant("a")
    b, _ = api.tenant("b")
    ca, cb = api.container(a), api.container(b)
    every = api.http.get("/api/admin/containers", headers=api.admin).json["containers"]
    assert sorted(c["container_id"] for c in every) == sorted([ca["container_id"], cb["container_id"]])
    only_a = api.http.get(f"/api/admin/containers?tenant_id={a}", headers=api.admin).json
    assert only_a["containers"] == [ca]
    none = api.http.get("/api/admin/containers?tenant_id=ten_x", headers=api.admin).json
    assert none["containers"] == []
