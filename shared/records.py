"""The records Linx stores: tenants, containers and published services.

Plain frozen dataclasses with the invariants both processes rely on. How they are stored
(JSON, keys, schema version) is ``shared.schema``'s business; how API bodies become records
is the control plane's.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, fields, replace
from typing import Literal, get_args

from shared.tokens import SigningKey, sign

# The enumerations of the API, each declared once: the Literal types annotate the records and
# the control plane's models; the tuples are their values, in order (CLI choices, checks).
ContainerState = Literal["created", "running", "stopped", "exited"]
AuthMode = Literal["service_token", "public"]
RoutingMode = Literal["path", "host"]
CorsMode = Literal["deny", "passthrough"]
ServiceProtocol = Literal["http"]
Status = Literal["pending", "ready", "target_unreachable", "expired", "error"]

CONTAINER_STATES: tuple[ContainerState, ...] = get_args(ContainerState)
AUTH_MODES: tuple[AuthMode, ...] = get_args(AuthMode)
ROUTING_MODES: tuple[RoutingMode, ...] = get_args(RoutingMode)
CORS_MODES: tuple[CorsMode, ...] = get_args(CorsMode)
PROTOCOLS: tuple[ServiceProtocol, ...] = get_args(ServiceProtocol)
STATUSES: tuple[Status, ...] = get_args(Status)
SERVICE_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
MAX_TTL_SECS = 31_536_000


def valid_address(value: str) -> bool:
    """An IPv4 or IPv6 literal (no host names: the relay path never does DNS)."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    digest: str
    created_at: int


@dataclass(frozen=True, slots=True)
class Tenant:
    tenant_id: str
    name: str
    created_at: int
    keys: tuple[ApiKey, ...] = ()

    def public(self) -> dict:
        """Every field but the keys' digests: the keys appear as their ids."""
        view = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "keys"}
        return {**view, "key_ids": [k.key_id for k in self.keys]}


@dataclass(frozen=True, slots=True)
class Container:
    container_id: str
    tenant_id: str
    name: str | None
    address: str
    networking_enabled: bool
    state: ContainerState
    exec_ready: bool
    network_ready: bool
    created_at: int
    updated_at: int

    @property
    def usable(self) -> bool:
        """Whether the proxy may relay to it (``exec_ready`` does not matter for HTTP)."""
        return self.state == "running" and self.network_ready and self.networking_enabled

    def public(self) -> dict:
        """Every field, in order (a container record holds no secret)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class ShareLink:
    link_id: str
    label: str | None
    key: SigningKey  # key.expires_at is the link's expiry (never after the service's)
    created_at: int


@dataclass(frozen=True, slots=True)
class Service:
    service_id: str
    tenant_id: str
    container_id: str
    name: str
    target_port: int
    protocol: ServiceProtocol
    enable_websockets: bool
    auth_mode: AuthMode
    created_at: int
    updated_at: int
    expires_at: int | None
    token_key: SigningKey
    routing: RoutingMode = "path"
    cors_preflight: CorsMode = "deny"
    strip_prefix: bool = True  # path routing: the container gets the path without /linx/<id>
    share_links: tuple[ShareLink, ...] = field(default=())

    @property
    def token(self) -> str:
        return sign(self.service_id, self.token_key)

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def accepted_keys(self) -> dict[str, SigningKey]:
        """Every key a token for this service may be signed with: its own and its links'."""
        keys = {self.token_key.kid: self.token_key}
        for link in self.share_links:
            keys[link.key.kid] = link.key
        return keys

    def with_changes(self, **changes: object) -> Service:
        return replace(self, **changes)
