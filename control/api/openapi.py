"""``GET /api/openapi.json``: the OpenAPI 3 description of every route, served without auth.

Written by hand next to the code it describes; tests check that it is valid OpenAPI, that it
lists exactly the app's routes, and (with schemathesis) that the server's answers match it.
Request schemas are never stricter than the server's validation, so anything they reject the
server rejects too.
"""

from __future__ import annotations

import functools
from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from control.validation import ID_RE, MAX_CONTAINER_NAME, MAX_LINK_LABEL, MAX_TENANT_NAME
from shared.records import (
    AUTH_MODES,
    CONTAINER_STATES,
    CORS_MODES,
    MAX_TTL_SECS,
    ROUTING_MODES,
    STATUSES,
)
from shared.schema import HEARTBEAT_FIELDS

bp = Blueprint("openapi", __name__, url_prefix="/api")

_REF = "#/components/schemas/"

STRIP_PREFIX_TEXT = (
    "path routing only: false sends the container the whole /linx/<service_id>/... path and no "
    "X-Forwarded-Prefix (with host routing: 422 strip_prefix_needs_path_routing)"
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _obj(properties: dict[str, Any], required: tuple[str, ...] = (), **extra: Any) -> dict:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    schema.update(extra)
    return schema


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


_INT = {"type": "integer"}
_TS = {"type": "integer", "description": "Unix seconds"}
_STR = {"type": "string"}
_BOOL = {"type": "boolean"}
_TTL = {"type": "integer", "minimum": 1, "maximum": MAX_TTL_SECS}
_ADDRESS = {
    "type": "string",
    "description": "IPv4 or IPv6 literal; host names are refused (the relay path does no DNS)",
    "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}],
}
_SERVICE_NAME = {
    "type": "string",
    "minLength": 1,
    "maxLength": 63,
    "pattern": "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$",
}


def _schemas() -> dict[str, Any]:
    container_fields = {
        "container_id": _STR,
        "tenant_id": _STR,
        "name": _nullable(_STR),
        "address": _STR,
        "networking_enabled": _BOOL,
        "state": {"type": "string", "enum": list(CONTAINER_STATES)},
        "exec_ready": _BOOL,
        "network_ready": _BOOL,
        "created_at": _TS,
        "updated_at": _TS,
    }
    service_fields = {
        "service_id": _STR,
        "container_id": _STR,
        "name": _STR,
        "target_port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "protocol": {"type": "string", "enum": ["http"]},
        "enable_websockets": _BOOL,
        "auth_mode": {"type": "string", "enum": list(AUTH_MODES)},
        "routing": {"type": "string", "enum": list(ROUTING_MODES)},
        "cors_preflight": {"type": "string", "enum": list(CORS_MODES)},
        "strip_prefix": _BOOL,
        "public_url": {
            "type": "string",
            "description": "carries ?linx_token=<token> in service_token mode",
        },
        "websocket_url": _nullable(
            {"type": "string", "description": "ws/wss form of public_url; null without websockets"}
        ),
        "status": {"type": "string", "enum": list(STATUSES)},
        "created_at": _TS,
        "updated_at": _TS,
        "expires_at": _nullable(_TS),
    }
    link_fields = {
        "link_id": _STR,
        "label": _nullable(_STR),
        "expires_at": _nullable(_TS),
        "created_at": _TS,
        "last_used_at": _nullable(_TS),
    }
    return {
        "Error": _obj(
            {
                "error": _obj(
                    {
                        "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
                        "message": _STR,
                        "field": {"type": "string", "description": "the request field at fault"},
                    },
                    ("code", "message"),
                )
            },
            ("error",),
        ),
        "Empty": _obj({}, additionalProperties=False, description="no fields (body optional)"),
        "TenantCreate": _obj(
            {"name": {"type": "string", "minLength": 1, "maxLength": MAX_TENANT_NAME}},
            ("name",),
            additionalProperties=False,
        ),
        "TenantCreated": _obj(
            {
                "tenant_id": _STR,
                "name": _STR,
                "created_at": _TS,
                "key_id": _STR,
                "api_key": {"type": "string", "description": "shown only in this answer"},
            },
            ("tenant_id", "name", "created_at", "key_id", "api_key"),
        ),
        "Tenant": _obj(
            {
                "tenant_id": _STR,
                "name": _STR,
                "created_at": _TS,
                "key_ids": {"type": "array", "items": _STR},
            },
            ("tenant_id", "name", "created_at", "key_ids"),
        ),
        "TenantList": _obj({"tenants": {"type": "array", "items": _ref("Tenant")}}, ("tenants",)),
        "Proxy": _obj(
            {
                "proxy_id": _STR,
                "host": _STR,
                "version": _STR,
                "routes": _INT,
                "open_connections": _INT,
                "sync_lag_secs": _nullable(
                    {"type": "number", "description": "seconds since the last Redis exchange"}
                ),
                "started_at": _TS,
                "last_seen_at": _TS,
                "last_full_sync_at": _nullable(_TS),
                "pid": _INT,
            },
            HEARTBEAT_FIELDS[:8],
        ),
        "ProxyList": _obj({"proxies": {"type": "array", "items": _ref("Proxy")}}, ("proxies",)),
        "ApiKeyCreated": _obj(
            {"key_id": _STR, "api_key": _STR, "created_at": _TS},
            ("key_id", "api_key", "created_at"),
        ),
        "ContainerCreate": _obj(
            {
                "tenant_id": _STR,
                "container_id": _nullable(
                    {
                        "type": "string",
                        "pattern": ID_RE.pattern,
                        "description": "generated (ctr_…) when absent",
                    }
                ),
                "name": _nullable({"type": "string", "minLength": 1, "maxLength": MAX_CONTAINER_NAME}),
                "address": _ADDRESS,
                "networking_enabled": _BOOL,
                "state": {"type": "string", "enum": list(CONTAINER_STATES)},
                "exec_ready": _BOOL,
                "network_ready": _BOOL,
            },
            (
                "tenant_id",
                "address",
                "networking_enabled",
                "state",
                "exec_ready",
                "network_ready",
            ),
            additionalProperties=False,
        ),
        "ContainerPatch": _obj(
            {
                "address": _ADDRESS,
                "networking_enabled": _BOOL,
                "state": {"type": "string", "enum": list(CONTAINER_STATES)},
                "exec_ready": _BOOL,
                "network_ready": _BOOL,
            },
            minProperties=1,
            additionalProperties=False,
        ),
        "Container": _obj(container_fields, tuple(container_fields)),
        "ContainerList": _obj({"containers": {"type": "array", "items": _ref("Container")}}, ("containers",)),
        "ServiceCreate": _obj(
            {
                "name": _SERVICE_NAME,
                "target_port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "protocol": {"type": "string", "enum": ["http"], "default": "http"},
                "enable_websockets": {"type": "boolean", "default": False},
                "auth_mode": {
                    "type": "string",
                    "enum": list(AUTH_MODES),
                    "default": "service_token",
                },
                "ttl_secs": _nullable({**_TTL, "description": "absent or null: no expiry"}),
                "routing": {
                    "type": "string",
                    "enum": list(ROUTING_MODES),
                    "description": "default from LINX_DEFAULT_ROUTING; host needs LINX_SERVICE_DOMAIN",
                },
                "cors_preflight": {"type": "string", "enum": list(CORS_MODES), "default": "deny"},
                "strip_prefix": {"type": "boolean", "default": True, "description": STRIP_PREFIX_TEXT},
            },
            ("name", "target_port"),
            additionalProperties=False,
        ),
        "ServicePatch": _obj(
            {
                "ttl_secs": _nullable({**_TTL, "description": "counted from now; null removes the expiry"}),
                "auth_mode": {"type": "string", "enum": list(AUTH_MODES)},
                "cors_preflight": {"type": "string", "enum": list(CORS_MODES)},
                "strip_prefix": {"type": "boolean", "description": STRIP_PREFIX_TEXT},
            },
            minProperties=1,
            additionalProperties=False,
        ),
        "Service": _obj(service_fields, tuple(service_fields)),
        "ServiceList": _obj({"services": {"type": "array", "items": _ref("Service")}}, ("services",)),
        "ShareLinkCreate": _obj(
            {
                "ttl_secs": _nullable(
                    {**_TTL, "description": "absent or null: as long as the service lives"}
                ),
                "label": _nullable({"type": "string", "minLength": 1, "maxLength": MAX_LINK_LABEL}),
            },
            additionalProperties=False,
        ),
        "ShareLink": _obj(link_fields, tuple(link_fields)),
        "ShareLinkCreated": _obj(
            {**link_fields, "url": {"type": "string", "description": "carries the link's token"}},
            (*link_fields, "url"),
        ),
        "ShareLinkList": _obj(
            {"share_links": {"type": "array", "items": _ref("ShareLink")}}, ("share_links",)
        ),
    }


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
            "content": {"application/json": {"schema": _ref("Error")}},
        }
        for status, text in _ERRORS.items()
    }
    out["E401"]["headers"] = {"WWW-Authenticate": {"schema": _STR}}
    out["E503"]["headers"] = {"Retry-After": {"schema": _STR}}
    return out


