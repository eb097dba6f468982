"""The in-memory route table: everything the request path reads, and nothing it waits for.

Changed only on the reactor thread, from snapshots and change events that the sync thread
hands over. Each change recomputes the affected ``Route`` objects (immutable, with everything
the per-request path needs precomputed) and tells the ``on_change`` listener which services
changed, so open connections that lost their right to exist can be closed.

Memory: the table keeps compact routes, not the records they came from. A snapshot is turned
into routes while it is read (``RouteBuilder``, on the sync thread), so 100,000 whole service
records never live at once, and a container change rebuilds its routes from their own fields.
"""

from __future__ import annotations

import heapq
import ipaddress
from collections.abc import Callable, Iterable

from shared import schema
from shared.records import Container, Service
from shared.tokens import SigningKey, Verification

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Placement = tuple[bool, bool, bool]  # (usable, allowed, ipv6)

_NO_LINKS: dict[str, str] = {}
_UNPLACED: Placement = (False, False, False)


def placement(container: Container | None, allowed_networks: tuple[Network, ...]) -> Placement:
    """``(usable, allowed, ipv6)`` of a container: computed once per container, not per route."""
    if container is None:
        return _UNPLACED
    address = ipaddress.ip_address(container.address)
    return container.usable, any(address in net for net in allowed_networks), address.version == 6


class Route:
    """One published service as the proxy serves it. Immutable once in the table.

    Kept small (100,000 of them must fit in well under 150 MiB): what a request needs is a slot,
    what is rarely needed is derived on demand, and the service record itself is not kept.
    """

    __slots__ = (
        "service_id",
        "container_id",
        "port",
        "token_key",
        "link_keys",
        "link_of_kid",
        "target",
        "usable",
        "allowed",
        "ipv6",
        "expires_at",
        "public",
        "websockets",
        "host_routed",
        "cors_passthrough",
        "strip_prefix",
        "token_cache",
    )

    def __init__(
        self,
        service: Service,
        container: Container | None,
        allowed_networks: tuple[Network, ...] = (),
        where: Placement | None = None,
    ) -> None:
        self.service_id = service.service_id
        self.container_id = service.container_id
        self.port = service.target_port
        # The service's own key, and its share links' keys only when it has links: a dict per
        # route would cost more than the rest of the route together.
        self.token_key = service.token_key
        links = service.share_links
        self.link_keys: dict[str, SigningKey] | None = {ln.key.kid: ln.key for ln in links} if links else None
        self.link_of_kid = {ln.key.kid: ln.link_id for ln in links} if links else _NO_LINKS
        self.expires_at = service.expires_at
        self.public = service.auth_mode == "public"
        self.websockets = service.enable_websockets
        self.host_routed = service.routing == "host"
        self.cors_passthrough = service.cors_preflight == "passthrough"
        # Only path routing has a prefix to strip (and responses to keep under it).
        self.strip_prefix = service.strip_prefix and not self.host_routed
        # token -> its VALID verification (immutable), see access.verify_token
        self.token_cache: dict[str, Verification] | None = None
        self.usable, self.allowed, self.ipv6 = where or placement(container, allowed_networks)
        self.target: tuple[str, int] | None = (
            (container.address, service.target_port) if container is not None else None
        )

    def placed(self, container: Container | None, where: Placement) -> Route:
        """This route on ``container``'s current address and state (its keys unchanged, so the
        verified-token cache carries over)."""
        route = object.__new__(Route)
        for name in Route.__slots__:
            setattr(route, name, getattr(self, name))
        route.usable, route.allowed, route.ipv6 = where
        route.target = (container.address, self.port) if container is not None else None
        return route

    def same_as(self, other: Route) -> bool:
        """Whether ``other`` serves exactly as this route does (the token cache aside)."""
        # Spelled out rather than a loop over __slots__: a resync compares 100,000 of these on
        # the reactor thread, and this is about four times faster.
        return (
            self.service_id == other.service_id
            and self.target == other.target
            and self.usable == other.usable
            and self.allowed == other.allowed
            and self.expires_at == other.expires_at
            and self.public == other.public
            and self.websockets == other.websockets
            and self.host_routed == other.host_routed
            and self.cors_passthrough == other.cors_passthrough
            and self.strip_prefix == other.strip_prefix
            and self.container_id == other.container_id
            and self.port == other.port
            and self.ipv6 == other.ipv6
            and self.token_key == other.token_key
            and self.link_keys == other.link_keys
            and self.link_of_kid == other.link_of_kid
        )

    def get(self, kid: str) -> SigningKey | None:
        """The key with id ``kid`` this service accepts (a Mapping's ``get``, for tokens.verify)."""
        if kid == self.token_key.kid:
            return self.token_key
        return self.link_keys.get(kid) if self.link_keys else None

    @property
    def prefix(self) -> bytes:
        return ("/linx/" + self.service_id).encode()

    @property
    def cookie_name(self) -> bytes:
        return ("linx_" + self.service_id).encode()

    @property
    def target_text(self) -> str:
        if self.target is None:
            return ""
        host, port = self.target
        return f"[{host}]:{port}" if self.ipv6 else f"{host}:{port}"

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


def control_plane_route(target: tuple[str, int]) -> Route:
    """The route of ``/api/`` when the proxy relays it to the control plane: no service, no
    token (the control plane authenticates), never probed; its id is empty, so logs and
    metrics show it as ``-``."""
    route = object.__new__(Route)
    for name in Route.__slots__:
        setattr(route, name, None)
    route.service_id = route.container_id = ""
    route.port = target[1]
    route.target = target
    route.link_of_kid = _NO_LINKS
    route.usable = route.allowed = route.public = True
    route.ipv6 = ":" in target[0]
    route.websockets = route.host_routed = route.cors_passthrough = route.strip_prefix = False
    return route


