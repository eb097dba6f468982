"""Readiness: does each live service's target accept a TCP connection?

Probes run on the reactor (a plain connect, closed at once) when a route appears or changes,
every ``interval`` while it lives, and whenever a relay connect fails or succeeds. Results go
to Redis through ``RedisWriter`` only when they change (or once a minute as a refresh), so
several replicas neither flood Redis nor rewrite each other's answer at every probe.
"""

from __future__ import annotations

import heapq
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
BATCH = 20  # tasks per pipeline; a readiness task carries up to READINESS_CHUNK writes


class _ProbeProtocol(protocol.Protocol):
    def connectionMade(self) -> None:
        self.factory.done(True)
        # A clean close, not a reset: many servers log a reset connection as an error.
        self.transport.loseConnection()


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
        # Probes are per target (address, port), not per service: many services may share one,
        # and 100,000 routes must not mean 100,000 connects every interval.
        self.members: dict[tuple[str, int], set[str]] = {}
        self.target_of: dict[str, tuple[str, int]] = {}
        self.scheduled: dict[tuple[str, int], float] = {}
        self.heap: list[tuple[float, tuple[str, int]]] = []
        self.in_flight: set[tuple[str, int]] = set()
        self.last: dict[str, Readiness] = {}
        self._loop = LoopingCall(self._tick)
        self._loop.clock = reactor

    def start(self) -> None:
        self._loop.start(min(0.25, self.interval), now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def routes_changed(self, service_ids: set[str]) -> None:
        """Routes appeared, changed or went: (re)schedule their targets for a probe now."""
        now = self.reactor.seconds()
        for sid in service_ids:
            old = self.target_of.pop(sid, None)
            if old is not None:
                sids = self.members.get(old)
                if sids is not None:
                    sids.discard(sid)
                    if not sids:
                        del self.members[old]
                        self.scheduled.pop(old, None)
            route = self.table.get(sid)
            if route is None:
                self.last.pop(sid, None)
                continue
            if not route.usable or route.target is None:
                continue  # the control plane derives target_unreachable from the container itself
            target = route.target
            self.target_of[sid] = target
            self.members.setdefault(target, set()).add(sid)
            self._schedule(target, now)

    def _schedule(self, target: tuple[str, int], when: float) -> None:
        current = self.scheduled.get(target)
        if current is not None and current <= when:
            return
        self.scheduled[target] = when
        heapq.heappush(self.heap, (when, target))

    def _tick(self) -> None:
        now = self.reactor.seconds()
        heap = self.heap
        while heap and heap[0][0] <= now and len(self.in_flight) < MAX_IN_FLIGHT:
            when, target = heapq.heappop(heap)
            if self.scheduled.get(target) != when:
                continue  # superseded by an earlier schedule, or the target is gone
            del self.scheduled[target]
            self._schedule(target, now + self.interval)
            self._probe(target)

    def _probe(self, target: tuple[str, int]) -> None:
        sids = self.members.get(target)
        if not sids or target in self.in_flight:
            return
        route = self.table.get(next(iter(sids)))
        if route is None:
            return
        if not route.allowed:  # same address, same verdict for every service of this target
            self._result(target, False)
            return
        self.in_flight.add(target)

        def finished(ok: bool) -> None:
            self.in_flight.discard(target)
            self._result(target, ok)

        self.reactor.connectTCP(target[0], target[1], _ProbeFactory(finished), timeout=self.connect_timeout)

    def _result(self, target: tuple[str, int], ok: bool) -> None:
        shared = None
        for sid in list(self.members.get(target, ())):
            route = self.table.get(sid)
            if route is not None and route.target == target:
                if shared is None:
                    status = "ready" if ok else "target_unreachable"
                    shared = Readiness(status, route.target_text, int(self.reactor.seconds()))
                self.observed(route, ok, shared)

    def probe(self, route: Route) -> None:
        """Probe ``route``'s target now (tests and operators; the schedule does the rest)."""
        if route.target is not None and route.usable:
            self.members.setdefault(route.target, set()).add(route.service_id)
            self.target_of[route.service_id] = route.target
            self._probe(route.target)

    def observed(self, route: Route | None, ok: bool, shared: Readiness | None = None) -> None:
        """A probe or a relay connect succeeded or failed: report it if that is news.

        ``shared``: the one Readiness of a probe's result, reused for every service of the target.
        """
        if route is None:
            return
        status = "ready" if ok else "target_unreachable"
        now = self.reactor.seconds()
        last = self.last.get(route.service_id)
        target_text = route.target_text
        if (
            last is not None
            and last.status == status
            and last.target == target_text
            and (now - last.checked_at < REFRESH_SECS)
        ):
            return
        if shared is None or shared.target != target_text:
            shared = Readiness(status, target_text, int(now))
        self.last[route.service_id] = shared  # shared by every service of the target
        self.report(route.service_id, shared)


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
        """Queue ``write(pipe)`` (a non-transactional pipeline); called from the reactor thread."""
        try:
            self.queue.put_nowait(write)
        except queue.Full:
            log.warn("redis writer queue full: dropping an update")

    def _run(self) -> None:
        client = None
        while True:
            batch = [self.queue.get()]
            # Everything already queued goes in the same round trip (a pipeline).
            while len(batch) < BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            stop = None in batch
            writes = [w for w in batch if w is not None]
            try:
                if writes:
                    if client is None:
                        client = self.client_factory()
                    pipe = client.pipeline(transaction=False)
                    for write in writes:
                        write(pipe)
                    pipe.execute(raise_on_error=False)
            except Exception as exc:
                log.warn("redis writer: {err}", err=f"{type(exc).__name__}: {exc}")
            if stop:
                return
