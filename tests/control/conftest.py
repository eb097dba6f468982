"""Fixtures for the control plane: the Flask app on the session's real Redis, a fake clock,
and a small client wrapper that knows the admin token and how to make tenants/containers."""

from __future__ import annotations

import dataclasses

import pytest

from control import create_app
from control.config import ControlConfig
from shared.schema import FeedCursor

ADMIN_TOKEN = "test-admin-token-0123456789"
T0 = 1_800_000_000


class FakeClock:
    """Unix seconds that move only when a test says so."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Api:
    """The test client plus the calls most tests need. Responses are returned untouched."""

    def __init__(self, app) -> None:
        self.app = app
        self.http = app.test_client()
        self.admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    @staticmethod
    def bearer(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def tenant(self, name: str = "acme") -> tuple[str, dict[str, str]]:
        """A new tenant: its id and the headers carrying its API key."""
        r = self.http.post("/api/admin/tenants", json={"name": name}, headers=self.admin)
        assert r.status_code == 201, r.json
        return r.json["tenant_id"], self.bearer(r.json["api_key"])

    def container(self, tenant_id: str, **fields) -> dict:
        body = {
            "tenant_id": tenant_id,
            "address": "10.1.2.3",
            "networking_enabled": True,
            "state": "running",
            "exec_ready": True,
            "network_ready": True,
            **fields,
        }
        r = self.http.post("/api/admin/containers", json=body, headers=self.admin)
        assert r.status_code == 201, r.json
        return r.json

    def service(self, container_id: str, headers: dict, **fields) -> dict:
        body = {"name": "amp", "target_port": 7001, **fields}
        r = self.http.post(f"/api/containers/{container_id}/services", json=body, headers=headers)
        assert r.status_code == 201, r.json
        return r.json

    def setup(self, **service_fields) -> tuple[dict, dict, dict]:
        """Tenant + running container + one service: (tenant headers, container, service)."""
        tenant_id, headers = self.tenant()
        container = self.container(tenant_id)
        return headers, container, self.service(container["container_id"], headers, **service_fields)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def config(redis_settings) -> ControlConfig:
    # The background sweeper runs on the real clock; these tests move a fake one (a test of
    # the thread turns it back on).
    return ControlConfig(admin_token=ADMIN_TOKEN, redis=redis_settings, background_sweep=False)


def close_app(app) -> None:
    """Close the app's Redis connections (else they leak as ResourceWarnings)."""
    app.extensions["linx"].sweeper.stop()
    app.extensions["linx"].store.client.close()


@pytest.fixture
def make_api(clock, config):
    """Build an ``Api`` on an app with ``config`` changed by keyword arguments."""
    made: list[Api] = []

    def make(**changes) -> Api:
        made.append(Api(create_app(dataclasses.replace(config, **changes), clock=clock)))
        return made[-1]

    yield make
    for api in made:
        close_app(api.app)


@pytest.fixture
def api(make_api) -> Api:
    return make_api()


@pytest.fixture
def feed(schema, redis_client):
    """Read the change feed from the moment the fixture is created: ``feed()`` returns the
    events appended since the previous call."""
    state: dict[str, FeedCursor] = {"cursor": schema.snapshot(redis_client).cursor}

    def read():
        events, state["cursor"] = schema.read_feed(redis_client, state["cursor"])
        return events

    return read
