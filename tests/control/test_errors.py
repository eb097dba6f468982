"""Every failure is {"error": {"code", "message"}} with the right status: routing errors,
body errors (400/413/415), 500 without internals, and 503 when Redis is unavailable."""

from __future__ import annotations

import io
import logging
import re

import pytest

from control import create_app
from control.config import ControlConfig
from deploy.redis_process import RedisProcess, free_port
from shared.config import RedisSettings
from tests.control.conftest import ADMIN_TOKEN, Api, close_app

SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")


def _is_error(r, status, code=None):
    assert r.status_code == status, (r.status_code, r.get_data(as_text=True))
    assert r.mimetype == "application/json"
    err = r.json["error"]
    assert SNAKE.match(err["code"]) and isinstance(err["message"], str) and err["message"]
    if code is not None:
        assert err["code"] == code
    return err


@pytest.mark.parametrize(
    "path", ["/", "/api", "/api/", "/api/nothing", "/api/admin", "/api/services", "/linx/lnx_x/"]
)
def test_unknown_route_is_json_404(api, path):
    _is_error(api.http.get(path, headers=api.admin), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("put", "/api/admin/tenants"),
        ("delete", "/api/admin/tenants"),
        ("post", "/api/services/lnx_x"),
        ("put", "/api/services/lnx_x"),
        ("get", "/api/services/lnx_x/rotate-token"),
        ("post", "/api/openapi.json"),
        ("patch", "/api/containers/ctr_x"),
    ],
)
def test_wrong_method_is_json_405_with_allow(api, method, path):
    r = getattr(api.http, method)(path, headers=api.admin)
    _is_error(r, 405, "method_not_allowed")
    assert r.headers["Allow"]


BODY_ROUTES = [
    ("post", "/api/admin/tenants", "admin"),
    ("post", "/api/admin/containers", "admin"),
    ("patch", "/api/admin/containers/{cid}", "admin"),
    ("post", "/api/containers/{cid}/services", "tenant"),
    ("patch", "/api/services/{sid}", "tenant"),
    ("post", "/api/services/{sid}/share-links", "tenant"),
]


@pytest.fixture
def routes(api):
    headers, container, service = api.setup()
    who = {"admin": api.admin, "tenant": headers}

    def expand(method, template, role):
        path = template.format(
            cid=container["container_id"],
            sid=service["service_id"],
            tid=container["tenant_id"],
        )
        return getattr(api.http, method), path, who[role]

    return expand


@pytest.mark.parametrize(("method", "template", "role"), BODY_ROUTES)
@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", None]
)
def test_non_json_body_is_415(routes, method, template, role, content_type):
    call, path, headers = routes(method, template, role)
    r = call(path, data=b'{"name": "x"}', headers=headers, content_type=content_type)
    _is_error(r, 415, "unsupported_media_type")


@pytest.mark.parametrize(("method", "template", "role"), BODY_ROUTES)
@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"{'name': 'x'}",
        b'{"name": "x",}',
        b"\xff\xfe{}",
        b'{"ttl_secs": NaN}',
        b'{"ttl_secs": Infinity}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_malformed_json_is_400(routes, method, template, role, raw):
    call, path, headers = routes(method, template, role)
    r = call(path, data=raw, headers=headers, content_type="application/json")
    _is_error(r, 400, "invalid_json")


REQUIRED_BODY_ROUTES = [r for r in BODY_ROUTES if not r[1].endswith("share-links")]
OPTIONAL_BODY_ROUTES = [
    ("post", "/api/admin/tenants/{tid}/keys", "admin"),
    ("post", "/api/services/{sid}/rotate-token", "tenant"),
    ("post", "/api/services/{sid}/share-links", "tenant"),
]


@pytest.mark.parametrize(("method", "template", "role"), REQUIRED_BODY_ROUTES)
@pytest.mark.parametrize("content_type", ["application/json", None])
def test_missing_body_is_refused(routes, method, template, role, content_type):
    call, path, headers = routes(method, template, role)
    r = call(path, data=b"", headers=headers, content_type=content_type)
    _is_error(r, 400 if content_type else 415)


@pytest.mark.parametrize(("method", "template", "role"), OPTIONAL_BODY_ROUTES)
@pytest.mark.parametrize("content_type", ["application/json", None, "text/plain"])
def test_optional_bodies_may_be_empty(routes, method, template, role, content_type):
    call, path, headers = routes(method, template, role)
    r = call(path, data=b"", headers=headers, content_type=content_type)
    assert r.status_code in (200, 201), r.json


@pytest.mark.parametrize(("method", "template", "role"), OPTIONAL_BODY_ROUTES)
def test_optional_bodies_must_still_be_json(routes, method, template, role):
    call, path, headers = routes(method, template, role)
    _is_error(call(path, data=b"{}", headers=headers, content_type="text/plain"), 415)
    _is_error(call(path, data=b"{", headers=headers, content_type="application/json"), 400)
    _is_error(call(path, data=b"[]", headers=headers, content_type="application/json"), 400)


@pytest.mark.parametrize(("method", "template", "role"), BODY_ROUTES)
@pytest.mark.parametrize("raw", [b"[]", b'"x"', b"1", b"null", b"true", b'[{"name": "x"}]'])
def test_json_that_is_not_an_object_is_400(routes, method, template, role, raw):
    call, path, headers = routes(method, template, role)
    r = call(path, data=raw, headers=headers, content_type="application/json")
    _is_error(r, 400, "invalid_body")


