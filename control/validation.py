"""Strict request-body parsing: every body is checked completely before anything is written.

Rules shared by every body: it must be JSON (415 otherwise) that parses (400 ``invalid_json``)
to an object (400 ``invalid_body``); an unknown field is a 400 ``unknown_field`` naming it; a
missing required field is a 400 ``missing_field``; a wrong type or value is a 400
``invalid_field``. Every such error names the field in its message and in ``error.field``.
JSON booleans are not integers here (``true`` is not a port), and ``null`` is accepted only
where the contract gives it a meaning.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from control.errors import ApiError
from shared.records import (
    AUTH_MODES,
    CONTAINER_STATES,
    CORS_MODES,
    MAX_TTL_SECS,
    ROUTING_MODES,
    SERVICE_NAME_RE,
    valid_address,
)

# Ids in paths and bodies: safe as part of a Redis key (no ':') and of a URL path segment.
# Linx generates ``ctr_<26 base32>`` itself; a container runtime may bring its own ids.
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
MAX_TENANT_NAME = 200
MAX_CONTAINER_NAME = 255
MAX_LINK_LABEL = 200

_MISSING: Any = object()


def valid_id(value: str) -> bool:
    return bool(ID_RE.fullmatch(value))


# ----------------------------------------------------------------------------- the body
def json_body(*, optional: bool = False) -> dict[str, Any]:
    """The request's JSON object. With ``optional``, an empty body counts as ``{}``.

    Raises ApiError 415 / 400 as described in the module docstring; werkzeug raises 413 for a
    body over the configured limit while it is read here.
    """
    data = _read_body()
    if optional and not data:
        return {}
    if not request.is_json:
        raise ApiError(
            415, "unsupported_media_type", "the body must be JSON (Content-Type: application/json)"
        )
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {_short(exc)}")
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object")
    return value


def _read_body() -> bytes:
    limit = request.max_content_length
    if (
        request.content_length is not None
        or limit is None
        or not request.environ.get("wsgi.input_terminated")
    ):
        # Content-Length was already checked against the limit (app before_request);
        # without it and without a server that delimits the body, werkzeug reads nothing.
        return request.get_data(cache=True)
    # Chunked body: werkzeug's limited stream would stop silently at the limit, so read one
    # byte more to tell a body of exactly the limit from a larger one.
    data = request.environ["wsgi.input"].read(limit + 1)
    if len(data) > limit:
        raise RequestEntityTooLarge()
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _short(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc).splitlines()[0][:200]


# --------------------------------------------------------------------------- primitives
def _invalid(name: str, expected: str) -> ApiError:
    return ApiError(400, "invalid_field", f"{name}: expected {expected}", field=name)


def _reject_unknown(body: dict[str, Any], allowed: Iterable[str], *, fixed: Iterable[str] = ()):
    allowed, fixed = set(allowed), set(fixed)
    for name in body:
        if name in fixed:
            raise ApiError(400, "field_not_patchable", f"{name}: cannot be changed", field=name)
        if name not in allowed:
            raise ApiError(400, "unknown_field", f"unknown field {name!r}", field=name)


def _take(body: dict[str, Any], name: str, required: bool) -> Any:
    if name in body:
        return body[name]
    if required:
        raise ApiError(400, "missing_field", f"{name}: required", field=name)
    return _MISSING


def _int(
    body: dict, name: str, low: int, high: int, *, required: bool = False, nullable: bool = False
) -> Any:
    value = _take(body, name, required)
    if value is _MISSING or (value is None and nullable):
        return value
    # bool is a subclass of int in Python, but not an integer in JSON.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        extra = " or null" if nullable else ""
        raise _invalid(name, f"an integer from {low} to {high}{extra}")
    return value


def _bool(body: dict, name: str, *, required: bool = False) -> Any:
    value = _take(body, name, required)
    if value is not _MISSING and not isinstance(value, bool):
        raise _invalid(name, "true or false")
    return value


def _choice(body: dict, name: str, choices: tuple[str, ...], *, required: bool = False) -> Any:
    value = _take(body, name, required)
    if value is not _MISSING and (not isinstance(value, str) or value not in choices):
        raise _invalid(name, "one of " + ", ".join(repr(c) for c in choices))
    return value


def _text(body: dict, name: str, max_len: int, *, required: bool = False, nullable: bool = False) -> Any:
    value = _take(body, name, required)
    if value is _MISSING or (value is None and nullable):
        return value
    if not isinstance(value, str) or not 1 <= len(value) <= max_len or not value.isprintable():
        raise _invalid(name, f"a string of 1 to {max_len} printable characters")
    return value


def _address(body: dict, name: str, *, required: bool = False) -> Any:
    value = _take(body, name, required)
    if value is _MISSING:
        return value
    if not isinstance(value, str) or not valid_address(value):
        raise _invalid(name, "an IPv4 or IPv6 address literal (no host names)")
    # One spelling per address, so the readiness target a proxy writes ("addr:port") matches.
    return str(ipaddress.ip_address(value))


def _or(value: Any, default: Any) -> Any:
    return default if value is _MISSING else value


def _require_some(body: dict, allowed: Iterable[str]) -> None:
    if not body:
        raise ApiError(400, "empty_patch", "nothing to change: give at least one of " + ", ".join(allowed))


# -------------------------------------------------------------------------------- bodies
def parse_empty(body: dict[str, Any]) -> None:
    """Bodies of action routes (new key, rotate-token): nothing, or ``{}``."""
    _reject_unknown(body, ())


def parse_tenant_create(body: dict[str, Any]) -> str:
    _reject_unknown(body, ("name",))
    return _text(body, "name", MAX_TENANT_NAME, required=True)


@dataclass(frozen=True)
class ContainerCreate:
    tenant_id: str
    container_id: str | None
    name: str | None
    address: str
    networking_enabled: bool
    state: str
    exec_ready: bool
    network_ready: bool


CONTAINER_CREATE_FIELDS = (
    "tenant_id",
    "container_id",
    "name",
    "address",
    "networking_enabled",
    "state",
    "exec_ready",
    "network_ready",
)
CONTAINER_PATCH_FIELDS = ("address", "networking_enabled", "state", "exec_ready", "network_ready")


def parse_container_create(body: dict[str, Any]) -> ContainerCreate:
    _reject_unknown(body, CONTAINER_CREATE_FIELDS)
    tenant_id = _take(body, "tenant_id", True)
    if not isinstance(tenant_id, str) or not tenant_id:
        raise _invalid("tenant_id", "a tenant id string")
    container_id = _take(body, "container_id", False)
    if container_id is not _MISSING and container_id is not None:
        if not isinstance(container_id, str) or not valid_id(container_id):
            raise _invalid("container_id", "1 to 128 characters: letters, digits, '_', '.', '-'")
    return ContainerCreate(
        tenant_id=tenant_id,
        container_id=_or(container_id, None),
        name=_or(_text(body, "name", MAX_CONTAINER_NAME, nullable=True), None),
        address=_address(body, "address", required=True),
        networking_enabled=_bool(body, "networking_enabled", required=True),
        state=_choice(body, "state", CONTAINER_STATES, required=True),
        exec_ready=_bool(body, "exec_ready", required=True),
        network_ready=_bool(body, "network_ready", required=True),
    )


def parse_container_patch(body: dict[str, Any]) -> dict[str, Any]:
    """The changes to apply (a non-empty subset of ``CONTAINER_PATCH_FIELDS``)."""
    _reject_unknown(body, CONTAINER_PATCH_FIELDS, fixed=("tenant_id", "container_id", "name"))
    _require_some(body, CONTAINER_PATCH_FIELDS)
    changes = {
        "address": _address(body, "address"),
        "networking_enabled": _bool(body, "networking_enabled"),
        "state": _choice(body, "state", CONTAINER_STATES),
        "exec_ready": _bool(body, "exec_ready"),
        "network_ready": _bool(body, "network_ready"),
    }
    return {k: v for k, v in changes.items() if v is not _MISSING}


@dataclass(frozen=True)
class ServiceCreate:
    name: str
    target_port: int
    protocol: str
    enable_websockets: bool
    auth_mode: str
    ttl_secs: int | None
    routing: str
    cors_preflight: str
    strip_prefix: bool


SERVICE_CREATE_FIELDS = (
    "name",
    "target_port",
    "protocol",
    "enable_websockets",
    "auth_mode",
    "ttl_secs",
    "routing",
    "cors_preflight",
    "strip_prefix",
)
SERVICE_PATCH_FIELDS = ("ttl_secs", "auth_mode", "cors_preflight", "strip_prefix")
# Record fields a PATCH may not touch: named as such rather than "unknown".
_SERVICE_FIXED = (
    "service_id",
    "container_id",
    "name",
    "target_port",
    "protocol",
    "enable_websockets",
    "routing",
    "public_url",
    "websocket_url",
    "status",
    "created_at",
    "updated_at",
    "expires_at",
)


def parse_service_create(body: dict[str, Any], default_routing: str) -> ServiceCreate:
    _reject_unknown(body, SERVICE_CREATE_FIELDS)
    name = _take(body, "name", True)
    if not isinstance(name, str) or len(name) > 63 or not SERVICE_NAME_RE.fullmatch(name):
        raise _invalid(
            "name",
            "1 to 63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit",
        )
    target_port = _int(body, "target_port", 1, 65535, required=True)
    protocol = _take(body, "protocol", False)
    if protocol is not _MISSING and protocol != "http":
        raise ApiError(
            400,
            "unsupported_protocol",
            "protocol: only 'http' is supported",
            field="protocol",
        )
    return ServiceCreate(
        name=name,
        target_port=target_port,
        protocol="http",
        enable_websockets=_or(_bool(body, "enable_websockets"), False),
        auth_mode=_or(_choice(body, "auth_mode", AUTH_MODES), "service_token"),
        ttl_secs=_or(_int(body, "ttl_secs", 1, MAX_TTL_SECS, nullable=True), None),
        routing=_or(_choice(body, "routing", ROUTING_MODES), default_routing),
        cors_preflight=_or(_choice(body, "cors_preflight", CORS_MODES), "deny"),
        strip_prefix=_or(_bool(body, "strip_prefix"), True),
    )


def parse_service_patch(body: dict[str, Any]) -> dict[str, Any]:
    """The changes to apply; ``ttl_secs`` maps to None (no expiry) or a number of seconds."""
    _reject_unknown(body, SERVICE_PATCH_FIELDS, fixed=_SERVICE_FIXED)
    _require_some(body, SERVICE_PATCH_FIELDS)
    changes = {
        "ttl_secs": _int(body, "ttl_secs", 1, MAX_TTL_SECS, nullable=True),
        "auth_mode": _choice(body, "auth_mode", AUTH_MODES),
        "cors_preflight": _choice(body, "cors_preflight", CORS_MODES),
        "strip_prefix": _bool(body, "strip_prefix"),
    }
    return {k: v for k, v in changes.items() if v is not _MISSING}


@dataclass(frozen=True)
class ShareLinkCreate:
    ttl_secs: int | None  # None: as long as the service lives
    label: str | None


def parse_share_link_create(body: dict[str, Any]) -> ShareLinkCreate:
    _reject_unknown(body, ("ttl_secs", "label"))
    return ShareLinkCreate(
        ttl_secs=_or(_int(body, "ttl_secs", 1, MAX_TTL_SECS, nullable=True), None),
        label=_or(_text(body, "label", MAX_LINK_LABEL, nullable=True), None),
    )
