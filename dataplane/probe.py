"""Readiness: does each live service's target accept a TCP connection?

Probes run on the reactor (a plain connect, closed at once) when a route appears or changes,
every ``interval`` while it lives, and whenever a relay connect fails or succeeds. Results go
to Redis through ``RedisWriter`` only when they change (or once a minute as a refresh), so
several replicas neither flood Redis nor rewrite each other's answer at every probe.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from twisted.internet import protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from dataplane.routes import Route, RouteTable
from shared.schema import Readiness

log = Logger()
REFRESH_SECS = 60.0
MAX_IN_FLIGHT = 256


class _ProbeProtocol(protocol.Protocol):
    def connectionMade(self) -> None:
        self.factory.done(True)
        self.transport.abortConnection()


class _ProbeFactory(protocol.ClientFactory):
    protocol = _ProbeProtocol
    noisy = False

    def __init__(self, callback: Callable[[bool], None]) -> None:
        self.callback = callback
        self.fired = False

    def done(self, ok: bool) -> None:
        if not self.fired:
            self.fired = True
            self.callback(ok)

    def clientConnectionFailed(self, connector, reason) -> None:
        self.done(False)


class Prober:
    """Schedules probes and reports results. Reactor thread only."""

    def __init__(
        self,
        reactor,
        table: RouteTable,
        report: Callable[[str, Readiness], None],
        interval: float,
        connect_timeout: float,
    ) -> None:
        self.reactor = reactor
        self.table = table
        self.report = report
        self.interval = interval
        self.connect_timeout = connect_timeout
        self.due: dict[str, float] = {}
        self.last: dict[str, tuple[str, str, float]] = {}
        self.in_flight = 0
        self._loop = LoopingCall(self._tick)
        self._loop.clock = reactor

    def start(self) -> None:
        self._loop.start(min(0.25, self.interval), now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def routes_changed(self, service_ids: set[str]) -> None:
        now = self.reactor.seconds()
        for sid in service_ids:
            if self.table.get(sid) is None:
                self.due.pop(sid, None)
                self.last.pop(sid, None)
            else:
                self.due[sid] = now

    def _tick(self) -> None:
        now = self.reactor.seconds()
        for sid, when in list(self.due.items()):
            if self.in_flight >= MAX_IN_FLIGHT:
                break
            if when > now:
                continue
            route = self.table.get(sid)
            if route is None:
                del self.due[sid]
                continue
            self.due[sid] = now + self.interval
            self.probe(route)

    def probe(self, route: Route) -> None:
        if not route.usable or route.target is None:
            return  # the control plane derives target_unreachable from the container itself
        if not route.allowed:
            self.observed(route, False)
            return
        self.in_flight += 1

        def finished(ok: bool) -> None:
            self.in_flight -= 1
            current = self.table.get(route.service_id)
            if current is not None and current.target_text == route.target_text:
                self.observed(current, ok)

        host, port = route.target
        self.reactor.connectTCP(host, port, _ProbeFactory(finished), timeout=self.connect_timeout)

    def observed(self, route: Route | None, ok: bool) -> None:
        """A probe or a relay connect succeeded or failed: report it if that is news."""
        if route is None:
            return
        status = "ready" if ok else "target_unreachable"
        now = self.reactor.seconds()
        last = self.last.get(route.service_id)
        if (
            last is not None
            and last[0] == status
            and last[1] == route.target_text
            and (now - last[2] < REFRESH_SECS)
        ):
            return
        self.last[route.service_id] = (status, route.target_text, now)
        self.report(route.service_id, Readiness(status, route.target_text, int(now)))


class RedisWriter:
    """Runs small Redis writes (readiness, share-link use) on its own thread and connection,
    so a slow or absent Redis never blocks the reactor. Writes are best effort: observations,
    not configuration; a failed one is logged and the next observation repeats it."""

    def __init__(self, client_factory: Callable[[], object]) -> None:
        self.client_factory = client_factory
        self.queue: queue.Queue = queue.Queue(maxsize=100_000)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="linx-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.queue.put(None)

    def submit(self, write: Callable[[object], None]) -> None:
        """Queue ``write(client)``; called from the reactor thread."""
        try:
            self.queue.put_nowait(write)
        except queue.Full:
            log.warn("redis writer queue full: dropping an update")

    def _run(self) -> None:
        client = None
        while True:
            write = self.queue.get()
            if write is None:
                return
            try:
                if client is None:
                    client = self.client_factory()
                write(client)
            except Exception as exc:
                log.warn("redis writer: {err}", err=f"{type(exc).__name__}: {exc}")