def test_json_content_type_variants_are_accepted(api):
    for ctype in ("application/json", "application/json; charset=utf-8", "application/vnd.linx+json"):
        r = api.http.post("/api/admin/tenants", data=b'{"name": "x"}', headers=api.admin, content_type=ctype)
        assert r.status_code == 201, ctype


@pytest.mark.parametrize(("method", "template", "role"), BODY_ROUTES)
def test_body_over_1_mib_is_413(routes, method, template, role):
    call, path, headers = routes(method, template, role)
    body = b'{"name": "' + b"x" * (1024 * 1024) + b'"}'
    r = call(path, data=body, headers=headers, content_type="application/json")
    _is_error(r, 413, "payload_too_large")


def test_413_comes_before_authentication(api):
    body = b"x" * (1024 * 1024 + 1)
    r = api.http.post("/api/admin/tenants", data=body, content_type="application/json")
    _is_error(r, 413, "payload_too_large")


def test_body_of_exactly_1_mib_is_not_413(api):
    prefix, suffix = b'{"name": "', b'"}'
    filler = b" " * (1024 * 1024 - len(prefix) - len(suffix) - 1)
    body = b'{"name": "x"' + filler + b"}"
    assert len(body) <= 1024 * 1024
    r = api.http.post("/api/admin/tenants", data=body, headers=api.admin, content_type="application/json")
    assert r.status_code == 201


def test_chunked_body_over_1_mib_is_413(api):
    """No Content-Length (chunked, as gunicorn presents it): the limit applies while reading."""
    body = b'{"name": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    r = api.http.post(
        "/api/admin/tenants",
        input_stream=io.BytesIO(body),
        headers={**api.admin, "Transfer-Encoding": "chunked"},
        content_type="application/json",
        environ_overrides={"wsgi.input_terminated": True},
    )
    _is_error(r, 413, "payload_too_large")


def test_small_chunked_body_is_read(api):
    r = api.http.post(
        "/api/admin/tenants",
        input_stream=io.BytesIO(b'{"name": "chunky"}'),
        headers={**api.admin, "Transfer-Encoding": "chunked"},
        content_type="application/json",
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert r.status_code == 201
    assert r.json["name"] == "chunky"


def test_unexpected_exception_is_500_without_internals(api, monkeypatch, caplog):
    store = api.app.extensions["linx"].store

    def boom():
        raise KeyError("secret-internal-detail /srv/linx/store.py")

    monkeypatch.setattr(store, "list_tenants", boom)
    with caplog.at_level(logging.ERROR):
        r = api.http.get("/api/admin/tenants", headers=api.admin)
    err = _is_error(r, 500, "internal_error")
    assert "secret-internal-detail" not in r.get_data(as_text=True)
    assert "Traceback" not in r.get_data(as_text=True)
    assert err["message"] == "internal error"
    assert "secret-internal-detail" in caplog.text  # the log has the trace
    assert any(rec.exc_info for rec in caplog.records)


# --------------------------------------------------------------------- Redis unavailable
@pytest.fixture
def api_on(key_prefix):
    """An ``Api`` on the Redis at a given URL; closed after the test."""
    made: list[Api] = []

    def make(url: str) -> Api:
        config = ControlConfig(admin_token=ADMIN_TOKEN, redis=RedisSettings(url=url, key_prefix=key_prefix))
        made.append(Api(create_app(config)))
        return made[-1]

    yield make
    for api in made:
        close_app(api.app)


def test_no_redis_is_503_on_every_kind_of_route(api_on):
    api = api_on(f"redis://127.0.0.1:{free_port()}/0")
    for r in (
        api.http.post("/api/admin/tenants", json={"name": "a"}, headers=api.admin),
        api.http.get("/api/admin/tenants", headers=api.admin),
        api.http.get("/api/containers", headers=api.bearer("lxk_whatever")),
        api.http.get("/api/services/lnx_x", headers=api.bearer("lxk_whatever")),
    ):
        err = _is_error(r, 503, "redis_unavailable")
        assert "127.0.0.1" not in err["message"]
        assert r.headers["Retry-After"] == "1"
    # Documents that do not need Redis still work.
    assert api.http.get("/api/openapi.json").status_code == 200


def test_redis_lost_and_back(api_on):
    server = RedisProcess().start()
    try:
        api = api_on(server.url)
        headers, container, rec = api.setup()
        server.stop()
        r = api.http.post(
            f"/api/containers/{container['container_id']}/services",
            json={"name": "during", "target_port": 1},
            headers=headers,
        )
        _is_error(r, 503, "redis_unavailable")
        _is_error(api.http.delete(f"/api/services/{rec['service_id']}", headers=headers), 503)
        _is_error(api.http.get(f"/api/services/{rec['service_id']}", headers=headers), 503)
        server.start()
        # Redis keeps no data here (no persistence): the records are gone, and so is the
        # tenant; what matters is that nothing claimed success while Redis was away.
        r = api.http.post("/api/admin/tenants", json={"name": "back"}, headers=api.admin)
        assert r.status_code == 201
    finally:
        server.stop()
