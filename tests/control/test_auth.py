"""Authentication: admin token on /api/admin/*, tenant keys elsewhere, 401 vs 403, revocation."""

from __future__ import annotations

import pytest

from tests.control.conftest import ADMIN_TOKEN

ADMIN_ROUTES = [
    ("post", "/api/admin/tenants"),
    ("get", "/api/admin/tenants"),
    ("get", "/api/admin/tenants/ten_x"),
    ("post", "/api/admin/tenants/ten_x/keys"),
    ("delete", "/api/admin/tenants/ten_x/keys/key_x"),
    ("post", "/api/admin/containers"),
    ("get", "/api/admin/containers"),
    ("get", "/api/admin/containers/ctr_x"),
    ("patch", "/api/admin/containers/ctr_x"),
    ("delete", "/api/admin/containers/ctr_x"),
]
TENANT_ROUTES = [
    ("get", "/api/containers"),
    ("get", "/api/containers/ctr_x"),
    ("post", "/api/containers/ctr_x/services"),
    ("get", "/api/containers/ctr_x/services"),
    ("get", "/api/services/lnx_x"),
    ("patch", "/api/services/lnx_x"),
    ("delete", "/api/services/lnx_x"),
    ("post", "/api/services/lnx_x/rotate-token"),
    ("post", "/api/services/lnx_x/share-links"),
    ("get", "/api/services/lnx_x/share-links"),
    ("delete", "/api/services/lnx_x/share-links/shl_x"),
]
BAD_HEADERS = [
    {},
    {"Authorization": ""},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer "},
    {"Authorization": f"Basic {ADMIN_TOKEN}"},
    {"Authorization": ADMIN_TOKEN},
    {"Authorization": "Bearer not-a-known-token"},
    {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
    {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"},
    {"Authorization": "Bearer " + "x" * 5000},
]


def _call(api, method, path, headers):
    return getattr(api.http, method)(path, headers=headers, json={})


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES + TENANT_ROUTES)
@pytest.mark.parametrize("headers", BAD_HEADERS)
def test_missing_or_unknown_credentials_are_401(api, method, path, headers):
    r = _call(api, method, path, headers)
    assert r.status_code == 401
    assert r.json["error"]["code"] == "unauthorized"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_tenant_key_on_admin_route_is_403(api, method, path):
    _, headers = api.tenant()
    r = _call(api, method, path, headers)
    assert r.status_code == 403
    assert r.json["error"]["code"] == "forbidden"


@pytest.mark.parametrize(("method", "path"), TENANT_ROUTES)
def test_admin_token_on_tenant_route_is_403(api, method, path):
    r = _call(api, method, path, api.admin)
    assert r.status_code == 403
    assert r.json["error"]["code"] == "forbidden"


def test_bearer_scheme_is_case_insensitive(api):
    r = api.http.get("/api/admin/tenants", headers={"Authorization": f"bearer {ADMIN_TOKEN}"})
    assert r.status_code == 200


def test_admin_token_is_compared_in_constant_time(api, monkeypatch):
    import control.auth

    calls = []
    real = control.auth.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(control.auth.hmac, "compare_digest", spy)
    assert api.http.get("/api/admin/tenants", headers=api.admin).status_code == 200
    assert calls == [(ADMIN_TOKEN.encode(), ADMIN_TOKEN.encode())]


def test_openapi_needs_no_credentials(api):
    r = api.http.get("/api/openapi.json")
    assert r.status_code == 200
    assert r.json["openapi"].startswith("3.")


def test_revoked_key_is_refused_on_the_next_request(api):
    tenant_id, first = api.tenant()
    r = api.http.post(f"/api/admin/tenants/{tenant_id}/keys", headers=api.admin)
    assert r.status_code == 201
    second = api.bearer(r.json["api_key"])
    first_key_id = api.http.get(f"/api/admin/tenants/{tenant_id}", headers=api.admin).json["key_ids"][0]
    assert api.http.get("/api/containers", headers=first).status_code == 200

    r = api.http.delete(f"/api/admin/tenants/{tenant_id}/keys/{first_key_id}", headers=api.admin)
    assert r.status_code == 204
    assert r.data == b""

    r = api.http.get("/api/containers", headers=first)
    assert r.status_code == 401
    assert api.http.get("/api/containers", headers=second).status_code == 200


def test_revoked_key_cannot_reach_existing_services(api):
    tenant_id, headers = api.tenant()
    container = api.container(tenant_id)
    service = api.service(container["container_id"], headers)
    key_id = api.http.get(f"/api/admin/tenants/{tenant_id}", headers=api.admin).json["key_ids"][0]
    api.http.delete(f"/api/admin/tenants/{tenant_id}/keys/{key_id}", headers=api.admin)
    r = api.http.get(f"/api/services/{service['service_id']}", headers=headers)
    assert r.status_code == 401


def test_api_key_is_stored_only_as_a_digest(api, redis_client, key_prefix):
    _, headers = api.tenant()
    key = headers["Authorization"].split(" ", 1)[1]
    for name in redis_client.keys(key_prefix + "*"):
        kind = redis_client.type(name)
        if kind == b"string":
            assert key.encode() not in redis_client.get(name)
        assert key.encode() not in name
    feed = redis_client.xrange(key_prefix + "feed")
    assert all(key.encode() not in v for _, fields in feed for v in fields.values())