class RouteBuilder:
    """Builds routes from service records, computing each container's placement once.

    Also the snapshot's ``convert``: the sync thread turns each decoded service into its route
    as it reads them, with a builder of its own (the table's stays on the reactor thread).
    """

    def __init__(self, allowed_networks: tuple[Network, ...]) -> None:
        self.allowed_networks = allowed_networks
        self.placements: dict[str, Placement] = {}

    def where(self, container_id: str, container: Container | None) -> Placement:
        where = self.placements.get(container_id)
        if where is None:
            where = self.placements[container_id] = placement(container, self.allowed_networks)
        return where

    def build(self, service: Service, container: Container | None) -> Route:
        return Route(service, container, where=self.where(service.container_id, container))

    def place(self, route: Route, container: Container | None) -> Route:
        return route.placed(container, self.where(route.container_id, container))

    def forget(self, container_id: str) -> None:
        self.placements.pop(container_id, None)

    def __call__(self, service: Service, containers: dict[str, Container]) -> Route:
        return self.build(service, containers.get(service.container_id))


class RouteTable:
    """Containers by id; ``Route`` objects by service id.

    ``on_change(service_ids)`` is called after every applied batch with the ids whose route
    changed or disappeared (the connection registry re-checks their open connections).
    """

    def __init__(
        self, allowed_networks: tuple[Network, ...], on_change: Callable[[set[str]], None] | None = None
    ) -> None:
        self.allowed_networks = allowed_networks
        self.on_change = on_change
        self.containers: dict[str, Container] = {}
        self.routes: dict[str, Route] = {}
        # Lists, not sets: a set costs about 40 bytes per member, a list 8. Removal scans one
        # container's services, and happens only when a service is deleted or moves.
        self._by_container: dict[str, list[str]] = {}
        self._builder = RouteBuilder(allowed_networks)
        self._expiry: list[tuple[int, str]] = []
        self.loaded = False
        self.generation = 0

    def get(self, service_id: str) -> Route | None:
        return self.routes.get(service_id)

    def __len__(self) -> int:
        return len(self.routes)

    def snapshot_builder(self) -> RouteBuilder:
        """A builder for the sync thread to turn a snapshot's services into routes with."""
        return RouteBuilder(self.allowed_networks)

    # -- applying changes (reactor thread only)
    def load_snapshot(self, snap: schema.Snapshot) -> None:
        """Replace everything with ``snap``, whose services are routes already (see
        ``snapshot_builder``). The table takes ownership of the snapshot's dicts."""
        old_routes = self.routes
        self.routes = routes = snap.services
        self.containers = snap.containers
        self._builder = RouteBuilder(self.allowed_networks)
        self._by_container = {}
        for sid, route in routes.items():
            self._by_container.setdefault(route.container_id, []).append(sid)
        self._expiry = [(r.expires_at, sid) for sid, r in routes.items() if r.expires_at]
        heapq.heapify(self._expiry)
        self.loaded = True
        self.generation += 1
        changed = {sid for sid in routes if sid not in old_routes}
        for sid, old in old_routes.items():
            new = routes.get(sid)
            if new is None or not new.same_as(old):
                changed.add(sid)
        self._notify(changed)

    def apply(self, events: Iterable[schema.Event]) -> set[str]:
        changed: set[str] = set()
        for ev in events:
            if ev.kind == schema.KIND_SERVICE:
                changed |= self._apply_service(ev)
            elif ev.kind == schema.KIND_CONTAINER:
                changed |= self._apply_container(ev)
        self.generation += 1
        self._notify(changed)
        return changed

    def _apply_service(self, ev: schema.Event) -> set[str]:
        sid = ev.id
        old = self.routes.pop(sid, None)
        svc = ev.record if ev.op == schema.OP_PUT else None
        if old is not None and (svc is None or svc.container_id != old.container_id):
            sids = self._by_container.get(old.container_id)
            if sids is not None and sid in sids:
                sids.remove(sid)
                if not sids:
                    del self._by_container[old.container_id]
        if svc is not None:
            assert isinstance(svc, Service)
            route = self._builder.build(svc, self.containers.get(svc.container_id))
            self.routes[sid] = route
            if old is None or old.container_id != svc.container_id:
                self._by_container.setdefault(svc.container_id, []).append(sid)
            if svc.expires_at:
                heapq.heappush(self._expiry, (svc.expires_at, sid))
        return {sid}

    def _apply_container(self, ev: schema.Event) -> set[str]:
        cid = ev.id
        sids = set(self._by_container.get(cid, ()))
        self._builder.forget(cid)
        if ev.op == schema.OP_PUT:
            assert isinstance(ev.record, Container)
            container = self.containers[cid] = ev.record
            for sid in sids:
                self.routes[sid] = self._builder.place(self.routes[sid], container)
        else:
            # The cascade: a container delete also deleted its services.
            self.containers.pop(cid, None)
            for sid in sids:
                self.routes.pop(sid, None)
            self._by_container.pop(cid, None)
        return sids

    def pop_expired(self, now: float) -> set[str]:
        """Service ids whose expiry has come since the last call (for closing connections)."""
        out = set()
        while self._expiry and self._expiry[0][0] <= now:
            _, sid = heapq.heappop(self._expiry)
            route = self.routes.get(sid)
            if route is not None and route.expired(now):
                out.add(sid)
        if out:
            self._notify(out)
        return out

    def _notify(self, changed: set[str]) -> None:
        if changed and self.on_change is not None:
            self.on_change(changed)
