"""Published services: create, validation, list, get, delete, rotate-token, PATCH, isolation."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from shared import ids, tokens
from shared.records import MAX_TTL_SECS
from shared.schema import Schema

RECORD_FIELDS = {
    "service_id",
    "container_id",
    "name",
    "target_port",
    "protocol",
    "enable_websockets",
    "auth_mode",
    "routing",
    "cors_preflight",
    "strip_prefix",
    "public_url",
    "websocket_url",
    "status",
    "created_at",
    "updated_at",
    "expires_at",
}


def token_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["linx_token"][0]


def stored(schema: Schema, redis_client, service_id: str):
    return schema.get_service(redis_client, service_id)


def test_create_returns_201_and_the_seed_record(api, clock):
    tenant_id, headers = api.tenant()
    container = api.container(tenant_id)
    body = {
        "name": "amp",
        "target_port": 7001,
        "protocol": "http",
        "enable_websockets": True,
        "auth_mode": "service_token",
        "ttl_secs": 3600,
    }
    r = api.http.post(f"/api/containers/{container['container_id']}/services", json=body, headers=headers)
    assert r.status_code == 201
    rec = r.json
    assert set(rec) == RECORD_FIELDS
    assert ids.looks_like(ids.SERVICE, rec["service_id"])
    assert r.headers["Location"] == f"/api/services/{rec['service_id']}"
    assert rec["container_id"] == container["container_id"]
    assert {k: rec[k] for k in body if k != "ttl_secs"} == {k: v for k, v in body.items() if k != "ttl_secs"}
    assert rec["status"] == "pending"
    assert rec["created_at"] == rec["updated_at"] == int(clock.now)
    assert rec["expires_at"] == int(clock.now) + 3600
    assert rec["routing"] == "path" and rec["cors_preflight"] == "deny"
    assert "secret" not in r.get_data(as_text=True)


def test_create_defaults(api):
    headers, _, rec = api.setup()
    assert rec["protocol"] == "http"
    assert rec["enable_websockets"] is False
    assert rec["websocket_url"] is None
    assert rec["auth_mode"] == "service_token"
    assert rec["expires_at"] is None
    assert rec["routing"] == "path"
    assert rec["cors_preflight"] == "deny"


def test_token_in_public_url_verifies_for_this_service_only(api, schema, redis_client, clock):
    _, _, rec = api.setup(enable_websockets=True)
    token = token_of(rec["public_url"])
    assert token == token_of(rec["websocket_url"])
    assert len(token) <= tokens.MAX_TOKEN_LENGTH
    svc = stored(schema, redis_client, rec["service_id"])
    keys = svc.accepted_keys()
    assert tokens.verify(token, rec["service_id"], keys, clock.now).verdict is tokens.Verdict.VALID
    assert tokens.verify(token, "lnx_other", keys, clock.now).verdict is tokens.Verdict.INVALID


def test_public_mode_has_no_token(api):
    _, _, rec = api.setup(auth_mode="public", enable_websockets=True)
    assert "linx_token" not in rec["public_url"]
    assert "?" not in rec["public_url"] and "?" not in rec["websocket_url"]


@pytest.mark.parametrize("name", ["a", "amp", "a-b", "0", "9x", "a" * 63, "web-1-2"])
def test_valid_names(api, name):
    tenant_id, headers = api.tenant()
    c = api.container(tenant_id)
    assert api.service(c["container_id"], headers, name=name)["name"] == name


@pytest.mark.parametrize("port", [1, 80, 7001, 65535])
def test_valid_ports(api, port):
    tenant_id, headers = api.tenant()
    c = api.container(tenant_id)
    assert api.service(c["container_id"], headers, target_port=port)["target_port"] == port


@pytest.mark.parametrize("ttl", [1, 3600, MAX_TTL_SECS, None])
def test_valid_ttls(api, clock, ttl):
    tenant_id, headers = api.tenant()
    c = api.container(tenant_id)
    rec = api.service(c["container_id"], headers, ttl_secs=ttl)
    assert rec["expires_at"] == (None if ttl is None else int(clock.now) + ttl)


INVALID = [
    # name
    ("name", "", "invalid_field"),
    ("name", "A", "invalid_field"),
    ("name", "Amp", "invalid_field"),
    ("name", "-a", "invalid_field"),
    ("name", "a-", "invalid_field"),
    ("name", "a_b", "invalid_field"),
    ("name", "a.b", "invalid_field"),
    ("name", "a b", "invalid_field"),
    ("name", "amp\n", "invalid_field"),
    ("name", "é", "invalid_field"),
    ("name", "a" * 64, "invalid_field"),
    ("name", 5, "invalid_field"),
    ("name", None, "invalid_field"),
    # target_port
    ("target_port", 0, "invalid_field"),
    ("target_port", -1, "invalid_field"),
    ("target_port", 65536, "invalid_field"),
    ("target_port", "7001", "invalid_field"),
    ("target_port", 7001.0, "invalid_field"),
    ("target_port", 70.5, "invalid_field"),
    ("target_port", True, "invalid_field"),
    ("target_port", None, "invalid_field"),
    # protocol
    ("protocol", "https", "unsupported_protocol"),
    ("protocol", "HTTP", "unsupported_protocol"),
    ("protocol", "tcp", "unsupported_protocol"),
    ("protocol", "", "unsupported_protocol"),
    ("protocol", None, "unsupported_protocol"),
    ("protocol", 1, "unsupported_protocol"),
    # enable_websockets
    ("enable_websockets", "true", "invalid_field"),
    ("enable_websockets", 1, "invalid_field"),
    ("enable_websockets", None, "invalid_field"),
    # auth_mode
    ("auth_mode", "token", "invalid_field"),
    ("auth_mode", "PUBLIC", "invalid_field"),
    ("auth_mode", None, "invalid_field"),
    # ttl_secs
    ("ttl_secs", 0, "invalid_field"),
    ("ttl_secs", -5, "invalid_field"),
    ("ttl_secs", MAX_TTL_SECS + 1, "invalid_field"),
    ("ttl_secs", "60", "invalid_field"),
    ("ttl_secs", 1.5, "invalid_field"),
    ("ttl_secs", True, "invalid_field"),
    # routing, cors_preflight
    ("routing", "subdomain", "invalid_field"),
    ("routing", None, "invalid_field"),
    ("cors_preflight", "allow", "invalid_field"),
    ("cors_preflight", False, "invalid_field"),
    # unknown
    ("token", "x", "unknown_field"),
    ("service_id", "lnx_x", "unknown_field"),
    ("public_url", "x", "unknown_field"),
]


@pytest.mark.parametrize(("field", "value", "code"), INVALID)
def test_create_validation(api, field, value, code):
    tenant_id, headers = api.tenant()
    c = api.container(tenant_id)
    body = {"name": "amp", "target_port": 7001, field: value}
    r = api.http.post(f"/api/containers/{c['container_id']}/services", json=body, headers=headers)
    assert r.status_code == 400, r.json
    err = r.json["error"]
    assert err["code"] == code
    assert err["field"] == field
    assert field in err["message"]
    if field == "protocol":
        assert "only 'http' is supported" in err["message"]
    assert api.http.get(f"/api/containers/{c['container_id']}/services", headers=headers).json == {
        "services": []
    }


@pytest.mark.parametrize("missing", ["name", "target_port"])
def test_create_requires_name_and_port(api, missing):
    tenant_id, headers = api.tenant()
    c = api.container(tenant_id)
    body = {"name": "amp", "target_port": 7001}
    del body[missing]
    r = api.http.post(f"/api/containers/{c['container_id']}/services", json=body, headers=headers)
    assert r.status_code == 400
    assert r.json["error"] == {
        "code": "missing_field",
        "message": f"{missing}: required",
        "field": missing,
    }


def test_unknown_field_is_reported_before_other_errors(api):
    tenant_id, headers = api.tenant()
    c = api.container(tenant_id)
    r = api.http.post(
        f"/api/containers/{c['container_id']}/services",
        json={"target_port": "bad", "extra": 1},
        headers=headers,
    )
    assert r.json["error"]["field"] == "extra"


def test_name_is_unique_per_container(api):
    tenant_id, headers = api.tenant()
    c1 = api.container(tenant_id)
    c2 = api.container(tenant_id)
    api.service(c1["container_id"], headers, name="amp")
    r = api.http.post(
        f"/api/containers/{c1['container_id']}/services",
        json={"name": "amp", "target_port": 9000},
        headers=headers,
    )
    assert r.status_code == 409
    assert r.json["error"]["code"] == "name_conflict"
    # Another container may use the same name.
    assert api.service(c2["container_id"], headers, name="amp")["name"] == "amp"


def test_name_is_free_again_after_delete(api):
    headers, container, rec = api.setup()
    api.http.delete(f"/api/services/{rec['service_id']}", headers=headers)
    again = api.service(container["container_id"], headers)
    assert again["service_id"] != rec["service_id"]


def test_create_on_unknown_or_foreign_container_is_404(api):
    a, a_headers = api.tenant("a")
    b, _ = api.tenant("b")
    foreign = api.container(b)
    body = {"name": "amp", "target_port": 7001}
    r1 = api.http.post(f"/api/containers/{foreign['container_id']}/services", json=body, headers=a_headers)
    r2 = api.http.post("/api/containers/ctr_nothing/services", json=body, headers=a_headers)
    assert r1.status_code == r2.status_code == 404
    assert r1.json == r2.json == {"error": {"code": "container_not_found", "message": "container not found"}}


def test_networking_disabled_is_422(api):
    tenant_id, headers = api.tenant()
    c = api.container(tenant_id, networking_enabled=False)
    r = api.http.post(
        f"/api/containers/{c['container_id']}/services",
        json={"name": "amp", "target_port": 7001},
        headers=headers,
    )
    assert r.status_code == 422
    assert r.json["error"]["code"] == "networking_disabled"


@pytest.mark.parametrize(
    "fields",
    [
        {"state": "stopped"},
        {"state": "created", "exec_ready": False, "network_ready": False},
        {"state": "exited"},
        {"network_ready": False},
    ],
)
def test_stopped_or_unready_container_is_accepted_and_status_says_so(api, fields):
    tenant_id, headers = api.tenant()
    c = api.container(tenant_id, **fields)
    rec = api.service(c["container_id"], headers)
    assert rec["status"] == "target_unreachable"


def test_list_services_of_a_container(api):
    headers, container, first = api.setup()
    second = api.service(container["container_id"], headers, name="b", target_port=8000)
    r = api.http.get(f"/api/containers/{container['container_id']}/services", headers=headers)
    assert r.status_code == 200
    by_id = {s["service_id"]: s for s in r.json["services"]}
    assert by_id == {first["service_id"]: first, second["service_id"]: second}


def test_get_service(api):
    headers, _, rec = api.setup(enable_websockets=True, ttl_secs=60)
    r = api.http.get(f"/api/services/{rec['service_id']}", headers=headers)
    assert r.status_code == 200
    assert r.json == rec


def test_delete_then_second_delete_is_404(api):
    headers, _, rec = api.setup()
    path = f"/api/services/{rec['service_id']}"
    r = api.http.delete(path, headers=headers)
    assert r.status_code == 204 and r.data == b""
    assert api.http.get(path, headers=headers).status_code == 404
    r = api.http.delete(path, headers=headers)
    assert r.status_code == 404
    assert r.json["error"]["code"] == "service_not_found"


def test_rotate_token_invalidates_every_earlier_token(api, schema, redis_client, clock):
    headers, _, rec = api.setup(enable_websockets=True)
    sid = rec["service_id"]
    old = token_of(rec["public_url"])
    old_key = stored(schema, redis_client, sid).token_key
    clock.advance(5)
    r = api.http.post(f"/api/services/{sid}/rotate-token", headers=headers)
    assert r.status_code == 200
    new = token_of(r.json["public_url"])
    assert new != old
    assert token_of(r.json["websocket_url"]) == new
    assert r.json["updated_at"] == rec["updated_at"] + 5
    assert {k: v for k, v in r.json.items() if k not in ("public_url", "websocket_url", "updated_at")} == {
        k: v for k, v in rec.items() if k not in ("public_url", "websocket_url", "updated_at")
    }
    svc = stored(schema, redis_client, sid)
    assert svc.token_key.kid != old_key.kid and svc.token_key.secret != old_key.secret
    keys = svc.accepted_keys()
    assert tokens.verify(new, sid, keys, clock.now).verdict is tokens.Verdict.VALID
    assert tokens.verify(old, sid, keys, clock.now).verdict is tokens.Verdict.INVALID
    # GET shows the new token too.
    assert api.http.get(f"/api/services/{sid}", headers=headers).json["public_url"] == r.json["public_url"]


def test_rotate_token_accepts_empty_object_and_rejects_fields(api):
    headers, _, rec = api.setup()
    path = f"/api/services/{rec['service_id']}/rotate-token"
    assert api.http.post(path, json={}, headers=headers).status_code == 200
    r = api.http.post(path, json={"kid": "x"}, headers=headers)
    assert r.status_code == 400 and r.json["error"]["field"] == "kid"


# ---------------------------------------------------------------------------------- PATCH
def test_patch_ttl_counts_from_now(api, clock):
    headers, _, rec = api.setup(ttl_secs=60)
    clock.advance(30)
    r = api.http.patch(f"/api/services/{rec['service_id']}", json={"ttl_secs": 600}, headers=headers)
    assert r.status_code == 200
    assert r.json["expires_at"] == int(clock.now) + 600
    assert r.json["updated_at"] == int(clock.now)
    assert r.json["public_url"] == rec["public_url"]  # extending keeps the URLs working


def test_patch_ttl_null_removes_expiry(api, schema, redis_client):
    headers, _, rec = api.setup(ttl_secs=60)
    r = api.http.patch(f"/api/services/{rec['service_id']}", json={"ttl_secs": None}, headers=headers)
    assert r.status_code == 200
    assert r.json["expires_at"] is None
    assert schema.expired_before(redis_client, float("inf")) == []


def test_patch_auth_mode_and_cors(api):
    headers, _, rec = api.setup()
    path = f"/api/services/{rec['service_id']}"
    r = api.http.patch(path, json={"auth_mode": "public", "cors_preflight": "passthrough"}, headers=headers)
    assert r.status_code == 200
    assert r.json["auth_mode"] == "public"
    assert r.json["cors_preflight"] == "passthrough"
    assert "linx_token" not in r.json["public_url"]
    r = api.http.patch(path, json={"auth_mode": "service_token"}, headers=headers)
    assert "linx_token=" in r.json["public_url"]
    assert r.json["cors_preflight"] == "passthrough"


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({}, "empty_patch", None),
        ({"ttl_secs": 0}, "invalid_field", "ttl_secs"),
        ({"ttl_secs": "1"}, "invalid_field", "ttl_secs"),
        ({"auth_mode": "open"}, "invalid_field", "auth_mode"),
        ({"cors_preflight": None}, "invalid_field", "cors_preflight"),
        ({"name": "other"}, "field_not_patchable", "name"),
        ({"target_port": 80}, "field_not_patchable", "target_port"),
        ({"routing": "host"}, "field_not_patchable", "routing"),
        ({"enable_websockets": True}, "field_not_patchable", "enable_websockets"),
        ({"expires_at": 5}, "field_not_patchable", "expires_at"),
        ({"whatever": 1}, "unknown_field", "whatever"),
    ],
)
def test_patch_validation(api, body, code, field):
    headers, _, rec = api.setup()
    r = api.http.patch(f"/api/services/{rec['service_id']}", json=body, headers=headers)
    assert r.status_code == 400
    assert r.json["error"]["code"] == code
    assert r.json["error"].get("field") == field
    assert api.http.get(f"/api/services/{rec['service_id']}", headers=headers).json == rec


# ------------------------------------------------------------------------------ isolation
def _foreign_service(api):
    """Tenant A's headers, and a service of tenant B."""
    _, a_headers = api.tenant("a")
    _, _, b_service = api.setup()
    return a_headers, b_service


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("get", "", None),
        ("delete", "", None),
        ("patch", "", {"ttl_secs": 5}),
        ("post", "/rotate-token", None),
        ("post", "/share-links", {"ttl_secs": 60}),
        ("get", "/share-links", None),
        ("delete", "/share-links/shl_x", None),
    ],
)
def test_another_tenants_service_is_an_ordinary_404(api, method, suffix, body):
    a_headers, foreign = _foreign_service(api)
    kwargs = {"headers": a_headers, **({"json": body} if body is not None else {})}
    r_foreign = getattr(api.http, method)(f"/api/services/{foreign['service_id']}{suffix}", **kwargs)
    r_missing = getattr(api.http, method)(f"/api/services/lnx_nonexistent{suffix}", **kwargs)
    assert r_foreign.status_code == r_missing.status_code == 404
    assert r_foreign.json == r_missing.json
    assert r_foreign.json["error"]["code"] == "service_not_found"


