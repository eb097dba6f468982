"""The control plane as operators run it: a real gunicorn process on a free port."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import requests

from deploy.redis_process import free_port
from deploy.stack import Process, http_status, stack_env, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
ADMIN = "e2e-admin-token"


def _env(**extra: str) -> dict[str, str]:
    return stack_env(PYTHONPATH=str(ROOT), **extra)


@pytest.fixture
def gunicorn(redis_server, key_prefix, tmp_path):
    port = free_port()
    proc = Process(
        "gunicorn",
        [GUNICORN, "-c", "deploy/gunicorn.conf.py", "control:create_app()"],
        env=_env(
            LINX_ADMIN_TOKEN=ADMIN,
            REDIS_URL=redis_server.url,
            LINX_KEY_PREFIX=key_prefix,
            LINX_CONTROL_LISTEN=f"127.0.0.1:{port}",
            LINX_CONTROL_WORKERS="2",
            BACKEND_DOMAIN="backend.example.test",
        ),
        log=tmp_path / "gunicorn.log",
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: http_status(base + "/api/openapi.json") == 200, 20, "gunicorn", procs=[proc])
        yield base, proc
    finally:
        proc.stop()


def test_publish_lifecycle_through_gunicorn(gunicorn):
    base, proc = gunicorn
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with requests.Session() as http:
        r = http.post(f"{base}/api/admin/tenants", json={"name": "acme"}, headers=admin)
        assert r.status_code == 201
        tenant = r.json()
        key = {"Authorization": f"Bearer {tenant['api_key']}"}

        r = http.post(
            f"{base}/api/admin/containers",
            json={
                "tenant_id": tenant["tenant_id"],
                "address": "10.1.2.3",
                "networking_enabled": True,
                "state": "running",
                "exec_ready": True,
                "network_ready": True,
            },
            headers=admin,
        )
        assert r.status_code == 201
        cid = r.json()["container_id"]

        r = http.post(
            f"{base}/api/containers/{cid}/services",
            json={"name": "amp", "target_port": 7001, "enable_websockets": True, "ttl_secs": 3600},
            headers=key,
        )
        assert r.status_code == 201
        service = r.json()
        sid = service["service_id"]
        assert service["public_url"].startswith(f"https://backend.example.test/linx/{sid}/?linx_token=")
        assert service["websocket_url"].startswith(f"wss://backend.example.test/linx/{sid}/")
        assert service["status"] == "pending"

        # Every worker sees the same state (the requests spread over both).
        for _ in range(6):
            r = http.get(f"{base}/api/services/{sid}", headers=key)
            assert r.status_code == 200
            assert r.json()["public_url"] == service["public_url"]

        assert http.delete(f"{base}/api/services/{sid}", headers=key).status_code == 204
        r = http.get(f"{base}/api/services/{sid}", headers=key)
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "service_not_found"

        r = http.put(f"{base}/api/services/{sid}", headers=key)
        assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
        r = http.post(
            f"{base}/api/admin/tenants",
            data=b"x" * (1024 * 1024 + 1),
            headers={**admin, "Content-Type": "application/json"},
        )
        assert r.status_code == 413

    text = proc.output()
    assert f"/api/services/{sid}" in text  # the access log goes to stdout
    assert tenant["api_key"] not in text  # and never carries credentials
    assert "linx_token" not in text


@pytest.mark.parametrize("with_config_file", [True, False])
def test_missing_admin_token_stops_gunicorn_with_a_boot_error(redis_server, with_config_file, tmp_path):
    port = free_port()
    args = [GUNICORN]
    if with_config_file:
        args += ["-c", "deploy/gunicorn.conf.py"]
    else:
        args += ["-b", f"127.0.0.1:{port}", "--workers", "2"]
    proc = Process(
        "gunicorn",
        [*args, "control:create_app()"],
        # HOME/XDG_RUNTIME_DIR: without our config file gunicorn 25.1+ opens a control socket
        # there; keep it out of the real home directory.
        env=_env(
            REDIS_URL=redis_server.url,
            LINX_CONTROL_LISTEN=f"127.0.0.1:{port}",
            HOME=str(tmp_path),
            XDG_RUNTIME_DIR=str(tmp_path),
        ),
        log=tmp_path / "gunicorn.log",
    )
    try:
        proc.proc.wait(20)
    finally:
        proc.stop()
    output = proc.output()
    assert proc.returncode != 0
    assert "LINX_ADMIN_TOKEN" in output
    # It stopped instead of respawning workers for ever.
    assert output.count("Booting worker") <= 2
