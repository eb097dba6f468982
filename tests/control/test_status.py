"""The status field: pure decision table, then through the API with proxy-written readiness."""

from __future__ import annotations

import pytest

from control.store import readiness_target, service_status
from shared.records import Container, Service
from shared.schema import Readiness
from shared.tokens import SigningKey

NOW = 1_000


def _container(**changes) -> Container:
    fields = {
        "container_id": "ctr_a",
        "tenant_id": "ten_a",
        "name": None,
        "address": "10.0.0.1",
        "networking_enabled": True,
        "state": "running",
        "exec_ready": True,
        "network_ready": True,
        "created_at": 0,
        "updated_at": 0,
    }
    fields.update(changes)
    return Container(**fields)


def _service(**changes) -> Service:
    fields = {
        "service_id": "lnx_a",
        "tenant_id": "ten_a",
        "container_id": "ctr_a",
        "name": "amp",
        "target_port": 7001,
        "protocol": "http",
        "enable_websockets": False,
        "auth_mode": "service_token",
        "created_at": 0,
        "updated_at": 0,
        "expires_at": None,
        "token_key": SigningKey("k", b"s" * 32),
    }
    fields.update(changes)
    return Service(**fields)


READY = Readiness("ready", "10.0.0.1:7001", NOW)
REFUSED = Readiness("target_unreachable", "10.0.0.1:7001", NOW)


@pytest.mark.parametrize(
    ("service", "container", "readiness", "expected"),
    [
        (_service(), _container(), None, "pending"),
        (_service(), _container(), READY, "ready"),
        (_service(), _container(), REFUSED, "target_unreachable"),
        # a probe of an older address or port says nothing about the current target
        (_service(), _container(address="10.0.0.2"), READY, "pending"),
        (_service(target_port=7002), _container(), READY, "pending"),
        (_service(), _container(), Readiness("weird", "10.0.0.1:7001", NOW), "pending"),
        # container not usable
        (_service(), _container(state="stopped"), READY, "target_unreachable"),
        (_service(), _container(state="created"), None, "target_unreachable"),
        (_service(), _container(state="exited"), None, "target_unreachable"),
        (_service(), _container(network_ready=False), READY, "target_unreachable"),
        (_service(), _container(networking_enabled=False), READY, "target_unreachable"),
        # exec_ready does not matter for HTTP
        (_service(), _container(exec_ready=False), READY, "ready"),
        # expired wins over everything, from expires_at on
        (_service(expires_at=NOW), _container(), READY, "expired"),
        (_service(expires_at=NOW - 1), None, None, "expired"),
        (_service(expires_at=NOW + 1), _container(), READY, "ready"),
        # inconsistent records
        (_service(), None, READY, "error"),
        (_service(), _container(tenant_id="ten_b"), READY, "error"),
    ],
)
def test_status_table(service, container, readiness, expected):
    assert service_status(service, container, readiness, NOW) == expected


def test_host_routed_service_without_domain_is_error():
    svc = _service(routing="host")
    assert service_status(svc, _container(), READY, NOW, host_routing_available=False) == "error"
    assert service_status(svc, _container(), READY, NOW, host_routing_available=True) == "ready"


@pytest.mark.parametrize(
    ("address", "port", "expected"),
    [("10.0.0.1", 80, "10.0.0.1:80"), ("::1", 8080, "[::1]:8080"), ("fd00::5", 1, "[fd00::5]:1")],
)
def test_readiness_target(address, port, expected):
    assert readiness_target(address, port) == expected


# ------------------------------------------------------------------------- through the API
def _get(api, headers, sid):
    return api.http.get(f"/api/services/{sid}", headers=headers).json["status"]


def test_status_follows_readiness_written_by_proxies(api, schema, redis_client, clock):
    headers, container, rec = api.setup()
    sid = rec["service_id"]
    assert rec["status"] == "pending"
    target = f"{container['address']}:7001"
    schema.write_readiness(redis_client, sid, Readiness("ready", target, int(clock.now)))
    assert _get(api, headers, sid) == "ready"
    schema.write_readiness(redis_client, sid, Readiness("target_unreachable", target, int(clock.now)))
    assert _get(api, headers, sid) == "target_unreachable"
    # the list view agrees
    listed = api.http.get(f"/api/containers/{container['container_id']}/services", headers=headers).json[
        "services"
    ]
    assert listed[0]["status"] == "target_unreachable"


def test_status_follows_the_container(api, schema, redis_client, clock):
    headers, container, rec = api.setup()
    sid, cid = rec["service_id"], container["container_id"]
    schema.write_readiness(redis_client, sid, Readiness("ready", "10.1.2.3:7001", int(clock.now)))
    assert _get(api, headers, sid) == "ready"
    api.http.patch(f"/api/admin/containers/{cid}", json={"state": "stopped"}, headers=api.admin)
    assert _get(api, headers, sid) == "target_unreachable"
    api.http.patch(f"/api/admin/containers/{cid}", json={"state": "running"}, headers=api.admin)
    assert _get(api, headers, sid) == "ready"
    # a new address: the old probe no longer counts
    api.http.patch(f"/api/admin/containers/{cid}", json={"address": "10.9.9.9"}, headers=api.admin)
    assert _get(api, headers, sid) == "pending"


def test_ipv6_target(api, schema, redis_client, clock):
    tenant_id, headers = api.tenant()
    c = api.container(tenant_id, address="fd00::7")
    rec = api.service(c["container_id"], headers)
    schema.write_readiness(
        redis_client, rec["service_id"], Readiness("ready", "[fd00::7]:7001", int(clock.now))
    )
    assert _get(api, headers, rec["service_id"]) == "ready"


def test_inconsistent_record_is_error(api, schema, redis_client):
    headers, container, rec = api.setup()
    # The container record vanishes without its cascade (an inconsistent store).
    redis_client.delete(schema.keys.container(container["container_id"]))
    assert _get(api, headers, rec["service_id"]) == "error"
