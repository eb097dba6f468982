"""Admin tenant routes: create (key shown once), list (no keys), add and revoke keys."""

from __future__ import annotations

import pytest

from shared import ids


def test_create_tenant_returns_id_name_and_key_once(api):
    r = api.http.post("/api/admin/tenants", json={"name": "acme"}, headers=api.admin)
    assert r.status_code == 201
    body = r.json
    assert ids.looks_like(ids.TENANT, body["tenant_id"])
    assert body["name"] == "acme"
    assert body["api_key"].startswith("lxk_")
    listing = api.http.get("/api/admin/tenants", headers=api.admin)
    assert listing.status_code == 200
    assert body["api_key"] not in listing.get_data(as_text=True)
    one = api.http.get(f"/api/admin/tenants/{body['tenant_id']}", headers=api.admin)
    assert body["api_key"] not in one.get_data(as_text=True)


def test_list_tenants_shows_every_tenant_without_keys(api):
    a, _ = api.tenant("a")
    b, _ = api.tenant("b")
    tenants = api.http.get("/api/admin/tenants", headers=api.admin).json["tenants"]
    assert {t["tenant_id"]: t["name"] for t in tenants} == {a: "a", b: "b"}
    for t in tenants:
        assert "api_key" not in t and "keys" not in t
        assert len(t["key_ids"]) == 1


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({}, "missing_field", "name"),
        ({"name": ""}, "invalid_field", "name"),
        ({"name": 5}, "invalid_field", "name"),
        ({"name": None}, "invalid_field", "name"),
        ({"name": "x" * 201}, "invalid_field", "name"),
        ({"name": "a\nb"}, "invalid_field", "name"),
        ({"name": "acme", "plan": "gold"}, "unknown_field", "plan"),
    ],
)
def test_create_tenant_validation(api, body, code, field):
    r = api.http.post("/api/admin/tenants", json=body, headers=api.admin)
    assert r.status_code == 400
    assert r.json["error"]["code"] == code
    assert r.json["error"]["field"] == field
    assert field in r.json["error"]["message"]


def test_new_key_works_and_is_shown_once(api):
    tenant_id, _ = api.tenant()
    r = api.http.post(f"/api/admin/tenants/{tenant_id}/keys", headers=api.admin)
    assert r.status_code == 201
    assert set(r.json) >= {"key_id", "api_key"}
    assert ids.looks_like(ids.API_KEY_ID, r.json["key_id"])
    assert api.http.get("/api/containers", headers=api.bearer(r.json["api_key"])).status_code == 200
    listed = api.http.get(f"/api/admin/tenants/{tenant_id}", headers=api.admin).json
    assert r.json["key_id"] in listed["key_ids"]
    assert r.json["api_key"] not in str(listed)


def test_new_key_accepts_an_empty_json_object(api):
    tenant_id, _ = api.tenant()
    r = api.http.post(f"/api/admin/tenants/{tenant_id}/keys", json={}, headers=api.admin)
    assert r.status_code == 201


def test_new_key_rejects_fields(api):
    tenant_id, _ = api.tenant()
    r = api.http.post(f"/api/admin/tenants/{tenant_id}/keys", json={"x": 1}, headers=api.admin)
    assert r.status_code == 400
    assert r.json["error"]["field"] == "x"


@pytest.mark.parametrize("tenant_id", ["ten_missing", "a:b", "x" * 300])
def test_keys_of_unknown_tenant_are_404(api, tenant_id):
    r = api.http.post(f"/api/admin/tenants/{tenant_id}/keys", headers=api.admin)
    assert r.status_code == 404
    assert r.json["error"]["code"] == "tenant_not_found"
    r = api.http.delete(f"/api/admin/tenants/{tenant_id}/keys/key_x", headers=api.admin)
    assert r.status_code == 404
    r = api.http.get(f"/api/admin/tenants/{tenant_id}", headers=api.admin)
    assert r.status_code == 404


def test_revoking_unknown_key_is_404(api):
    tenant_id, _ = api.tenant()
    r = api.http.delete(f"/api/admin/tenants/{tenant_id}/keys/key_nope", headers=api.admin)
    assert r.status_code == 404
    assert r.json["error"]["code"] == "api_key_not_found"


def test_revoking_a_key_of_another_tenant_is_404(api):
    a, _ = api.tenant("a")
    b, b_headers = api.tenant("b")
    b_key = api.http.get(f"/api/admin/tenants/{b}", headers=api.admin).json["key_ids"][0]
    r = api.http.delete(f"/api/admin/tenants/{a}/keys/{b_key}", headers=api.admin)
    assert r.status_code == 404
    assert api.http.get("/api/containers", headers=b_headers).status_code == 200


def test_revoking_twice_is_404_the_second_time(api):
    tenant_id, _ = api.tenant()
    key_id = api.http.get(f"/api/admin/tenants/{tenant_id}", headers=api.admin).json["key_ids"][0]
    path = f"/api/admin/tenants/{tenant_id}/keys/{key_id}"
    assert api.http.delete(path, headers=api.admin).status_code == 204
    assert api.http.delete(path, headers=api.admin).status_code == 404


def test_key_quota_is_429(api, monkeypatch):
    import control.store

    monkeypatch.setattr(control.store, "MAX_API_KEYS_PER_TENANT", 2)
    tenant_id, _ = api.tenant()
    assert api.http.post(f"/api/admin/tenants/{tenant_id}/keys", headers=api.admin).status_code == 201
    r = api.http.post(f"/api/admin/tenants/{tenant_id}/keys", headers=api.admin)
    assert r.status_code == 429
    assert r.json["error"]["code"] == "api_key_quota"
