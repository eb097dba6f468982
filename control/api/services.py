"""Published services of a tenant's containers, and their share links."""

from __future__ import annotations

from flask import Blueprint, Response

from control import models
from control.api import base_url, runtime
from control.auth import current_tenant, require_tenant
from control.models import view
from control.store import ShareLinkView
from control.urls import service_base, websocket_form, with_token
from control.validation import json_body, parse, parse_patch, parse_service_create
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
    return view(
        models.Service,
        service,
        public_url=public_url,
        websocket_url=websocket_form(public_url) if service.enable_websockets else None,
        status=status,
    )


def _one(service: Service) -> dict:
    return service_record(service, runtime().store.statuses([service])[service.service_id])


def _link(model: type[models.ShareLink], link: ShareLink, last_used_at: int | None, **extra: str) -> dict:
    return view(model, link, expires_at=link.key.expires_at, last_used_at=last_used_at, **extra)


def _link_listing(link_view: ShareLinkView) -> dict:
    return _link(models.ShareLink, link_view.link, link_view.last_used_at)


def _link_created(service: Service, link: ShareLink) -> dict:
    url = with_token(_plain_url(service), sign(service.service_id, link.key))
    return _link(models.ShareLinkCreated, link, None, url=url)


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
    changes = parse_patch(models.ServicePatch, json_body())
    return _one(runtime().store.update_service(current_tenant(), service_id, changes))


@bp.delete("/services/<service_id>")
def delete_service(service_id: str) -> Response:
    runtime().store.delete_service(current_tenant(), service_id)
    return Response(status=204)


@bp.post("/services/<service_id>/rotate-token")
def rotate_token(service_id: str) -> dict:
    parse(models.Empty, json_body(optional=True))
    return _one(runtime().store.rotate_token(current_tenant(), service_id))


@bp.post("/services/<service_id>/share-links")
def create_share_link(service_id: str) -> tuple[dict, int]:
    spec = parse(models.ShareLinkCreate, json_body(optional=True))
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
