"""ControlConfig.from_env: defaults, parsing, and errors that name the variable."""

from __future__ import annotations

import pytest

from control import create_app
from control.config import ControlConfig
from shared.config import ConfigError

BASE = {"LINX_ADMIN_TOKEN": "t0ken"}


def test_defaults():
    c = ControlConfig.from_env(BASE)
    assert c.admin_token == "t0ken"
    assert c.app_base_url is None and c.backend_domain is None
    assert c.expired_retention_secs == 86400
    assert c.service_domain is None
    assert c.default_routing == "path"
    assert c.max_body_bytes == 1024 * 1024
    assert c.redis.url == "redis://127.0.0.1:6379/0"
    assert c.redis.key_prefix == "linx:"


def test_every_variable_is_read():
    c = ControlConfig.from_env(
        {
            **BASE,
            "APP_BASE_URL": "https://App.Example:8443/",
            "BACKEND_DOMAIN": "backend.example",
            "LINX_EXPIRED_RETENTION_SECS": "60",
            "LINX_SERVICE_DOMAIN": "Svc.Example.Test.",
            "LINX_DEFAULT_ROUTING": "host",
            "REDIS_URL": "redis://10.0.0.5:6380/2",
            "LINX_KEY_PREFIX": "acme:",
        }
    )
    assert c.app_base_url == "https://App.Example:8443"
    assert c.backend_domain == "backend.example"
    assert c.expired_retention_secs == 60
    assert c.service_domain == "svc.example.test"
    assert c.default_routing == "host"
    assert c.redis.url == "redis://10.0.0.5:6380/2"
    assert c.redis.key_prefix == "acme:"


def test_config_is_frozen():
    c = ControlConfig.from_env(BASE)
    with pytest.raises(AttributeError):
        c.admin_token = "x"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "LINX_ADMIN_TOKEN"),
        ({"LINX_ADMIN_TOKEN": "   "}, "LINX_ADMIN_TOKEN"),
        ({**BASE, "APP_BASE_URL": "ftp://x"}, "APP_BASE_URL"),
        ({**BASE, "APP_BASE_URL": "example.com"}, "APP_BASE_URL"),
        ({**BASE, "APP_BASE_URL": "https://x.example/path"}, "APP_BASE_URL"),
        ({**BASE, "APP_BASE_URL": "https://x.example?q=1"}, "APP_BASE_URL"),
        ({**BASE, "APP_BASE_URL": "https://x.example:99999"}, "APP_BASE_URL"),
        ({**BASE, "APP_BASE_URL": "https://"}, "APP_BASE_URL"),
        ({**BASE, "BACKEND_DOMAIN": "https://b.example"}, "BACKEND_DOMAIN"),
        ({**BASE, "BACKEND_DOMAIN": "b.example/x"}, "BACKEND_DOMAIN"),
        ({**BASE, "LINX_EXPIRED_RETENTION_SECS": "soon"}, "LINX_EXPIRED_RETENTION_SECS"),
        ({**BASE, "LINX_EXPIRED_RETENTION_SECS": "-1"}, "LINX_EXPIRED_RETENTION_SECS"),
        ({**BASE, "LINX_SERVICE_DOMAIN": "bad_domain!"}, "LINX_SERVICE_DOMAIN"),
        ({**BASE, "LINX_SERVICE_DOMAIN": "-x.example"}, "LINX_SERVICE_DOMAIN"),
        ({**BASE, "LINX_DEFAULT_ROUTING": "subdomain"}, "LINX_DEFAULT_ROUTING"),
        ({**BASE, "LINX_DEFAULT_ROUTING": "host"}, "LINX_DEFAULT_ROUTING"),
        ({**BASE, "REDIS_URL": "http://x"}, "REDIS_URL"),
        ({**BASE, "LINX_REDIS_CLUSTER": "1", "LINX_KEY_PREFIX": "linx:"}, "LINX_KEY_PREFIX"),
    ],
)
def test_invalid_config_names_the_variable(env, variable):
    with pytest.raises(ConfigError) as info:
        ControlConfig.from_env(env)
    assert info.value.variable == variable
    assert variable in str(info.value)


def test_create_app_without_admin_token_raises_naming_it(monkeypatch):
    monkeypatch.delenv("LINX_ADMIN_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="LINX_ADMIN_TOKEN"):
        create_app()


def test_create_app_reads_the_environment(monkeypatch, redis_server, key_prefix):
    monkeypatch.setenv("LINX_ADMIN_TOKEN", "from-env")
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("LINX_KEY_PREFIX", key_prefix)
    app = create_app()
    try:
        r = app.test_client().get("/api/admin/tenants", headers={"Authorization": "Bearer from-env"})
        assert r.status_code == 200
    finally:
        app.extensions["linx"].store.client.close()


def test_direct_construction_validates_too():
    with pytest.raises(ConfigError, match="LINX_ADMIN_TOKEN"):
        ControlConfig(admin_token="")
    with pytest.raises(ConfigError, match="LINX_DEFAULT_ROUTING"):
        ControlConfig(admin_token="x", default_routing="host")


def test_importing_control_does_nothing(monkeypatch):
    """No app, client or thread is built at import time."""
    import importlib
    import sys
    import threading

    monkeypatch.delenv("LINX_ADMIN_TOKEN", raising=False)
    before = threading.active_count()
    for name in [m for m in sys.modules if m == "control" or m.startswith("control.")]:
        monkeypatch.delitem(sys.modules, name)
    importlib.import_module("control")
    importlib.import_module("control.api.services")
    assert threading.active_count() == before
