"""The control plane's JSON logs: one access line per request, a request id, no secrets."""

from __future__ import annotations

import io
import json
import logging
import secrets
import sys

import pytest
import requests

from control import logs
from deploy.redis_process import free_port
from deploy.stack import Process, http_status, stack_env
from tests.helpers.procs import ADMIN_TOKEN, wait_for


def _access(caplog) -> list[dict]:
    return [r.linx for r in caplog.records if r.name == logs.ACCESS_LOGGER]


# -------------------------------------------------------------------------- in process
def test_request_id_is_generated_or_taken_from_a_valid_header(api):
    generated = api.http.get("/api/openapi.json")
    assert len(generated.headers["X-Request-Id"]) == 32
    assert generated.headers["X-Request-Id"] != api.http.get("/api/openapi.json").headers["X-Request-Id"]

    given = "req-1.2_3:abc/def@ghi+=="
    assert api.http.get("/api/openapi.json", headers={"X-Request-Id": given}).headers["X-Request-Id"] == given

    for bad in ("", "has space", "x" * 129, 'quote"d', "semi;colon", "ünï"):
        echoed = api.http.get("/api/openapi.json", headers={"X-Request-Id": bad}).headers["X-Request-Id"]
        assert echoed != bad and len(echoed) == 32


def test_one_access_record_per_request_with_the_documented_fields(api, caplog):
    tenant_id, headers = api.tenant()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="control"):
        ok = api.http.get(
            "/api/containers?linx_token=secret-in-query", headers={**headers, "X-Request-Id": "r-42"}
        )
        missing = api.http.get("/api/services/lnx_nope", headers=headers)
        unauth = api.http.get("/api/containers")
    assert ok.status_code == 200 and missing.status_code == 404 and unauth.status_code == 401
    first, second, third = _access(caplog)
    assert first["event"] == "request"
    assert first["request_id"] == "r-42"
    assert (first["method"], first["path"], first["status"]) == ("GET", "/api/containers", 200)
    assert first["tenant_id"] == tenant_id
    assert isinstance(first["duration_ms"], float) and first["duration_ms"] >= 0
    assert "error" not in first
    assert (second["status"], second["error"], second["tenant_id"]) == (404, "service_not_found", tenant_id)
    assert (third["status"], third["error"], third["tenant_id"]) == (401, "unauthorized", None)
    assert second["request_id"] == missing.headers["X-Request-Id"]


def test_admin_routes_log_the_tenant_in_their_path(api, caplog):
    tenant_id, _ = api.tenant()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="control"):
        api.http.post(f"/api/admin/tenants/{tenant_id}/keys", headers=api.admin)
    (line,) = _access(caplog)
    assert (line["status"], line["tenant_id"]) == (201, tenant_id)


def test_json_formatter_lines():
    formatter = logs.JsonFormatter()
    record = logging.LogRecord("control.errors", logging.WARNING, __file__, 1, "redis %s", ("down",), None)
    line = json.loads(formatter.format(record))
    assert (
        line["level"] == "warning" and line["logger"] == "control.errors" and line["message"] == "redis down"
    )
    assert line["time"].endswith("Z") and "T" in line["time"]
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("control", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = json.loads(formatter.format(record))
    assert "ValueError: boom" in line["exc"]
    record = logging.LogRecord("control.access", logging.INFO, __file__, 1, "GET / 200", (), None)
    record.linx = {"event": "request", "status": 200}
    line = json.loads(formatter.format(record))
    assert line["event"] == "request" and line["status"] == 200 and "message" not in line


def test_configure_leaves_configured_logging_alone():
    # pytest has put its handlers on the root logger: a host that configures logging keeps it.
    assert logging.getLogger().handlers
    assert logs.configure(io.StringIO()) is False
    assert not logging.getLogger("control").handlers


# ------------------------------------------------------------------------- under gunicorn
@pytest.mark.e2e
def test_gunicorn_log_is_json_with_request_ids_and_never_holds_a_secret(redis_server, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "control.log"
    env = stack_env(
        redis_server.url,
        f"logs{secrets.token_hex(3)}:",
        LINX_ADMIN_TOKEN=ADMIN_TOKEN,
        LINX_CONTROL_LISTEN=f"127.0.0.1:{port}",
        LINX_CONTROL_WORKERS="2",
        APP_BASE_URL="https://linx.example.test",
    )
    canary_key = "lxk_canarykey" + secrets.token_hex(8)
    canary_token = "v1.canarytoken." + secrets.token_hex(8)
    proc = Process(
        "gunicorn", [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py"], env=env, log=log_path
    )
    try:
        wait_for(lambda: http_status(base + "/api/openapi.json") == 200, 20, "gunicorn", procs=[proc])
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        with requests.Session() as http:
            tenant = http.post(f"{base}/api/admin/tenants", json={"name": "logs"}, headers=admin).json()
            key = {"Authorization": f"Bearer {tenant['api_key']}"}
            ctr = http.post(
                f"{base}/api/admin/containers",
                json={
                    "tenant_id": tenant["tenant_id"],
                    "address": "10.0.0.1",
                    "networking_enabled": True,
                    "state": "running",
                    "exec_ready": True,
                    "network_ready": True,
                },
                headers=admin,
            ).json()
            svc = http.post(
                f"{base}/api/containers/{ctr['container_id']}/services",
                json={"name": "amp", "target_port": 7001},
                headers={**key, "X-Request-Id": "publish-1"},
            )
            assert svc.status_code == 201 and svc.headers["X-Request-Id"] == "publish-1"
            real_token = svc.json()["public_url"].split("linx_token=", 1)[1]
            sid = svc.json()["service_id"]
            # Secrets where a careless log would pick them up: the Authorization header, the
            # query string, token headers and cookies, and a body.
            refused = http.get(
                f"{base}/api/containers?linx_token={canary_token}",
                headers={
                    "Authorization": f"Bearer {canary_key}",
                    "X-Linx-Token": canary_token,
                    "Cookie": f"linx_{sid}={canary_token}",
                    "X-Request-Id": "canary-1",
                },
            )
            assert refused.status_code == 401
            http.post(
                f"{base}/api/admin/tenants",
                data=json.dumps({"name": canary_key, "api_key": canary_token}),
                headers={**admin, "Content-Type": "application/json"},
            )
            http.get(f"{base}/api/services/{sid}?linx_token={real_token}", headers=key)
    finally:
        proc.stop(15)
    text = log_path.read_text()
    for secret in (canary_key, canary_token, tenant["api_key"], real_token, ADMIN_TOKEN):
        assert secret not in text
    assert "linx_token" not in text

    # Every line is JSON: the app's and gunicorn's own (deploy/gunicorn.conf.py).
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert {"gunicorn.error", "control.access"} <= {line["logger"] for line in lines}
    access = [line for line in lines if line.get("event") == "request"]
    by_id = {line["request_id"]: line for line in access}
    assert by_id["publish-1"]["path"] == f"/api/containers/{ctr['container_id']}/services"
    assert by_id["publish-1"]["tenant_id"] == tenant["tenant_id"] and by_id["publish-1"]["status"] == 201
    assert by_id["canary-1"] == {
        **by_id["canary-1"],
        "method": "GET",
        "path": "/api/containers",
        "status": 401,
        "error": "unauthorized",
        "tenant_id": None,
    }
    paths = [line["path"] for line in access]
    assert f"/api/services/{sid}" in paths
    # One line per request: gunicorn's own access log is off, so nothing repeats them.
    assert sum(f"/api/services/{sid}" in line for line in text.splitlines()) == 1
    assert all(line["time"].endswith("Z") and line["level"] == "info" for line in access)
