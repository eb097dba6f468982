"""The console (SPEC section 7): sessions, cookie scope, CSRF and Origin, identity, revocation."""

from __future__ import annotations

import html
import json
import re

from control.console import COOKIE
from shared.records import AUTH_MODES, CONTAINER_STATES, CORS_MODES, ROUTING_MODES

ORIGIN = {"Origin": "http://localhost"}


def _sign_in(api, credential: str):
    return api.http.post("/console/sign-in", data={"key": credential}, headers=ORIGIN)


def _csrf(api) -> str:
    page = api.http.get("/console/").get_data(as_text=True)
    return re.search(r'data-csrf="([^"]+)"', page).group(1)


def _tenant_session(api):
    tenant_id, headers = api.tenant("console")
    key = headers["Authorization"].split(" ", 1)[1]
    resp = _sign_in(api, key)
    assert resp.status_code == 303 and resp.headers["Location"] == "/console/"
    return tenant_id, key, resp


def test_sign_in_page_then_a_session_cookie_scoped_to_the_console(api):
    page = api.http.get("/console/")
    assert page.status_code == 200 and b'name="key"' in page.data and b"<label" in page.data
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    _, key, resp = _tenant_session(api)
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith(COOKIE + "=")
    attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "path", "samesite"} <= attrs
    assert "Path=/console/" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    assert key not in cookie
    home = api.http.get("/console/")
    assert b"console.js" in home.data and b'data-kind="tenant"' in home.data
    # the forms' choices come from shared.records, not from a list of the page's own
    choices = re.search(rb"data-choices='([^']*)'", home.data).group(1)
    assert json.loads(html.unescape(choices.decode())) == {
        "auth_mode": list(AUTH_MODES),
        "routing": list(ROUTING_MODES),
        "cors_preflight": list(CORS_MODES),
        "state": list(CONTAINER_STATES),
    }


def test_sessions_are_stored_by_digest_and_never_hold_the_key(api, redis_client, key_prefix):
    _, key, resp = _tenant_session(api)
    sid = resp.headers["Set-Cookie"].split(";")[0].split("=", 1)[1]
    keys = [k.decode() for k in redis_client.scan_iter(f"{key_prefix}console:*")]
    assert len(keys) == 1 and sid not in keys[0]
    stored = redis_client.get(keys[0]).decode()
    assert key not in stored and sid not in stored
    assert 0 < redis_client.ttl(keys[0]) <= 8 * 3600


def test_the_console_api_acts_as_the_tenant_with_the_apis_own_answers(api):
    tenant_id, _, _ = _tenant_session(api)
    mine = api.container(tenant_id)
    other_tenant, _ = api.tenant("other")
    theirs = api.container(other_tenant)
    listed = api.http.get("/console/api/containers")
    assert [c["container_id"] for c in listed.json["containers"]] == [mine["container_id"]]
    assert api.http.get(f"/console/api/containers/{theirs['container_id']}").status_code == 404
    assert api.http.get("/console/api/admin/tenants").status_code == 403
    csrf = _csrf(api)
    created = api.http.post(
        f"/console/api/containers/{mine['container_id']}/services",
        json={"name": "web", "target_port": 8080},
        headers={"X-CSRF-Token": csrf, **ORIGIN},
    )
    assert created.status_code == 201 and created.json["public_url"]
    bad = api.http.post(
        f"/console/api/containers/{mine['container_id']}/services",
        json={"name": "web2", "target_port": 0},
        headers={"X-CSRF-Token": csrf, **ORIGIN},
    )
    assert bad.status_code == 400 and bad.json["error"]["field"] == "target_port"


def test_state_changes_need_the_csrf_token_and_the_consoles_origin(api):
    tenant_id, _, _ = _tenant_session(api)
    ctr = api.container(tenant_id)
    path = f"/console/api/containers/{ctr['container_id']}/services"
    body = {"name": "web", "target_port": 8080}
    no_token = api.http.post(path, json=body, headers=ORIGIN)
    assert no_token.status_code == 403 and no_token.json["error"]["code"] == "csrf_failed"
    wrong = api.http.post(path, json=body, headers={"X-CSRF-Token": "nope", **ORIGIN})
    assert wrong.status_code == 403
    csrf = _csrf(api)
    evil = api.http.post(
        path, json=body, headers={"X-CSRF-Token": csrf, "Origin": "http://lnx-x.svc.example"}
    )
    assert evil.status_code == 403 and evil.json["error"]["code"] == "origin_mismatch"
    cross = api.http.post(path, json=body, headers={"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403
    assert api.http.get(f"/console/api/containers/{ctr['container_id']}/services").json["services"] == []
    signin = api.http.post("/console/sign-in", data={"key": "x"}, headers={"Origin": "http://evil.test"})
    assert signin.status_code == 403


def test_revoking_the_key_ends_its_sessions_at_once(api):
    tenant_id, key, _ = _tenant_session(api)
    assert api.http.get("/console/api/containers").status_code == 200
    key_id = api.http.get(f"/api/admin/tenants/{tenant_id}", headers=api.admin).json["key_ids"][0]
    assert (
        api.http.delete(f"/api/admin/tenants/{tenant_id}/keys/{key_id}", headers=api.admin).status_code == 204
    )
    gone = api.http.get("/console/api/containers")
    assert gone.status_code == 401 and gone.json["error"]["code"] == "signed_out"
    assert b'name="key"' in api.http.get("/console/").data  # back to the sign-in page


def test_sign_out_ends_the_session_and_clears_the_cookie(api):
    _, _, resp = _tenant_session(api)
    sid = resp.headers["Set-Cookie"].split(";")[0].split("=", 1)[1]
    csrf = _csrf(api)
    out = api.http.post("/console/sign-out", data={"csrf": csrf}, headers=ORIGIN)
    assert out.status_code == 303 and f"{COOKIE}=;" in out.headers["Set-Cookie"]
    api.http.set_cookie(COOKIE, sid, path="/console/")
    assert api.http.get("/console/api/containers").status_code == 401


def test_operator_session_with_the_admin_token(api):
    resp = _sign_in(api, "test-admin-token-0123456789")
    assert resp.status_code == 303
    assert b'data-kind="admin"' in api.http.get("/console/").data
    assert api.http.get("/console/api/admin/tenants").status_code == 200
    assert api.http.get("/console/api/admin/proxies").json == {"proxies": []}
    assert api.http.get("/console/api/containers").status_code == 403  # tenant routes: not the operator's


def test_unknown_key_is_refused(api):
    resp = _sign_in(api, "lxk_nope")
    assert (
        resp.status_code == 401
        and b"Unknown or revoked key" in resp.data
        and "Set-Cookie" not in resp.headers
    )


def test_console_assets_ship_with_the_package(api):
    for asset in ("console.js", "console.css"):
        resp = api.http.get(f"/console/static/{asset}")
        assert resp.status_code == 200 and resp.data
        resp.close()
