"""deploy/redis.conf and deploy/gunicorn.conf.py say what their comments promise."""

from __future__ import annotations

import runpy
import subprocess
import time
from pathlib import Path

import pytest
import redis

from deploy.redis_process import find_server_binary, free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def production_redis(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [find_server_binary(), str(ROOT / "deploy/redis.conf"), "--port", str(port), "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    client = redis.Redis(port=port)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, "the server refused deploy/redis.conf"
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "no PING answer"
                time.sleep(0.05)
        yield client
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.e2e
def test_redis_conf_is_durable_and_never_evicts(production_redis):
    def get(name):
        return production_redis.config_get(name)[name]

    assert get("appendonly") == "yes"
    assert get("appendfsync") == "everysec"
    assert get("maxmemory-policy") == "noeviction"
    assert get("protected-mode") == "yes"
    assert "127.0.0.1" in get("bind")
    with pytest.raises(redis.ResponseError):
        production_redis.flushall()


def test_gunicorn_conf_defaults(monkeypatch):
    for name in (
        "LINX_CONTROL_LISTEN",
        "LINX_CONTROL_WORKERS",
        "WEB_CONCURRENCY",
        "LINX_CONTROL_TIMEOUT_SECS",
    ):
        monkeypatch.delenv(name, raising=False)
    conf = runpy.run_path(str(ROOT / "deploy/gunicorn.conf.py"))
    assert conf["wsgi_app"] == "control:create_app()"
    assert conf["bind"] == ["127.0.0.1:8000"]
    assert conf["workers"] == 2
    assert conf["accesslog"] is None  # the app logs each request as JSON (control/logs.py)
    assert conf["errorlog"] == "-"
    assert conf["graceful_timeout"] > 0
    assert conf["preload_app"] is False


def test_gunicorn_conf_reads_the_environment(monkeypatch):
    monkeypatch.setenv("LINX_CONTROL_LISTEN", "0.0.0.0:9000, [::1]:9001")
    monkeypatch.setenv("LINX_CONTROL_WORKERS", "5")
    conf = runpy.run_path(str(ROOT / "deploy/gunicorn.conf.py"))
    assert conf["bind"] == ["0.0.0.0:9000", "[::1]:9001"]
    assert conf["workers"] == 5
