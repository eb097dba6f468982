"""``/api/containers``: a tenant's read-only view of its containers."""

from __future__ import annotations

from flask import Blueprint

from control import models
from control.api import runtime
from control.auth import current_tenant, require_tenant
from control.models import view

bp = Blueprint("containers", __name__, url_prefix="/api")
bp.before_request(require_tenant)


@bp.get("/containers")
def list_containers() -> dict:
    containers = runtime().store.tenant_containers(current_tenant())
    return {"containers": [view(models.Container, c) for c in containers]}


@bp.get("/containers/<container_id>")
def get_container(container_id: str) -> dict:
    return view(models.Container, runtime().store.tenant_container(current_tenant(), container_id))
