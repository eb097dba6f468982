"""Small builders of records and routes for the data plane's table tests."""

from __future__ import annotations

import ipaddress

from dataplane.routes import Route, RouteBuilder
from shared import ids, schema
from shared.records import Container, Service, ShareLink
from shared.tokens import SigningKey, sign

ALLOWED = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.0.0.0/8"))


def container(**changes) -> Container:
    base = dict(
        container_id=ids.new_id(ids.CONTAINER),
        tenant_id="ten_a",
        name=None,
        address="127.0.0.1",
        networking_enabled=True,
        state="running",
        exec_ready=True,
        network_ready=True,
        created_at=1,
        updated_at=1,
    )
    base.update(changes)
    return Container(**base)


def service(ctr: Container | None = None, **changes) -> Service:
    base = dict(
        service_id=ids.new_id(ids.SERVICE),
        tenant_id="ten_a",
        container_id=(ctr.container_id if ctr else ids.new_id(ids.CONTAINER)),
        name="amp",
        target_port=7001,
        protocol="http",
        enable_websockets=True,
        auth_mode="service_token",
        created_at=1,
        updated_at=1,
        expires_at=None,
        token_key=SigningKey(ids.new_key_id(), ids.new_secret()),
    )
    base.update(changes)
    return Service(**base)


def link(expires_at: int | None = None) -> ShareLink:
    return ShareLink(
        ids.new_id(ids.SHARE_LINK), "demo", SigningKey(ids.new_key_id(), ids.new_secret(), expires_at), 1
    )


def route(svc: Service | None = None, ctr: Container | None = None, **svc_changes) -> Route:
    ctr = ctr or container()
    svc = svc or service(ctr, **svc_changes)
    return Route(svc, ctr, ALLOWED)


def token(route: Route) -> str:
    """A valid token for ``route`` under its own key."""
    return sign(route.service_id, route.token_key)


def snapshot(*records: Container | Service) -> schema.Snapshot:
    """A snapshot of ``records`` as the proxy's sync thread hands it over (services as routes)."""
    containers = {r.container_id: r for r in records if isinstance(r, Container)}
    build = RouteBuilder(ALLOWED)
    services = {r.service_id: build(r, containers) for r in records if isinstance(r, Service)}
    return schema.Snapshot(schema.FeedCursor("e", "0-0", 0), containers, services)
