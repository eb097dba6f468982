"""Assembling the proxy: ``make_service(config, reactor)`` builds every part, nothing global."""

from __future__ import annotations

import os
import secrets
import socket
from importlib import metadata

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorFDSet
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from dataplane import admin_http, gc_policy, listener, relay
from dataplane.access_log import AccessLog
from dataplane.config import ProxyConfig
from dataplane.context import LinkUsage, ProxyContext
from dataplane.metrics import Metrics
from dataplane.probe import Prober, RedisWriter
from dataplane.routes import RouteTable
from dataplane.sync import SyncThread
from shared.redis_conn import make_client
from shared.schema import HEARTBEAT_SECS, Readiness, Schema, Snapshot, readiness_batches

log = Logger()
EXPIRY_CHECK_SECS = 0.25


# How long probe results wait to be written together. Readiness is an observation that the
# API shows (SPEC section 3, ``status``), with no deadline of its own; written at once, every
# publish cost each replica a script call of its own (python -m bench.fanout, 1,000 changes a
# second over ten replicas: each writer thread 3.4% of a core of its replica's 15%; 0.4% now).
READINESS_FLUSH_SECS = 0.1


class ProxyService(service.Service):
    """Listeners, sync, probes and the admin endpoint of one proxy process."""

    def __init__(
        self,
        config: ProxyConfig,
        reactor,
        *,
        reuse_port: bool = False,
        metrics: Metrics | None = None,
        freeze_heap: bool = False,
    ) -> None:
        self.config = config
        self.freeze_heap = freeze_heap
        self.reactor = reactor
        self.reuse_port = reuse_port
        self.metrics = metrics or Metrics()
        self.schema = Schema(config.redis.key_prefix)
        self.writer = RedisWriter(lambda: make_client(config.redis))
        table = RouteTable(config.allowed_networks)
        prober = Prober(reactor, table, self._report_readiness, config.probe_interval, config.connect_timeout)
        self.ctx = ProxyContext(
            config,
            reactor,
            self.metrics,
            table=table,
            prober=prober,
            links=LinkUsage(self.schema, self.writer, reactor),
            access_log=AccessLog.from_target(reactor, config.access_log),
        )
        self.sync = SyncThread(
            reactor,
            config.redis,
            self.schema,
            self._load_snapshot,
            self._apply_events,
            self.ctx.mark_exchange,
            convert=self.ctx.table.snapshot_builder,
        )
        self.ports: list = []
        self._on_listening: list = []
        self._readiness: list = []
        self._tls_context = None
        self.admin_port = None
        self._expiry = LoopingCall(self.ctx.check_expiry)
        self._expiry.clock = reactor
        self.proxy_id = "prx_" + secrets.token_hex(8)
        self.started_at = reactor.seconds()
        self.last_full_sync: float | None = None
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = reactor

    def _report_readiness(self, readiness: Readiness, service_ids: list[str]) -> None:
        # Gathered for READINESS_FLUSH_SECS and handed to the writer together, in chunks: a
        # probe result for a target shared by many services is a few script calls, not one
        # write each, and services published one by one share a script call too.
        if not self._readiness:
            self.reactor.callLater(READINESS_FLUSH_SECS, self._flush_readiness)
        self._readiness.append((readiness, service_ids))

    def _flush_readiness(self) -> None:
        # One writer task per script call, whether the services share one target or each has
        # its own: a pipeline then carries a bounded number of services.
        groups, self._readiness = self._readiness, []
        schema = self.schema
        for batch in readiness_batches(groups):
            self.writer.submit(lambda pipe, batch=batch: schema.write_readiness_many(pipe, batch))

    # -- sync callbacks (reactor thread)
    def _load_snapshot(self, snap: Snapshot) -> None:
        self.ctx.table.load_snapshot(snap)
        self.ctx.mark_exchange()  # a snapshot just read is a successful exchange with Redis
        self.last_full_sync = self.reactor.seconds()
        self.metrics.resyncs.inc()
        self.metrics.routes.set(len(self.ctx.table))
        log.info("sync: loaded {n} services", n=len(self.ctx.table))
        if self.freeze_heap:
            gc_policy.freeze_long_lived()  # the process's own collector (see gc_policy)
        if self._heartbeat.running:
            self.reactor.callLater(0, self._beat)  # after this exchange is marked: see it now
        if not self.ports and self.running and not self.ctx.draining:
            self._start_listeners()

    def _apply_events(self, events) -> None:
        self.ctx.table.apply(events)
        self.metrics.routes.set(len(self.ctx.table))

    # -- heartbeat (GET /api/admin/proxies)
    def heartbeat(self) -> dict:
        """What this replica tells operators about itself, every ``HEARTBEAT_SECS``."""
        now = self.reactor.seconds()
        last = self.ctx.last_exchange
        return {
            "proxy_id": self.proxy_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "version": _VERSION,
            "routes": len(self.ctx.table),
            "open_connections": self.ctx.open_connections,
            "sync_lag_secs": None if last is None else round(max(0.0, now - last), 3),
            "last_full_sync_at": None if self.last_full_sync is None else int(self.last_full_sync),
            "started_at": int(self.started_at),
            "last_seen_at": int(now),
        }

    def _beat(self) -> None:
        beat, schema, now = self.heartbeat(), self.schema, self.reactor.seconds()
        self.writer.submit(lambda pipe: schema.put_heartbeat(pipe, beat, now))

    # -- admin
    def health(self) -> tuple[bool, dict]:
        return True, {"status": "ok"}

    def ready(self) -> tuple[bool, dict]:
        loaded = self.ctx.table.loaded
        fresh = self.ctx.sync_fresh()
        ok = loaded and fresh and not self.ctx.draining
        return ok, {
            "status": "ready" if ok else "not_ready",
            "synced": loaded,
            "fresh": fresh,
            "routes": len(self.ctx.table),
            "draining": self.ctx.draining,
        }

    def _refresh_metrics(self) -> None:
        last = self.ctx.last_exchange
        self.metrics.sync_lag.set(self.reactor.seconds() - last if last is not None else -1)
        self.metrics.routes.set(len(self.ctx.table))
        if self.ctx.prober is not None:
            self.metrics.probe_targets.set(len(self.ctx.prober.targets))
            self.metrics.probe_lag.set(self.ctx.prober.lag())

    # -- lifecycle
    def startService(self) -> None:
        super().startService()
        cfg = self.config
        if cfg.tls_listen is not None:
            from dataplane.tls import context_factory

            self._tls_context = context_factory(cfg)  # a bad certificate fails the start
        site = admin_http.make_site(self.health, self.ready, self.metrics.registry, self._refresh_metrics)
        self.admin_port = self._listen(cfg.admin_listen, site)
        self.writer.start()
        self.sync.start()
        self.ctx.prober.start()
        self._expiry.start(EXPIRY_CHECK_SECS, now=False)
        self._heartbeat.start(HEARTBEAT_SECS, now=False)  # the first beat follows the first sync
        self.ctx.access_log.start()

    def _start_listeners(self) -> None:
        """Open the traffic listeners, once the first full sync is in.

        Before it, every answer would be a false 404 (or a 503): a replica starting beside
        others (``--workers``, a rolling restart) must not take connections it cannot serve.
        """
        cfg = self.config
        self.ports.append(self._listen(cfg.listen, relay.ProxyFactory(self.ctx, b"http")))
        if cfg.tls_listen is not None:
            from dataplane.tls import ServerTLSFactory

            tls = ServerTLSFactory(self._tls_context, relay.ProxyFactory(self.ctx, b"https"), self.reactor)
            self.ports.append(self._listen(cfg.tls_listen, tls))
        for callback in self._on_listening:
            callback(self)
        self._on_listening = []

    def when_listening(self, callback) -> None:
        """Call ``callback(service)`` once the traffic listeners are open."""
        if self.ports:
            callback(self)
        else:
            self._on_listening.append(callback)

    def _listen(self, hostport: tuple[str, int], factory):
        host, port = hostport
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            # Inherited by every accepted socket (Linux), so connections need no setsockopt each:
            # responses must not wait for Nagle's algorithm.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((host, port))
            sock.listen(1024)
            sock.setblocking(False)
            if IReactorFDSet.providedBy(self.reactor):
                return listener.adopt_port(self.reactor, sock.fileno(), family, factory)
            return self.reactor.adoptStreamPort(sock.fileno(), family, factory)  # an in-memory one
        finally:
            sock.close()  # the reactor holds its own duplicate of the descriptor

    def bound_port(self, index: int = 0) -> int:
        return self.ports[index].getHost().port

    @defer.inlineCallbacks
    def stopService(self):
        """Stop accepting, let in-flight requests finish for up to ``drain_secs``, then close."""
        super().stopService()
        ctx = self.ctx
        ctx.draining = True
        for port in self.ports:
            yield port.stopListening()
        self.ports = []
        deadline = self.reactor.seconds() + self.config.drain_secs
        while True:
            busy = 0
            for conn in list(ctx.live_connections):
                if conn.busy:
                    busy += 1
                elif conn.tunnelling:
                    conn.drop()
                else:
                    conn.close_idle()  # a FIN, so clients retry elsewhere without an error
            if not busy or self.reactor.seconds() >= deadline:
                break
            d = defer.Deferred()
            self.reactor.callLater(0.05, d.callback, None)
            yield d
        for conn in list(ctx.live_connections):
            conn.drop("drain_timeout")
        ctx.pool.close_all()
        ctx.first_heads.stop()
        if self._expiry.running:
            self._expiry.stop()
        if self._heartbeat.running:
            self._heartbeat.stop()
        schema, proxy_id = self.schema, self.proxy_id
        self.writer.submit(lambda pipe: schema.drop_heartbeat(pipe, proxy_id))  # before stop()
        ctx.prober.stop()
        if self.admin_port is not None:
            yield self.admin_port.stopListening()
        self.sync.stop(timeout=0)
        self.writer.stop(timeout=2.0)  # the heartbeat's removal (and last readiness) must land
        self.ctx.access_log.stop()


def _version() -> str:
    try:
        return metadata.version("linx")
    except metadata.PackageNotFoundError:
        return "unknown"


_VERSION = _version()


def make_service(
    config: ProxyConfig, reactor, *, reuse_port: bool = False, freeze_heap: bool = False
) -> ProxyService:
    """The whole proxy for ``config``, driven by ``reactor``. Call ``startService`` to run it.
    ``freeze_heap``: the process is the proxy's own (``__main__``), see ``gc_policy``."""
    return ProxyService(config, reactor, reuse_port=reuse_port, freeze_heap=freeze_heap)
