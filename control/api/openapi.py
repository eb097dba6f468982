"""``GET /api/openapi.json``: the OpenAPI 3 description of every route, served without auth.

The paths and responses are written here, next to the views they describe; the schemas of
bodies and records are derived from ``control.models``, the declarations the server validates
and answers with, so the two cannot drift. Tests check that the document is valid OpenAPI,
that it lists exactly the app's routes, and (with schemathesis) that the server's answers
match it.
"""

from __future__ import annotations

import functools
from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from control import models

bp = Blueprint("openapi", __name__, url_prefix="/api")

_REF = "#/components/schemas/"
_STR = {"type": "string"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _schemas() -> dict[str, Any]:
    """``components.schemas``: every model of ``control.models.COMPONENTS``, by class name.

    Request bodies are described as they are validated, answers as they are serialised.
    """
    pairs = [
        (model, "validation" if issubclass(model, models.Body) else "serialization")
        for model in models.COMPONENTS
    ]
    _, top = models_json_schema(pairs, ref_template=_REF + "{model}")
    defs = top["$defs"]
    names = [model.__name__ for model in models.COMPONENTS]
    if set(defs) != set(names):
        raise RuntimeError(
            f"models.COMPONENTS and the schemas they use differ: {sorted(set(defs) ^ set(names))}"
        )
    return {name: _openapi(defs[name]) for name in names}


_NULL = {"type": "null"}


def _openapi(node: Any) -> Any:
    """A pydantic JSON Schema (2020-12) node in OpenAPI 3.0's dialect: ``X | None`` becomes
    ``nullable``, ``const`` a one-value ``enum``; titles (made from field names) are dropped."""
    if isinstance(node, list):
        return [_openapi(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _openapi(v) for k, v in node.items() if k not in ("title", "anyOf", "const")}
    if "const" in node:
        out["enum"] = [node["const"]]
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o != _NULL]
        if len(options) == len(node["anyOf"]):
            out["anyOf"] = _openapi(options)
        else:
            (only,) = options  # a union with null is one type or null, never more here
            inner = _openapi(only)
            # A $ref takes no siblings in OpenAPI 3.0: a nullable reference is an allOf of one.
            out = {**({"allOf": [inner]} if "$ref" in inner else inner), **out, "nullable": True}
    return out


_ERRORS = {
    "400": "malformed JSON, not an object, unknown field, missing or invalid field",
    "401": "missing, unknown or revoked credentials",
    "403": "credentials of the wrong kind (tenant key on an admin route or the reverse)",
    "404": "not found, or not this tenant's",
    "409": "conflict with an existing object",
    "413": "request body larger than 1 MiB",
    "415": "request body is not JSON",
    "422": "a valid request that the current state forbids",
    "429": "quota exceeded",
    "500": "internal error (details only in the server log)",
    "503": "Redis unavailable, or too much contention; retry",
}


def _responses() -> dict[str, Any]:
    out = {
        f"E{status}": {
            "description": text,
            **_json(models.Error),
        }
        for status, text in _ERRORS.items()
    }
    out["E401"]["headers"] = {"WWW-Authenticate": {"schema": _STR}}
    out["E503"]["headers"] = {"Retry-After": {"schema": _STR}}
    return out


def _json(model: type[BaseModel]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": _ref(model.__name__)}}}


def _op(
    summary: str,
    *,
    security: str,
    ok: tuple[int, type[BaseModel] | None],
    body: type[models.Body] | None = None,
    body_optional: bool = False,
    errors: tuple[int, ...] = (),
    params: tuple[str, ...] = (),
    query: tuple[dict, ...] = (),
) -> dict[str, Any]:
    status, schema = ok
    success: dict[str, Any] = {"description": summary}
    if schema is not None:
        success.update(_json(schema))
    codes = {401, 403, 413, 500, 503, *errors}
    if body is not None:
        codes |= {400, 415}
    if params:
        codes.add(404)
    responses: dict[str, Any] = {str(status): success}
    for code in sorted(codes):
        responses[str(code)] = {"$ref": f"#/components/responses/E{code}"}
    op: dict[str, Any] = {
        "summary": summary,
        "operationId": summary.lower().replace(" ", "_").replace("-", "_").replace("'", ""),
        "security": [{security: []}],
        "responses": responses,
    }
    parameters = [{"name": p, "in": "path", "required": True, "schema": _STR} for p in params]
    parameters.extend(query)
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = {"required": not body_optional, **_json(body)}
    return op


def _paths() -> dict[str, Any]:
    admin, tenant = "adminToken", "apiKey"
    return {
        "/api/admin/proxies": {
            "get": _op("List live proxy replicas (heartbeats)", security=admin, ok=(200, models.ProxyList)),
        },
        "/api/admin/tenants": {
            "post": _op(
                "Create tenant", security=admin, ok=(201, models.TenantCreated), body=models.TenantCreate
            ),
            "get": _op("List tenants", security=admin, ok=(200, models.TenantList)),
        },
        "/api/admin/tenants/{tenant_id}": {
            "get": _op("Get tenant", security=admin, ok=(200, models.Tenant), params=("tenant_id",)),
        },
        "/api/admin/tenants/{tenant_id}/keys": {
            "post": _op(
                "Create API key",
                security=admin,
                ok=(201, models.ApiKeyCreated),
                body=models.Empty,
                body_optional=True,
                errors=(429,),
                params=("tenant_id",),
            ),
        },
        "/api/admin/tenants/{tenant_id}/keys/{key_id}": {
            "delete": _op("Revoke API key", security=admin, ok=(204, None), params=("tenant_id", "key_id")),
        },
        "/api/admin/containers": {
            "post": _op(
                "Register container",
                security=admin,
                ok=(201, models.Container),
                body=models.ContainerCreate,
                errors=(404, 409),
            ),
            "get": _op(
                "List all containers",
                security=admin,
                ok=(200, models.ContainerList),
                query=(
                    {
                        "name": "tenant_id",
                        "in": "query",
                        "required": False,
                        "schema": _STR,
                        "description": "only this tenant's containers",
                    },
                ),
            ),
        },
        "/api/admin/containers/{container_id}": {
            "get": _op(
                "Get any container", security=admin, ok=(200, models.Container), params=("container_id",)
            ),
            "patch": _op(
                "Update container",
                security=admin,
                ok=(200, models.Container),
                body=models.ContainerPatch,
                params=("container_id",),
            ),
            "delete": _op(
                "Delete container and its services",
                security=admin,
                ok=(204, None),
                params=("container_id",),
            ),
        },
        "/api/containers": {
            "get": _op("List my containers", security=tenant, ok=(200, models.ContainerList)),
        },
        "/api/containers/{container_id}": {
            "get": _op(
                "Get my container", security=tenant, ok=(200, models.Container), params=("container_id",)
            ),
        },
        "/api/containers/{container_id}/services": {
            "post": _op(
                "Publish service",
                security=tenant,
                ok=(201, models.Service),
                body=models.ServiceCreate,
                errors=(409, 422),
                params=("container_id",),
            ),
            "get": _op(
                "List services", security=tenant, ok=(200, models.ServiceList), params=("container_id",)
            ),
        },
        "/api/services/{service_id}": {
            "get": _op("Get service", security=tenant, ok=(200, models.Service), params=("service_id",)),
            "patch": _op(
                "Update service",
                security=tenant,
                ok=(200, models.Service),
                body=models.ServicePatch,
                errors=(422,),
                params=("service_id",),
            ),
            "delete": _op("Delete service", security=tenant, ok=(204, None), params=("service_id",)),
        },
        "/api/services/{service_id}/rotate-token": {
            "post": _op(
                "Rotate token",
                security=tenant,
                ok=(200, models.Service),
                body=models.Empty,
                body_optional=True,
                params=("service_id",),
            ),
        },
        "/api/services/{service_id}/share-links": {
            "post": _op(
                "Create share link",
                security=tenant,
                ok=(201, models.ShareLinkCreated),
                body=models.ShareLinkCreate,
                body_optional=True,
                errors=(422, 429),
                params=("service_id",),
            ),
            "get": _op(
                "List share links",
                security=tenant,
                ok=(200, models.ShareLinkList),
                params=("service_id",),
            ),
        },
        "/api/services/{service_id}/share-links/{link_id}": {
            "delete": _op(
                "Revoke share link",
                security=tenant,
                ok=(204, None),
                params=("service_id", "link_id"),
            ),
        },
        "/api/openapi.json": {
            "get": {
                "summary": "This document",
                "operationId": "openapi_document",
                "security": [],
                "responses": {
                    "200": {
                        "description": "OpenAPI 3 document",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }


@functools.cache
def document() -> dict[str, Any]:
    """The OpenAPI 3.0 document (built once; it depends on no configuration)."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Linx control plane",
            "version": "1",
            "description": (
                "Publish a container's HTTP port at a stable URL guarded by signed tokens. "
                'Every error is {"error": {"code", "message"}}; an unknown route is 404 '
                "and a known route with another method 405, in the same shape."
            ),
        },
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "responses": _responses(),
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "LINX_ADMIN_TOKEN",
                },
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a tenant API key",
                },
            },
        },
    }


@bp.get("/openapi.json")
def openapi_json() -> ResponseReturnValue:
    return jsonify(document())