def test_foreign_service_is_untouched_by_attempts(api):
    _, a_headers = api.tenant("a")
    b_headers, _, foreign = api.setup()
    sid = foreign["service_id"]
    api.http.delete(f"/api/services/{sid}", headers=a_headers)
    api.http.post(f"/api/services/{sid}/rotate-token", headers=a_headers)
    api.http.patch(f"/api/services/{sid}", json={"auth_mode": "public"}, headers=a_headers)
    assert api.http.get(f"/api/services/{sid}", headers=b_headers).json == foreign


def test_list_services_of_foreign_container_is_404(api):
    _, a_headers = api.tenant("a")
    _, b_container, _ = api.setup()
    r = api.http.get(f"/api/containers/{b_container['container_id']}/services", headers=a_headers)
    assert r.status_code == 404
    assert r.json["error"]["code"] == "container_not_found"


@pytest.mark.parametrize("bad_id", ["a:b", "x" * 200, "lnx_%2F..", "..", "a b"])
def test_odd_ids_in_paths_are_plain_404s(api, bad_id):
    _, headers = api.tenant()
    for path in (
        f"/api/services/{bad_id}",
        f"/api/containers/{bad_id}",
        f"/api/containers/{bad_id}/services",
        f"/api/services/{bad_id}/share-links",
    ):
        r = api.http.get(path, headers=headers)
        assert r.status_code == 404
        assert "error" in r.json