def _json(schema: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": _ref(schema)}}}


def _op(
    summary: str,
    *,
    security: str,
    ok: tuple[int, str | None],
    body: str | None = None,
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
            "get": _op("List live proxy replicas (heartbeats)", security=admin, ok=(200, "ProxyList")),
        },
        "/api/admin/tenants": {
            "post": _op("Create tenant", security=admin, ok=(201, "TenantCreated"), body="TenantCreate"),
            "get": _op("List tenants", security=admin, ok=(200, "TenantList")),
        },
        "/api/admin/tenants/{tenant_id}": {
            "get": _op("Get tenant", security=admin, ok=(200, "Tenant"), params=("tenant_id",)),
        },
        "/api/admin/tenants/{tenant_id}/keys": {
            "post": _op(
                "Create API key",
                security=admin,
                ok=(201, "ApiKeyCreated"),
                body="Empty",
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
                ok=(201, "Container"),
                body="ContainerCreate",
                errors=(404, 409),
            ),
            "get": _op(
                "List all containers",
                security=admin,
                ok=(200, "ContainerList"),
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
            "get": _op("Get any container", security=admin, ok=(200, "Container"), params=("container_id",)),
            "patch": _op(
                "Update container",
                security=admin,
                ok=(200, "Container"),
                body="ContainerPatch",
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
            "get": _op("List my containers", security=tenant, ok=(200, "ContainerList")),
        },
        "/api/containers/{container_id}": {
            "get": _op("Get my container", security=tenant, ok=(200, "Container"), params=("container_id",)),
        },
        "/api/containers/{container_id}/services": {
            "post": _op(
                "Publish service",
                security=tenant,
                ok=(201, "Service"),
                body="ServiceCreate",
                errors=(409, 422),
                params=("container_id",),
            ),
            "get": _op("List services", security=tenant, ok=(200, "ServiceList"), params=("container_id",)),
        },
        "/api/services/{service_id}": {
            "get": _op("Get service", security=tenant, ok=(200, "Service"), params=("service_id",)),
            "patch": _op(
                "Update service",
                security=tenant,
                ok=(200, "Service"),
                body="ServicePatch",
                params=("service_id",),
            ),
            "delete": _op("Delete service", security=tenant, ok=(204, None), params=("service_id",)),
        },
        "/api/services/{service_id}/rotate-token": {
            "post": _op(
                "Rotate token",
                security=tenant,
                ok=(200, "Service"),
                body="Empty",
                body_optional=True,
                params=("service_id",),
            ),
        },
        "/api/services/{service_id}/share-links": {
            "post": _op(
                "Create share link",
                security=tenant,
                ok=(201, "ShareLinkCreated"),
                body="ShareLinkCreate",
                body_optional=True,
                errors=(422, 429),
                params=("service_id",),
            ),
            "get": _op(
                "List share links",
                security=tenant,
                ok=(200, "ShareLinkList"),
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
