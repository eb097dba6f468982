"""The records Linx stores: tenants, containers and published services.

Plain frozen dataclasses with the invariants both processes rely on. How they are stored
(JSON, keys, schema version) is ``shared.schema``'s business; how API bodies become records
is the control plane's.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, replace

from shared.tokens import SigningKey, sign

CONTAINER_STATES = ("created", "running", "stopped", "exited")
AUTH_MODES = ("service_token", "public")
ROUTING_MODES = ("path", "host")
CORS_MODES = ("deny", "passthrough")
STATUSES = ("pending", "ready", "target_unreachable", "expired", "error")
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
        return {
            "tenant_id": self.tenant_id,
            "name": self.name,
            "created_at": self.created_at,
            "key_ids": [k.key_id for k in self.keys],
        }


@dataclass(frozen=True, slots=True)
class Container:
    container_id: str
    tenant_id: str
    name: str | None
    address: str
    networking_enabled: bool
    state: str
    exec_ready: bool
    network_ready: bool
    created_at: int
    updated_at: int

    @property
    def usable(self) -> bool:
        """Whether the proxy may relay to it (``exec_ready`` does not matter for HTTP)."""
        return self.state == "running" and self.network_ready and self.networking_enabled

    def public(self) -> dict:
        return {
            "container_id": self.container_id,
            "tenant_id": self.tenant_id,
            "name": self.name,
            "address": self.address,
            "networking_enabled": self.networking_enabled,
            "state": self.state,
            "exec_ready": self.exec_ready,
            "network_ready": self.network_ready,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


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
    protocol: str
    enable_websockets: bool
    auth_mode: str
    created_at: int
    updated_at: int
    expires_at: int | None
    token_key: SigningKey
    routing: str = "path"
    cors_preflight: str = "deny"
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