# ------------------------------------------------------------------ strip_prefix (SPEC 7)
def test_strip_prefix_defaults_to_true_and_can_be_turned_off(api):
    headers, container, rec = api.setup()
    assert rec["strip_prefix"] is True
    kept = api.service(container["container_id"], headers, name="kept", strip_prefix=False)
    assert kept["strip_prefix"] is False
    got = api.http.get(f"/api/services/{kept['service_id']}", headers=headers)
    assert got.json["strip_prefix"] is False


def test_strip_prefix_must_be_a_boolean(api):
    headers, container, _ = api.setup()
    r = api.http.post(
        f"/api/containers/{container['container_id']}/services",
        json={"name": "x", "target_port": 80, "strip_prefix": "no"},
        headers=headers,
    )
    assert r.status_code == 400 and "strip_prefix" in r.json["error"]["message"]


def test_strip_prefix_false_with_host_routing_is_422(make_api):
    api = make_api(service_domain="svc.example.test")
    headers, container, _ = api.setup()
    r = api.http.post(
        f"/api/containers/{container['container_id']}/services",
        json={"name": "h", "target_port": 80, "routing": "host", "strip_prefix": False},
        headers=headers,
    )
    assert r.status_code == 422 and r.json["error"]["code"] == "strip_prefix_needs_path_routing"
    host = api.service(container["container_id"], headers, name="h2", routing="host")
    assert host["strip_prefix"] is True  # true is harmless there: nothing to strip
    r = api.http.patch(f"/api/services/{host['service_id']}", json={"strip_prefix": False}, headers=headers)
    assert r.status_code == 422 and r.json["error"]["code"] == "strip_prefix_needs_path_routing"


def test_patch_strip_prefix_writes_one_change_event(api, feed):
    headers, _, rec = api.setup()
    feed()
    r = api.http.patch(f"/api/services/{rec['service_id']}", json={"strip_prefix": False}, headers=headers)
    assert r.status_code == 200 and r.json["strip_prefix"] is False
    assert [e.id for e in feed()] == [rec["service_id"]]
