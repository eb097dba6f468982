"""``/api/containers``: a tenant's read-only view of its containers."""

from __future__ import annotations

from flask import Blueprint

from control.api import runtime
from control.auth import current_tenant, require_tenant

bp = Blueprint("containers", __name__, url_prefix="/api")
bp.before_request(require_tenant)


@bp.get("/containers")
def list_containers() -> dict:
    containers = runtime().store.tenant_containers(current_tenant())
    return {"containers": [c.public() for c in containers]}


@bp.get("/containers/<container_id>")
def get_container(container_id: str) -> dict:
    return runtime().store.tenant_container(current_tenant(), container_id).public()
