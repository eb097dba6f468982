"""``/api/admin/*``: tenants, their API keys, and container registration (admin token only)."""

from __future__ import annotations

from flask import Blueprint, Response, request

from control.api import runtime
from control.auth import require_admin
from control.validation import (
    json_body,
    parse_container_create,
    parse_container_patch,
    parse_empty,
    parse_tenant_create,
)

bp = Blueprint("admin", __name__, url_prefix="/api/admin")
bp.before_request(require_admin)


@bp.post("/tenants")
def create_tenant() -> tuple[dict, int]:
    name = parse_tenant_create(json_body())
    tenant, api_key = runtime().store.create_tenant(name)
    return {
        "tenant_id": tenant.tenant_id,
        "name": tenant.name,
        "created_at": tenant.created_at,
        "key_id": tenant.keys[0].key_id,
        "api_key": api_key,
    }, 201


@bp.get("/proxies")
def list_proxies() -> dict:
    """The proxy replicas whose heartbeat is live (a stopped one is gone within its expiry)."""
    rt = runtime()
    return {"proxies": rt.store.proxies(rt.clock())}


@bp.get("/tenants")
def list_tenants() -> dict:
    return {"tenants": [t.public() for t in runtime().store.list_tenants()]}


@bp.get("/tenants/<tenant_id>")
def get_tenant(tenant_id: str) -> dict:
    return runtime().store.get_tenant(tenant_id).public()


@bp.post("/tenants/<tenant_id>/keys")
def create_key(tenant_id: str) -> tuple[dict, int]:
    parse_empty(json_body(optional=True))
    entry, api_key = runtime().store.add_api_key(tenant_id)
    return {"key_id": entry.key_id, "api_key": api_key, "created_at": entry.created_at}, 201


@bp.delete("/tenants/<tenant_id>/keys/<key_id>")
def revoke_key(tenant_id: str, key_id: str) -> Response:
    runtime().store.revoke_api_key(tenant_id, key_id)
    return Response(status=204)


@bp.post("/containers")
def register_container() -> tuple[dict, int]:
    container = runtime().store.register_container(parse_container_create(json_body()))
    return container.public(), 201


@bp.get("/containers")
def list_containers() -> dict:
    tenant_id = request.args.get("tenant_id")
    return {"containers": [c.public() for c in runtime().store.list_containers(tenant_id)]}


@bp.get("/containers/<container_id>")
def get_container(container_id: str) -> dict:
    return runtime().store.get_container(container_id).public()


@bp.patch("/containers/<container_id>")
def update_container(container_id: str) -> dict:
    changes = parse_container_patch(json_body())
    return runtime().store.update_container(container_id, changes).public()


@bp.delete("/containers/<container_id>")
def delete_container(container_id: str) -> Response:
    runtime().store.delete_container(container_id)
    return Response(status=204)
