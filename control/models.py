"""The API's request bodies and answers, each declared once, as pydantic models.

Request bodies (``Body`` subclasses) are what ``control.validation`` checks every body against:
strictly (JSON's ``true`` is not an integer, ``7001.0`` is not a port), with unknown fields
refused, and ``null`` accepted only where a field's type says ``| None``. Each field type
carries an ``Invalid`` marker saying how a wrong value is reported, so the error messages come
from the same declaration as the check. Answers (``Answer`` subclasses) describe what the
views return; ``view`` builds one from a stored record, field by field, so a view cannot
forget or invent a field. ``control.api.openapi`` derives the document's schemas from all of
them (``COMPONENTS``).

The enumerations (states, auth modes, routing, ...) live in ``shared.records``, which the proxy
imports too; this module is the control plane's alone (the proxy never imports pydantic).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from shared.records import (
    MAX_TTL_SECS,
    PROTOCOLS,
    SERVICE_NAME_RE,
    AuthMode,
    ContainerState,
    CorsMode,
    RoutingMode,
    ServiceProtocol,
    Status,
    valid_address,
)

# Ids in paths and bodies: safe as part of a Redis key (no ':') and of a URL path segment.
# Linx generates ``ctr_<26 base32>`` itself; a container runtime may bring its own ids.
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
MAX_TENANT_NAME = 200
MAX_CONTAINER_NAME = 255
MAX_LINK_LABEL = 200
MAX_SERVICE_NAME = 63


# ----------------------------------------------------------------------- field types
@dataclass(frozen=True, slots=True)
class Invalid:
    """How a wrong value of a field is reported: 400 ``code`` with ``<field>: <message>``."""

    message: str
    code: str = "invalid_field"


def invalid_of(annotation: Any) -> Invalid:
    """The ``Invalid`` marker of a field type built by this module (TypeError if it has none)."""
    for meta in getattr(annotation, "__metadata__", ()):
        if isinstance(meta, Invalid):
            return meta
    raise TypeError(f"{annotation!r} declares no Invalid marker")


def integer(low: int, high: int, description: str | None = None) -> Any:
    return Annotated[
        int,
        Field(ge=low, le=high, description=description),
        Invalid(f"expected an integer from {low} to {high}"),
    ]


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("not printable")
    return value


def text(max_len: int) -> Any:
    """1 to ``max_len`` printable characters (no control characters, no line breaks)."""
    return Annotated[
        str,
        Field(min_length=1, max_length=max_len),
        AfterValidator(_printable),
        Invalid(f"expected a string of 1 to {max_len} printable characters"),
    ]


def choice(options: Any) -> Any:
    """One of a ``Literal``'s values, exactly (no case folding)."""
    return Annotated[options, Invalid("expected one of " + ", ".join(repr(o) for o in get_args(options)))]


def nullable(annotation: Any, description: str | None = None) -> Any:
    """``annotation`` or ``null``, for the fields where null means something (no expiry, ...)."""
    invalid = invalid_of(annotation)
    return Annotated[
        annotation | None,
        Field(description=description),
        Invalid(invalid.message + " or null", invalid.code),
    ]


def _canonical_address(value: str) -> str:
    if not valid_address(value):
        raise ValueError("not an IP address literal")
    # One spelling per address, so the readiness target a proxy writes ("addr:port") matches.
    return str(ipaddress.ip_address(value))


