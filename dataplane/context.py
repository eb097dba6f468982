"""What every client connection shares: config, reactor, route table, upstream pool, metrics,
and which connections depend on which service (to act on revocation). No globals: the
service builds one ``ProxyContext`` and hands it to the factories and protocols."""

from __future__ import annotations

from dataplane import access
from dataplane.access_log import AccessLog
from dataplane.config import ProxyConfig
from dataplane.deadline import FifoDeadlines
from dataplane.metrics import Metrics
from dataplane.probe import Prober, RedisWriter
from dataplane.routes import Route, RouteTable, control_plane_route
from dataplane.upstream import UpstreamPool
from shared.schema import Schema


class ConnectionRegistry:
    """Which open client connections rely on which service, to close them on revocation.

    A connection is registered under the service of its last granted request (WebSockets and
    streams included) and re-checked whenever that service's route changes or expires.
    """

    def __init__(self) -> None:
        self.by_service: dict[str, set] = {}
        self.service_of: dict[object, str] = {}

    def register(self, conn, service_id: str) -> None:
        old = self.service_of.get(conn)
        if old == service_id:
            return
        if old is not None:
            self._discard(conn, old)
        self.service_of[conn] = service_id
        conns = self.by_service.get(service_id)
        if conns is None:  # (setdefault would make a set per call)
            conns = self.by_service[service_id] = set()
        conns.add(conn)

    def unregister(self, conn) -> None:
        old = self.service_of.pop(conn, None)
        if old is not None:
            self._discard(conn, old)

    def _discard(self, conn, service_id: str) -> None:
        conns = self.by_service.get(service_id)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self.by_service[service_id]

    def revalidate(self, service_ids: set[str], table: RouteTable, now: float) -> int:
        """Tell every connection that the current routes no longer allow (or whose container
        moved) what it now gets; each decides how to end (see ``ClientConnection.revoke``).
        Returns how many were told."""
        told = 0
        for sid in service_ids:
            route = table.get(sid)
            for conn in list(self.by_service.get(sid, ())):
                granted, kid = conn.grant
                denial = access.revocation(granted, kid, route, now)
                if denial is None:
                    if access.moved(granted, route):
                        conn.moved(route)  # streams to the old address end; stays registered
                    continue
                self.unregister(conn)
                conn.revoke(denial)
                told += 1
        return told


class LinkUsage:
    """When share links were last used, written at most once a minute per link.

    The request path only compares two numbers; the write happens on the writer thread.
    """

    INTERVAL = 60.0

    def __init__(self, schema: Schema, writer: RedisWriter, reactor) -> None:
        self.schema = schema
        self.writer = writer
        self.reactor = reactor
        self.written: dict[tuple[str, str], float] = {}

    def used(self, route: Route, kid: str | None, now: float) -> None:
        link_id = route.link_of_kid.get(kid) if kid is not None else None
        if link_id is None:
            return
        key = (route.service_id, link_id)
        if now - self.written.get(key, float("-inf")) < self.INTERVAL:
            return
        self.written[key] = now
        sid, schema, stamp = route.service_id, self.schema, int(now)
        self.writer.submit(lambda client: schema.mark_links_used(client, sid, {link_id: stamp}))


class ProxyContext:
    """What every connection needs, handed to factories and protocols (no globals)."""

    def __init__(
        self,
        config: ProxyConfig,
        reactor,
        metrics: Metrics,
        *,
        table: RouteTable,
        prober: Prober | None,
        links: LinkUsage | None = None,
        access_log: AccessLog | None = None,
        pool: UpstreamPool | None = None,
    ) -> None:
        self.config = config
        self.reactor = reactor
        self.metrics = metrics
        self.registry = ConnectionRegistry()
        self.table = table
        table.on_change = self._routes_changed  # revocation reaches open connections
        self.prober = prober
        self.links = links
        self.access_log = access_log or AccessLog(reactor, None)
        self.pool = pool or UpstreamPool(
            reactor, config.connect_timeout, max_idle_per_target=config.upstream_max_idle
        )
        self.host_suffix = (b"." + config.service_domain.encode()) if config.service_domain else None
        self.api_route = control_plane_route(config.api_upstream) if config.api_upstream else None
        self.open_connections = 0
        self.first_heads = FifoDeadlines(reactor, config.head_timeout)
        # read when scraped: no lock taken per connection
        metrics.open_connections.set_function(lambda: self.open_connections)
        self.live_connections: set = set()
        self.draining = False
        self.last_exchange: float | None = None

    @property
    def access_log(self) -> AccessLog:
        return self._access_log

    @access_log.setter
    def access_log(self, log: AccessLog) -> None:
        # The access log gathers every answered request (with or without a stream to write
        # to) and hands each batch to the metrics; a scrape takes what is gathered first.
        log.observe = self.metrics.per_request.take
        self.metrics.per_request.pending = log.flush
        self._access_log = log

    def sync_fresh(self) -> bool:
        last = self.last_exchange
        return last is not None and self.reactor.seconds() - last < self.config.max_staleness

    def mark_exchange(self) -> None:
        self.last_exchange = self.reactor.seconds()

    def _routes_changed(self, service_ids: set[str]) -> None:
        self.registry.revalidate(service_ids, self.table, self.reactor.seconds())
        if self.prober is not None:
            self.prober.routes_changed(service_ids)

    def check_expiry(self) -> None:
        self.table.pop_expired(self.reactor.seconds())
