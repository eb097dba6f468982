"""Published services of a tenant's containers, and their share links."""

from __future__ import annotations

from flask import Blueprint, Response

from control.api import base_url, runtime
from control.auth import current_tenant, require_tenant
from control.store import ShareLinkView
from control.urls import service_base, websocket_form, with_token
from control.validation import (
    json_body,
    parse_empty,
    parse_service_create,
    parse_service_patch,
    parse_share_link_create,
)
from shared.records import Service, ShareLink
from shared.tokens import sign

bp = Blueprint("services", __name__, url_prefix="/api")
bp.before_request(require_tenant)


# ------------------------------------------------------------------------- serialisation
def _plain_url(service: Service) -> str:
    config = runtime().config
    return service_base(
        base_url(), service.service_id, service.routing, config.service_domain, config.app_base_url
    )


def service_record(service: Service, status: str) -> dict:
    """The API's view of a service (SPEC section 3 record; never a secret)."""
    token = service.token if service.auth_mode == "service_token" else None
    public_url = with_token(_plain_url(service), token)
    return {
        "service_id": service.service_id,
        "container_id": service.container_id,
        "name": service.name,
        "target_port": service.target_port,
        "protocol": service.protocol,
        "enable_websockets": service.enable_websockets,
        "auth_mode": service.auth_mode,
        "routing": service.routing,
        "cors_preflight": service.cors_preflight,
        "strip_prefix": service.strip_prefix,
        "public_url": public_url,
        "websocket_url": websocket_form(public_url) if service.enable_websockets else None,
        "status": status,
        "created_at": service.created_at,
        "updated_at": service.updated_at,
        "expires_at": service.expires_at,
    }


def _one(service: Service) -> dict:
    return service_record(service, runtime().store.statuses([service])[service.service_id])


def _link_listing(view: ShareLinkView) -> dict:
    link = view.link
    return {
        "link_id": link.link_id,
        "label": link.label,
        "expires_at": link.key.expires_at,
        "created_at": link.created_at,
        "last_used_at": view.last_used_at,
    }


def _link_created(service: Service, link: ShareLink) -> dict:
    return {
        **_link_listing(ShareLinkView(link, None)),
        "url": with_token(_plain_url(service), sign(service.service_id, link.key)),
    }


# --------------------------------------------------------------------------------- views
@bp.post("/containers/<container_id>/services")
def create_service(container_id: str) -> tuple[dict, int, dict]:
    spec = parse_service_create(json_body(), runtime().config.default_routing)
    service = runtime().store.create_service(current_tenant(), container_id, spec)
    return _one(service), 201, {"Location": f"/api/services/{service.service_id}"}


@bp.get("/containers/<container_id>/services")
def list_services(container_id: str) -> dict:
    store = runtime().store
    services = store.list_services(current_tenant(), container_id)
    statuses = store.statuses(services)
    return {"services": [service_record(s, statuses[s.service_id]) for s in services]}


@bp.get("/services/<service_id>")
def get_service(service_id: str) -> dict:
    return _one(runtime().store.get_service(current_tenant(), service_id))


@bp.patch("/services/<service_id>")
def update_service(service_id: str) -> dict:
    changes = parse_service_patch(json_body())
    return _one(runtime().store.update_service(current_tenant(), service_id, changes))


@bp.delete("/services/<service_id>")
def delete_service(service_id: str) -> Response:
    runtime().store.delete_service(current_tenant(), service_id)
    return Response(status=204)


@bp.post("/services/<service_id>/rotate-token")
def rotate_token(service_id: str) -> dict:
    parse_empty(json_body(optional=True))
    return _one(runtime().store.rotate_token(current_tenant(), service_id))


@bp.post("/services/<service_id>/share-links")
def create_share_link(service_id: str) -> tuple[dict, int]:
    spec = parse_share_link_create(json_body(optional=True))
    service, link = runtime().store.create_share_link(current_tenant(), service_id, spec)
    return _link_created(service, link), 201


@bp.get("/services/<service_id>/share-links")
def list_share_links(service_id: str) -> dict:
    views = runtime().store.list_share_links(current_tenant(), service_id)
    return {"share_links": [_link_listing(v) for v in views]}


@bp.delete("/services/<service_id>/share-links/<link_id>")
def delete_share_link(service_id: str, link_id: str) -> Response:
    runtime().store.delete_share_link(current_tenant(), service_id, link_id)
    return Response(status=204)
