"""The in-memory route table: everything the request path reads, and nothing it waits for.

Changed only on the reactor thread, from snapshots and change events that the sync thread
hands over. Each change recomputes the affected ``Route`` objects (immutable, with everything
the per-request path needs precomputed) and tells the ``on_change`` listener which services
changed, so open connections that lost their right to exist can be closed.
"""

from __future__ import annotations

import heapq
import ipaddress
from collections.abc import Callable, Iterable

from shared import schema
from shared.records import Container, Service
from shared.tokens import SigningKey

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


_NO_LINKS: dict[str, str] = {}


def placement(container: Container | None, allowed_networks: tuple[Network, ...]) -> tuple[bool, bool, bool]:
    """``(usable, allowed, ipv6)`` of a container: computed once per container, not per route."""
    if container is None:
        return False, False, False
    address = ipaddress.ip_address(container.address)
    return container.usable, any(address in net for net in allowed_networks), address.version == 6


class Route:
    """One published service as the proxy serves it. Immutable once built.

    Kept small (100,000 of them must fit in well under 150 MiB): what a request needs is a slot,
    what is rarely needed is derived on demand.
    """

    __slots__ = (
        "service_id",
        "service",
        "container",
        "token_key",
        "link_keys",
        "target",
        "usable",
        "allowed",
        "ipv6",
        "expires_at",
        "public",
        "websockets",
        "host_routed",
        "cors_passthrough",
        "token_cache",
        "link_of_kid",
    )

    def __init__(
        self,
        service: Service,
        container: Container | None,
        allowed_networks: tuple[Network, ...] = (),
        where: tuple[bool, bool, bool] | None = None,
    ) -> None:
        self.service_id = service.service_id
        self.service = service
        self.container = container
        # The service's own key, and its share links' keys only when it has links: a dict per
        # route would cost more than the rest of the route together.
        self.token_key = service.token_key
        self.link_keys: dict[str, SigningKey] | None = (
            {ln.key.kid: ln.key for ln in service.share_links} if service.share_links else None
        )
        self.expires_at = service.expires_at
        self.public = service.auth_mode == "public"
        self.websockets = service.enable_websockets
        self.host_routed = service.routing == "host"
        self.cors_passthrough = service.cors_preflight == "passthrough"
        self.token_cache: dict[str, str] | None = None  # token -> key id, see access.verify_token
        self.link_of_kid = (
            {ln.key.kid: ln.link_id for ln in service.share_links} if service.share_links else _NO_LINKS
        )
        self.usable, self.allowed, self.ipv6 = where or placement(container, allowed_networks)
        self.target: tuple[str, int] | None = (
            (container.address, service.target_port) if container is not None else None
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


class RouteTable:
    """Services and containers by id; ``Route`` objects by service id.

    ``on_change(service_ids)`` is called after every applied batch with the ids whose route
    changed or disappeared (the connection registry re-checks their open connections).
    """

    def __init__(
        self, allowed_networks: tuple[Network, ...], on_change: Callable[[set[str]], None] | None = None
    ) -> None:
        self.allowed_networks = allowed_networks
        self.on_change = on_change
        self.services: dict[str, Service] = {}
        self.containers: dict[str, Container] = {}
        self.routes: dict[str, Route] = {}
        self._by_container: dict[str, set[str]] = {}
        self._placements: dict[str, tuple[bool, bool, bool]] = {}
        self._targets: dict[tuple[str, int], tuple[str, int]] = {}
        self._expiry: list[tuple[int, str]] = []
        self.loaded = False
        self.generation = 0

    def get(self, service_id: str) -> Route | None:
        return self.routes.get(service_id)

    def __len__(self) -> int:
        return len(self.routes)

    # -- applying changes (reactor thread only)
    def load_snapshot(self, snap: schema.Snapshot) -> None:
        before = set(self.routes)
        # The table takes ownership of the snapshot's dicts (nobody else holds the snapshot).
        self.services = snap.services
        self.containers = snap.containers
        self._placements = {}
        self._by_container = {}
        for sid, svc in self.services.items():
            self._by_container.setdefault(svc.container_id, set()).add(sid)
        old_routes = self.routes
        self.routes = {}
        for sid in self.services:
            self._rebuild(sid)
        self._expiry = [(s.expires_at, sid) for sid, s in self.services.items() if s.expires_at]
        heapq.heapify(self._expiry)
        self.loaded = True
        self.generation += 1
        changed = {
            sid
            for sid in before | set(self.routes)
            if old_routes.get(sid) is None
            or self.routes.get(sid) is None
            or _differs(old_routes[sid], self.routes[sid])
        }
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
        old = self.services.pop(sid, None)
        if old is not None:
            self._by_container.get(old.container_id, set()).discard(sid)
        if ev.op == schema.OP_PUT:
            svc = ev.record
            assert isinstance(svc, Service)
            self.services[sid] = svc
            self._by_container.setdefault(svc.container_id, set()).add(sid)
            if svc.expires_at:
                heapq.heappush(self._expiry, (svc.expires_at, sid))
        self._rebuild(sid)
        return {sid}

    def _apply_container(self, ev: schema.Event) -> set[str]:
        cid = ev.id
        sids = set(self._by_container.get(cid, ()))
        self._placements.pop(cid, None)
        if ev.op == schema.OP_PUT:
            assert isinstance(ev.record, Container)
            self.containers[cid] = ev.record
        else:
            # The cascade: a container delete also deleted its services.
            self.containers.pop(cid, None)
            for sid in sids:
                self.services.pop(sid, None)
            self._by_container.pop(cid, None)
        for sid in sids:
            self._rebuild(sid)
        return sids

    def _rebuild(self, sid: str) -> None:
        svc = self.services.get(sid)
        if svc is None:
            self.routes.pop(sid, None)
            return
        container = self.containers.get(svc.container_id)
        where = self._placements.get(svc.container_id)
        if where is None:
            where = self._placements[svc.container_id] = placement(container, self.allowed_networks)
        route = Route(svc, container, where=where)
        if route.target is not None:  # one tuple per distinct target, not one per service
            route.target = self._targets.setdefault(route.target, route.target)
        self.routes[sid] = route

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


def _differs(a: Route, b: Route) -> bool:
    return a.service != b.service or a.container != b.container
