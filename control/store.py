"""Business operations on Redis: the only code of the control plane that reads or writes it.

Atomicity contract: every mutation is one Redis transaction. The keys its decision depends on
are WATCHed, read, checked, and then the ``shared.schema.Schema`` writers queue the records and
exactly one change event per writer inside MULTI; EXEC applies all or nothing. A failed check
raises ``ApiError`` before MULTI, an exception while queueing discards the queue, and a
concurrent change to a watched key makes the whole operation start again from the reads. So a
request either applies completely, with its event, or leaves Redis as it was.

Time is ``clock()`` (Unix seconds, injectable for tests); stored timestamps are integers.
Thread-safety: a ``Store`` holds no mutable state of its own; redis-py's client and connection
pool are thread-safe, so one store may serve every thread of a worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from redis.exceptions import WatchError

from control.errors import ApiError, not_found
from control.models import ContainerCreate, ServiceCreate, ShareLinkCreate
from control.validation import valid_id
from shared import ids
from shared.records import ApiKey, Container, Service, ShareLink, Tenant
from shared.schema import Readiness, Schema
from shared.tokens import SigningKey, api_key_digest

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_API_KEYS_PER_TENANT = 100
MAX_SHARE_LINKS_PER_SERVICE = 100
# Optimistic transactions retry on contention; past this many attempts the caller gets a 503
# instead of a request that spins for ever on a hot key.
MAX_TRANSACTION_ATTEMPTS = 50
SWEEP_BATCH = 100
SWEEP_MAX_BATCHES = 10


def readiness_target(address: str, port: int) -> str:
    """How proxies name the target they probed: ``addr:port``, IPv6 as ``[addr]:port``."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def service_status(
    service: Service,
    container: Container | None,
    readiness: Readiness | None,
    now: float,
    *,
    host_routing_available: bool = True,
) -> str:
    """The ``status`` field of SPEC section 3, from the records and the proxies' last probe.

    ``expired`` wins; then ``error`` for a record that cannot be served as stored (its
    container gone or another tenant's, host routing without a service domain); then
    ``target_unreachable`` when the container is not usable; then the probe result, but only
    if it was measured against the current address and port (an older probe says nothing
    about a moved target); else ``pending``.
    """
    if service.expired(now):
        return "expired"
    if container is None or container.tenant_id != service.tenant_id:
        return "error"
    if service.routing == "host" and not host_routing_available:
        return "error"
    if not container.usable:
        return "target_unreachable"
    if readiness is not None and readiness.target == readiness_target(container.address, service.target_port):
        if readiness.status in ("ready", "target_unreachable"):
            return readiness.status
    return "pending"


def strip_prefix_needs_path_routing() -> ApiError:
    return ApiError(
        422,
        "strip_prefix_needs_path_routing",
        "strip_prefix: false applies to path routing only (a host-routed service has no prefix)",
    )


def link_live(link: ShareLink, now: float) -> bool:
    return link.key.expires_at is None or now < link.key.expires_at


def _earliest(*values: int | None) -> int | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


@dataclass(frozen=True)
class ShareLinkView:
    link: ShareLink
    last_used_at: int | None


