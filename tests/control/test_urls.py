"""URL derivation, each level of SPEC section 3's order, and host routing (section 6)."""

from __future__ import annotations

import pytest

from control.urls import request_base, service_base, websocket_form, with_token
from shared.ids import service_label

SID = "lnx_abcdefghijklmnopqrstuvwxyz"


@pytest.mark.parametrize(
    ("app_base", "backend", "headers", "scheme", "host", "expected"),
    [
        # 1. APP_BASE_URL wins over everything
        (
            "https://app.example:8443",
            "b.example",
            {"X-Forwarded-Host": "f.example"},
            "http",
            "h",
            "https://app.example:8443",
        ),
        ("http://app.example/", None, {}, "http", "h", "http://app.example"),
        # 2. BACKEND_DOMAIN, always https
        (
            None,
            "b.example",
            {"X-Forwarded-Host": "f.example", "X-Forwarded-Proto": "http"},
            "http",
            "h",
            "https://b.example",
        ),
        # 3. forwarded headers
        (
            None,
            None,
            {"X-Forwarded-Host": "f.example", "X-Forwarded-Proto": "https"},
            "http",
            "h",
            "https://f.example",
        ),
        (None, None, {"X-Forwarded-Host": "f.example:444"}, "http", "h", "http://f.example:444"),
        (None, None, {"X-Forwarded-Proto": "https"}, "http", "h.example", "https://h.example"),
        (
            None,
            None,
            {"X-Forwarded-Host": "a.example, b.example", "X-Forwarded-Proto": "https, http"},
            "http",
            "h",
            "https://a.example",
        ),
        # malformed forwarded values are ignored
        (
            None,
            None,
            {"X-Forwarded-Host": "evil.example/path?x", "X-Forwarded-Proto": "javascript"},
            "http",
            "h.example",
            "http://h.example",
        ),
        # 4. the request's own scheme and Host
        (None, None, {}, "http", "h.example:8000", "http://h.example:8000"),
        (None, None, {}, "https", "[::1]:8000", "https://[::1]:8000"),
    ],
)
def test_request_base_order(app_base, backend, headers, scheme, host, expected):
    assert request_base(app_base, backend, headers, scheme, host) == expected


@pytest.mark.parametrize(
    ("routing", "domain", "app_base", "expected"),
    [
        ("path", None, None, f"https://base.example/linx/{SID}/"),
        ("path", "svc.example", None, f"https://base.example/linx/{SID}/"),
        ("host", "svc.example", None, f"https://{service_label(SID)}.svc.example/"),
        ("host", "svc.example", "http://app.example:8080", f"http://{service_label(SID)}.svc.example:8080/"),
        ("host", "svc.example", "https://app.example", f"https://{service_label(SID)}.svc.example/"),
    ],
)
def test_service_base(routing, domain, app_base, expected):
    assert service_base("https://base.example", SID, routing, domain, app_base) == expected


def test_with_token_and_websocket_form():
    assert with_token("https://x/linx/a/", "v1.k.s") == "https://x/linx/a/?linx_token=v1.k.s"
    assert with_token("https://x/linx/a/", None) == "https://x/linx/a/"
    assert websocket_form("https://x/a/?q=1") == "wss://x/a/?q=1"
    assert websocket_form("http://x/a/") == "ws://x/a/"


# ------------------------------------------------------------------------- through the API
def _urls(api, headers=None, **service_fields):
    tenant_id, tenant_headers = api.tenant()
    c = api.container(tenant_id)
    body = {"name": "amp", "target_port": 7001, "enable_websockets": True, **service_fields}
    r = api.http.post(
        f"/api/containers/{c['container_id']}/services",
        json=body,
        headers={**tenant_headers, **(headers or {})},
    )
    assert r.status_code == 201, r.json
    rec = r.json
    return rec, rec["public_url"], rec["websocket_url"]


def test_app_base_url_level(make_api):
    api = make_api(app_base_url="https://app.example:8443", backend_domain="backend.example")
    rec, public, ws = _urls(api, {"X-Forwarded-Host": "fwd.example"})
    sid = rec["service_id"]
    assert public.startswith(f"https://app.example:8443/linx/{sid}/?linx_token=")
    assert ws.startswith(f"wss://app.example:8443/linx/{sid}/?linx_token=")


def test_backend_domain_level(make_api):
    api = make_api(backend_domain="backend.example.test")
    rec, public, ws = _urls(api, {"X-Forwarded-Host": "fwd.example", "X-Forwarded-Proto": "http"})
    sid = rec["service_id"]
    assert public.startswith(f"https://backend.example.test/linx/{sid}/?linx_token=")
    assert ws.startswith(f"wss://backend.example.test/linx/{sid}/?linx_token=")


def test_forwarded_headers_level(api):
    rec, public, ws = _urls(api, {"X-Forwarded-Host": "fwd.example", "X-Forwarded-Proto": "https"})
    assert public.startswith(f"https://fwd.example/linx/{rec['service_id']}/?linx_token=")
    assert ws.startswith("wss://fwd.example/")


def test_request_host_level(api):
    rec, public, ws = _urls(api, {"Host": "myhost.example:8000"})
    assert public.startswith(f"http://myhost.example:8000/linx/{rec['service_id']}/?linx_token=")
    assert ws.startswith("ws://myhost.example:8000/")


def test_urls_are_derived_per_request_not_stored(api):
    tenant_id, headers = api.tenant()
    c = api.container(tenant_id)
    rec = api.service(c["container_id"], headers)
    r = api.http.get(
        f"/api/services/{rec['service_id']}", headers={**headers, "X-Forwarded-Host": "other.example"}
    )
    assert r.json["public_url"].startswith("http://other.example/")


def test_host_routing(make_api):
    api = make_api(service_domain="svc.example.test", app_base_url="https://app.example.test")
    rec, public, ws = _urls(api, routing="host")
    label = service_label(rec["service_id"])
    assert label.startswith("lnx-")
    assert rec["routing"] == "host"
    assert public.startswith(f"https://{label}.svc.example.test/?linx_token=")
    assert ws.startswith(f"wss://{label}.svc.example.test/?linx_token=")
    assert "/linx/" not in public


def test_host_routing_takes_scheme_and_port_from_app_base_url(make_api):
    api = make_api(service_domain="svc.example.test", app_base_url="http://127.0.0.1:8080")
    rec, public, ws = _urls(api, routing="host", auth_mode="public")
    label = service_label(rec["service_id"])
    assert public == f"http://{label}.svc.example.test:8080/"
    assert ws == f"ws://{label}.svc.example.test:8080/"


def test_host_routing_is_the_default_when_configured(make_api):
    api = make_api(service_domain="svc.example.test", default_routing="host")
    rec, public, _ = _urls(api)
    assert rec["routing"] == "host"
    assert public.startswith(f"https://{service_label(rec['service_id'])}.svc.example.test/")
    rec, public, _ = _urls(api, routing="path")
    assert "/linx/" in public


def test_host_routing_without_domain_is_422(api):
    tenant_id, headers = api.tenant()
    c = api.container(tenant_id)
    r = api.http.post(
        f"/api/containers/{c['container_id']}/services",
        json={"name": "amp", "target_port": 7001, "routing": "host"},
        headers=headers,
    )
    assert r.status_code == 422
    assert r.json["error"]["code"] == "host_routing_unavailable"
