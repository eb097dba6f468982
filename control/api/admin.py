"""``/api/admin/*``: tenants, their API keys, and container registration (admin token only)."""

from __future__ import annotations

from flask import Blueprint, Response, request

from control import models
from control.api import runtime
from control.auth import require_admin
from control.models import view
from control.validation import json_body, parse, parse_patch
from shared.records import Tenant

bp = Blueprint("admin", __name__, url_prefix="/api/admin")
bp.before_request(require_admin)


@bp.post("/tenants")
def create_tenant() -> tuple[dict, int]:
    spec = parse(models.TenantCreate, json_body())
    tenant, api_key = runtime().store.create_tenant(spec.name)
    return view(models.TenantCreated, tenant, key_id=tenant.keys[0].key_id, api_key=api_key), 201


@bp.get("/proxies")
def list_proxies() -> dict:
    """The proxy replicas whose heartbeat is live (a stopped one is gone within its expiry)."""
    rt = runtime()
    return {"proxies": [view(models.Proxy, beat) for beat in rt.store.proxies(rt.clock())]}


@bp.get("/tenants")
def list_tenants() -> dict:
    return {"tenants": [_tenant(t) for t in runtime().store.list_tenants()]}


@bp.get("/tenants/<tenant_id>")
def get_tenant(tenant_id: str) -> dict:
    return _tenant(runtime().store.get_tenant(tenant_id))


@bp.post("/tenants/<tenant_id>/keys")
def create_key(tenant_id: str) -> tuple[dict, int]:
    parse(models.Empty, json_body(optional=True))
    entry, api_key = runtime().store.add_api_key(tenant_id)
    return view(models.ApiKeyCreated, entry, api_key=api_key), 201


@bp.delete("/tenants/<tenant_id>/keys/<key_id>")
def revoke_key(tenant_id: str, key_id: str) -> Response:
    runtime().store.revoke_api_key(tenant_id, key_id)
    return Response(status=204)


@bp.post("/containers")
def register_container() -> tuple[dict, int]:
    container = runtime().store.register_container(parse(models.ContainerCreate, json_body()))
    return view(models.Container, container), 201


@bp.get("/containers")
def list_containers() -> dict:
    tenant_id = request.args.get("tenant_id")
    return {"containers": [view(models.Container, c) for c in runtime().store.list_containers(tenant_id)]}


@bp.get("/containers/<container_id>")
def get_container(container_id: str) -> dict:
    return view(models.Container, runtime().store.get_container(container_id))


@bp.patch("/containers/<container_id>")
def update_container(container_id: str) -> dict:
    changes = parse_patch(models.ContainerPatch, json_body())
    return view(models.Container, runtime().store.update_container(container_id, changes))


@bp.delete("/containers/<container_id>")
def delete_container(container_id: str) -> Response:
    runtime().store.delete_container(container_id)
    return Response(status=204)


def _tenant(tenant: Tenant) -> dict:
    return view(models.Tenant, tenant, key_ids=[k.key_id for k in tenant.keys])