class Store:
    """Linx's operations, each atomic (see the module docstring).

    Raises ``ApiError`` for anything the caller did wrong or that the state forbids, and lets
    redis-py's connection errors through (the app maps them to 503).
    """

    def __init__(
        self,
        client: Any,
        schema: Schema,
        clock: Callable[[], float],
        *,
        retention_secs: int,
        host_routing_available: bool,
    ) -> None:
        self.client = client
        self.schema = schema
        self.keys = schema.keys
        self.clock = clock
        self.retention_secs = retention_secs
        self.host_routing_available = host_routing_available

    def now(self) -> int:
        return int(self.clock())

    # ------------------------------------------------------------------------ transactions
    def _transact(self, fn: Callable[[Any], T], *watch: str) -> T:
        """Run ``fn(pipe)`` as one optimistic transaction over the ``watch`` keys.

        ``fn`` reads through ``pipe`` (immediate mode while watching), raises ApiError to
        refuse, or calls ``pipe.multi()`` and queues writes. If it returns without calling
        ``multi()`` nothing is written. A WatchError (a watched key changed) runs ``fn`` again.
        """
        for _ in range(MAX_TRANSACTION_ATTEMPTS):
            with self.client.pipeline(transaction=True) as pipe:
                try:
                    if watch:
                        pipe.watch(*watch)
                    result = fn(pipe)
                    # Queued commands exist only after multi(); reads ran at once while
                    # watching. len() works for plain and Cluster pipelines alike.
                    if len(pipe):
                        pipe.execute()
                    return result
                except WatchError:
                    continue
        raise ApiError(
            503, "busy", "too many concurrent changes to this object, retry", headers={"Retry-After": "1"}
        )

    # ----------------------------------------------------------------------------- tenants
    def authenticate(self, api_key: str) -> str | None:
        """The tenant owning ``api_key``, or None (unknown or revoked: the index is updated in
        the same transaction as the tenant record, so revocation is immediate)."""
        owner = self.schema.tenant_key_owner(self.client, api_key_digest(api_key))
        return owner[0] if owner else None

    def create_tenant(self, name: str) -> tuple[Tenant, str]:
        """A new tenant with one API key; returns it and the key (its only appearance)."""
        now = self.now()
        api_key = ids.new_api_key()
        tenant = Tenant(
            ids.new_id(ids.TENANT),
            name,
            now,
            (ApiKey(ids.new_id(ids.API_KEY_ID), api_key_digest(api_key), now),),
        )

        def write(pipe: Any) -> None:
            pipe.multi()
            self.schema.put_tenant(pipe, tenant)

        self._transact(write)
        return tenant, api_key

    def list_tenants(self) -> list[Tenant]:
        return self.schema.list_tenants(self.client)

    def get_tenant(self, tenant_id: str) -> Tenant:
        tenant = self.schema.get_tenant(self.client, tenant_id) if valid_id(tenant_id) else None
        if tenant is None:
            raise not_found("tenant")
        return tenant

    def _tenant_in(self, pipe: Any, tenant_id: str) -> Tenant:
        tenant = self.schema.get_tenant(pipe, tenant_id)
        if tenant is None:
            raise not_found("tenant")
        return tenant

    def add_api_key(self, tenant_id: str) -> tuple[ApiKey, str]:
        """A further key for the tenant; returns its record and the key itself."""
        if not valid_id(tenant_id):
            raise not_found("tenant")

        def write(pipe: Any) -> tuple[ApiKey, str]:
            tenant = self._tenant_in(pipe, tenant_id)
            if len(tenant.keys) >= MAX_API_KEYS_PER_TENANT:
                raise ApiError(
                    429,
                    "api_key_quota",
                    f"a tenant may hold at most {MAX_API_KEYS_PER_TENANT} API keys; revoke one",
                )
            now = self.now()
            api_key = ids.new_api_key()
            entry = ApiKey(ids.new_id(ids.API_KEY_ID), api_key_digest(api_key), now)
            pipe.multi()
            self.schema.put_tenant(pipe, replace(tenant, keys=(*tenant.keys, entry)), tenant)
            return entry, api_key

        return self._transact(write, self.keys.tenant(tenant_id))

    def revoke_api_key(self, tenant_id: str, key_id: str) -> None:
        """Remove the key: the next request made with it is a 401."""
        if not valid_id(tenant_id):
            raise not_found("tenant")

        def write(pipe: Any) -> None:
            tenant = self._tenant_in(pipe, tenant_id)
            kept = tuple(k for k in tenant.keys if k.key_id != key_id)
            if len(kept) == len(tenant.keys):
                raise not_found("api_key")
            pipe.multi()
            self.schema.put_tenant(pipe, replace(tenant, keys=kept), tenant)

        self._transact(write, self.keys.tenant(tenant_id))

    # -------------------------------------------------------------------------- containers
    def register_container(self, spec: ContainerCreate) -> Container:
        """Record a container the runtime reports. 404 unknown tenant, 409 existing id."""
        if not valid_id(spec.tenant_id):
            raise not_found("tenant")
        container_id = spec.container_id or ids.new_id(ids.CONTAINER)

        def write(pipe: Any) -> Container:
            self._tenant_in(pipe, spec.tenant_id)
            if self.schema.get_container(pipe, container_id) is not None:
                raise ApiError(409, "container_exists", f"container {container_id} is already registered")
            now = self.now()
            container = Container(
                container_id=container_id,
                tenant_id=spec.tenant_id,
                name=spec.name,
                address=spec.address,
                networking_enabled=spec.networking_enabled,
                state=spec.state,
                exec_ready=spec.exec_ready,
                network_ready=spec.network_ready,
                created_at=now,
                updated_at=now,
            )
            pipe.multi()
            self.schema.put_container(pipe, container)
            return container

        return self._transact(write, self.keys.tenant(spec.tenant_id), self.keys.container(container_id))

    def update_container(self, container_id: str, changes: dict[str, Any]) -> Container:
        if not valid_id(container_id):
            raise not_found("container")

        def write(pipe: Any) -> Container:
            container = self.schema.get_container(pipe, container_id)
            if container is None:
                raise not_found("container")
            updated = replace(container, **changes, updated_at=self.now())
            pipe.multi()
            self.schema.put_container(pipe, updated)
            return updated

        return self._transact(write, self.keys.container(container_id))

    def delete_container(self, container_id: str) -> None:
        """Delete the container and every service of it: one transaction, one event."""
        if not valid_id(container_id):
            raise not_found("container")

        def write(pipe: Any) -> None:
            container = self.schema.get_container(pipe, container_id)
            if container is None:
                raise not_found("container")
            service_ids = [s.service_id for s in self.schema.list_container_services(pipe, container_id)]
            pipe.multi()
            self.schema.delete_container(pipe, container, service_ids)

        self._transact(write, self.keys.container(container_id), self.keys.container_services(container_id))

    def get_container(self, container_id: str) -> Container:
        """Any container (operator view)."""
        container = self.schema.get_container(self.client, container_id) if valid_id(container_id) else None
        if container is None:
            raise not_found("container")
        return container

    def list_containers(self, tenant_id: str | None = None) -> list[Container]:
        """Every container, or one tenant's (operator view; an unknown tenant has none)."""
        if tenant_id is None:
            return self.schema.list_containers(self.client)
        if not valid_id(tenant_id):
            return []
        return self.schema.list_tenant_containers(self.client, tenant_id)

    def tenant_container(self, tenant_id: str, container_id: str) -> Container:
        """The tenant's container; another tenant's is the same 404 as a missing one."""
        container = self.get_container(container_id)
        if container.tenant_id != tenant_id:
            raise not_found("container")
        return container

    def tenant_containers(self, tenant_id: str) -> list[Container]:
        return self.schema.list_tenant_containers(self.client, tenant_id)

    # ---------------------------------------------------------------------------- services
    def _visible(self, service: Service, now: float) -> bool:
        """False once an expired service's retention has passed: it is gone for every reader
        even before the sweep deletes its keys."""
        return service.expires_at is None or now < service.expires_at + self.retention_secs

    def _owned(self, reader: Any, tenant_id: str, service_id: str, now: float) -> Service:
        service = self.schema.get_service(reader, service_id) if valid_id(service_id) else None
        if service is None or service.tenant_id != tenant_id or not self._visible(service, now):
            raise not_found("service")
        return service

    def create_service(self, tenant_id: str, container_id: str, spec: ServiceCreate) -> Service:
        """Publish a port of the tenant's container.

        Checks, in order: the container is the tenant's (404), its networking is enabled
        (422 ``networking_disabled``), host routing is configured when asked for (422
        ``host_routing_unavailable``), ``strip_prefix: false`` only with path routing (422
        ``strip_prefix_needs_path_routing``), the name is free in the container (409 ``name_conflict``).
        """
        if not valid_id(container_id):
            raise not_found("container")
        self._release_name_if_gone(container_id, spec.name)

        def write(pipe: Any) -> Service:
            container = self.schema.get_container(pipe, container_id)
            if container is None or container.tenant_id != tenant_id:
                raise not_found("container")
            if not container.networking_enabled:
                raise ApiError(422, "networking_disabled", "the container's networking is disabled")
            if spec.routing == "host" and not self.host_routing_available:
                raise ApiError(
                    422,
                    "host_routing_unavailable",
                    "host routing needs LINX_SERVICE_DOMAIN, which this deployment has not set",
                )
            if spec.routing == "host" and not spec.strip_prefix:
                raise strip_prefix_needs_path_routing()
            holder = self.schema.service_id_by_name(pipe, container_id, spec.name)
            if holder is not None:
                raise ApiError(
                    409,
                    "name_conflict",
                    f"the container already has a service named {spec.name!r} ({holder}); delete it first",
                )
            now = self.now()
            service = Service(
                service_id=ids.new_id(ids.SERVICE),
                tenant_id=tenant_id,
                container_id=container_id,
                name=spec.name,
                target_port=spec.target_port,
                protocol=spec.protocol,
                enable_websockets=spec.enable_websockets,
                auth_mode=spec.auth_mode,
                created_at=now,
                updated_at=now,
                expires_at=None if spec.ttl_secs is None else now + spec.ttl_secs,
                token_key=SigningKey(ids.new_key_id(), ids.new_secret()),
                routing=spec.routing,
                cors_preflight=spec.cors_preflight,
                strip_prefix=spec.strip_prefix,
            )
            pipe.multi()
            self.schema.put_service(pipe, service)
            return service

        return self._transact(
            write, self.keys.container(container_id), self.keys.container_services(container_id)
        )

    def _release_name_if_gone(self, container_id: str, name: str) -> None:
        """A service past its retention no longer exists for readers; neither does its name."""
        holder = self.schema.service_id_by_name(self.client, container_id, name)
        if holder is None:
            return
        service = self.schema.get_service(self.client, holder)
        if service is not None and not self._visible(service, self.now()):
            self._remove_expired(holder, self.now() - self.retention_secs)

    def list_services(self, tenant_id: str, container_id: str) -> list[Service]:
        self.tenant_container(tenant_id, container_id)
        now = self.now()
        return [
            s
            for s in self.schema.list_container_services(self.client, container_id)
            if s.tenant_id == tenant_id and self._visible(s, now)
        ]

    def get_service(self, tenant_id: str, service_id: str) -> Service:
        return self._owned(self.client, tenant_id, service_id, self.now())

    def _mutate_service(
        self, tenant_id: str, service_id: str, change: Callable[[Service, int], Service]
    ) -> Service:
        """Apply ``change(service, now)`` to the tenant's service as one transaction."""
        if not valid_id(service_id):
            raise not_found("service")

        def write(pipe: Any) -> Service:
            now = self.now()
            service = self._owned(pipe, tenant_id, service_id, now)
            updated = change(service, now)
            pipe.multi()
            self.schema.put_service(pipe, updated)
            return updated

        return self._transact(write, self.keys.service(service_id))

    def delete_service(self, tenant_id: str, service_id: str) -> None:
        if not valid_id(service_id):
            raise not_found("service")

        def write(pipe: Any) -> None:
            service = self._owned(pipe, tenant_id, service_id, self.now())
            pipe.multi()
            self.schema.delete_service(pipe, service)

        self._transact(write, self.keys.service(service_id))

    def rotate_token(self, tenant_id: str, service_id: str) -> Service:
        """A new signing key (new key id and secret). Every token issued before, the share
        links' included, stops verifying: the spec's "every URL issued before stops working"."""

        def change(service: Service, now: int) -> Service:
            return service.with_changes(
                token_key=SigningKey(ids.new_key_id(), ids.new_secret()),
                share_links=(),
                updated_at=now,
            )

        return self._mutate_service(tenant_id, service_id, change)

    def update_service(self, tenant_id: str, service_id: str, changes: dict[str, Any]) -> Service:
        """PATCH: ``ttl_secs`` (counted from now; None removes the expiry), ``auth_mode``,
        ``cors_preflight``, ``strip_prefix``. Share links are clipped so that none outlives the service."""

        def change(service: Service, now: int) -> Service:
            if changes.get("strip_prefix") is False and service.routing == "host":
                raise strip_prefix_needs_path_routing()
            fields: dict[str, Any] = {k: v for k, v in changes.items() if k != "ttl_secs"}
            expires_at = service.expires_at
            if "ttl_secs" in changes:
                ttl = changes["ttl_secs"]
                expires_at = None if ttl is None else now + ttl
            links = tuple(
                replace(ln, key=replace(ln.key, expires_at=_earliest(ln.key.expires_at, expires_at)))
                for ln in service.share_links
                if link_live(ln, now)
            )
            return service.with_changes(**fields, expires_at=expires_at, share_links=links, updated_at=now)

        return self._mutate_service(tenant_id, service_id, change)

    # ------------------------------------------------------------------------- share links
    def create_share_link(
        self, tenant_id: str, service_id: str, spec: ShareLinkCreate
    ) -> tuple[Service, ShareLink]:
        """A link with its own key; it expires at ``now + ttl_secs`` or with the service,
        whichever comes first. Expired links are dropped from the record on the way."""
        created: list[ShareLink] = []

        def change(service: Service, now: int) -> Service:
            if service.expired(now):
                raise ApiError(422, "service_expired", "the service has expired")
            live = tuple(ln for ln in service.share_links if link_live(ln, now))
            if len(live) >= MAX_SHARE_LINKS_PER_SERVICE:
                raise ApiError(
                    429,
                    "share_link_quota",
                    f"a service may have at most {MAX_SHARE_LINKS_PER_SERVICE} live share links",
                )
            expires_at = _earliest(None if spec.ttl_secs is None else now + spec.ttl_secs, service.expires_at)
            link = ShareLink(
                ids.new_id(ids.SHARE_LINK),
                spec.label,
                SigningKey(ids.new_key_id(), ids.new_secret(), expires_at),
                now,
            )
            created[:] = [link]
            return service.with_changes(share_links=(*live, link), updated_at=now)

        service = self._mutate_service(tenant_id, service_id, change)
        return service, created[0]

    def list_share_links(self, tenant_id: str, service_id: str) -> list[ShareLinkView]:
        """The live links, oldest first, with when a proxy last saw each used (or None)."""
        now = self.now()
        service = self._owned(self.client, tenant_id, service_id, now)
        used = self.schema.links_used(self.client, service_id)
        return [ShareLinkView(ln, used.get(ln.link_id)) for ln in service.share_links if link_live(ln, now)]

    def delete_share_link(self, tenant_id: str, service_id: str, link_id: str) -> None:
        """Revoke one link (an expired one counts as already gone: 404)."""

        def change(service: Service, now: int) -> Service:
            live = tuple(ln for ln in service.share_links if link_live(ln, now))
            kept = tuple(ln for ln in live if ln.link_id != link_id)
            if len(kept) == len(live):
                raise not_found("share_link")
            return service.with_changes(share_links=kept, updated_at=now)

        self._mutate_service(tenant_id, service_id, change)

    # ------------------------------------------------------------------------------ status
    def statuses(self, services: Iterable[Service]) -> dict[str, str]:
        """``status`` of each service, reading containers and readiness in bulk."""
        services = list(services)
        now = self.clock()
        containers: dict[str, Container | None] = {}
        for cid in {s.container_id for s in services}:
            containers[cid] = self.schema.get_container(self.client, cid)
        readiness = self.schema.read_readiness(
            self.client, [s.service_id for s in services if not s.expired(now)]
        )
        return {
            s.service_id: service_status(
                s,
                containers[s.container_id],
                readiness.get(s.service_id),
                now,
                host_routing_available=self.host_routing_available,
            )
            for s in services
        }

    # ------------------------------------------------------------------------------- sweep
    def proxies(self, now: float) -> list[dict[str, Any]]:
        """Live proxy heartbeats, as the proxies wrote them."""
        return self.schema.list_heartbeats(self.client, now)

    def sweep_expired(self, now: float | None = None) -> list[str]:
        """Remove services whose retention after expiry has passed, each in its own
        transaction with its own service delete event. Returns the removed ids.

        Bounded per call (``SWEEP_BATCH * SWEEP_MAX_BATCHES``) so a request that triggers it
        never waits long; the rest goes on the next sweep.
        """
        cutoff = (self.clock() if now is None else now) - self.retention_secs
        removed: list[str] = []
        for _ in range(SWEEP_MAX_BATCHES):
            batch = self.schema.expired_before(self.client, cutoff, SWEEP_BATCH)
            for service_id in batch:
                if self._remove_expired(service_id, cutoff):
                    removed.append(service_id)
            if len(batch) < SWEEP_BATCH:
                break
        return removed

    def _remove_expired(self, service_id: str, cutoff: float) -> bool:
        def write(pipe: Any) -> bool:
            service = self.schema.get_service(pipe, service_id)
            if service is None:
                # A stale index entry (no record): drop it so the sweep does not meet it again.
                pipe.multi()
                self.schema.forget_expiry(pipe, service_id)
                return False
            if service.expires_at is None or service.expires_at > cutoff:
                return False  # extended meanwhile
            pipe.multi()
            self.schema.delete_service(pipe, service)
            return True

        return self._transact(write, self.keys.service(service_id))