Flag = Annotated[bool, Invalid("expected true or false")]
Timestamp = Annotated[int, Field(description="Unix seconds")]
Port = integer(1, 65535)
Ttl = integer(1, MAX_TTL_SECS)
Address = Annotated[
    str,
    AfterValidator(_canonical_address),
    Field(
        description="IPv4 or IPv6 literal; host names are refused (the relay path does no DNS)",
        json_schema_extra={"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]},
    ),
    Invalid("expected an IPv4 or IPv6 address literal (no host names)"),
]
ContainerId = Annotated[
    str,
    Field(pattern=ID_RE.pattern),
    Invalid("expected 1 to 128 characters: letters, digits, '_', '.', '-'"),
]
TenantId = Annotated[str, Field(min_length=1), Invalid("expected a tenant id string")]
ServiceName = Annotated[
    str,
    Field(min_length=1, max_length=MAX_SERVICE_NAME, pattern=SERVICE_NAME_RE.pattern),
    Invalid(
        f"expected 1 to {MAX_SERVICE_NAME} characters of a-z, 0-9 and '-', "
        "starting and ending with a letter or digit"
    ),
]
Protocol = Annotated[
    ServiceProtocol,
    Invalid(
        "only " + ", ".join(repr(p) for p in PROTOCOLS) + " is supported",
        code="unsupported_protocol",
    ),
]

STRIP_PREFIX_TEXT = (
    "path routing only: false sends the container the whole /linx/<service_id>/... path and no "
    "X-Forwarded-Prefix (with host routing: 422 strip_prefix_needs_path_routing)"
)


def _no_default(schema: dict[str, Any]) -> None:
    """Leave a default out of the document (it is the server's business, or not a value)."""
    schema.pop("default", None)


# ---------------------------------------------------------------------------- bodies
class Body(BaseModel):
    """A request body: checked strictly, unknown fields refused."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


def _patch_schema(schema: dict[str, Any]) -> None:
    # An absent field is left as it is: a PATCH has no defaults, and must change something.
    for prop in schema.get("properties", {}).values():
        prop.pop("default", None)
    schema["minProperties"] = 1


class Patch(Body):
    """A PATCH body: any non-empty subset of its fields; an absent field is left unchanged.

    ``not_patchable`` names fields of the resource that exist but cannot be changed: refused
    as ``field_not_patchable`` rather than ``unknown_field``.
    """

    model_config = ConfigDict(json_schema_extra=_patch_schema)
    not_patchable: ClassVar[frozenset[str]] = frozenset()


class Empty(Body):
    """No fields (the body is optional)."""


class TenantCreate(Body):
    name: text(MAX_TENANT_NAME)


class ContainerCreate(Body):
    tenant_id: TenantId
    container_id: nullable(ContainerId, "generated (ctr_…) when absent") = None
    name: nullable(text(MAX_CONTAINER_NAME)) = None
    address: Address
    networking_enabled: Flag
    state: choice(ContainerState)
    exec_ready: Flag
    network_ready: Flag


# Patch fields are typed without None: an absent field is unset, and null is refused.
class ContainerPatch(Patch):
    address: Address = None
    networking_enabled: Flag = None
    state: choice(ContainerState) = None
    exec_ready: Flag = None
    network_ready: Flag = None


class ServiceCreate(Body):
    name: ServiceName
    target_port: Port
    protocol: Protocol = "http"
    enable_websockets: Flag = False
    auth_mode: choice(AuthMode) = "service_token"
    ttl_secs: nullable(Ttl, "absent or null: no expiry") = None
    routing: Annotated[
        choice(RoutingMode),
        Field(
            description="default from LINX_DEFAULT_ROUTING; host needs LINX_SERVICE_DOMAIN",
            json_schema_extra=_no_default,
        ),
    ] = "path"
    cors_preflight: choice(CorsMode) = "deny"
    strip_prefix: Annotated[Flag, Field(description=STRIP_PREFIX_TEXT)] = True


class ServicePatch(Patch):
    ttl_secs: nullable(Ttl, "counted from now; null removes the expiry") = None
    auth_mode: choice(AuthMode) = None
    cors_preflight: choice(CorsMode) = None
    strip_prefix: Annotated[Flag, Field(description=STRIP_PREFIX_TEXT)] = None


class ShareLinkCreate(Body):
    ttl_secs: nullable(Ttl, "absent or null: as long as the service lives") = None
    label: nullable(text(MAX_LINK_LABEL)) = None


# --------------------------------------------------------------------------- answers
class Answer(BaseModel):
    """What a view returns (documented; built with ``view``, never validated on the way out)."""


class ErrorDetail(Answer):
    code: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    message: str
    field: Annotated[str, Field(description="the request field at fault", json_schema_extra=_no_default)] = (
        None
    )


class Error(Answer):
    error: ErrorDetail


class Tenant(Answer):
    tenant_id: str
    name: str
    created_at: Timestamp
    key_ids: list[str]


class TenantCreated(Answer):
    tenant_id: str
    name: str
    created_at: Timestamp
    key_id: str
    api_key: Annotated[str, Field(description="shown only in this answer")]


class TenantList(Answer):
    tenants: list[Tenant]


class ApiKeyCreated(Answer):
    key_id: str
    api_key: Annotated[str, Field(description="shown only in this answer")]
    created_at: Timestamp


class Proxy(Answer):
    """A proxy replica's last heartbeat; the first eight fields are SPEC section 7's."""

    proxy_id: str
    host: str
    version: str
    routes: int
    open_connections: int
    sync_lag_secs: Annotated[float | None, Field(description="seconds since the last Redis exchange")]
    started_at: Timestamp
    last_seen_at: Timestamp
    last_full_sync_at: Timestamp | None = None
    pid: int | None = None


class ProxyList(Answer):
    proxies: list[Proxy]


class Container(Answer):
    container_id: str
    tenant_id: str
    name: str | None
    address: Address
    networking_enabled: bool
    state: ContainerState
    exec_ready: bool
    network_ready: bool
    created_at: Timestamp
    updated_at: Timestamp


class ContainerList(Answer):
    containers: list[Container]


class Service(Answer):
    """A published service (SPEC section 3's record; never a secret)."""

    service_id: str
    container_id: str
    name: str
    target_port: Port
    protocol: ServiceProtocol
    enable_websockets: bool
    auth_mode: AuthMode
    routing: RoutingMode
    cors_preflight: CorsMode
    strip_prefix: bool
    public_url: Annotated[str, Field(description="carries ?linx_token=<token> in service_token mode")]
    websocket_url: Annotated[
        str | None, Field(description="ws/wss form of public_url; null without websockets")
    ]
    status: Status
    created_at: Timestamp
    updated_at: Timestamp
    expires_at: Timestamp | None


class ServiceList(Answer):
    services: list[Service]


class ShareLink(Answer):
    link_id: str
    label: str | None
    expires_at: Timestamp | None
    created_at: Timestamp
    last_used_at: Timestamp | None


class ShareLinkCreated(ShareLink):
    url: Annotated[str, Field(description="carries the link's token")]


class ShareLinkList(Answer):
    share_links: list[ShareLink]


# Fields of a resource that a PATCH names but may not change (any other stranger is unknown).
ContainerPatch.not_patchable = frozenset(ContainerCreate.model_fields) - set(ContainerPatch.model_fields)
ServicePatch.not_patchable = frozenset(Service.model_fields) - set(ServicePatch.model_fields)

# Every schema of the OpenAPI document, by its component name (the class name).
COMPONENTS: tuple[type[BaseModel], ...] = (
    Error,
    ErrorDetail,
    Empty,
    TenantCreate,
    TenantCreated,
    Tenant,
    TenantList,
    Proxy,
    ProxyList,
    ApiKeyCreated,
    ContainerCreate,
    ContainerPatch,
    Container,
    ContainerList,
    ServiceCreate,
    ServicePatch,
    Service,
    ServiceList,
    ShareLinkCreate,
    ShareLink,
    ShareLinkCreated,
    ShareLinkList,
)


def view(model: type[Answer], source: Any, **computed: Any) -> dict[str, Any]:
    """The answer ``model`` describes, in its field order: each field is ``computed[name]``
    when given, else ``source``'s attribute of that name (or its key, for a dict)."""
    stray = computed.keys() - model.model_fields.keys()
    if stray:
        raise TypeError(f"{model.__name__} has no field {sorted(stray)}")
    get = source.get if isinstance(source, dict) else lambda name: getattr(source, name)
    return {name: computed[name] if name in computed else get(name) for name in model.model_fields}
